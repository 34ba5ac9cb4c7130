"""Servers a bench run starts itself, so that a run is reproducible from its
command line alone: ipubsub nodes and clusters (generated configs), the
reference servers of ``scripts/baseline_server.py`` and ``redis-server``.

Every server is pinned to the server CPU with ``taskset`` (the harness pins
itself to the client CPU, see ``main``) and listens on loopback without any
bind-then-release probe: ipubsub nodes on port 0, reading the port back from
``--ready-file``; Redis and the baselines, which cannot, on a random port,
started again on another if that one is taken.  Every server gets SIGTERM,
then SIGKILL, when the run ends, and dies with the harness if the harness is
killed (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from ipubsub.protocol import CLUSTER_PATH

from .conn import Endpoint
from .rawhttp import get_json, healthy
from .resp import RespConnection, command

__all__ = ["Launcher", "Server", "storage_section"]

SCRIPTS = Path(__file__).resolve().parents[1]
PORTS = range(20000, 32768)  # below Linux's ephemeral range (32768-60999)
READY_SECONDS = 30.0
UNBOUND = Endpoint("127.0.0.1", 0, "127.0.0.1:0")  # a node's until its ready file says
POSTGRES_DSN = os.environ.get("IPUBSUB_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_DSN = os.environ.get("IPUBSUB_BENCH_MYSQL_DSN", "mysql://root@127.0.0.1:3306/test")


@dataclass
class Server:
    """One started server process."""

    name: str
    endpoint: Endpoint
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return self.endpoint.url

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PortTaken(Exception):
    """The chosen port was in use: start again on other ports."""


def storage_section(backend: str, workdir: Path, tag: str) -> dict[str, Any]:
    """The ``storage`` config of a bench node for ``backend``.

    Raises:
        ValueError: unknown backend.
    """
    if backend == "none":
        return {"backend": "none"}
    if backend == "sqlite":
        return {"backend": "sqlite", "sqlite": {"path": str(workdir / f"{tag}.db")}}
    if backend == "postgres":
        return {"backend": "postgres", "postgres": {"dsn": POSTGRES_DSN, "table": "bench_messages"}}
    if backend == "mysql":
        return {"backend": "mysql", "mysql": {"dsn": MYSQL_DSN, "table": "bench_messages"}}
    raise ValueError(f"unknown storage backend {backend!r} (none, sqlite, postgres, mysql)")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: ask the kernel to SIGTERM it
    # when the harness dies, whatever way it dies.
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Launcher:
    """Starts the servers of one run and stops every one of them on exit.

    Use as ``async with Launcher(server_cpu=0) as launch: ...``.
    """

    def __init__(self, server_cpu: int | None = 0) -> None:
        self.server_cpu = server_cpu if server_cpu is not None and shutil.which("taskset") else None
        self.workdir = Path(tempfile.mkdtemp(prefix="ipubsub-bench-"))
        self._running: list[Server] = []
        self._used: set[int] = set()

    async def __aenter__(self) -> Launcher:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop(list(self._running))
        shutil.rmtree(self.workdir, ignore_errors=True)

    # -- what can be started ----------------------------------------------------

    async def ipubsub(self, n: int = 1, storage: str = "none", extra: dict[str, Any] | None = None) -> list[Server]:
        """``n`` ``ipubsub serve`` processes forming one cluster, each on a port
        the system picks (port 0, read back from ``--ready-file``): node 1
        first, the others seeded with its address; serving and agreeing on a
        ring of all ``n`` before this returns.  ``extra``: more config
        sections (e.g. ``auth``), merged over the generated ones.

        Raises:
            RuntimeError: a node exited or the ring did not form in time.
        """
        cluster = f"bench-{uuid.uuid4().hex[:6]}"
        first = await self._node(cluster, 1, storage, [], extra)
        nodes = [first, *await asyncio.gather(
            *(self._node(cluster, i, storage, [first.endpoint.netloc], extra) for i in range(2, n + 1)))]
        if n > 1:
            await self._wait_ring(nodes)
        return nodes

    async def baseline(self, flavour: str) -> Server:
        """``scripts/baseline_server.py``: ``trivial``, ``naive`` (--naive-queue)
        or ``hold`` (--hold)."""
        flags = {"trivial": [], "naive": ["--naive-queue"], "hold": ["--hold"]}[flavour]
        script = str(SCRIPTS / "baseline_server.py")

        def command(port: int) -> list[str]:
            return [sys.executable, script, "--port", str(port), *flags]

        return await self._on_free_port(f"baseline-{flavour}", command, healthy)

    async def redis(self) -> Server:
        """``redis-server`` keeping nothing on disk.

        Raises:
            RuntimeError: no redis-server on PATH, or it did not start.
        """
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian: apt-get install redis-server)")

        def command(port: int) -> list[str]:
            return [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                    "--dir", str(self.workdir), "--logfile", ""]

        return await self._on_free_port("redis", command, _redis_ready)

    async def stop(self, servers: Iterable[Server]) -> None:
        """SIGTERM, up to 10 s to exit, then SIGKILL; waits for all of them."""
        servers = [s for s in servers if s in self._running]
        for s in servers:
            if s.popen.poll() is None:
                s.popen.terminate()
        deadline = time.monotonic() + 10
        for s in servers:
            while s.popen.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if s.popen.poll() is None:
                s.popen.kill()
                s.popen.wait(5)
            self._running.remove(s)

    # -- starting and waiting -----------------------------------------------------

    async def _node(
        self, cluster: str, i: int, storage: str, seeds: list[str], extra: dict[str, Any] | None = None
    ) -> Server:
        name = f"{cluster}-n{i}"
        config = {
            "node": {"name": f"n{i}", "listen": "127.0.0.1:0", "shutdown_grace_seconds": 2},
            "cluster": {"name": cluster, "seeds": seeds},
            "storage": storage_section(storage, self.workdir, name),
            "log": {"level": "warning"},
        }
        for section, values in (extra or {}).items():
            config[section] = {**config.get(section, {}), **values}
        config_path, ready_path = self.workdir / f"{name}.yaml", self.workdir / f"{name}.ready"
        config_path.write_text(json.dumps(config, indent=1))  # JSON is YAML
        server = self._spawn(name, [sys.executable, "-m", "ipubsub", "serve", "--config", str(config_path),
                                    "--ready-file", str(ready_path)])

        async def ready() -> bool:
            if not ready_path.exists():
                return False
            server.endpoint = Endpoint.parse("http://" + json.loads(ready_path.read_text())["http"])
            return True

        await self._wait_ready(server, ready)
        return server

    async def _on_free_port(
        self, name: str, command: Callable[[int], list[str]], ready: Callable[[Endpoint], Awaitable[bool]]
    ) -> Server:
        """A server that cannot pick its own port: try random ones until one binds."""
        for _ in range(5):
            port = random.choice([p for p in PORTS if p not in self._used])
            self._used.add(port)
            endpoint = Endpoint("127.0.0.1", port, f"127.0.0.1:{port}")
            server = self._spawn(name, command(port), endpoint)
            try:
                await self._wait_ready(server, partial(ready, endpoint))
                return server
            except PortTaken:
                continue
        raise RuntimeError(f"{name}: no free port after 5 attempts")

    def _spawn(self, name: str, cmd: list[str], endpoint: Endpoint | None = None) -> Server:
        if self.server_cpu is not None:
            cmd = ["taskset", "-c", str(self.server_cpu), *cmd]
        log_path = self.workdir / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                preexec_fn=_die_with_parent,
            )
        server = Server(name, endpoint or UNBOUND, popen, log_path)
        self._running.append(server)
        return server

    async def _wait_ready(self, server: Server, ready: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + READY_SECONDS
        try:
            while time.monotonic() < deadline:
                if server.popen.poll() is not None:
                    tail = server.log_tail()
                    if "in use" in tail:
                        raise PortTaken(server.name)
                    raise RuntimeError(f"{server.name} exited with {server.popen.returncode}:\n{tail}")
                if await ready():
                    return
                await asyncio.sleep(0.05)
        except BaseException:
            await self.stop([server])
            raise
        await self.stop([server])
        raise RuntimeError(f"{server.name} not ready within {READY_SECONDS:.0f} s:\n{server.log_tail()}")

    async def _wait_ring(self, nodes: list[Server]) -> None:
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline:
            views = [await get_json(s.endpoint, CLUSTER_PATH) for s in nodes]
            if all(status == 200 and len(body["ringMembers"]) == len(nodes) for status, body in views):
                return
            await asyncio.sleep(0.1)
        raise RuntimeError(f"the {len(nodes)} nodes did not agree on a ring within {READY_SECONDS:.0f} s")


async def _redis_ready(endpoint: Endpoint) -> bool:
    try:
        conn = await RespConnection.open(endpoint)
    except OSError:
        return False
    try:
        return await conn.request(command(b"PING")) == b"PONG"
    finally:
        conn.close()
