"""Helpers to run real multi-process clusters on 127.0.0.1 and talk to them."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp

from tests.conftest import deep_merge
from tests.support.procs import NodeProcess, ProcessPool, free_ports, http_json

__all__ = ["ClusterHarness", "FAST"]

# Faster failure detection for tests that are not about the default timings.
FAST = {"heartbeat_interval_seconds": 0.2, "suspect_after_seconds": 0.8, "dead_after_seconds": 2.0}


class ClusterHarness:
    """N node processes that know each other through their seeds."""

    def __init__(self, procs: ProcessPool, n: int, cluster: dict[str, Any] | None = None,
                 extra: dict[str, Any] | None = None, name: str = "test") -> None:
        self.procs = procs
        self.ports = free_ports(n)
        self.seeds = [f"127.0.0.1:{p}" for p in self.ports]
        self.cluster = cluster or {}
        self.extra = extra or {}
        self.cluster_name = name
        self.nodes: list[NodeProcess] = [self._make(i) for i in range(n)]

    def config(self, i: int) -> dict[str, Any]:
        port = self.ports[i]
        base = {
            "node": {"name": f"n{i + 1}", "listen": f"127.0.0.1:{port}", "advertise": f"127.0.0.1:{port}",
                     "shutdown_grace_seconds": 5},
            "cluster": {"name": self.cluster_name, "seeds": self.seeds, **self.cluster},
            "storage": {"backend": "none"},
        }
        return deep_merge(base, self.extra)

    def _make(self, i: int) -> NodeProcess:
        return self.procs.node(self.config(i), name=f"n{i + 1}")

    def start(self, indexes: list[int] | None = None) -> ClusterHarness:
        chosen = [self.nodes[i] for i in (indexes if indexes is not None else range(len(self.nodes)))]
        for node in chosen:
            node.start(wait=False)
        for node in chosen:
            node.wait_ready()
        return self

    def restart(self, i: int) -> NodeProcess:
        self.nodes[i].kill()
        self.nodes[i] = self._make(i)
        self.nodes[i].start()
        return self.nodes[i]

    def add_node(self) -> int:
        """Configure one more node (seeds: everyone); not started."""
        port = free_ports(1)[0]
        self.ports.append(port)
        self.seeds.append(f"127.0.0.1:{port}")
        self.nodes.append(self._make(len(self.nodes)))
        return len(self.nodes) - 1

    def urls(self, alive_only: bool = True) -> list[str]:
        return [n.url for n in self.nodes if n.alive() or not alive_only]

    def name(self, i: int) -> str:
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
        while time.monotonic() - start < timeout:
            views = [await asyncio.to_thread(self.ring_members, u) for u in urls]
            if all(v == want for v in views):
                return time.monotonic() - start
            await asyncio.sleep(0.05)
        raise AssertionError(f"rings did not converge to {want} within {timeout}s: {views}")

    def owner(self, stream: str, url: str | None = None) -> str:
        status, body = http_json((url or self.urls()[0]) + "/api/v1/streams/owner?streamId=" + stream)
        assert status == 200, body
        return str(body["node"])

    def url_of(self, name: str) -> str:
        return self.nodes[int(name[1:]) - 1].url


async def send(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    async with http.post(f"{url}/api/v1/streams/send", data=json.dumps(body)) as r:
        return r.status, await r.json()


async def receive(http: aiohttp.ClientSession, url: str, stream: str, timeout: int = 0) -> tuple[int, dict[str, Any]]:
    async with http.get(
        f"{url}/api/v1/streams/receive", params={"streamId": stream, "timeoutSeconds": str(timeout)}
    ) as r:
        return r.status, await r.json()


async def health(http: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with http.get(f"{url}/health") as r:
        return await r.json()  # type: ignore[no-any-return]
