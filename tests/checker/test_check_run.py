"""``ipubsub check`` in CI (issue 16): a short fixed-seed run — 3 nodes on
PostgreSQL, every fault kind once, the whole workload but fan-out histories
(see ``WITHOUT``) — must keep every promise; and the same recorded history, broken on purpose in one place at a
time, must be judged broken in exactly that guarantee (the checker can fail).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ipubsub.checker.analysis import Analysis
from ipubsub.checker.faults import FAULT_KINDS
from ipubsub.checker.history import read_history
from ipubsub.checker.report import summary
from tests.storage.conftest import require

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

#: the CI run's seed: with --duration 0 its plan is every kind once, in this seed's order
SEED = 16
#: a bound on the run (a loaded machine), not the figure: the run takes 60-110 s here
RUN_TIMEOUT = 420.0
#: Left out until it is fixed: fan-out histories. A node that has just started (join, the restart after a
#: SIGTERM) or is leaving answers a history read of an epoch it does not hold with `recovered: false` instead
#: of waiting for the hand-off, about one CI run in three (docs/reliability.md, "Open").
WITHOUT = "histories"

Event = dict[str, Any]


def ipubsub(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -m ipubsub ARGS`` in its own process group; on timeout the
    whole group (the checker and its nodes) is killed and the test fails."""
    proc = subprocess.Popen([sys.executable, "-m", "ipubsub", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"ipubsub {' '.join(args)} did not end within {timeout:.0f}s:\n{out[-4000:]}")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


@pytest.fixture(scope="module")
def ci_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    asyncio.run(require("postgres"))
    workdir = tmp_path_factory.mktemp("check") / "run"
    result = ipubsub("check", "--backend", "postgres", "--nodes", "3", "--duration", "0", "--fast",
                     "--seed", str(SEED), "--without", WITHOUT, "--workdir", str(workdir), timeout=RUN_TIMEOUT)
    return result, workdir


def test_the_ci_check_keeps_every_promise_under_every_fault_kind(
    ci_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, workdir = ci_run
    assert result.returncode == 0, result.stdout[-6000:]
    assert "verdict: every promise kept" in result.stdout
    events = list(read_history(workdir / "history.jsonl"))
    ends = [e for e in events if e["ev"] == "fault" and e["phase"] == "end"]
    assert sorted({e["kind"] for e in ends}) == sorted(FAULT_KINDS)
    assert all(e["converged"] for e in ends)
    verdict = json.loads((workdir / "verdict.json").read_text())
    rows = {r["guarantee"]: r for r in verdict["rows"]}
    assert not verdict["broken"]
    for name in ("durable log (writeToDB)", "in-memory circular", "in-memory blocking", "in-memory sync",
                 "at-least-once leases (in-memory)", "consumer group (durable)"):
        assert rows[name]["acked"] > 0, f"{name}: no acknowledged message: the workload did not run"


# -- the checker can fail: the CI run's own history, broken on purpose ------------------------


def _first(events: list[Event], match: Callable[[Event], bool]) -> int:
    return next(i for i, e in enumerate(events) if match(e))


def _durable_read(e: Event) -> bool:
    return e["ev"] == "recv" and e["src"] == "log" and e["res"] == "ok" and not e.get("ab") and e["m"] == "durable"


def _circular_take(e: Event) -> bool:
    return e["ev"] == "recv" and e["src"] == "mem" and e["res"] == "ok" and e["m"] == "circular"


def _clear_of_faults(events: list[Event], mode: str) -> Callable[[Event], bool]:
    """A take of a ``mode`` message sent once after the last fault was over
    (no retry may excuse a second copy, no fault a loss)."""
    quiet = max(e["recovered"] for e in events if e["ev"] == "fault" and e["phase"] == "end")
    sends: dict[str, list[Event]] = {}
    for e in events:
        if e["ev"] == "send":
            sends.setdefault(e["uuid"], []).append(e)
    return lambda e: (e["ev"] == "recv" and e["src"] == "mem" and e["res"] == "ok" and e["m"] == mode
                      and len(sends.get(e["uuid"], [])) == 1 and sends[e["uuid"]][0]["t0"] > quiet)


def lose_a_durable_read(events: list[Event]) -> None:
    del events[_first(events, _durable_read)]


def read_a_durable_message_twice(events: list[Event]) -> None:
    i = _first(events, _durable_read)
    events.insert(i + 1, dict(events[i], t0=events[i]["t0"] + 0.001))


def reorder_a_durable_reader(events: list[Event]) -> None:
    i = _first(events, _durable_read)
    j = _first(events[i + 1:], lambda e: _durable_read(e) and e["r"] == events[i]["r"] and e["t0"] > events[i]["t0"])
    events[i] = dict(events[i], t0=events[i + 1 + j]["t0"] + 0.001)  # the reader's first message, read later


def take_a_message_twice(events: list[Event]) -> None:
    i = _first(events, _clear_of_faults(events, "circular"))
    events.insert(i + 1, dict(events[i], r="intruder", t0=events[i]["t1"], t1=events[i]["t1"] + 0.01))


def tamper_with_a_payload(events: list[Event]) -> None:
    i = _first(events, _circular_take)
    events[i] = dict(events[i], p={**events[i]["p"], "s": -1})


def never_take_a_sync_message(events: list[Event]) -> None:
    del events[_first(events, _clear_of_faults(events, "sync"))]


def deliver_a_lease_again_after_its_ack(events: list[Event]) -> None:
    acked = {u: e["t1"] for e in events if e["ev"] == "ack" and e["src"] == "lease" and e["res"] == "ok"
             for u in e["uuids"]}
    i = _first(events, lambda e: e["ev"] == "recv" and e["src"] == "lease" and e["res"] == "ok" and e["uuid"] in acked)
    after = acked[events[i]["uuid"]]
    events.append(dict(events[i], r="late", t0=after + 0.01, t1=after + 0.02))


def a_fault_the_cluster_did_not_recover_from(events: list[Event]) -> None:
    i = _first(events, lambda e: e["ev"] == "fault" and e["phase"] == "end")
    events[i] = dict(events[i], converged=False)


@pytest.mark.parametrize(
    ("breakage", "guarantee", "count"),
    [
        (lose_a_durable_read, "durable log (writeToDB)", "lost"),
        (read_a_durable_message_twice, "durable log (writeToDB)", "dup"),
        (reorder_a_durable_reader, "durable log (writeToDB)", "reorder"),
        (take_a_message_twice, "in-memory circular", "dup"),
        (tamper_with_a_payload, "in-memory circular", "phantom"),
        (never_take_a_sync_message, "in-memory sync", "lost"),
        (deliver_a_lease_again_after_its_ack, "at-least-once leases (in-memory)", "dup"),
        (a_fault_the_cluster_did_not_recover_from, "cluster recovers after each fault", "other"),
    ],
)
def test_a_history_broken_on_purpose_is_judged_broken(
    ci_run: tuple[subprocess.CompletedProcess[str], Path], tmp_path: Path,
    breakage: Callable[[list[Event]], None], guarantee: str, count: str,
) -> None:
    result, workdir = ci_run
    if result.returncode != 0:
        pytest.skip("the CI run itself failed (see the test above)")
    events = list(read_history(workdir / "history.jsonl"))
    breakage(events)
    rows = {r["guarantee"]: r for r in summary(Analysis(events))["rows"]}
    assert rows[guarantee]["broken"] and rows[guarantee][count] >= 1, rows[guarantee]
    assert [g for g, r in rows.items() if r["broken"]] == [guarantee]

    broken = tmp_path / "history.jsonl"
    broken.write_text("".join(json.dumps(e) + "\n" for e in events))
    recheck = ipubsub("check", "--recheck", str(broken), timeout=120)
    assert recheck.returncode == 1 and "verdict: a promise is BROKEN" in recheck.stdout, recheck.stdout[-3000:]
