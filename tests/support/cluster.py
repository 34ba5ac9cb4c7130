"""Real multi-process clusters on 127.0.0.1.

Every node listens on port 0 and reports its address through its ready
file (see :mod:`tests.support.procs`).  A cluster starts its first node
alone, reads the address it got and gives it as the seed of the others:
membership learns everybody through one seed.  A node started later (a
restart, which gets a new port, or a joining node) is seeded with the
addresses of the nodes serving at that moment.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.support.config import deep_merge
from tests.support.http import http_json
from tests.support.procs import NodeProcess, ProcessPool
from tests.support.wait import wait_until

__all__ = ["FAST", "ClusterHarness"]

# Faster failure detection for tests that are not about the default timings.
FAST = {"heartbeat_interval_seconds": 0.2, "suspect_after_seconds": 0.8, "dead_after_seconds": 2.0}


class ClusterHarness:
    """N node processes named n1..nN that know each other through seeds.

    Args:
        procs: the pool that kills every process at teardown.
        n: how many nodes to configure (none is started before :meth:`start`).
        cluster: extra keys of the ``cluster`` section.
        extra: merged over each node's whole config.
        name: the cluster name.
        seeds: addresses of nodes outside this harness to join through.
    """

    def __init__(self, procs: ProcessPool, n: int, cluster: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None, name: str = "test", seeds: list[str] | None = None) -> None:
        self.procs = procs
        self.cluster = cluster or {}
        self.extra = extra or {}
        self.cluster_name = name
        self.external_seeds = list(seeds or [])
        self.nodes: list[NodeProcess] = [self._make(i) for i in range(n)]

    def config(self, i: int) -> dict[str, Any]:
        base = {
            "node": {"name": self.name(i), "listen": "127.0.0.1:0", "shutdown_grace_seconds": 5},
            "cluster": {"name": self.cluster_name, **self.cluster, "seeds": []},
            "storage": {"backend": "none"},
        }
        return deep_merge(base, self.extra)

    def _make(self, i: int) -> NodeProcess:
        return self.procs.node(self.config(i), name=self.name(i))

    @property
    def seeds(self) -> list[str]:
        """Addresses of the nodes serving now."""
        return [n.address for n in self.nodes if n.alive() and n.ready]

    def _start_seeded(self, node: NodeProcess) -> None:
        node.config["cluster"]["seeds"] = self.seeds + self.external_seeds
        node.start(wait=False)

    def start(self, indexes: list[int] | None = None) -> ClusterHarness:
        """Start the chosen nodes (all by default) and wait until each serves."""
        chosen = [self.nodes[i] for i in (indexes if indexes is not None else range(len(self.nodes)))]
        if chosen and not self.seeds and not self.external_seeds:
            first, chosen = chosen[0], chosen[1:]
            first.start()  # alone: the others join through it
        for node in chosen:
            self._start_seeded(node)
        for node in chosen:
            node.wait_ready()
        return self

    def restart(self, i: int) -> NodeProcess:
        """Kill node ``i`` (if alive) and start a new process in its place (a
        new incarnation on a new port)."""
        self.nodes[i].kill()
        self.nodes[i] = self._make(i)
        self._start_seeded(self.nodes[i])
        self.nodes[i].wait_ready()
        return self.nodes[i]

    def add_node(self) -> int:
        """Configure one more node; it is started by :meth:`start`."""
        self.nodes.append(self._make(len(self.nodes)))
        return len(self.nodes) - 1

    def urls(self, alive_only: bool = True) -> list[str]:
        return [n.url for n in self.nodes if (n.alive() or not alive_only) and n.ready]

    @staticmethod
    def name(i: int) -> str:
        return f"n{i + 1}"

    def ring_members(self, url: str) -> list[str] | None:
        try:
            status, body = http_json(url + "/api/v1/cluster", timeout=2)
        except OSError:
            return None
        return sorted(body["ringMembers"]) if status == 200 else None

    async def wait_ring(self, expected: list[str], urls: list[str] | None = None, timeout: float = 10.0) -> float:
        """Wait until every node in ``urls`` has exactly ``expected`` in its
        ring; return how long it took."""
        start = time.monotonic()
        urls = urls or self.urls()
        want = sorted(expected)
        views: list[list[str] | None] = []

        async def agreed() -> bool:
            # all nodes at once: asked one after the other on a loaded machine, the
            # round's own latency (up to 2 s per node) was counted against the bound
            views[:] = await asyncio.gather(*(asyncio.to_thread(self.ring_members, u) for u in urls))
            return all(v == want for v in views)

        await wait_until(agreed, timeout, f"rings converged to {want}", interval=0.05, show=lambda: views)
        return time.monotonic() - start

    def owner(self, stream: str, url: str | None = None) -> str:
        status, body = http_json((url or self.urls()[0]) + "/api/v1/streams/owner?streamId=" + stream)
        assert status == 200, body
        return str(body["node"])

    def url_of(self, name: str) -> str:
        return self.nodes[int(name[1:]) - 1].url
