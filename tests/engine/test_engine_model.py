"""Property test: the engine against an explicit reference model.

Hypothesis generates sequences of every engine operation — circular,
blocking and sync sends, awaiting and parked receives of one message or a
batch (with and without poll ids), timers firing, client disconnects and
poll cancellations (including the race where a waiter was served in the same
loop step its caller left), hand-off attach and detach, requeues and
give-backs of delivered messages, idle sweeps and shutdown release — on two
streams, with byte bounds small enough to drop and refuse.
After every operation the test compares with :mod:`tests.engine.reference`:
the answer of every call and of every waiter, each stream's buffer in order,
each stream's size, which streams exist, and every counter.  At the end a
ledger that does not use the model checks exactly-once: every accepted
message was delivered once, handed out once, or counted as dropped.

Time is the event loop's own (a loop whose clock only moves when the test
says so), shared with the engine's clock: nothing sleeps.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, NamedTuple

import pytest
from hypothesis import HealthCheck, Phase, given, note, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from ipubsub.engine import Engine, Message, Parked, Released
from ipubsub.errors import BufferFull, ReceiveTimeout, SendTimeout, StreamReleased

from .reference import COUNTERS, PENDING, RefEngine, RefMessage, Waiter

pytestmark = pytest.mark.timeout(300)

STREAMS = ("a", "b")
IDLE_SECONDS = 2.0


class ManualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only in :meth:`advance`.  Timers due
    at the current time run on the next iteration; nothing ever blocks
    because the test's own task is always ready while it drives the loop."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def has_ready(self) -> bool:
        return bool(self._ready)  # type: ignore[attr-defined]


class LoopClock:
    """The engine's clock, reading the loop's time."""

    def __init__(self, loop: ManualTimeLoop) -> None:
        self._loop = loop

    def monotonic(self) -> float:
        return self._loop.time()

    def time_us(self) -> int:
        return int(self._loop.time() * 1_000_000)


class Op(NamedTuple):
    kind: str
    stream: str = ""  # "" for operations not about one stream
    x: Any = None
    y: Any = None
    z: Any = None
    cancel: int | None = None  # cancel the k-th pending waiter right after the operation

    def __str__(self) -> str:
        args = [repr(v) for v in (self.stream or None, self.x, self.y, self.z) if v is not None]
        text = f"{self.kind}({', '.join(args)})"
        return text + (f" then cancel pending waiter #{self.cancel}" if self.cancel is not None else "")


def describe(operations: list[Op]) -> str:
    """One line per operation, runs of the same one counted."""
    lines: list[str] = []
    count = 0
    for i, op in enumerate(operations):
        count += 1
        if i + 1 == len(operations) or operations[i + 1] != op:
            lines.append(f"  {op}" + (f"  x{count}" if count > 1 else ""))
            count = 0
    return "\n".join(lines)


def event(text: str) -> None:
    if currently_in_test_context():
        hypothesis_event(text)


class ParkProbe:
    """A parked receive and what its ``deliver`` callback got."""

    def __init__(self) -> None:
        self.got: list[Any] = []
        self.parked: Parked | None = None

    def __call__(self, outcome: Any) -> None:
        self.got.append(outcome)

    def done(self) -> bool:
        return bool(self.got)

    def outcome(self) -> tuple:
        assert len(self.got) == 1, f"deliver called {len(self.got)} times"
        return value_of(self.got[0])


def value_of(result: Any) -> tuple:
    if isinstance(result, Message):
        return ("msg", result.uuid)
    if isinstance(result, list):
        return ("msgs", tuple(m.uuid for m in result))
    if result is None:
        return ("timeout",)
    if isinstance(result, Released):
        return ("released",)
    raise AssertionError(f"unexpected outcome {result!r}")


def outcome_of(task: asyncio.Task[Any] | ParkProbe) -> tuple:
    if isinstance(task, ParkProbe):
        return task.outcome()
    if task.cancelled():
        return ("cancelled",)
    exc = task.exception()
    if exc is None:
        result = task.result()
        return value_of(result) if result is not None else ("ok",)
    kinds = {ReceiveTimeout: "timeout", SendTimeout: "timeout", StreamReleased: "released", BufferFull: "full"}
    for cls, name in kinds.items():
        if isinstance(exc, cls):
            return (name,)
    raise exc


def call(fn: Any, *args: Any) -> tuple:
    """The outcome of a synchronous engine call."""
    try:
        fn(*args)
    except SendTimeout:
        return ("timeout",)
    except BufferFull:
        return ("full",)
    return ("ok",)


class Run:
    def __init__(self, loop: ManualTimeLoop, max_stream_bytes: int, max_buffered_bytes: int) -> None:
        self.loop = loop
        self.engine = Engine(
            clock=LoopClock(loop),
            idle_seconds=IDLE_SECONDS,
            max_stream_bytes=max_stream_bytes,
            max_buffered_bytes=max_buffered_bytes,
        )
        self.model = RefEngine(
            max_stream_bytes=max_stream_bytes, max_buffered_bytes=max_buffered_bytes, idle_seconds=IDLE_SECONDS
        )
        self.tracked: list[tuple[asyncio.Task[Any] | ParkProbe, Waiter]] = []
        self.objects: dict[str, Message] = {}
        self.serial = 0
        self.polls: list[str] = []
        # The ledger: what clients were seen to get, independent of the model.
        self.held: list[tuple[str, str]] = []  # (stream, id) delivered and not given back
        self.handed_out: list[str] = []
        self.accepted: set[str] = set()
        self.senders: list[Waiter] = []

    # -- plumbing ----------------------------------------------------------------

    def new_message(self, big: bool) -> tuple[Message, RefMessage]:
        self.serial += 1
        mid = f"m{self.serial:04d}"
        payload = b"x" * (25 if big else 5)
        msg = Message(mid, payload, self.serial)
        ref = RefMessage(mid, msg.size)
        self.objects[mid] = msg
        self.model.messages[mid] = ref
        return msg, ref

    def pending(self) -> list[Waiter]:
        return [w for _, w in self.tracked if w.outcome is PENDING]

    def track(self, task: asyncio.Task[Any] | ParkProbe, w: Waiter) -> None:
        self.tracked.append((task, w))
        if w.kind == "send":
            self.senders.append(w)

    async def drain(self) -> None:
        """Run the loop until nothing is ready (timers not yet due stay)."""
        for _ in range(1000):
            await asyncio.sleep(0)
            if not self.loop.has_ready():
                return
        raise AssertionError("the event loop never became quiet")

    def check(self) -> None:
        model, engine = self.model, self.engine
        still = []
        for task, w in self.tracked:
            if task.done():
                got = outcome_of(task)
                assert got == w.outcome, f"waiter {w.wid} ({w.kind} on {w.stream}): engine {got}, model {w.outcome}"
                if got[0] == "msg":
                    self.held.append((w.stream, got[1]))
                elif got[0] == "msgs":
                    self.held.extend((w.stream, mid) for mid in got[1])
                    if len(got[1]) > 1:
                        event(f"a {w.kind} batch got several messages")
            else:
                assert w.outcome is PENDING, f"waiter {w.wid}: engine still waits, model {w.outcome}"
                still.append((task, w))
        self.tracked = still
        assert sorted(engine.stream_ids()) == sorted(model.streams)
        for sid, ref in model.streams.items():
            assert [m.uuid for m in engine.buffered(sid)] == [m.id for m in ref.buf], sid
            assert engine.capacity(sid) == ref.cap, sid
        stats = {name: getattr(engine.stats, name) for name in COUNTERS}
        assert stats == model.stats

    def note_coverage(self) -> None:
        """Tell hypothesis which behaviours this example reached (shown by
        ``--hypothesis-show-statistics``)."""
        stats = self.engine.stats
        for name in COUNTERS:
            if name.endswith("_total") and getattr(stats, name):
                event(f"reached {name}")

    # -- operations ----------------------------------------------------------------

    async def step(self, op: Op) -> None:
        model, engine = self.model, self.engine
        was_idle = model.idle_map()
        pending = self.pending()
        target = pending[op.cancel % len(pending)] if op.cancel is not None and pending else None
        started_task = False
        sid = op.stream
        if op.kind in ("send", "recv", "park", "attach"):
            model.touch(sid)
        if op.kind == "send":
            capacity, timeout, big = op.x, op.y, op.z
            msg, ref = self.new_message(big)
            if timeout == 0:
                got = call(engine.send_nowait, sid, msg, capacity)
                if got == ("full",):
                    event("refused for the node byte budget")
                assert got == model.send_nowait(sid, ref, capacity), op
                if got == ("ok",):
                    self.accepted.add(ref.id)
            else:
                task = asyncio.ensure_future(engine.send(sid, msg, capacity, timeout))
                self.track(task, model.send(sid, ref, capacity, timeout))
                started_task = True
        elif op.kind in ("recv", "park"):
            timeout, poll, limit = op.x, op.y, op.z
            poll_id = None
            if poll == "new":
                poll_id = f"p{len(self.polls)}"
                self.polls.append(poll_id)
            elif poll == "ghost" and model.cancelled_polls:
                poll_id = sorted(model.cancelled_polls)[0]
            waiter = model.receive(sid, timeout, poll_id, limit, op.kind)
            if op.kind == "park":
                probe = ParkProbe()
                if limit is None:
                    probe.parked = engine.park(sid, timeout, probe, poll_id=poll_id)
                else:
                    probe.parked = engine.park_many(sid, timeout, limit, probe, poll_id=poll_id)
                assert (probe.parked is None) == (waiter.outcome is not PENDING), "park answered at once or not"
                self.track(probe, waiter)
            else:
                if limit is None:
                    task = asyncio.ensure_future(engine.receive(sid, timeout, poll_id))
                else:
                    task = asyncio.ensure_future(engine.receive_many(sid, timeout, limit, poll_id))
                self.track(task, waiter)
                started_task = True
        elif op.kind == "give_back":
            if not self.held:
                return
            first = op.x % len(self.held)
            sid = self.held[first][0]
            picked = [i for i in range(first, len(self.held)) if self.held[i][0] == sid][: op.y]
            mids = [self.held[i][1] for i in picked]
            for i in reversed(picked):
                del self.held[i]
            model.touch(sid)
            engine.give_back(sid, [self.objects[mid] for mid in mids])
            model.give_back(sid, [model.messages[mid] for mid in mids])
        elif op.kind == "advance":
            self.loop.advance(op.x)
            model.now += op.x
            for ref_stream_id, ref_stream in model.streams.items():
                if any(w.deadline <= model.now for w in ref_stream.receivers + ref_stream.senders):
                    model.touch(ref_stream_id)
            model.expire()
        elif op.kind == "attach":
            capacity, n = op.x, op.y
            pairs = [self.new_message(False) for _ in range(n)]
            engine.attach(sid, capacity, [m for m, _ in pairs])
            model.attach(sid, capacity, [r for _, r in pairs])
            self.accepted.update(r.id for _, r in pairs)
        elif op.kind == "detach":
            model.touch(sid)
            got = engine.detach(sid, "moved")
            want = model.detach(sid)
            assert (None if got is None else (got[0], [m.uuid for m in got[1]])) == want
            if got is not None:
                self.handed_out.extend(m.uuid for m in got[1])
        elif op.kind == "requeue":
            if not self.held:
                return
            index, fresh = op.x % len(self.held), op.y
            sid, mid = self.held.pop(index)
            model.touch(sid)
            msg = self.objects[mid]
            if fresh:  # as decoded from a peer's /internal/v1/requeue
                msg = self.objects[mid] = Message(msg.uuid, msg.payload, msg.timestamp_us)
                model.messages[mid].taken = 0
            engine.requeue(sid, msg)
            model.give_back(sid, [model.messages[mid]])
        elif op.kind == "cancel_poll":
            candidates = self.polls + ["ghost-" + str(op.x)]
            poll_id = candidates[op.x % len(candidates)]
            waiter = model.polls.get(poll_id)
            if waiter is not None:
                model.touch(waiter.stream)
            assert engine.cancel_poll(poll_id, "cancelled") == model.cancel_poll(poll_id)
        elif op.kind == "sweep":
            before = set(engine.stream_ids())
            count = engine.sweep()
            evicted = before - set(engine.stream_ids())
            assert count == len(evicted)
            model.sweep(evicted)
        elif op.kind == "release":
            for ref_stream_id, ref_stream in model.streams.items():
                if ref_stream.receivers or ref_stream.senders:
                    model.touch(ref_stream_id)
            assert engine.release_waiters("stopping") == model.release_waiters()
        if target is not None and target.outcome[0] not in ("pending", "cancelled"):
            event(f"race: cancelled a {target.kind} waiter already {target.outcome[0]}")
        if target is not None:
            if started_task:
                await asyncio.sleep(0)  # the new call's first step runs; the target's task has not
            handle = next(t for t, w in self.tracked if w is target)
            by_poll_id = op.cancel % 2 == 1 and target.poll_id is not None  # the forwarding node cancels
            model.touch(target.stream)
            if by_poll_id:
                assert target.poll_id is not None
                assert engine.cancel_poll(target.poll_id, "cancelled") == model.cancel(target, by_poll_id=True)
            elif isinstance(handle, ParkProbe):
                assert handle.parked is not None
                assert handle.parked.end("client left") == model.cancel(target)
            else:
                handle.cancel()
                model.cancel(target)
        await self.drain()
        model.answer()
        model.tidy(was_idle)
        self.check()

    async def finish(self) -> None:
        """End every waiter, empty every stream, then check the ledger."""
        self.note_coverage()
        await self.step(Op("advance", x=1000.0))
        for sid in list(self.model.streams):
            while self.model.streams.get(sid) is not None and self.model.streams[sid].buf:
                await self.step(Op("recv", sid, 0, None))
        for w in self.senders:
            if w.admitted:
                self.accepted.add(w.msg.id)  # type: ignore[union-attr]
        seen = [mid for _, mid in self.held] + self.handed_out
        assert len(seen) == len(set(seen)), "a message reached two receivers"
        assert set(seen) <= self.accepted, "a message nobody accepted was delivered"
        assert len(self.accepted - set(seen)) == self.engine.stats.dropped_total, "a message was lost"
        stats = self.engine.stats
        left = (stats.buffered_messages, stats.buffered_bytes, stats.waiting_receivers, stats.blocked_senders)
        assert left == (0, 0, 0, 0)


# Operations are drawn as small integer tuples and decoded here: cheap to
# generate and to shrink (hypothesis shrinks towards 0, so code 0 of each
# field is the simplest choice: a sweep, no cancellation).  Sends and polls are the common case: the
# table repeats them so that they are drawn more often.
KINDS = ("sweep",) * 4 + ("send",) * 8 + ("recv",) * 6 + ("park",) * 3 + ("advance",) * 4 + (
    "cancel", "cancel", "attach", "attach", "requeue", "give_back", "give_back", "detach", "cancel_poll", "release"
)


def pick(options: tuple[Any, ...], code: int) -> Any:
    return options[code % len(options)]


def decode(raw: tuple[int, int, int, int, int, int]) -> Op:
    kind_code, stream_code, a, b, c, k = raw
    kind = pick(KINDS, kind_code)
    sid = pick(STREAMS, stream_code)
    cancel = None if k < 8 else k - 8  # half the operations also cancel a waiter right after
    if kind == "send":
        return Op(kind, sid, pick((2, 0, 1, 3, 40), a), pick((0, 2, 0, 5), b), bool(c % 2), cancel)
    if kind == "recv":  # an awaiting receive, or receive_many with a limit
        return Op(kind, sid, pick((2, 0, 5), a), pick((None, None, "new", "ghost"), b), pick((None, 2), c), cancel)
    if kind == "park":  # park, or park_many with a limit
        return Op(kind, sid, pick((2, 0, 5), a), pick((None, "new", None, "ghost"), b), pick((None, 3), c), cancel)
    if kind == "give_back":  # up to 3 held messages of one stream, from the k-th held one on
        return Op(kind, "", a, 1 + b % 3, None, cancel)
    if kind == "advance":
        return Op(kind, x=pick((1.0, 2.0, 5.0), a))
    if kind == "sweep":
        return Op(kind)
    if kind == "cancel":
        return Op(kind, cancel=k % 8)
    if kind == "attach":
        return Op(kind, sid, pick((None, 2, 40), a), b % 4, None, cancel)
    if kind == "requeue":  # the stream is the held message's own
        return Op(kind, "", a, bool(b % 2), None, cancel)
    if kind == "cancel_poll":
        return Op(kind, sid, a, None, None, cancel)
    if kind == "release":
        return Op(kind, cancel=cancel)
    return Op(kind, sid, cancel=cancel)  # detach


raw_op = st.tuples(
    st.integers(0, len(KINDS) - 1),
    st.integers(0, 1),
    st.integers(0, 15),
    st.integers(0, 15),
    st.integers(0, 1),
    st.integers(0, 15),
)


def run_ops(operations: list[Op], max_stream_bytes: int, max_buffered_bytes: int) -> None:
    loop = ManualTimeLoop()

    async def scenario() -> None:
        run = Run(loop, max_stream_bytes, max_buffered_bytes)
        for op in operations:
            await run.step(op)
        await run.finish()

    try:
        loop.run_until_complete(scenario())
    finally:
        loop.close()


# Under mutation testing (mutmut sets MUTANT_UNDER_TEST) a failure only has
# to be found, not shrunk to a minimal example.
PHASES = (
    (Phase.explicit, Phase.reuse, Phase.generate)
    if os.environ.get("MUTANT_UNDER_TEST")
    else (Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink)
)


@settings(
    max_examples=int(os.environ.get("IPUBSUB_MODEL_EXAMPLES", "200")),
    deadline=None,
    phases=PHASES,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(raw_op, min_size=10, max_size=80), st.sampled_from([10_000, 60]), st.sampled_from([100_000, 45]))
def test_engine_matches_the_reference_model(
    raw: list[tuple[int, int, int, int, int, int]], max_stream_bytes: int, max_buffered_bytes: int
) -> None:
    operations = [decode(r) for r in raw]
    note("operations:\n" + describe(operations))
    run_ops(operations, max_stream_bytes, max_buffered_bytes)


def test_a_put_back_race_example() -> None:
    """A fixed scenario of the race the property test explores: a waiting
    receiver is handed a message in the step its client leaves."""
    run_ops(
        [
            Op("send", "a", 2, 0, False),
            Op("recv", "a", 5, None),
            Op("recv", "a", 5, None),
            Op("send", "a", 2, 0, False, cancel=0),
            Op("recv", "a", 0, None),
        ],
        10_000,
        100_000,
    )
