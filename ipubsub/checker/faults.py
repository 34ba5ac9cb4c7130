"""Faults: a plan drawn from a seed, and a runner that applies it to a
:class:`~ipubsub.checker.cluster.LocalCluster`, one fault at a time, writing
each to the history and printing it.

The plan depends on the seed and the options only (never on timing), so a
seed reproduces the same faults in the same order, on the same nodes, for
the same durations.  It starts with every chosen kind once, in a shuffled
order, then draws kinds at random.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from .cluster import LocalCluster, LocalNode, Timings
from .history import History
from .proxy import Mode

__all__ = ["FAULT_KINDS", "Fault", "FaultRunner", "plan_faults"]

#: every kind, in the order the help text lists them
FAULT_KINDS = ("kill", "term", "join", "leave", "partition", "dbpart", "pause", "solo")
#: what each kind does (for --help and the report)
FAULT_HELP = {
    "kill": "SIGKILL a node, restart it",
    "term": "SIGTERM a node (graceful leave), restart it",
    "join": "start a new node",
    "leave": "SIGTERM a node that joined, for good",
    "partition": "cut or blackhole a node from its peers (both ways), then heal",
    "dbpart": "cut or blackhole a node from its database, then heal",
    "pause": "SIGSTOP a node, SIGCONT it",
    "solo": "SIGTERM all but one node, SIGTERM and restart that lone node, restart the others",
}


@dataclass(frozen=True)
class Fault:
    number: int
    kind: str
    node: str  # the target (for join: the new node's name)
    seconds: float  # down, cut or paused for this long
    gap: float  # quiet time before it
    mode: str = ""  # cut | blackhole (partition, dbpart)

    def describe(self) -> str:
        what = {"join": "joins", "leave": "leaves for good"}.get(self.kind, f"{self.seconds:.1f}s")
        mode = f" ({self.mode})" if self.mode else ""
        return f"#{self.number} {self.kind} {self.node}{mode} {what}"


def plan_faults(kinds: list[str], seed: int, size: int, timings: Timings, count: int = 2000) -> list[Fault]:
    """``count`` faults for a cluster that starts with ``size`` nodes named
    ``n1..nSIZE``: every kind of ``kinds`` once (shuffled; a join before a
    leave), then random kinds that are possible at that point."""
    rng = random.Random(seed)
    running = [f"n{i + 1}" for i in range(size)]
    joined: list[str] = []
    made = size
    first = list(kinds)
    rng.shuffle(first)
    if "leave" in first and "join" in first and first.index("leave") < first.index("join"):
        i, j = first.index("leave"), first.index("join")
        first[i], first[j] = first[j], first[i]
    plan: list[Fault] = []
    while len(plan) < count:
        possible = [k for k in kinds if _possible(k, running, joined, size)]
        if not possible:
            break
        kind = first.pop(0) if first else rng.choice(possible)
        if kind not in possible:
            continue
        gap = round(rng.uniform(0.5, 2.0), 2)
        mode = rng.choice(["cut", "blackhole"]) if kind in ("partition", "dbpart") else ""
        if kind == "join":
            made += 1
            node = f"n{made}"
            running.append(node)
            joined.append(node)
            seconds = 0.0
        elif kind == "leave":
            node = rng.choice(joined)
            joined.remove(node)
            running.remove(node)
            seconds = 0.0
        else:
            node = rng.choice(running)
            seconds = round(_duration(kind, rng, timings), 2)
        plan.append(Fault(len(plan) + 1, kind, node, seconds, gap, mode))
    return plan


def _possible(kind: str, running: list[str], joined: list[str], size: int) -> bool:
    if kind == "join":
        return len(running) < size + 2
    if kind == "leave":
        return bool(joined)
    if kind == "partition":
        return len(running) >= 2
    return bool(running)


def _duration(kind: str, rng: random.Random, t: Timings) -> float:
    if kind in ("kill", "term"):
        return rng.uniform(0.3, 2.0)  # down before the restart
    if kind == "partition":
        return rng.uniform(t.dead * 0.5, t.dead * 2.5)  # sometimes short of a death, often past it
    if kind == "dbpart":
        return rng.uniform(2.0, 8.0)
    if kind == "pause":
        return rng.uniform(0.3, t.dead * 2.0)
    return rng.uniform(0.3, 1.0)  # solo: the lone node's time down


class FaultRunner:
    """Applies faults one after the other; after each, waits (bounded) until
    every running node's ring holds exactly the running nodes."""

    def __init__(self, cluster: LocalCluster, history: History, say: Callable[[str], None],
                 vnodes: int, converge_timeout: float = 45.0) -> None:
        self.cluster = cluster
        self.history = history
        self.say = say
        self.vnodes = vnodes
        self.converge_timeout = converge_timeout
        self.applied: list[tuple[Fault, float, float]] = []  # fault, began, recovered (history times)
        self.unrecovered: list[Fault] = []

    async def run(self, plan: list[Fault], until: float, at_least: int) -> None:
        """Apply ``plan`` in order until ``until`` (monotonic), and at least
        its first ``at_least`` faults."""
        for fault in plan:
            if time.monotonic() >= until and fault.number > at_least:
                break
            await asyncio.sleep(fault.gap)
            await self.apply(fault)

    async def apply(self, fault: Fault) -> None:
        h, c = self.history, self.cluster
        node = self._node(fault.node) if fault.kind != "join" else None
        views = await self._views()
        if fault.kind == "partition":  # cut first (naming the clients of open connections takes a moment)
            assert node is not None
            await c.partition([[node], [n for n in c.running if n is not node]], Mode(fault.mode))
        elif fault.kind == "dbpart":
            assert node is not None
            await c.cut_database(node, Mode(fault.mode))
        began = h.now()  # the moment the fault is in effect (or just before a signal)
        h.write({"ev": "fault", "phase": "begin", "t": began, **asdict(fault), "views": views})
        self.say(f"[{began:8.2f}s] {fault.describe()}")
        detail: dict[str, object] = {}
        if fault.kind == "kill":
            assert node is not None
            c.kill(node)
            await asyncio.sleep(fault.seconds)
            await c.start_node(node)
        elif fault.kind == "term":
            assert node is not None
            detail["exit"] = await c.terminate(node)
            await asyncio.sleep(fault.seconds)
            await c.start_node(node)
        elif fault.kind == "join":
            new = await c.add_node()
            detail["joined"] = new.name
        elif fault.kind == "leave":
            assert node is not None
            detail["exit"] = await c.terminate(node)
            node.retired = True
        elif fault.kind == "partition":
            await asyncio.sleep(fault.seconds)
            h.write({"ev": "fault", "phase": "heal", "t": h.now(), "number": fault.number, "views": await self._views()})
            c.heal_partition()
        elif fault.kind == "dbpart":
            assert node is not None
            await asyncio.sleep(fault.seconds)
            c.heal_database(node)
        elif fault.kind == "pause":
            assert node is not None
            c.pause(node)
            await asyncio.sleep(fault.seconds)
            c.resume(node)
        elif fault.kind == "solo":
            assert node is not None
            detail["exits"] = await self._solo(node, fault.seconds)
        ended = h.now()
        converged = await c.wait_converged(self.converge_timeout)
        recovered = h.now()
        h.write({"ev": "fault", "phase": "end", "t": ended, "recovered": recovered, "number": fault.number,
                 "kind": fault.kind, "node": fault.node, "converged": converged, **detail})
        h.flush()
        if not converged:
            self.unrecovered.append(fault)
            self.say(f"[{recovered:8.2f}s] !! the cluster did not recover from #{fault.number} "
                     f"within {self.converge_timeout:.0f}s")
        self.applied.append((fault, began, recovered))

    async def _solo(self, lone: LocalNode, down: float) -> dict[str, int | None]:
        """Leave one node alone, restart it (it must spill and restore its
        buffers), then bring the others back."""
        c = self.cluster
        others = [n for n in c.running if n is not lone]
        exits: dict[str, int | None] = {}
        for other in others:  # one at a time: each hands its buffers to the ones still there
            exits[other.name] = await c.terminate(other)
        await c.wait_converged(self.converge_timeout)
        exits[lone.name] = await c.terminate(lone)
        await asyncio.sleep(down)
        await c.start_node(lone)
        await c.wait_converged(self.converge_timeout)
        await asyncio.gather(*(c.start_node(other) for other in others))
        return exits

    def _node(self, name: str) -> LocalNode:
        for node in self.cluster.nodes:
            if node.name == name:
                return node
        raise KeyError(f"the plan names {name}, which this cluster does not have")

    async def _views(self) -> dict[str, list[str]]:
        """Each running, unpaused node's ring members now."""
        nodes = [n for n in self.cluster.running if not n.paused]
        views = await asyncio.gather(*(self.cluster.ring_of(n) for n in nodes))
        return {n.name: v for n, v in zip(nodes, views) if v is not None}
