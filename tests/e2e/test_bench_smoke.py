"""scripts/bench.py keeps working: every mode runs briefly against real
nodes and reports results.  Speed is never asserted here (that is what
docs/benchmarks.md is for)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import node_config
from tests.support.cluster import FAST, ClusterHarness
from tests.support.procs import ProcessPool, free_port

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"


def bench(*args: str) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def test_single_node_modes(procs: ProcessPool, tmp_path: Path) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "b.db")}}
    node = procs.node(node_config(free_port(), storage=storage)).start()
    pid = str(node.pid)
    [pipe] = bench("pipe", "--url", node.url, "--pid", pid, "--pairs", "4", "--duration", "1", "--warmup", "0.2")
    assert pipe["msg_per_s"] > 0 and pipe["errors"] == 0 and pipe["cpu_us_per_msg"] > 0
    [idle] = bench("idle", "--url", node.url, "--pid", pid, "--polls", "50", "--settle", "0.5")
    assert idle["delivered"] == 50 and "rss_per_poll_kib" in idle
    [streams] = bench("streams", "--url", node.url, "--pid", pid, "--count", "500")
    assert streams["errors"] == 0 and "rss_per_stream_bytes" in streams
    rows = bench("persist", "--url", node.url, "--writers", "1", "4", "--duration", "0.5")
    assert [r["writers"] for r in rows] == [1, 4]
    assert all(r["persisted_msg_per_s"] > 0 and r["errors"] == 0 and r["replayed"] > 0 for r in rows)


@pytest.mark.parametrize("naive_queue", [False, True], ids=["trivial", "naive-queue"])
def test_baseline_servers_are_driven_by_the_same_harness(naive_queue: bool) -> None:
    port = free_port()
    flags = ["--naive-queue"] if naive_queue else []
    baseline = subprocess.Popen(
        [sys.executable, str(BENCH.parent / "baseline_server.py"), "--port", str(port), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        import time
        import urllib.request

        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        mode = [] if naive_queue else ["--baseline"]
        [pipe] = bench("pipe", "--url", f"http://127.0.0.1:{port}", "--pid", str(baseline.pid), *mode,
                       "--pairs", "4", "--duration", "1", "--warmup", "0.2")
        assert pipe["msg_per_s"] > 0 and pipe["cpu_us_per_request"] > 0 and pipe["errors"] == 0
    finally:
        baseline.kill()
        baseline.wait(5)


async def test_cluster_and_client_modes(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    rows = bench("cluster", "--owner-url", c.urls()[0], "--via-url", c.urls()[1], "--pairs", "4",
                 "--duration", "1", "--warmup", "0.2")
    assert [r["label"] for r in rows] == ["direct-to-owner", "forwarded"]
    assert all(r["msg_per_s"] > 0 and r["errors"] == 0 for r in rows)
    rows = bench("client", "--urls", ",".join(c.urls()), "--pairs", "4", "--duration", "1", "--warmup", "0.2")
    assert [r["label"] for r in rows] == ["client-owner-aware", "plain-session-one-node"]
    assert all(r["msg_per_s"] > 0 for r in rows)
