"""scripts/run-cluster.sh runs the shipped 3-node cluster (ports 16681-16683)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.procs import http_json

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PORTS = (16681, 16682, 16683)


def _busy(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def test_start_status_stop(tmp_path: Path) -> None:
    if any(_busy(p) for p in PORTS):
        pytest.skip("ports 16681-16683 are in use")
    env = dict(os.environ, IPUBSUB_RUN_DIR=str(tmp_path / "run"), PYTHON=sys.executable)
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"

    def script(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(ROOT / "scripts" / "run-cluster.sh"), *args], capture_output=True,
                              text=True, env=env, timeout=60)

    try:
        started = script("start")
        assert started.returncode == 0, started.stderr + started.stdout
        status = script("status")
        assert status.returncode == 0
        assert status.stdout.count("not answering") == 0
        # All three nodes converge on one ring.
        import time

        deadline = time.monotonic() + 10
        while True:
            views = [http_json(f"http://127.0.0.1:{p}/api/v1/cluster")[1]["ringMembers"] for p in PORTS]
            if all(v == ["node-1", "node-2", "node-3"] for v in views):
                break
            assert time.monotonic() < deadline, views
            time.sleep(0.1)
        status, body = http_json("http://127.0.0.1:16681/api/v1/streams/send", {"streamId": "rc", "message": 7})
        assert status == 200
        status, got = http_json("http://127.0.0.1:16683/api/v1/streams/receive?streamId=rc&timeoutSeconds=2")
        assert status == 200 and got["message"] == 7, json.dumps(got)
    finally:
        stopped = script("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not any(_busy(p) for p in PORTS)
    assert script("status").returncode == 1
