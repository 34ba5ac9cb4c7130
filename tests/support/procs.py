"""Real ``ipubsub serve`` processes for end-to-end tests.

Every process listens on port 0 (the kernel picks a free port while the
child binds it: no port is ever chosen by the test and released) and
reports what it got through ``--ready-file``: JSON with ``node``, ``http``,
``pid`` and any other listener it opened.  :meth:`NodeProcess.start` waits
for that file (bounded, failing at once if the child exits) and every
process is killed at teardown whatever the test did.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tests.support.wait import wait_until, wait_until_sync

__all__ = ["READY_TIMEOUT", "NodeProcess", "ProcessPool"]

# A bound on start-up (interpreter, imports, storage), not a speed claim: a
# loaded CI machine can take many seconds to start Python.
READY_TIMEOUT = 60.0


class NodeProcess:
    """One ``python -m ipubsub serve --config FILE --ready-file FILE`` child."""

    def __init__(self, config: dict[str, Any], workdir: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.workdir = workdir
        self.config_path = workdir / f"{name}.yaml"
        self.log_path = workdir / f"{name}.log"
        self.ready_path = workdir / f"{name}.ready.json"
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready: dict[str, Any] = {}

    def start(self, wait: bool = True, ready_timeout: float = READY_TIMEOUT) -> NodeProcess:
        """Start the child; with ``wait``, return once it serves."""
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.ready_path.unlink(missing_ok=True)
        self.ready = {}
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipubsub", "serve", "--config", str(self.config_path),
                 "--ready-file", str(self.ready_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env,
            )
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def _check_ready(self) -> bool:
        if self.ready_path.exists():
            self.ready = json.loads(self.ready_path.read_text())
            return True
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode} before serving:\n{self.log()}")
        return False

    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        """Wait (bounded) until the child wrote its ready file."""
        if not self.ready:
            wait_until_sync(self._check_ready, timeout, f"{self.name} serving", show=self.log)

    async def wait_ready_async(self, timeout: float = READY_TIMEOUT) -> None:
        """:meth:`wait_ready` without blocking the event loop."""
        if not self.ready:
            await wait_until(self._check_ready, timeout, f"{self.name} serving", interval=0.02, show=self.log)

    @property
    def address(self) -> str:
        """``host:port`` of the public HTTP listener (known once ready)."""
        assert self.ready, f"{self.name} is not serving yet"
        return str(self.ready["http"])

    @property
    def url(self) -> str:
        return f"http://{self.address}"

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
        """The exit code, once the child exited (bounded, non-blocking)."""
        assert self.proc is not None
        proc = self.proc
        await wait_until(lambda: proc.poll() is not None, timeout, f"{self.name} exited", interval=0.02)
        return int(proc.returncode)

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
