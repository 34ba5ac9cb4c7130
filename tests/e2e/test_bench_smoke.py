"""scripts/bench.py keeps working: every mode runs briefly, against servers
the harness starts itself (--spawn) and against servers the test started
(--url/--pid), and reports results.  Speed is never asserted here (that is
what docs/benchmarks.md is for)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.cluster import FAST, ClusterHarness
from tests.support.config import node_config
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until_sync

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

BENCH = Path(__file__).resolve().parents[2] / "scripts" / "bench.py"
TINY = ["--duration", "0.5", "--warmup", "0.2"]
needs_redis = pytest.mark.skipif(shutil.which("redis-server") is None,
                                 reason="redis-server is not installed (Debian package redis-server)")


def bench(*args: str, workdir: Path | None = None, ok: bool = True) -> list[dict[str, Any]]:
    """Run bench.py; its spawned servers keep their files under ``workdir``."""
    env = dict(os.environ, TMPDIR=str(workdir)) if workdir else None
    out = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=120, env=env)
    assert (out.returncode == 0) == ok, out.stderr
    if not ok:
        return [{"stderr": out.stderr}]
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


def processes_under(path: Path) -> list[int]:
    """Live processes whose command line or working directory is under ``path``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(int(entry.name))
    return found


@pytest.fixture
def spawn_dir(tmp_path: Path) -> Any:
    """Where spawned servers live; afterwards none of them may be running."""
    path = tmp_path / "spawned"
    path.mkdir()
    yield path
    assert processes_under(path) == []


def summary(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    return next(r for r in rows if r.get("summary") and r["label"] == label)


def test_attached_single_node_modes(procs: ProcessPool, tmp_path: Path) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "b.db")}}
    node = procs.node(node_config(storage=storage)).start()
    pid = str(node.pid)
    [pipe] = bench("pipe", "--url", node.url, "--pid", pid, "--pairs", "4", *TINY)
    assert pipe["msg_per_s"] > 0 and pipe["errors"] == 0 and pipe["cpu_us_per_msg"] > 0 and pipe["servers"] == 1
    [idle] = bench("idle", "--url", node.url, "--pid", pid, "--polls", "50", "--settle", "0.3")
    assert idle["delivered"] == 50 and "rss_per_poll_kib" in idle
    [streams] = bench("streams", "--url", node.url, "--pid", pid, "--count", "500")
    assert streams["errors"] == 0 and "rss_per_stream_bytes" in streams
    rows = bench("persist", "--url", node.url, "--pid", pid, "--writers", "1", "4", "--duration", "0.5")
    assert [r["writers"] for r in rows] == [1, 4]
    assert all(r["persisted_msg_per_s"] > 0 and r["errors"] == 0 and r["replayed"] > 0 for r in rows)
    assert all(r["cpu_us_per_persisted_msg"] > 0 for r in rows)


def test_pipe_spawns_each_http_target_in_interleaved_rounds(spawn_dir: Path) -> None:
    rows = bench("pipe", "--spawn", "--target", "trivial", "--target", "naive", "--target", "ipubsub",
                 "--target", "ipubsub:window=4", "--rounds", "2", "--pairs", "4", *TINY, workdir=spawn_dir)
    measured = [r for r in rows if not r.get("summary")]
    labels = ["trivial", "naive", "ipubsub", "ipubsub-window4"]
    assert [(r["label"], r["round"]) for r in measured] == [(lb, n) for n in (1, 2) for lb in labels]
    assert all(r["msg_per_s"] > 0 and r["errors"] == 0 and r["cpu_us_per_msg"] > 0 for r in measured)
    assert summary(rows, "trivial")["cpu_us_per_msg"] > 0
    ipubsub = summary(rows, "ipubsub")
    assert ipubsub["rounds"] == 2 and len(ipubsub["ratio_to_trivial_rounds"]) == 2 and ipubsub["ratio_to_trivial"] > 0


@needs_redis
def test_pipe_against_redis_single_and_batched(spawn_dir: Path) -> None:
    rows = bench("pipe", "--spawn", "--target", "redis", "--target", "redis:batch=10", "--target", "ipubsub",
                 "--ratio-to", "redis", "--pairs", "4", *TINY, workdir=spawn_dir)
    single, batched, ipubsub = (r for r in rows if not r.get("summary"))
    assert (single["label"], single["batch"], batched["label"], batched["batch"]) == ("redis", 1, "redis-batch10", 10)
    for row in (single, batched, ipubsub):
        assert row["msg_per_s"] > 0 and row["cpu_us_per_msg"] > 0 and row["latency_p50_ms"] >= 0
    # ten messages per call: the batched receives deliver many messages each
    assert batched["msg_per_s"] > batched["requests_per_s"] / 2
    assert summary(rows, "ipubsub")["ratio_to_redis"] > 0


