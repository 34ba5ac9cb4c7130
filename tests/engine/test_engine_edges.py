"""Edge cases of the engine that mutation testing (scripts/mutate) showed no
test could see: each test here fails for a surviving mutant of the first full
run (named in its docstring) — see docs/testing.md, "Mutation testing"."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, HistorySpec, ManualClock, Message, Position
from ipubsub.errors import BufferFull, ReceiveTimeout, SendTimeout, StreamReleased
from tests.support.wait import wait_until

from .helpers import Outcomes, msg, settle

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine(clock=clock, idle_seconds=60)


def stamped(clock: ManualClock, n: int) -> Message:
    """Message ``u<n>`` stamped now (history ages count from its timestamp)."""
    return Message(f"u{n}", f'{{"n":{n}}}'.encode(), clock.time_us())


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
    assert raised.value.fields["streamId"] == "c"


async def test_cancelling_a_served_poll_twice_gives_its_message_back_once(engine: Engine) -> None:
    """receiving.cancel_poll on a receive handed a message its task has not
    taken yet, twice (the cancel and its retry): one give-back (mutant: two,
    the message duplicated)."""
    poll = asyncio.ensure_future(engine.receive("d", 30, poll_id="p2"))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    engine.send_nowait("d", msg(1), 10)  # handed to the poll; its task has not run yet
    assert engine.cancel_poll("p2", "client left")
    assert not engine.cancel_poll("p2")
    with pytest.raises(StreamReleased) as raised:
        await poll
    assert raised.value.fields["streamId"] == "d" and raised.value.reason == "client left"
    assert [m.uuid for m in engine.buffered("d")] == ["u1"]
    assert engine.stats.requeued_total == 1


async def test_a_finished_receive_does_not_forget_a_later_receive_with_the_same_poll_id(engine: Engine) -> None:
    """receiving._forget_poll only removes its own entry (mutant: any entry),
    so the later receive can still be cancelled by its id."""
    first = asyncio.ensure_future(engine.receive("e", 0.05, poll_id="same"))
    second = asyncio.ensure_future(engine.receive("e", 30, poll_id="same"))  # registers after the first
    with pytest.raises(ReceiveTimeout):
        await first
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the second poll waiting")
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


async def test_a_waiting_receiver_left_alone_among_departed_ones_still_gets_the_next_message(engine: Engine) -> None:
    """stream.compact with one live receiver in a long queue keeps it
    (mutant: the queue dropped when one is live)."""
    polls = [asyncio.ensure_future(engine.receive("r", 30)) for _ in range(20)]
    await wait_until(lambda: engine.stats.waiting_receivers == 20, what="20 polls waiting")
    for task in polls[:19]:
        task.cancel()
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="19 polls gone")
    engine.send_nowait("r", msg(1), 10)  # a buffered stream with a long queue is compacted on settle
    assert (await asyncio.wait_for(polls[19], 5)).uuid == "u1"
    await asyncio.gather(*polls, return_exceptions=True)


async def test_a_long_queue_of_departed_receivers_compacted_with_a_buffer_takes_new_ones(engine: Engine) -> None:
    """stream.compact with no live receiver empties the queue so that a new
    receiver can join it (mutant: a queue that is not a queue)."""
    polls = [asyncio.ensure_future(engine.receive("q", 30)) for _ in range(20)]
    await wait_until(lambda: engine.stats.waiting_receivers == 20, what="20 polls waiting")
    for task in polls[:19]:
        task.cancel()
    engine.send_nowait("q", msg(1), 10)  # to the one still waiting
    engine.send_nowait("q", msg(2), 10)  # buffered: the departed ones' settle compacts the queue
    await asyncio.gather(*polls, return_exceptions=True)
    assert polls[19].result().uuid == "u1"
    assert (await engine.receive("q", 0)).uuid == "u2"
    later = asyncio.ensure_future(engine.receive("q", 30))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="a new poll waiting")
    engine.send_nowait("q", msg(3), 10)
    assert (await asyncio.wait_for(later, 5)).uuid == "u3"


async def test_one_blocked_sender_left_among_departed_ones_is_still_admitted(engine: Engine) -> None:
    """stream.compact with one live sender in a long queue keeps it."""
    engine.send_nowait("b", msg(0), 1)
    senders = [asyncio.ensure_future(engine.send("b", msg(n), 1, 30)) for n in range(1, 21)]
    await wait_until(lambda: engine.stats.blocked_senders == 20, what="20 blocked senders")
    for task in senders[:19]:
        task.cancel()
    await wait_until(lambda: engine.stats.blocked_senders == 1, what="19 senders gone")
    assert (await engine.receive("b", 0)).uuid == "u0"
    await asyncio.wait_for(senders[19], 5)
    assert [m.uuid for m in engine.buffered("b")] == ["u20"]
    await asyncio.gather(*senders, return_exceptions=True)


async def test_a_long_queue_of_departed_senders_compacted_takes_new_ones(engine: Engine) -> None:
    """stream.compact with no live sender empties the queue so that a new
    sender can block in it."""
    engine.send_nowait("c", msg(0), 1)
    senders = [asyncio.ensure_future(engine.send("c", msg(n), 1, 30)) for n in range(1, 21)]
    await wait_until(lambda: engine.stats.blocked_senders == 20, what="20 blocked senders")
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    assert engine.stats.blocked_senders == 0
    later = asyncio.ensure_future(engine.send("c", msg(21), 1, 30))
    await wait_until(lambda: engine.stats.blocked_senders == 1, what="a new blocked sender")
    assert (await engine.receive("c", 0)).uuid == "u0"
    await asyncio.wait_for(later, 5)
    assert [m.uuid for m in engine.buffered("c")] == ["u21"]


async def test_detach_releases_a_sender_that_blocked_beside_a_just_cancelled_receiver(engine: Engine) -> None:
    """matching._release: the receivers' queue runs out while a just-cancelled
    receiver is still counted; the blocked senders are released all the same
    (mutant: it stops there and the sender waits for its timeout)."""
    poll = asyncio.ensure_future(engine.receive("x", 30))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    sender = asyncio.ensure_future(engine.send("x", msg(1), 0, 30))  # sync match: its first step runs next
    loop = asyncio.get_running_loop()
    detached: list[object] = []
    loop.call_soon(lambda: detached.append(engine.detach("x", "stream moved")))  # after the sender's step
    poll.cancel()  # the poll's cleanup step comes after the detach
    with pytest.raises(StreamReleased) as raised:
        await asyncio.wait_for(sender, 5)
    assert raised.value.reason == "stream moved" and raised.value.fields["streamId"] == "x"
    await asyncio.gather(poll, return_exceptions=True)
    assert detached and engine.stats.released_total >= 1


async def test_every_released_sender_is_counted(engine: Engine) -> None:
    """matching._sender_done adds to released_total (mutant: sets it to 1)."""
    engine.send_nowait("n", msg(0), 1)
    senders = [asyncio.ensure_future(engine.send("n", msg(n), 1, 30)) for n in (1, 2, 3)]
    await wait_until(lambda: engine.stats.blocked_senders == 3, what="3 blocked senders")
    engine.detach("n", "moved")
    results = await asyncio.gather(*senders, return_exceptions=True)
    assert all(isinstance(r, StreamReleased) for r in results)
    assert engine.stats.released_total == 3


async def test_a_send_that_does_not_block_creates_its_stream_like_send_nowait(
    engine: Engine, clock: ManualClock
) -> None:
    """engine.send with timeout 0 passes capacity and history on (mutants: dropped)."""
    await engine.send("z", stamped(clock, 1), 3, 0, HistorySpec(size=10, ttl_seconds=60))
    for n in (2, 3, 4):
        await engine.send("z", stamped(clock, n), 3, 0)
    assert [m.uuid for m in engine.buffered("z")] == ["u2", "u3", "u4"]  # capacity 3: the oldest dropped
    read = await engine.read_history("z", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u1", "u2", "u3", "u4"]


async def test_a_stream_taken_in_by_attach_gets_its_history_from_its_first_send(
    engine: Engine, clock: ManualClock
) -> None:
    """engine.attach leaves the history settings open (mutants: closed)."""
    engine.attach("a", 10, [stamped(clock, 1)])
    engine.send_nowait("a", stamped(clock, 2), 10, HistorySpec(size=10, ttl_seconds=60))
    read = await engine.read_history("a", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u2"]


async def test_after_release_waiters_a_new_sender_can_block_again(engine: Engine) -> None:
    """release_waiters (shutdown) compacts the senders' queue of a stream
    that stays; a sender arriving afterwards blocks in it (mutant of
    stream.compact: a queue that is not a queue)."""
    engine.send_nowait("w", msg(0), 1)
    first = asyncio.ensure_future(engine.send("w", msg(1), 1, 30))
    await wait_until(lambda: engine.stats.blocked_senders == 1, what="a blocked sender")
    assert engine.release_waiters("node stopping") == 1
    with pytest.raises(StreamReleased):
        await first
    later = asyncio.ensure_future(engine.send("w", msg(2), 1, 30))
    await wait_until(lambda: engine.stats.blocked_senders == 1, what="a new blocked sender")
    assert (await engine.receive("w", 0)).uuid == "u0"
    await asyncio.wait_for(later, 5)
    assert [m.uuid for m in engine.buffered("w")] == ["u2"]


async def test_a_sync_match_send_that_times_out_names_its_stream(engine: Engine) -> None:
    with pytest.raises(SendTimeout) as raised:
        await engine.send("t", msg(1), 0, 0.05)
    assert raised.value.fields == {"streamId": "t", "timeoutSeconds": 0.05}


async def test_a_blocking_send_creates_its_stream_with_its_history(engine: Engine, clock: ManualClock) -> None:
    """engine.send with a timeout passes the history on (mutants: dropped)."""
    await engine.send("k", stamped(clock, 1), 5, 30, HistorySpec(size=10, ttl_seconds=60))
    read = await engine.read_history("k", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u1"]


async def test_a_blocking_send_to_a_stream_with_a_history_sheds_history_for_room(clock: ManualClock) -> None:
    """engine.send makes room in the node's byte budget by shedding the
    stream's oldest history entries, like send_nowait (mutant: it does not,
    and the send is refused with BufferFull)."""
    engine = Engine(clock=clock, idle_seconds=60, max_buffered_bytes=4000)
    spec = HistorySpec(size=1000, ttl_seconds=600)
    for n in range(100):  # small messages: the history fills the budget, the queue stays empty
        engine.send_nowait("h", stamped(clock, n), 100, spec)
        assert (await engine.receive("h", 0)).uuid == f"u{n}"
    big = Message("big", b'"' + b"x" * 600 + b'"', clock.time_us())  # more than the budget's slack
    await engine.send("h", big, 100, 5)
    assert [m.uuid for m in engine.buffered("h")] == ["big"]


async def test_a_stream_a_receiver_created_and_attach_filled_gets_its_history_from_its_first_send(
    engine: Engine, clock: ManualClock
) -> None:
    """engine.attach on a stream only a receiver knew leaves the history
    settings open too (mutants: closed)."""
    poll = asyncio.ensure_future(engine.receive("ra", 30))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    engine.attach("ra", 10, [stamped(clock, 1)])
    assert (await asyncio.wait_for(poll, 5)).uuid == "u1"
    engine.send_nowait("ra", stamped(clock, 2), 10, HistorySpec(size=10, ttl_seconds=60))
    read = await engine.read_history("ra", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u2"]


# -- second batch: mutants of matching, stream, receiving and sweep -----------------------


async def test_a_receive_taking_from_a_blocked_sync_sender_is_counted_and_recorded(
    engine: Engine, clock: ManualClock
) -> None:
    """matching._take from a blocked sender (size 0): delivered_total grows
    by one and a stream with a history records the message (mutants: the
    counter set to 1, the history skipped)."""
    engine.send_nowait("plain", msg(0), 10)
    assert (await engine.receive("plain", 0)).uuid == "u0"
    spec = HistorySpec(size=10, ttl_seconds=60)
    sender = asyncio.ensure_future(engine.send("sync", stamped(clock, 1), 0, 30, spec))
    await wait_until(lambda: engine.stats.blocked_senders == 1, what="the sync sender waiting")
    assert (await engine.receive("sync", 0)).uuid == "u1"
    await asyncio.wait_for(sender, 5)
    assert engine.stats.delivered_total == 2
    read = await engine.read_history("sync", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u1"]


async def test_messages_handed_in_beside_a_just_cancelled_receiver_are_buffered(engine: Engine) -> None:
    """matching._hand_to_waiting: a receiver counted live but cancelled in
    this step cannot take them; they are buffered, none lost (mutant: lost)."""
    poll = asyncio.ensure_future(engine.receive("hw", 30))
    await wait_until(lambda: engine.stats.waiting_receivers == 1, what="the poll waiting")
    poll.cancel()  # its cleanup runs one loop step later
    engine.attach("hw", 10, [msg(1), msg(2)])
    await asyncio.gather(poll, return_exceptions=True)
    assert [m.uuid for m in engine.buffered("hw")] == ["u1", "u2"]


async def take(engine: Engine, stream: str, n: int) -> list[Message]:
    return [await engine.receive(stream, 0) for _ in range(n)]


async def test_messages_given_back_one_at_a_time_come_back_in_the_order_taken(engine: Engine) -> None:
    """stream.put_back counts every given-back message at the head (mutant:
    only the last call's), so a third give-back merges with all of them."""
    for n in (1, 2, 3, 4):
        engine.send_nowait("gb", msg(n), 10)
    m1, m2, m3 = await take(engine, "gb", 3)
    engine.give_back("gb", [m1])
    engine.give_back("gb", [m2])
    engine.give_back("gb", [m3])
    assert [m.uuid for m in engine.buffered("gb")] == ["u1", "u2", "u3", "u4"]


async def test_taking_one_of_two_given_back_messages_keeps_the_head_count(engine: Engine) -> None:
    """stream.pop_front takes one from the given-back head (mutant: two)."""
    for n in (1, 2, 3, 4):
        engine.send_nowait("pf", msg(n), 10)
    m1, m2, m3 = await take(engine, "pf", 3)
    engine.give_back("pf", [m1, m2])
    assert (await engine.receive("pf", 0)).uuid == "u1"
    engine.give_back("pf", [m3])
    assert [m.uuid for m in engine.buffered("pf")] == ["u2", "u3", "u4"]


async def test_a_long_hand_off_batch_is_buffered_whole(engine: Engine) -> None:
    """stream.insert_at switching a long list to a deque (mutants: buffer lost / broken)."""
    engine.attach("long", 100, [msg(n) for n in range(40)])
    assert [m.uuid for m in engine.buffered("long")] == [f"u{n}" for n in range(40)]
    assert engine.stats.buffered_messages == 40


async def test_a_second_hand_off_batch_goes_behind_the_first_in_a_long_buffer(engine: Engine) -> None:
    """stream.insert_at at index 1 of a deque (mutant: inserted at 0)."""
    for n in range(40):
        engine.send_nowait("dq", msg(f"l{n}"), 100)
    engine.attach("dq", 100, [msg("h1")])
    engine.attach("dq", 100, [msg("h2")])
    assert [m.uuid for m in engine.buffered("dq")][:4] == ["uh1", "uh2", "ul0", "ul1"]


async def test_messages_given_back_to_an_evicted_stream_are_all_there(engine: Engine) -> None:
    """receiving.give_back re-creates an evicted stream under its own id
    (mutant: no id, and a batch receive then finds only the first)."""
    for n in (1, 2):
        engine.send_nowait("ev", msg(n), 10)
    taken = await take(engine, "ev", 2)
    engine.detach("ev", "gone")  # the stream is gone meanwhile
    engine.give_back("ev", taken)
    got = await engine.receive_many("ev", 0, 5)
    assert [m.uuid for m in got] == ["u1", "u2"]


async def test_receive_refusals_and_timeouts_name_their_stream(engine: Engine) -> None:
    """receiving.receive: a poll id cancelled before its poll arrived is
    refused naming the stream and why; a timeout names the stream; a 1 s
    long poll waits (mutants: no stream, no reason, <= 1 answered at once)."""
    assert not engine.cancel_poll("early")
    with pytest.raises(StreamReleased) as released:
        await engine.receive("rf", 30, poll_id="early")
    assert released.value.fields["streamId"] == "rf"
    assert released.value.reason == "poll cancelled by the forwarding node"
    with pytest.raises(ReceiveTimeout) as timed_out:
        await engine.receive("rf", 0)
    assert timed_out.value.fields["streamId"] == "rf"
    poll = asyncio.ensure_future(engine.receive("rf", 1))
    await settle()  # its first step ran: it waits (no real time passed)
    assert not poll.done() and engine.stats.waiting_receivers == 1
    engine.send_nowait("rf", msg(1), 10)
    assert (await asyncio.wait_for(poll, 5)).uuid == "u1"


async def test_a_sweep_counts_every_stream_it_evicts_and_skips_past_a_kept_history(clock: ManualClock) -> None:
    """engine.sweep: a stream whose history still holds messages is kept and
    the sweep goes on to the next (mutant: it stops); the count returned and
    evicted_streams_total add up over sweeps (mutants: set, not added)."""
    engine = Engine(clock=clock, idle_seconds=60)
    engine.send_nowait("hist", stamped(clock, 0), 10, HistorySpec(size=10, ttl_seconds=3600))
    assert (await engine.receive("hist", 0)).uuid == "u0"
    for name in ("a", "b"):
        engine.send_nowait(name, msg(name), 10)
        assert (await engine.receive(name, 0)).uuid == f"u{name}"
    engine.sweep()
    clock.advance(61)
    assert engine.sweep() == 2
    assert "hist" in engine and "a" not in engine and "b" not in engine
    engine.send_nowait("c", msg("c"), 10)
    assert (await engine.receive("c", 0)).uuid == "uc"
    engine.sweep()
    clock.advance(61)
    assert engine.sweep() == 1
    assert engine.stats.evicted_streams_total == 3


def test_a_sync_match_send_nowait_without_a_receiver_is_refused_naming_its_stream(engine: Engine) -> None:
    """engine.send_nowait on a size-0 stream with nobody waiting (mutants: fields, wording)."""
    with pytest.raises(SendTimeout) as raised:
        engine.send_nowait("s0", msg(1), 0)
    assert raised.value.fields == {"streamId": "s0", "timeoutSeconds": 0}
    assert raised.value.message == "no receiver took the message on stream 's0' within 0 s"


def sized(name: str, n: int) -> Message:
    return Message(name, b'"' + b"x" * n + b'"', 1000)


def test_a_message_larger_than_the_stream_byte_bound_replaces_everything(clock: ManualClock) -> None:
    """matching._drop_to_fit drops at most every buffered message (mutant:
    one more, past the end of the buffer)."""
    engine = Engine(clock=clock, idle_seconds=60, max_stream_bytes=100)
    engine.send_nowait("s", sized("a", 10), 10)
    engine.send_nowait("s", sized("b", 10), 10)
    engine.send_nowait("s", sized("big", 200), 10)
    assert [m.uuid for m in engine.buffered("s")] == ["big"]
    assert engine.stats.dropped_total == 2


def test_a_send_refused_for_the_node_budget_drops_nothing(clock: ManualClock) -> None:
    """matching._drop_to_fit checks the node budget, counting the new
    message, before it drops anything (mutant: the size subtracted, the
    oldest message dropped and then the send refused anyway)."""
    engine = Engine(clock=clock, idle_seconds=60, max_buffered_bytes=300)
    engine.send_nowait("f", sized("f1", 20), 2)
    engine.send_nowait("f", sized("f2", 20), 2)
    engine.send_nowait("o", sized("o1", 150), 10)
    with pytest.raises(BufferFull):
        engine.send_nowait("f", sized("f3", 120), 2)
    assert [m.uuid for m in engine.buffered("f")] == ["f1", "f2"]
    assert engine.stats.dropped_total == 0
