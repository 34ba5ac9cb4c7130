"""Edge cases of the engine that mutation testing (scripts/mutate) showed no
test could see: each test here fails for a surviving mutant of the first full
run (named in its docstring) — see docs/testing.md, "Mutation testing"."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, HistorySpec, ManualClock, Position
from ipubsub.errors import ReceiveTimeout, StreamReleased

from .helpers import Outcomes, msg, settle
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def engine() -> Engine:
    return Engine(clock=ManualClock(), idle_seconds=60)


async def test_a_departed_sender_at_the_head_of_a_long_queue_is_skipped(engine: Engine) -> None:
    """stream.peek_sender on a deque of waiting senders (more than 32): the
    departed one at its head is dropped, the next one admitted (mutant: a
    deque popped like a list)."""
    engine.send_nowait("s", msg(0), 1)
    senders = [asyncio.ensure_future(engine.send("s", msg(n), 1, 60)) for n in range(1, 41)]
    await wait_until(lambda: engine.stats.blocked_senders == 40, what="40 blocked senders")
    senders[0].cancel()
    await wait_until(lambda: engine.stats.blocked_senders == 39, what="the first sender gone")
    assert (await engine.receive("s", 0)).uuid == "u0"
    assert [m.uuid for m in engine.buffered("s")] == ["u2"]  # u1's sender left: never enqueued
    await senders[1]
    for task in senders[2:]:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)


async def test_a_parked_receive_with_a_one_second_timeout_waits(engine: Engine) -> None:
    """receiving._park: only a timeout of 0 answers at once (mutant: <= 1)."""
    got = Outcomes()
    parked = engine.park("p", 1, got)
    assert parked is not None and got == []
    engine.send_nowait("p", msg(1), 10)
    await settle()
    assert [m.uuid for m in got] == ["u1"]


async def test_cancel_poll_tells_the_receiver_its_reason(engine: Engine) -> None:
    """receiving.cancel_poll: the waiting receive is released with the reason given."""
    poll = asyncio.ensure_future(engine.receive("c", 30, poll_id="p1"))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    assert engine.cancel_poll("p1", "the forwarding node's client left")
    with pytest.raises(StreamReleased) as raised:
        await poll
    assert raised.value.reason == "the forwarding node's client left"


async def test_cancelling_a_served_poll_twice_gives_its_message_back_once(engine: Engine) -> None:
    """receiving.cancel_poll on a receive handed a message its task has not
    taken yet, twice (the cancel and its retry): one give-back (mutant: two,
    the message duplicated)."""
    poll = asyncio.ensure_future(engine.receive("d", 30, poll_id="p2"))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    engine.send_nowait("d", msg(1), 10)  # handed to the poll; its task has not run yet
    assert engine.cancel_poll("p2")
    assert not engine.cancel_poll("p2")
    with pytest.raises(StreamReleased):
        await poll
    assert [m.uuid for m in engine.buffered("d")] == ["u1"]
    assert engine.stats.requeued_total == 1


async def test_a_finished_receive_does_not_forget_a_later_receive_with_the_same_poll_id(engine: Engine) -> None:
    """receiving._forget_poll only removes its own entry (mutant: any entry),
    so the later receive can still be cancelled by its id."""
    first = asyncio.ensure_future(engine.receive("e", 0.05, poll_id="same"))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the first poll waiting")
    second = asyncio.ensure_future(engine.receive("e", 30, poll_id="same"))
    await wait_until(lambda: engine.stats.waiting_receivers == 2, what="the second poll waiting")
    with pytest.raises(ReceiveTimeout):
        await first
    assert engine.cancel_poll("same", "cancelled")
    with pytest.raises(StreamReleased):
        await second


@pytest.mark.parametrize("how", ["detach", "release_waiters"])
async def test_history_readers_released_with_their_stream_are_told_why(engine: Engine, how: str) -> None:
    """engine.detach / release_waiters pass their reason to waiting history
    readers (mutants: no reason)."""
    engine.send_nowait("h", msg(1), 10, HistorySpec(size=10, ttl_seconds=60))
    read = await engine.read_history("h", None, 0, 10)
    assert read.epoch is not None
    reader = asyncio.ensure_future(engine.read_history("h", Position(read.epoch, read.after), 30, 1))
    await wait_until(lambda: engine.history_stats.waiting_readers == 1, what="the history reader waiting")
    if how == "detach":
        engine.detach("h", "stream moved to node n2")
        reason = "stream moved to node n2"
    else:
        engine.release_waiters("node stopping")
        reason = "node stopping"
    with pytest.raises(StreamReleased) as raised:
        await reader
    assert raised.value.reason == reason
