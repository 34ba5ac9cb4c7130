"""One checker run: start the cluster, run the workload under the fault plan,
drain, judge the history, print the verdict."""

from __future__ import annotations

import asyncio
import json
import random
import resource
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import __version__
from .analysis import Analysis
from .backends import Backend
from .cluster import LocalCluster, Timings
from .faults import FAULT_KINDS, FaultRunner, plan_faults
from .history import History, read_history
from .monitor import RingMonitor
from .report import render, summary
from .workload import Shape, Workload

__all__ = ["CheckOptions", "check_history", "run_check", "usable_faults"]

Say = Callable[[str], None]

EXIT_KEPT, EXIT_BROKEN, EXIT_USAGE, EXIT_HARNESS = 0, 1, 2, 3


@dataclass
class CheckOptions:
    nodes: int = 3
    backend: str = "postgres"
    db_url: str | None = None
    duration: float = 60.0
    seed: int | None = None
    faults: list[str] = field(default_factory=lambda: list(FAULT_KINDS))
    rate: float = 100.0
    fast: bool = False
    workdir: Path | None = None
    history: Path | None = None
    keep: bool = False
    command: str = ""


def usable_faults(kinds: list[str], backend: Backend) -> tuple[list[str], list[str]]:
    """The kinds this backend allows, and notes on those it does not."""
    notes = []
    usable = list(kinds)
    if "dbpart" in usable and backend.target is None:
        usable.remove("dbpart")
        notes.append(f"dbpart skipped: {backend.name} has no network path to the database")
    if "solo" in usable and not backend.durable:
        usable.remove("solo")
        notes.append("solo skipped: a lone node spills its buffers only to a durable backend")
    return usable, notes


async def run_check(opts: CheckOptions, say: Say) -> int:
    """Run one check; return the exit code (0 every promise kept, 1 one
    broken, 2 bad options or database unreachable, 3 the cluster failed)."""
    backend = Backend.parse(opts.backend, opts.db_url)
    unreachable = await backend.reachable()
    if unreachable:
        say(f"ipubsub check: {unreachable}")
        return EXIT_USAGE
    seed = opts.seed if opts.seed is not None else random.randrange(1, 1_000_000)
    kinds, notes = usable_faults(opts.faults, backend)
    timings = Timings.fast() if opts.fast else Timings()
    run_id = f"k{seed}x{secrets.token_hex(3)}"  # names streams and uuids; unique even for a repeated seed
    workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="ipubsub-check-"))
    workdir.mkdir(parents=True, exist_ok=True)
    history_path = opts.history or workdir / "history.jsonl"
    plan = plan_faults(kinds, seed, opts.nodes, timings) if kinds else []
    say(f"ipubsub check {__version__}: seed {seed}, run {run_id}, {opts.nodes} nodes, {backend.name}, "
        f"{opts.duration:.0f}s of faults ({', '.join(kinds) or 'none'}), {opts.rate:.0f} msg/s target")
    say(f"reproduce: {opts.command or 'ipubsub check'} --seed {seed}")
    for note in notes:
        say(f"note: {note}")
    say(f"workdir {workdir} (node configs and logs), history {history_path}")
    history = History(history_path)
    cluster = LocalCluster(workdir, backend, opts.nodes, timings, f"check-{run_id}")
    workload: Workload | None = None
    try:
        try:
            await cluster.start()
        except RuntimeError as exc:
            say(f"ipubsub check: the cluster did not start: {exc}")
            return EXIT_HARNESS
        history.write({"ev": "meta", "run": run_id, "seed": seed, "version": __version__, "backend": backend.name,
                       "nodes": opts.nodes, "duration": opts.duration, "faults": kinds, "rate": opts.rate,
                       "timings": vars(timings), "vnodes": 160, "command": opts.command,
                       "wall0": history.wall0})
        monitor = RingMonitor(cluster, history)
        monitor.start()
        workload = Workload(run_id, Shape(rate=opts.rate), history, lambda: _targets(cluster), seed, backend.durable)
        await workload.start()
        runner = FaultRunner(cluster, history, say, vnodes=160)
        progress = asyncio.create_task(_progress(workload, history, say), name="check-progress")
        try:
            await asyncio.sleep(2.0)  # traffic before the first fault
            history.write({"ev": "phase", "name": "faults", "t": history.now()})
            until = time.monotonic() + opts.duration
            await runner.run(plan, until, at_least=len(kinds))
            await asyncio.sleep(max(0.0, until - time.monotonic()))
            history.write({"ev": "phase", "name": "quiet", "t": history.now()})
            await cluster.wait_converged(30.0)
            await asyncio.sleep(2.0)  # traffic after the last fault
            await workload.stop_writers(timeout=workload.shape.send_deadline + 20)
            history.write({"ev": "phase", "name": "drain", "t": history.now()})
            complete = await workload.drain(timeout=60.0)
            history.write({"ev": "phase", "name": "drained", "t": history.now(), "complete": complete})
        finally:
            progress.cancel()
            await asyncio.gather(progress, return_exceptions=True)
            await monitor.close()
        say(_faults_line(runner))
    finally:
        if workload is not None:
            await workload.close()
        await cluster.close()
        history.close()
    code = check_history(history_path, say, workdir / "verdict.json")
    say(f"reproduce: {opts.command or 'ipubsub check'} --seed {seed}   (re-check: ipubsub check --recheck {history_path})")
    if opts.workdir is None and not opts.keep and code == EXIT_KEPT:
        shutil.rmtree(workdir, ignore_errors=True)
    return code


def check_history(path: Path, say: Say, verdict: Path | None = None) -> int:
    """Judge a history file and print the verdict; 0 kept, 1 broken."""
    analysis = Analysis(read_history(path))
    say("")
    render(analysis, say)
    if verdict is not None:
        verdict.write_text(json.dumps(summary(analysis), indent=2))
    say(f"\nverdict: {'a promise is BROKEN' if analysis.broken else 'every promise kept'}")
    return EXIT_BROKEN if analysis.broken else EXIT_KEPT


def _targets(cluster: LocalCluster) -> list[tuple[str, str]]:
    """Where a client may send a call: every node that has been started and
    has not left for good (a stopped one refuses the connection)."""
    return [(n.name, n.url) for n in cluster.nodes if n.url and not n.retired]


def _faults_line(runner: FaultRunner) -> str:
    kinds: dict[str, int] = {}
    for fault, _, _ in runner.applied:
        kinds[fault.kind] = kinds.get(fault.kind, 0) + 1
    return "faults applied: " + (", ".join(f"{k} ×{v}" for k, v in kinds.items()) or "none")


async def _progress(workload: Workload, history: History, say: Say) -> None:
    while True:
        await asyncio.sleep(15.0)
        acked = ", ".join(f"{m} {n}" for m, n in workload.acked.items())
        usage = resource.getrusage(resource.RUSAGE_SELF)
        say(f"[{history.now():8.2f}s] acknowledged: {acked}; received {workload.received}; "
            f"checker CPU {usage.ru_utime + usage.ru_stime:.1f}s")