@needs_redis
def test_pipe_batches_of_ipubsub_and_redis_in_one_run(spawn_dir: Path) -> None:
    rows = bench("pipe", "--spawn", "--target", "ipubsub", "--target", "ipubsub:batch=10", "--target",
                 "redis:batch=10", "--ratio-to", "redis-batch10", "--pairs", "4", *TINY, workdir=spawn_dir)
    single, batched, redis = (r for r in rows if not r.get("summary"))
    assert (single["batch"], batched["label"], batched["batch"]) == (1, "ipubsub-batch10", 10)
    for row in (single, batched, redis):
        assert row["msg_per_s"] > 0 and row["errors"] == 0 and row["cpu_us_per_msg"] > 0, row
    assert batched["msg_per_s"] > batched["requests_per_s"]  # several messages per call
    assert summary(rows, "ipubsub-batch10")["ratio_to_redis-batch10"] > 0


def test_persist_and_replay_batches_spawned(spawn_dir: Path) -> None:
    rows = bench("persist", "--spawn", "--storage", "sqlite", "--writers", "2", "--batch", "1", "20",
                 "--duration", "0.5", workdir=spawn_dir)
    assert [r["batch"] for r in rows] == [1, 20]
    assert all(r["persisted_msg_per_s"] > 0 and r["errors"] == 0 and r["replayed"] > 0 for r in rows)
    rows = bench("replay", "--spawn", "--storage", "sqlite", "--messages", "2500", "--batch", "1", "1000",
                 "--single-limit", "200", "--rounds", "1", workdir=spawn_dir)
    fill, single, batched = (r for r in rows if not r.get("summary"))
    assert fill["written"] == 2500 and single["replayed"] == 200 and batched["replayed"] == 2500
    assert batched["reads"] == 3 and batched["cpu_us_per_msg"] > 0
    assert summary(rows, "sqlite-batch1000")["ratio_to_sqlite-batch1"] > 0


@needs_redis
def test_fanout_spawns_history_durable_and_redis_per_reader_count(spawn_dir: Path) -> None:
    rows = bench("fanout", "--spawn", "--readers", "3", "5", "--batch", "20", "--lead", "50", "--ratio-to", "redis",
                 *TINY, workdir=spawn_dir)
    measured = [r for r in rows if not r.get("summary")]
    assert [(r["readers"], r["target"]) for r in measured] == [
        (n, t) for n in (3, 5) for t in ("history", "durable", "redis")]
    for row in measured:  # every reader gets every message: copies are readers times the messages sent
        assert row["msg_per_s"] > 0 and row["errors"] == 0 and row["cpu_us_per_msg"] > 0, row
    assert summary(rows, "history-R5")["ratio_to_redis-R5"] > 0


