"""A local cluster of ``ipubsub serve`` processes for the checker: generated
configs, port 0 and ``--ready-file``, and a TCP proxy in front of every path
a fault can break (peers → node, node → database).

Peers reach a node only through its proxies (its advertised addresses), so
the checker can partition nodes without touching them; each node reaches
its database through a proxy of its own.  Clients (the workload) call each
node on the port it bound, directly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from ..protocol import CLUSTER_PATH, HEALTH_PATH
from .backends import Backend
from .monitor import get_json
from .proxy import Mode, TcpProxy
from .sockets import connection_owners

__all__ = ["LocalCluster", "LocalNode", "Timings"]

log = logging.getLogger("ipubsub.checker")


@dataclass(frozen=True)
class Timings:
    """Failure-detection timings written into every node's config."""

    heartbeat: float = 0.5
    suspect: float = 1.5
    dead: float = 4.0
    grace: float = 5.0

    @classmethod
    def fast(cls) -> Timings:
        return cls(heartbeat=0.2, suspect=0.8, dead=2.0, grace=4.0)


@dataclass
class LocalNode:
    """One node of the local cluster, across its restarts."""

    name: str
    workdir: Path
    http_proxy: TcpProxy
    link_proxy: TcpProxy | None
    db_proxy: TcpProxy | None
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""  # direct, from the ready file
    paused: bool = False
    retired: bool = False  # left the cluster for good
    starts: int = 0
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.up and self.proc is not None else None

    @property
    def peer_proxies(self) -> list[TcpProxy]:
        return [p for p in (self.http_proxy, self.link_proxy) if p is not None]

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return (self.workdir / f"{self.name}.log").read_text(errors="replace")[-chars:]
        except OSError:
            return ""


