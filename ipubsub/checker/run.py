"""One checker run: start the cluster, run the workload under the fault plan,
drain, judge the history, print the verdict."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import resource
import secrets
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from .. import __version__
from ..protocol import ACK_PATH, HEALTH_PATH, OPENAPI_PATH, RECEIVE_PATH, SEND_PATH
from .analysis import Analysis
from .backends import Backend
from .cluster import LocalCluster, Timings
from .faults import FAULT_KINDS, FaultRunner, plan_faults
from .history import History, read_history
from .monitor import RingMonitor, get_json
from .report import render, summary
from .workload import Shape, Workload

__all__ = ["CheckOptions", "check_history", "run_check", "usable_faults"]

Say = Callable[[str], None]

EXIT_KEPT, EXIT_BROKEN, EXIT_USAGE, EXIT_HARNESS = 0, 1, 2, 3
VNODES = 160  # hash_ring.virtual_nodes of the generated configs
#: parts of the workload ``--without`` may leave out
WORKLOAD_PARTS = ("leases", "histories", "abandoners")


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
    attach: list[str] = field(default_factory=list)  # URLs of running nodes: no cluster, no faults
    without: list[str] = field(default_factory=list)  # parts of the workload left out (WORKLOAD_PARTS)
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
    if opts.attach:
        return await _run_attached(opts, say)
    backend = Backend.parse(opts.backend, opts.db_url)
    unreachable = await backend.reachable()
    if unreachable:
        say(f"ipubsub check: {unreachable}")
        return EXIT_USAGE
    seed = opts.seed if opts.seed is not None else random.randrange(1, 1_000_000)
    kinds, notes = usable_faults(opts.faults, backend)
    timings = Timings.fast() if opts.fast else Timings()
    plan = plan_faults(kinds, seed, opts.nodes, timings) if kinds else []
    run = _Run(opts, seed, say)
    run.announce(f"{opts.nodes} nodes, {backend.name}, {opts.duration:.0f}s of faults ({', '.join(kinds) or 'none'})",
                 notes)
    # a node's path to its database goes through a proxy only when a fault will cut it
    cluster = LocalCluster(run.workdir, backend, opts.nodes, timings, f"check-{run.run_id}", "dbpart" in kinds)
    try:
        try:
            await cluster.start()
        except RuntimeError as exc:
            say(f"ipubsub check: the cluster did not start: {exc}")
            return EXIT_HARNESS
        runner = FaultRunner(cluster, run.history, say, vnodes=VNODES)

        async def faults() -> None:
            until = time.monotonic() + opts.duration
            await runner.run(plan, until, at_least=len(kinds))
            await asyncio.sleep(max(0.0, until - time.monotonic()))

        run.meta(backend.name, kinds, vars(timings))
        await run.exercise(lambda: _targets(cluster), cluster.watched, backend.durable, faults(),
                           lambda: cluster.wait_converged(30.0))
        say(_faults_line(runner))
    finally:
        await cluster.close()
        run.history.close()
    return run.judge()


async def _run_attached(opts: CheckOptions, say: Say) -> int:
    """The workload and the verdict against nodes someone else runs: no
    faults (they need process control), nothing started or stopped."""
    urls = [u.rstrip("/") for u in opts.attach]
    targets = [(f"u{i + 1}", url) for i, url in enumerate(urls)]
    async with aiohttp.ClientSession() as http:
        health = await asyncio.gather(*(get_json(http, url + HEALTH_PATH, 5.0) for url in urls))
    down = [url for url, body in zip(urls, health) if body is None]
    if down:
        say(f"ipubsub check: no healthy answer from {', '.join(down)}")
        return EXIT_USAGE
    backends = {str((body or {}).get("storage", {}).get("backend", "none")) for body in health}
    durable = backends != {"none"}
    seed = opts.seed if opts.seed is not None else random.randrange(1, 1_000_000)
    run = _Run(opts, seed, say)
    run.announce(f"attached to {', '.join(urls)} (storage: {', '.join(sorted(backends))}), "
                 f"{opts.duration:.0f}s, no faults", [])
    try:
        run.meta(",".join(sorted(backends)), [], {})
        await run.exercise(lambda: targets, lambda: targets, durable, asyncio.sleep(opts.duration),
                           lambda: asyncio.sleep(0))
    finally:
        run.history.close()
    return run.judge()


class _Run:
    """What every run has: an id, a work directory, a history, the
    workload's phases and the verdict."""

    def __init__(self, opts: CheckOptions, seed: int, say: Say) -> None:
        self.opts = opts
        self.seed = seed
        self.say = say
        self.run_id = f"k{seed}x{secrets.token_hex(3)}"  # names streams and uuids; unique for a repeated seed
        self.workdir = opts.workdir or Path(tempfile.mkdtemp(prefix="ipubsub-check-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.history_path = opts.history or self.workdir / "history.jsonl"
        self.history = History(self.history_path)

    def announce(self, what: str, notes: list[str]) -> None:
        self.say(f"ipubsub check {__version__}: seed {self.seed}, run {self.run_id}, {what}, "
                 f"{self.opts.rate:.0f} msg/s target")
        self.say(f"reproduce: {self.opts.command or 'ipubsub check'} --seed {self.seed}")
        for note in notes:
            self.say(f"note: {note}")
        self.say(f"workdir {self.workdir} (node configs and logs), history {self.history_path}")

    def meta(self, backend: str, kinds: list[str], timings: dict[str, float]) -> None:
        o = self.opts
        self.history.write({"ev": "meta", "run": self.run_id, "seed": self.seed, "version": __version__,
                            "backend": backend, "nodes": o.nodes, "attach": o.attach, "duration": o.duration,
                            "faults": kinds, "rate": o.rate, "timings": timings, "vnodes": VNODES,
                            "command": o.command, "wall0": self.history.wall0})

    async def exercise(
        self, targets: Callable[[], list[tuple[str, str]]], watched: Callable[[], list[tuple[str, str]]],
        durable: bool, during: Awaitable[None], settle: Callable[[], Awaitable[object]],
    ) -> None:
        """Traffic before, during (``during``: the faults) and after; then
        stop the writers and drain."""
        h = self.history
        url = targets()[0][1]
        capabilities = await _capabilities(url)
        leases = "leases" not in self.opts.without and ACK_PATH in capabilities
        batches = "maxMessages" in capabilities
        histories = "histories" not in self.opts.without and await _keeps_histories(url, self.run_id)
        if "leases" not in self.opts.without and not leases:
            self.say("note: these nodes have no at-least-once delivery (leases, consumer groups): not checked")
        if "histories" not in self.opts.without and not histories:
            self.say("note: these nodes keep no fan-out histories: not checked")
        monitor = RingMonitor(watched, h)
        monitor.start()
        shape = Shape.for_rate(self.opts.rate)
        if "abandoners" in self.opts.without:
            shape = dataclasses.replace(shape, abandoners=0)
        workload = Workload(self.run_id, shape, h, targets, self.seed, durable, leases, histories, batches)
        progress: asyncio.Task[None] | None = None
        try:
            await workload.start()
            progress = asyncio.create_task(_progress(workload, h, self.say), name="check-progress")
            await asyncio.sleep(2.0)  # traffic before the first fault
            h.write({"ev": "phase", "name": "faults", "t": h.now()})
            await during
            h.write({"ev": "phase", "name": "quiet", "t": h.now()})
            await settle()
            await asyncio.sleep(2.0)  # traffic after the last fault
            await workload.stop_writers(timeout=workload.shape.send_deadline + 20)
            h.write({"ev": "phase", "name": "drain", "t": h.now()})
            complete = await workload.drain(timeout=max(60.0, self.opts.duration / 5))  # readers catch up
            h.write({"ev": "phase", "name": "drained", "t": h.now(), "complete": complete})
        finally:
            if progress is not None:
                progress.cancel()
                await asyncio.gather(progress, return_exceptions=True)
            await monitor.close()
            await workload.close()

    def judge(self) -> int:
        code = check_history(self.history_path, self.say, self.workdir / "verdict.json")
        self.say(f"reproduce: {self.opts.command or 'ipubsub check'} --seed {self.seed}   "
                 f"(re-check: ipubsub check --recheck {self.history_path})")
        if self.opts.workdir is None and not self.opts.keep and code == EXIT_KEPT:
            shutil.rmtree(self.workdir, ignore_errors=True)
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


async def _capabilities(url: str) -> str:
    """The OpenAPI document of the node at ``url``, as text: the checker
    exercises what the nodes it checks can do (an extension is there when
    its path is)."""
    async with aiohttp.ClientSession() as http:
        document = await get_json(http, url + OPENAPI_PATH, 5.0)
    return json.dumps(document or {})


async def _keeps_histories(url: str, run_id: str) -> bool:
    """Whether the node at ``url`` keeps fan-out histories: a message sent
    with ``historySize`` to a stream of this run is read back with
    ``fromHistory`` (a node without them ignores both: its plain receive
    answers one message, not a list)."""
    stream = f"{run_id}-probe"
    body = json.dumps({"streamId": stream, "message": 0, "historySize": 1, "historyTTLSeconds": 60})
    async with aiohttp.ClientSession() as http:
        try:
            async with http.post(url + SEND_PATH, data=body, timeout=aiohttp.ClientTimeout(total=5)) as resp:
                if resp.status != 200:
                    return False
        except (TimeoutError, aiohttp.ClientError):
            return False
        read = await get_json(http, f"{url}{RECEIVE_PATH}?streamId={stream}&fromHistory=true&timeoutSeconds=0", 5.0)
    return isinstance((read or {}).get("messages"), list)


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