def test_fanout_attached_to_a_node(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    [row] = bench("fanout", "--url", node.url, "--pid", str(node.pid), "--target", "history", "--readers", "4", *TINY)
    assert row["label"] == "history-R4" and row["msg_per_s"] > 0 and row["errors"] == 0 and row["servers"] == 1
    # sends of 20 messages each (sendBatch): the sender keeps ahead and reads come back with many messages
    [row] = bench("fanout", "--url", node.url, "--pid", str(node.pid), "--target", "history", "--readers", "4",
                  "--send-batch", "20", *TINY)
    assert row["errors"] == 0 and row["sent_per_s"] > 0 and row["msg_per_s"] > row["requests_per_s"]


def test_memory_and_persist_modes_spawned(spawn_dir: Path) -> None:
    [hold] = bench("idle", "--spawn", "--baseline", "--polls", "50", "--settle", "0.3", workdir=spawn_dir)
    [idle] = bench("idle", "--spawn", "--polls", "50", "--settle", "0.3", workdir=spawn_dir)
    assert (hold["label"], idle["label"]) == ("trivial-hold", "ipubsub")
    assert hold["delivered"] == idle["delivered"] == 50 and idle["rss_per_poll_kib"] is not None
    [streams] = bench("streams", "--spawn", "--count", "300", workdir=spawn_dir)
    assert streams["errors"] == 0 and streams["rss_per_stream_bytes"] is not None
    [persist] = bench("persist", "--spawn", "--storage", "sqlite", "--writers", "2", "--duration", "0.5",
                      workdir=spawn_dir)
    assert persist["label"] == "sqlite" and persist["persisted_msg_per_s"] > 0 and persist["replayed"] > 0


def test_sse_and_ws_modes_spawned(spawn_dir: Path) -> None:
    for kind in ("sse", "ws"):
        rows = bench(kind, "--spawn", "--subscribers", "50", "--settle", "0.3", "--pairs", "2", "--duration", "0.5",
                     "--warmup", "0.2", workdir=spawn_dir)
        idle, pipe = rows[0], rows[1]
        assert idle["label"] == f"{kind}-idle" and idle["delivered"] == 50 and idle["rss_per_subscriber_kib"] is not None
        assert pipe["label"] == kind and pipe["msg_per_s"] > 0 and pipe["errors"] == 0
        assert any(r.get("summary") and r["label"] == kind and "ratio_to_redis" in r for r in rows)


def test_group_mode_spawned(spawn_dir: Path) -> None:
    rows = bench("group", "--storage", "sqlite", "--backlog", "300", "--consumers", "3", "--max-messages", "50",
                 "--pairs", "2", "--duration", "0.5", "--warmup", "0.2", workdir=spawn_dir)
    drains = [r for r in rows if r.get("part") == "group"]
    assert [(r["max_messages"], r["acked"]) for r in drains] == [(50, 300), (1, 500)]
    assert all(r["msg_per_s"] > 0 and r["cpu_us_per_msg"] > 0 for r in drains)
    costs = [r for r in rows if r.get("part") == "lease-cost" and not r.get("summary")]
    assert {r["label"] for r in costs} == {"plain", "lease+ack"} and all(r["errors"] == 0 for r in costs)
    assert summary(rows, "lease+ack")["ratio_to_plain"] > 0


def test_cluster_mode_spawned(spawn_dir: Path) -> None:
    rows = bench("cluster", "--spawn", "2", "--pairs", "2", "1", *TINY, workdir=spawn_dir)
    measured = [r for r in rows if not r.get("summary")]
    assert [(r["pairs"], r["label"]) for r in measured] == [
        (2, "direct-to-owner"), (2, "forwarded"), (1, "direct-to-owner"), (1, "forwarded")]
    assert all(r["servers"] == 2 and r["msg_per_s"] > 0 and r["errors"] == 0 for r in measured)
    forwarded = summary(rows, "forwarded")
    assert forwarded["ratio_to_direct-to-owner"] > 0 and "latency_p50_added_ms_vs_direct-to-owner" in forwarded


def test_cluster_idle_mode_spawned(spawn_dir: Path) -> None:
    [idle] = bench("cluster-idle", "--spawn", "2", "--polls", "40", "--settle", "0.3", workdir=spawn_dir)
    assert idle["delivered"] + sum(idle.get("not_delivered", {}).values()) == 40 and idle["delivered"] > 0
    assert "owner_rss_per_poll_kib" in idle and "entry_rss_per_poll_kib" in idle


def test_lb_mode_spawned(spawn_dir: Path) -> None:
    rows = bench("lb", "--spawn", "2", "--pairs", "3", *TINY, workdir=spawn_dir)
    one, lb2 = (r for r in rows if not r.get("summary"))
    assert (one["label"], one["servers"], lb2["label"], lb2["servers"]) == ("one-node", 1, "lb-2", 2)
    assert lb2["msg_per_s"] > 0 and lb2["errors"] == 0 and summary(rows, "lb-2")["ratio_to_one-node"] > 0


def test_client_mode_spawned(spawn_dir: Path) -> None:
    rows = bench("client", "--spawn", "2", "--pairs", "3", *TINY, workdir=spawn_dir)
    assert [r["label"] for r in rows if not r.get("summary")] == ["client-owner-aware", "plain-session-one-node"]
    assert all(r["msg_per_s"] > 0 for r in rows)


async def test_cluster_mode_attached_sums_cpu_over_every_pid(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    pids = [str(n.pid) for n in c.nodes]
    rows = bench("cluster", "--owner-url", c.urls()[0], "--via-url", c.urls()[1], "--pid", pids[0],
                 "--pid", pids[1], "--pairs", "2", *TINY)
    assert [r["label"] for r in rows if not r.get("summary")] == ["direct-to-owner", "forwarded"]
    assert all(r["servers"] == 2 and r["cpu_us_per_msg"] > 0 for r in rows if not r.get("summary"))


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_harness_takes_its_servers_with_it(spawn_dir: Path, sig: signal.Signals) -> None:
    harness = subprocess.Popen([sys.executable, str(BENCH), "lb", "--spawn", "2", "--duration", "60"],
                               env=dict(os.environ, TMPDIR=str(spawn_dir)),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # one node, then a cluster of two
        wait_until_sync(lambda: len(processes_under(spawn_dir)) >= 3 or harness.poll() is not None, 60,
                        "the harness running its servers")
        assert harness.poll() is None
    finally:
        harness.send_signal(sig)
        _, err = harness.communicate(timeout=30)
    wait_until_sync(lambda: not processes_under(spawn_dir), 20, "the spawned servers gone",
                    show=lambda: processes_under(spawn_dir))
    if sig == signal.SIGTERM:  # a clean end: files removed, no stray tracebacks
        assert harness.returncode == 143 and list(spawn_dir.iterdir()) == [] and b"Traceback" not in err, err


@pytest.mark.parametrize("args, says", [
    (["pipe", "--target", "bogus"], "unknown target 'bogus'"),
    (["pipe", "--target", "trivial:batch=10"], "no batch call yet"),
    (["pipe", "--target", "ipubsub:colour=red"], "unknown target option 'colour'"),
    (["pipe", "--target", "ipubsub", "--target", "redis"], "need --spawn"),
    (["cluster", "--spawn", "1"], "at least 2 nodes"),
    (["fanout", "--spawn", "--target", "gossip"], "unknown target 'gossip'"),
    (["fanout", "--url", "http://127.0.0.1:1", "--target", "redis"], "needs --spawn"),
])
def test_bad_options_are_refused_clearly(args: list[str], says: str) -> None:
    [out] = bench(*args, ok=False)
    assert says in out["stderr"]