class LocalCluster:
    """Starts, stops, pauses, partitions and grows a cluster of real nodes.

    Args:
        workdir: where configs, ready files, logs and SQLite files go.
        backend: the durable backend every node uses (through its proxy).
        size: nodes started by :meth:`start`.
        timings: failure detection written into the configs.
        cluster_name: ``cluster.name`` (unique per run).
    """

    def __init__(self, workdir: Path, backend: Backend, size: int, timings: Timings, cluster_name: str,
                 db_proxies: bool = True) -> None:
        self.workdir = workdir
        self.backend = backend
        self._db_proxies = db_proxies and backend.target is not None
        self.size = size
        self.timings = timings
        self.cluster_name = cluster_name
        self.nodes: list[LocalNode] = []
        self._seeds: list[str] = []
        self._link_supported = _config_has("cluster", "link_advertise")

    # -- set-up ----------------------------------------------------------------

    async def start(self, ready_timeout: float = 30.0) -> None:
        """Start ``size`` nodes and wait until their rings agree."""
        for _ in range(self.size):
            await self._new_node()
        self._seeds = [n.http_proxy.address for n in self.nodes]
        await asyncio.gather(*(self.start_node(n, ready_timeout) for n in self.nodes))
        await self.wait_converged(ready_timeout)

    async def _new_node(self) -> LocalNode:
        name = f"n{len(self.nodes) + 1}"
        http = TcpProxy(f"{name}/http", identify=self._identify)
        link = TcpProxy(f"{name}/link", identify=self._identify) if self._link_supported else None
        db = TcpProxy(f"{name}/db", target=self.backend.target) if self._db_proxies else None
        for proxy in (http, link, db):
            if proxy is not None:
                await proxy.start()
        node = LocalNode(name, self.workdir, http, link, db)
        self.nodes.append(node)
        return node

    def config(self, node: LocalNode) -> dict[str, Any]:
        t = self.timings
        cluster: dict[str, Any] = {
            "name": self.cluster_name,
            "seeds": self._seeds or [node.http_proxy.address],
            "heartbeat_interval_seconds": t.heartbeat,
            "suspect_after_seconds": t.suspect,
            "dead_after_seconds": t.dead,
        }
        if node.link_proxy is not None:
            cluster["link_advertise"] = node.link_proxy.address
        return {
            "node": {"name": node.name, "listen": "127.0.0.1:0", "advertise": node.http_proxy.address,
                     "shutdown_grace_seconds": t.grace},
            "cluster": cluster,
            "storage": self.backend.storage_config(node.name, node.db_proxy, self.workdir),
            "limits": {"max_stream_size": 1_000_000},
            "log": {"level": "info"},
            "http": {"dashboard": False},
        }

    async def start_node(self, node: LocalNode, ready_timeout: float = 30.0) -> None:
        """Start (or restart) ``node``'s process and wait for its ready file.

        Raises:
            RuntimeError: the process exited or did not get ready in time.
        """
        config_path = self.workdir / f"{node.name}.yaml"
        ready = self.workdir / f"{node.name}.ready"
        config_path.write_text(yaml.safe_dump(self.config(node)))
        ready.unlink(missing_ok=True)
        with open(self.workdir / f"{node.name}.log", "ab") as out:
            out.write(f"\n===== start {node.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            node.proc = subprocess.Popen(
                [sys.executable, "-m", "ipubsub", "serve", "--config", str(config_path), "--ready-file", str(ready)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.workdir,
                env=dict(os.environ, PYTHONUNBUFFERED="1"), preexec_fn=_die_with_parent,
            )
        node.starts += 1
        node.paused = False
        deadline = time.monotonic() + ready_timeout
        while not ready.exists():
            if node.proc.poll() is not None:
                raise RuntimeError(f"{node.name} exited with {node.proc.returncode}:\n{node.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{node.name} not ready within {ready_timeout:.0f}s:\n{node.log_tail()}")
            await asyncio.sleep(0.05)
        node.facts = json.loads(ready.read_text())
        node.url = f"http://{node.facts['http']}"
        host, port = node.facts["http"].rsplit(":", 1)
        node.http_proxy.retarget((host, int(port)))
        if node.link_proxy is not None:
            link = node.facts.get("link") or await self._link_address(node)
            host, port = link.rsplit(":", 1)
            node.link_proxy.retarget((host, int(port)))

    async def _link_address(self, node: LocalNode) -> str:
        """The bound peer-link address of ``node`` (for ready files without
        one): ``/health`` → ``cluster.link.listen``."""
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            body = await self.get_json(node, HEALTH_PATH)
            link = ((body or {}).get("cluster") or {}).get("link") or {}
            if link.get("listen"):
                return str(link["listen"])
            await asyncio.sleep(0.1)
        raise RuntimeError(f"{node.name}: cannot learn the bound peer-link address from {HEALTH_PATH}")

    async def add_node(self) -> LocalNode:
        """Configure and start one more node (a join)."""
        node = await self._new_node()
        await self.start_node(node)
        return node

    # -- faults ------------------------------------------------------------------

    def kill(self, node: LocalNode) -> None:
        """SIGKILL (a paused process dies too)."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait(10)
        node.paused = False

    async def terminate(self, node: LocalNode, timeout: float = 30.0) -> int | None:
        """SIGTERM and wait for the graceful exit; SIGKILL after ``timeout``."""
        if node.proc is None or node.proc.poll() is not None:
            return None
        if node.paused:
            self.resume(node)
        node.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while node.proc.poll() is None:
            if time.monotonic() > deadline:
                log.error("%s did not exit within %.0fs of SIGTERM: killed", node.name, timeout)
                self.kill(node)
                break
            await asyncio.sleep(0.05)
        return node.proc.returncode

    def pause(self, node: LocalNode) -> None:
        if node.up and node.proc is not None:
            node.proc.send_signal(signal.SIGSTOP)
            node.paused = True

    def resume(self, node: LocalNode) -> None:
        if node.up and node.proc is not None:
            node.proc.send_signal(signal.SIGCONT)
        node.paused = False

    async def partition(self, groups: list[list[LocalNode]], mode: Mode) -> None:
        """Nodes of different groups stop reaching each other (both ways)."""
        for group in groups:
            inside = {n.name for n in group}
            outside = [n.name for n in self.nodes if n.name not in inside]
            for node in group:
                for proxy in node.peer_proxies:
                    await proxy.set_mode(mode, outside)

    def heal_partition(self) -> None:
        for node in self.nodes:
            for proxy in node.peer_proxies:
                proxy.heal()

    async def cut_database(self, node: LocalNode, mode: Mode) -> None:
        if node.db_proxy is not None:
            await node.db_proxy.set_mode(mode)

    def heal_database(self, node: LocalNode) -> None:
        if node.db_proxy is not None:
            node.db_proxy.heal()

    async def _identify(self, pairs: list[tuple[int, int]]) -> dict[tuple[int, int], str]:
        """The node whose process opened each connection ``(source port,
        proxy port)``."""
        pids = {n.pid: n.name for n in self.nodes if n.pid is not None}
        owners = await asyncio.to_thread(connection_owners, pairs, list(pids))
        return {pair: pids[pid] for pair, pid in owners.items()}

    # -- views -------------------------------------------------------------------

    @property
    def running(self) -> list[LocalNode]:
        """Nodes whose process is alive (paused ones included)."""
        return [n for n in self.nodes if n.up]

    async def get_json(self, node: LocalNode, path: str, timeout: float = 2.0) -> dict[str, Any] | None:
        """GET a node's JSON view directly (``None`` if it does not answer 200)."""
        async with aiohttp.ClientSession() as http:
            return await get_json(http, node.url + path, timeout)

    def watched(self) -> list[tuple[str, str]]:
        """``(name, url)`` of the running, unpaused nodes (for the ring monitor)."""
        return [(n.name, n.url) for n in self.running if not n.paused]

    async def ring_of(self, node: LocalNode) -> list[str] | None:
        body = await self.get_json(node, CLUSTER_PATH)
        return sorted(body["ringMembers"]) if body else None

    async def wait_converged(self, timeout: float) -> bool:
        """Wait until every running, unpaused node is healthy and has exactly
        the running nodes in its ring; ``False`` if not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = [n for n in self.running if not n.paused]
            want = sorted(n.name for n in nodes)
            views = await asyncio.gather(*(self.ring_of(n) for n in nodes))
            healthy = await asyncio.gather(*(self.get_json(n, HEALTH_PATH) for n in nodes))
            if all(v == want for v in views) and all(h is not None for h in healthy):
                return True
            if time.monotonic() > deadline:
                log.warning("rings did not converge to %s within %.0fs: %s", want, timeout, views)
                return False
            await asyncio.sleep(0.1)

    async def close(self) -> None:
        """Stop every process (SIGKILL: the run is over) and every proxy."""
        for node in self.nodes:
            if node.paused:
                self.resume(node)
            self.kill(node)
            for proxy in (node.http_proxy, node.link_proxy, node.db_proxy):
                if proxy is not None:
                    await proxy.stop()


def _die_with_parent() -> None:
    """In the child before exec: on Linux, get SIGKILL when the checker dies,
    so a checker that is killed leaves no node behind."""
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _config_has(section: str, key: str) -> bool:
    """Whether this ipubsub's config knows ``section.key`` (nodes run the
    same installed package as the checker)."""
    from .. import config

    struct = {"cluster": config.ClusterConfig, "node": config.NodeConfig}[section]
    return key in struct.__struct_fields__
