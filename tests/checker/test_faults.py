"""The fault plan: reproducible from its seed, every chosen kind early, and
only faults possible at their point of the run."""

from __future__ import annotations

from ipubsub.checker.cluster import Timings
from ipubsub.checker.faults import FAULT_KINDS, plan_faults


def test_a_seed_reproduces_the_plan() -> None:
    kinds = list(FAULT_KINDS)
    assert plan_faults(kinds, 7, 3, Timings()) == plan_faults(kinds, 7, 3, Timings())
    assert plan_faults(kinds, 7, 3, Timings()) != plan_faults(kinds, 8, 3, Timings())


def test_every_kind_comes_first_and_a_join_before_any_leave() -> None:
    for seed in range(50):
        plan = plan_faults(list(FAULT_KINDS), seed, 3, Timings())
        first = [f.kind for f in plan[: len(FAULT_KINDS)]]
        assert sorted(first) == sorted(FAULT_KINDS), (seed, first)
        assert first.index("join") < first.index("leave")


def test_only_possible_faults() -> None:
    plan = plan_faults(list(FAULT_KINDS), 3, 3, Timings(), count=500)
    running = {"n1", "n2", "n3"}
    joined: set[str] = set()
    for fault in plan:
        if fault.kind == "join":
            assert fault.node not in running
            running.add(fault.node)
            joined.add(fault.node)
        elif fault.kind == "leave":
            assert fault.node in joined  # only a node that joined leaves for good
            joined.discard(fault.node)
            running.discard(fault.node)
        else:
            assert fault.node in running
        assert 3 <= len(running) <= 5
        if fault.kind in ("partition", "dbpart"):
            assert fault.mode in ("cut", "blackhole")
