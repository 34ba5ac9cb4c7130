"""Real ``ipubsub serve`` processes for end-to-end tests.

Every process is started from a YAML file on free loopback ports, waited for
with a bound, and killed at teardown whatever the test did.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

__all__ = ["NodeProcess", "ProcessPool", "free_port", "free_ports", "http_json"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> tuple[int, Any]:
    """Blocking JSON call (for set-up code outside the event loop)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


class NodeProcess:
    """One ``python -m ipubsub serve --config FILE`` child process."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.workdir = workdir
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.ready_path = workdir / f"{name}.ready"
        self.proc: subprocess.Popen[bytes] | None = None
        host_port = config["node"]["listen"]
        self.address = config["node"].get("advertise", host_port)
        self.url = f"http://{self.address}"

    def start(self, wait: bool = True, ready_timeout: float = 15.0) -> NodeProcess:
        self.config_path.write_text(yaml.safe_dump(self.config))
        log = open(self.log_path, "ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.ready_path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ipubsub", "serve", "--config", str(self.config_path),
             "--ready-file", str(self.ready_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            env=env,
        )
        log.close()
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Until /health says ok.  A node configured with port 0 writes the
        address it got to its ready file first: read it from there."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
            if self.address.endswith(":0"):
                try:
                    self.address = json.loads(self.ready_path.read_text())["http"]
                    self.url = f"http://{self.address}"
                except (OSError, ValueError, KeyError):
                    time.sleep(0.05)
                    continue
            try:
                status, body = http_json(self.url + "/health", timeout=1)
                if status == 200 and body.get("status") == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"{self.name} not ready within {timeout}s:\n{self.log()}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.alive():
            assert self.proc is not None
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    async def wait_async(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            code = self.proc.poll()
            if code is not None:
                return code
            await asyncio.sleep(0.02)
        raise TimeoutError(f"{self.name} still running after {timeout}s")

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-8000:]
        except OSError:
            return ""


class ProcessPool:
    """Creates node processes and guarantees they are all gone afterwards."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.nodes: list[NodeProcess] = []

    def node(self, config: dict[str, Any], name: str | None = None) -> NodeProcess:
        name = name or config.get("node", {}).get("name") or f"node{len(self.nodes)}"
        proc = NodeProcess(config, self.workdir, f"{name}-{len(self.nodes)}")
        self.nodes.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.nodes:
            proc.kill()
