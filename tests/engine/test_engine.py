"""Unit tests of the stream engine: every mode, FIFO, timeouts, disconnects,
eviction and counters.  No HTTP; waits are short and bounded."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, ManualClock, Message
from ipubsub.errors import BufferFull, ReceiveTimeout, SendTimeout, StreamReleased

from .helpers import msg, settle

pytestmark = pytest.mark.timeout(20)


async def test_fifo_per_stream(engine: Engine) -> None:
    for i in range(5):
        engine.send_nowait("s", msg(i), 100)
    got = [(await engine.receive("s", 0)).uuid for _ in range(5)]
    assert got == ["u0", "u1", "u2", "u3", "u4"]
    with pytest.raises(ReceiveTimeout):
        await engine.receive("s", 0)


async def test_streams_are_independent(engine: Engine) -> None:
    engine.send_nowait("a", msg("a1"), 100)
    engine.send_nowait("b", msg("b1"), 100)
    assert (await engine.receive("b", 0)).uuid == "ub1"
    assert (await engine.receive("a", 0)).uuid == "ua1"


async def test_waiting_receivers_are_served_first_come_first_served(engine: Engine) -> None:
    receivers = []
    for _ in range(3):
        receivers.append(asyncio.create_task(engine.receive("s", 5)))
        await settle()
    assert engine.stats.waiting_receivers == 3
    for i in range(3):
        engine.send_nowait("s", msg(i), 100)
    got = [(await r).uuid for r in receivers]
    assert got == ["u0", "u1", "u2"]
    assert engine.stats.waiting_receivers == 0
    assert engine.stats.buffered_messages == 0


async def test_receive_waits_on_a_stream_that_does_not_exist_yet(engine: Engine) -> None:
    task = asyncio.create_task(engine.receive("new", 5))
    await settle()
    assert "new" in engine
    engine.send_nowait("new", msg(1), 7)
    assert (await task).uuid == "u1"
    assert engine.capacity("new") == 7


async def test_receive_times_out(engine: Engine) -> None:
    with pytest.raises(ReceiveTimeout) as info:
        await engine.receive("s", 0.05)
    assert info.value.fields["streamId"] == "s"
    assert engine.stats.waiting_receivers == 0
    assert engine.stats.receive_timeouts_total == 1
    # A never-configured stream left behind by a receiver is forgotten at once.
    assert "s" not in engine


async def test_circular_buffer_drops_oldest_and_counts_it(engine: Engine) -> None:
    for i in range(5):
        engine.send_nowait("s", msg(i), 3)
    assert engine.stats.dropped_total == 2
    assert engine.stats.buffered_messages == 3
    assert [m.uuid for m in engine.buffered("s")] == ["u2", "u3", "u4"]


async def test_size_is_fixed_when_the_stream_is_created(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 2)
    for i in range(1, 4):
        engine.send_nowait("s", msg(i), 100)  # later sizes are ignored
    assert [m.uuid for m in engine.buffered("s")] == ["u2", "u3"]


async def test_blocking_send_waits_for_room_then_is_admitted(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 1)
    sender = asyncio.create_task(engine.send("s", msg(2), 1, 5))
    await settle()
    assert not sender.done()
    assert engine.stats.blocked_senders == 1
    assert (await engine.receive("s", 0)).uuid == "u1"
    await asyncio.wait_for(sender, 1)
    assert engine.stats.blocked_senders == 0
    assert (await engine.receive("s", 0)).uuid == "u2"
    assert engine.stats.dropped_total == 0


async def test_blocking_send_times_out_and_enqueues_nothing(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 1)
    with pytest.raises(SendTimeout):
        await engine.send("s", msg(2), 1, 0.05)
    assert [m.uuid for m in engine.buffered("s")] == ["u1"]
    assert engine.stats.blocked_senders == 0
    assert engine.stats.send_timeouts_total == 1


async def test_blocked_senders_are_admitted_in_fifo_order(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 1)
    senders = []
    for i in range(1, 4):
        senders.append(asyncio.create_task(engine.send("s", msg(i), 1, 5)))
        await settle()
    got = []
    for _ in range(4):
        got.append((await engine.receive("s", 1)).uuid)
        await settle()
    await asyncio.wait_for(asyncio.gather(*senders), 1)
    assert got == ["u0", "u1", "u2", "u3"]


async def test_blocking_send_goes_straight_to_a_waiting_receiver(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    await asyncio.wait_for(engine.send("s", msg(1), 1, 5), 1)
    assert (await receiver).uuid == "u1"


async def test_sync_match_returns_only_once_a_receiver_took_the_message(engine: Engine) -> None:
    sender = asyncio.create_task(engine.send("s", msg(1), 0, 5))
    await settle()
    assert not sender.done()
    assert engine.stats.buffered_messages == 0
    got = await engine.receive("s", 1)
    assert got.uuid == "u1"
    await asyncio.wait_for(sender, 1)


async def test_sync_match_with_receiver_already_waiting(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    await asyncio.wait_for(engine.send("s", msg(1), 0, 5), 1)
    assert (await receiver).uuid == "u1"


async def test_sync_match_times_out_without_receiver(engine: Engine) -> None:
    with pytest.raises(SendTimeout) as info:
        await engine.send("s", msg(1), 0, 0.05)
    assert "no receiver" in str(info.value)
    assert engine.stats.buffered_messages == 0
    with pytest.raises(ReceiveTimeout):
        await engine.receive("s", 0)


async def test_non_blocking_send_to_size_zero_stream_needs_a_waiting_receiver(engine: Engine) -> None:
    with pytest.raises(SendTimeout):
        engine.send_nowait("s", msg(1), 0)
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.send_nowait("s", msg(2), 0)
    assert (await receiver).uuid == "u2"


async def test_cancelled_receiver_takes_nothing(engine: Engine) -> None:
    first = asyncio.create_task(engine.receive("s", 5))
    second = asyncio.create_task(engine.receive("s", 5))
    await settle()
    first.cancel()  # the client of the first poll disconnected
    await settle()
    assert engine.stats.waiting_receivers == 1
    engine.send_nowait("s", msg(1), 100)
    assert (await second).uuid == "u1"
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_cancelled_receiver_leaves_message_buffered(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    receiver.cancel()
    await settle()
    engine.send_nowait("s", msg(1), 100)
    assert engine.stats.buffered_messages == 1
    assert (await engine.receive("s", 0)).uuid == "u1"


async def test_message_handed_to_a_receiver_cancelled_in_the_same_step_is_put_back(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 100)
    await engine.receive("s", 0)
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.send_nowait("s", msg(1), 100)  # resolves the receiver's future ...
    engine.send_nowait("s", msg(2), 100)
    receiver.cancel()  # ... but its task is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await receiver
    assert engine.stats.requeued_total == 1
    assert [m.uuid for m in engine.buffered("s")] == ["u1", "u2"]


async def test_put_back_message_goes_to_the_next_waiting_receiver(engine: Engine) -> None:
    doomed = asyncio.create_task(engine.receive("s", 5))
    await settle()
    patient = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    doomed.cancel()
    assert (await asyncio.wait_for(patient, 1)).uuid == "u1"
    assert engine.stats.buffered_messages == 0


async def test_cancelled_blocked_sender_does_not_enqueue(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 1)
    sender = asyncio.create_task(engine.send("s", msg(2), 1, 5))
    await settle()
    sender.cancel()
    await settle()
    assert engine.stats.blocked_senders == 0
    assert (await engine.receive("s", 0)).uuid == "u1"
    with pytest.raises(ReceiveTimeout):
        await engine.receive("s", 0)


async def test_cancelled_sync_sender_is_skipped(engine: Engine) -> None:
    gone = asyncio.create_task(engine.send("s", msg(1), 0, 5))
    await settle()
    stays = asyncio.create_task(engine.send("s", msg(2), 0, 5))
    await settle()
    gone.cancel()
    await settle()
    assert (await engine.receive("s", 0)).uuid == "u2"
    await asyncio.wait_for(stays, 1)


async def test_idle_stream_is_evicted_after_idle_seconds() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=60)
    engine.send_nowait("idle", msg(1), 10)
    await engine.receive("idle", 0)
    engine.send_nowait("full", msg(2), 10)
    clock.advance(30)
    assert engine.sweep() == 0
    clock.advance(31)
    engine.sweep()
    clock.advance(31)
    engine.sweep()
    assert "idle" not in engine
    assert "full" in engine  # holds a message: never evicted
    assert engine.stats.evicted_streams_total == 1


async def test_stream_used_again_is_not_evicted_early() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=60)
    engine.send_nowait("s", msg(1), 10)
    await engine.receive("s", 0)
    for _ in range(5):
        clock.advance(40)
        engine.sweep()
        engine.send_nowait("s", msg(2), 10)  # activity within every idle period
        await engine.receive("s", 0)
        assert "s" in engine
    for _ in range(4):
        clock.advance(40)
        engine.sweep()
    assert "s" not in engine


async def test_stream_with_a_waiter_is_not_evicted() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=1)
    engine.send_nowait("s", msg(1), 10)
    await engine.receive("s", 0)
    waiter = asyncio.create_task(engine.receive("s", 5))
    await settle()
    for _ in range(4):
        clock.advance(1)
        engine.sweep()
    assert "s" in engine
    engine.send_nowait("s", msg(2), 10)
    assert (await waiter).uuid == "u2"


async def test_evicted_stream_is_recreated_with_new_size() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=1)
    engine.send_nowait("s", msg(1), 1)
    await engine.receive("s", 0)
    for _ in range(3):
        clock.advance(1)
        engine.sweep()
    assert "s" not in engine
    engine.send_nowait("s", msg(2), 5)
    assert engine.capacity("s") == 5


async def test_byte_limit_per_stream_drops_oldest() -> None:
    engine = Engine(clock=ManualClock(), max_stream_bytes=100, max_buffered_bytes=1000)
    for i in range(5):
        engine.send_nowait("s", msg(i, b"x" * 38), 100)  # 40 bytes each with the uuid
    assert engine.stats.buffered_bytes <= 100
    assert [m.uuid for m in engine.buffered("s")] == ["u3", "u4"]
    assert engine.stats.dropped_total == 3


async def test_node_byte_budget_rejects_without_dropping() -> None:
    engine = Engine(clock=ManualClock(), max_stream_bytes=100, max_buffered_bytes=120)
    engine.send_nowait("a", msg(1, b"x" * 58), 100)
    engine.send_nowait("b", msg(2, b"x" * 58), 100)
    with pytest.raises(BufferFull):
        engine.send_nowait("c", msg(3, b"x" * 58), 100)
    assert engine.stats.dropped_total == 0
    assert engine.stats.buffered_messages == 2
    # A circular send to a full stream may still drop its own oldest to fit.
    engine.send_nowait("a", msg(4, b"x" * 58), 1)
    assert [m.uuid for m in engine.buffered("a")] == ["u4"]


async def test_release_waiters_wakes_everyone_with_stream_released(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("r", 5))
    engine.send_nowait("s", msg(1), 1)
    sender = asyncio.create_task(engine.send("s", msg(2), 1, 5))
    await settle()
    assert engine.release_waiters("node is shutting down") == 2
    for task in (receiver, sender):
        with pytest.raises(StreamReleased):
            await task
    assert engine.stats.waiting_receivers == 0
    assert engine.stats.blocked_senders == 0
    assert [m.uuid for m in engine.buffered("s")] == ["u1"]


async def test_detach_returns_buffer_and_releases_waiters(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 4)
    engine.send_nowait("s", msg(2), 4)
    detached = engine.detach("s", "moved")
    assert detached is not None
    capacity, msgs = detached
    assert capacity == 4
    assert [m.uuid for m in msgs] == ["u1", "u2"]
    assert "s" not in engine
    assert engine.stats.buffered_messages == 0
    assert engine.detach("s", "moved") is None


async def test_attach_goes_ahead_of_local_messages_and_behind_earlier_hand_offs(engine: Engine) -> None:
    engine.send_nowait("s", msg("local1"), 100)
    engine.attach("s", 100, [msg("h1"), msg("h2")])
    engine.send_nowait("s", msg("local2"), 100)
    engine.attach("s", 100, [msg("h3")])
    got = [(await engine.receive("s", 0)).uuid for _ in range(5)]
    assert got == ["uh1", "uh2", "uh3", "ulocal1", "ulocal2"]


async def test_attach_serves_waiting_receivers_in_order(engine: Engine) -> None:
    receivers = [asyncio.create_task(engine.receive("s", 5)) for _ in range(2)]
    await settle()
    engine.attach("s", 10, [msg(1), msg(2), msg(3)])
    assert [(await r).uuid for r in receivers] == ["u1", "u2"]
    assert [m.uuid for m in engine.buffered("s")] == ["u3"]


async def test_long_buffer_switches_representation_and_keeps_order(engine: Engine) -> None:
    for i in range(200):
        engine.send_nowait("s", msg(i), 150)
    engine.attach("s", 150, [msg("h")])
    got = [(await engine.receive("s", 0)).uuid for _ in range(151)]
    assert got == ["uh"] + [f"u{i}" for i in range(50, 200)]


async def test_many_departed_waiters_are_compacted(engine: Engine) -> None:
    keep = asyncio.create_task(engine.receive("s", 10))
    await settle()
    tasks = [asyncio.create_task(engine.receive("s", 10)) for _ in range(100)]
    await settle()
    for t in tasks:
        t.cancel()
    await settle()
    assert engine.stats.waiting_receivers == 1
    stream = engine._streams["s"]
    assert stream.receivers is not None and len(stream.receivers) < 60
    engine.send_nowait("s", msg(1), 10)
    assert (await keep).uuid == "u1"


async def test_counters_return_to_zero_after_mixed_traffic(engine: Engine) -> None:
    tasks = [asyncio.create_task(engine.receive(f"s{i % 3}", 0.2)) for i in range(9)]
    senders = [asyncio.create_task(engine.send(f"s{i % 3}", msg(i), 1, 0.2)) for i in range(12)]
    await asyncio.gather(*tasks, *senders, return_exceptions=True)
    while engine.stats.buffered_messages:
        for sid in ("s0", "s1", "s2"):
            try:
                await engine.receive(sid, 0)
            except ReceiveTimeout:
                pass
    assert engine.stats.waiting_receivers == 0
    assert engine.stats.blocked_senders == 0
    assert engine.stats.buffered_bytes == 0


async def test_put_back_between_two_hand_off_batches_keeps_order(engine: Engine) -> None:
    """Issue 18 item 1: batch 1 (h1 to a waiting receiver, h2 buffered), a
    local send, the receiver's client leaves in the same step (h1 put back),
    then batch 2 (h3): the order must be h1, h2, h3, local1."""
    receiver = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.attach("s", 100, [msg("h1"), msg("h2")])  # h1 resolves the receiver's future
    engine.send_nowait("s", msg("local1"), 100)
    receiver.cancel()  # ... but its client went away before the task ran
    with pytest.raises(asyncio.CancelledError):
        await receiver
    assert engine.stats.requeued_total == 1
    engine.attach("s", 100, [msg("h3")])
    got = [(await engine.receive("s", 0)).uuid for _ in range(4)]
    assert got == ["uh1", "uh2", "uh3", "ulocal1"]


async def test_requeue_of_a_taken_hand_off_message_keeps_later_batches_behind_it(engine: Engine) -> None:
    """The same through a requeue (a forwarded poll whose client left): a
    buffered handed-over message was taken, then given back."""
    engine.attach("s", 100, [msg("h1"), msg("h2")])
    engine.send_nowait("s", msg("local1"), 100)
    taken = await engine.receive("s", 0)
    engine.requeue("s", Message(taken.uuid, taken.payload, taken.timestamp_us))  # as decoded from the wire
    engine.attach("s", 100, [msg("h3")])
    got = [(await engine.receive("s", 0)).uuid for _ in range(4)]
    assert got == ["uh1", "uh2", "uh3", "ulocal1"]


async def test_requeue_of_the_only_hand_off_message_keeps_the_next_batch_behind_it(engine: Engine) -> None:
    engine.attach("s", 100, [msg("h1")])
    engine.send_nowait("s", msg("local1"), 100)
    taken = await engine.receive("s", 0)
    engine.requeue("s", taken)
    engine.attach("s", 100, [msg("h2")])
    got = [(await engine.receive("s", 0)).uuid for _ in range(3)]
    assert got == ["uh1", "uh2", "ulocal1"]


async def test_two_receivers_cancelled_in_the_same_step_put_back_in_order(engine: Engine) -> None:
    first = asyncio.create_task(engine.receive("s", 5))
    await settle()
    second = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    engine.send_nowait("s", msg(3), 100)
    second.cancel()  # the second poll's task happens to run first
    first.cancel()
    for task in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await task
    assert [m.uuid for m in engine.buffered("s")] == ["u1", "u2", "u3"]


async def test_started_engine_evicts_idle_streams_by_itself() -> None:
    """The sweeper task (start/close): a stream idle for idle_seconds goes
    without anyone calling sweep(); close() stops the task."""
    engine = Engine(idle_seconds=0.01)  # the real clock; the sweeper runs every 0.05 s
    engine.start()
    engine.start()  # starting twice keeps one sweeper
    sweepers = [t for t in asyncio.all_tasks() if t.get_name() == "ipubsub-engine-idle-sweeper"]
    assert len(sweepers) == 1
    engine.send_nowait("s", msg(1), 10)
    await engine.receive("s", 0)
    deadline = asyncio.get_running_loop().time() + 5
    while "s" in engine and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.01)
    assert "s" not in engine
    assert engine.stats.evicted_streams_total == 1
    await engine.close()
    assert sweepers[0].done()
    await engine.close()  # closing twice is harmless


async def test_a_failing_sweep_does_not_stop_eviction(caplog: pytest.LogCaptureFixture) -> None:
    engine = Engine(idle_seconds=0.01)
    real_sweep = engine.sweep
    calls = []

    def sweep_failing_once() -> int:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return real_sweep()

    engine.sweep = sweep_failing_once  # type: ignore[method-assign]
    engine.send_nowait("s", msg(1), 10)
    await engine.receive("s", 0)
    engine.start()
    try:
        deadline = asyncio.get_running_loop().time() + 5
        while "s" in engine and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.01)
        assert "s" not in engine
        assert len(calls) >= 2
        assert [r.getMessage() for r in caplog.records] == ["idle sweep failed"]
    finally:
        await engine.close()


async def test_blocking_send_with_timeout_zero_is_a_circular_send(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 1)
    await engine.send("s", msg(2), 1, 0)  # no wait: the oldest is dropped, as in circular mode
    assert [m.uuid for m in engine.buffered("s")] == ["u2"]
    assert engine.stats.dropped_total == 1 and engine.stats.blocked_senders == 0


async def test_blocking_send_queues_behind_waiting_senders_even_when_there_is_room(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 2)
    engine.send_nowait("s", msg(1), 2)
    first = asyncio.create_task(engine.send("s", msg(2), 2, 5))
    await settle()
    await engine.receive("s", 0)  # room for one: the waiting sender is admitted
    second = asyncio.create_task(engine.send("s", msg(3), 2, 5))
    await settle()
    assert first.done() and not second.done()
    assert [m.uuid for m in engine.buffered("s")] == ["u1", "u2"]
    await engine.receive("s", 0)
    await asyncio.wait_for(second, 1)
    assert [m.uuid for m in engine.buffered("s")] == ["u2", "u3"]


async def test_sync_send_timeout_says_no_receiver_and_a_full_queue_says_so(engine: Engine) -> None:
    with pytest.raises(SendTimeout) as sync:
        await engine.send("z", msg(1), 0, 0.01)
    engine.send_nowait("q", msg(2), 1)
    with pytest.raises(SendTimeout) as full:
        await engine.send("q", msg(3), 1, 0.01)
    assert "no receiver" in str(sync.value)
    assert "no receiver" not in str(full.value)


async def test_attach_to_a_stream_only_receivers_knew_gives_it_a_size(engine: Engine) -> None:
    waiter = asyncio.create_task(engine.receive("s", 5))
    await settle()
    engine.attach("s", 7, [msg(1), msg(2)])
    assert (await waiter).uuid == "u1"
    assert engine.capacity("s") == 7
    engine.attach("t", None, [msg(3)])  # the old owner did not know the size either
    assert engine.capacity("t") == 100
    receiver_only = asyncio.create_task(engine.receive("u", 5))
    await settle()
    engine.attach("u", None, [])
    assert engine.capacity("u") == 100
    receiver_only.cancel()


async def test_attach_into_a_long_buffer_goes_behind_earlier_hand_offs(engine: Engine) -> None:
    engine.attach("s", 100, [msg(f"h{i}") for i in range(3)])
    for i in range(40):  # long enough for the deque representation
        engine.send_nowait("s", msg(i), 100)
    engine.attach("s", 100, [msg("late1"), msg("late2")])
    got = [m.uuid for m in engine.buffered("s")]
    assert got[:6] == ["uh0", "uh1", "uh2", "ulate1", "ulate2", "u0"]
    assert got[6:] == [f"u{i}" for i in range(1, 40)]


async def test_cancelled_poll_ids_are_remembered_up_to_a_bound(engine: Engine) -> None:
    for i in range(10001):
        assert not engine.cancel_poll(f"p{i}", "gone")
    engine.send_nowait("s", msg(1), 100)
    assert (await engine.receive("s", 0, "p0")).uuid == "u1"  # the oldest id was forgotten
    with pytest.raises(StreamReleased):
        await engine.receive("s", 0, "p1")
    with pytest.raises(StreamReleased):
        await engine.receive("s", 0, "p10000")


async def test_many_departed_senders_are_compacted(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 1)
    keep = asyncio.create_task(engine.send("s", msg("keep"), 1, 10))
    await settle()
    gone = [asyncio.create_task(engine.send("s", msg(i), 1, 10)) for i in range(1, 101)]
    await settle()
    for t in gone:
        t.cancel()
    await settle()
    assert engine.stats.blocked_senders == 1
    engine.send_nowait("s", msg("x"), 1)  # a change to the stream tidies its queues
    stream = engine._streams["s"]
    assert stream.senders is not None and len(stream.senders) < 60
    assert (await engine.receive("s", 0)).uuid == "ux"
    await asyncio.wait_for(keep, 1)
    assert (await engine.receive("s", 0)).uuid == "ukeep"


async def test_a_stream_idle_again_in_a_later_generation_waits_its_full_idle_time() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=10)
    engine.send_nowait("s", msg(1), 10)
    await engine.receive("s", 0)  # idle at t=0
    clock.advance(5)
    engine.sweep()  # a new generation opens at t=5
    engine.send_nowait("s", msg(2), 10)
    await engine.receive("s", 0)  # idle again at t=5, in the new generation
    clock.advance(6)
    assert engine.sweep() == 0  # t=11: the first bucket is ripe, but s went idle at 5
    assert "s" in engine
    clock.advance(4)
    assert engine.sweep() == 1  # t=15: idle for 10 s
    assert "s" not in engine


async def test_a_stream_whose_only_sender_timed_out_goes_idle_and_is_evicted() -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=10)
    with pytest.raises(SendTimeout):
        await engine.send("z", msg(1), 0, 0.01)  # nobody received: the stream is idle now
    for _ in range(3):
        clock.advance(10)
        engine.sweep()
    assert "z" not in engine


async def test_on_a_sync_stream_a_put_back_message_does_not_let_a_blocked_sender_in(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("z", 5))
    await settle()
    engine.send_nowait("z", msg(1), 0)
    engine.requeue("z", await receiver)  # its answer could not be written: buffered on a size-0 stream
    sender = asyncio.create_task(engine.send("z", msg(2), 0, 5))
    await settle()
    assert (await engine.receive("z", 0)).uuid == "u1"
    await settle()
    assert not sender.done()  # still waits for a receiver of its own
    assert engine.stats.buffered_messages == 0
    assert (await engine.receive("z", 0)).uuid == "u2"
    await asyncio.wait_for(sender, 1)


async def test_buffer_full_says_which_limit_and_when_to_retry() -> None:
    engine = Engine(clock=ManualClock(), max_buffered_bytes=10)
    with pytest.raises(BufferFull) as info:
        engine.send_nowait("s", msg(1, b"x" * 20), 100)
    assert info.value.retry_after == 1
    assert str(info.value) == "the node's in-memory buffers are full (limits.max_buffered_bytes); retry later"


async def test_many_blocked_senders_are_admitted_in_order(engine: Engine) -> None:
    engine.send_nowait("s", msg(0), 1)
    senders = [asyncio.create_task(engine.send("s", msg(i), 1, 5)) for i in range(1, 41)]
    await settle()
    assert engine.stats.blocked_senders == 40  # a queue long enough for the deque form
    got = [(await engine.receive("s", 0)).uuid for _ in range(41)]
    assert got == [f"u{i}" for i in range(41)]
    await asyncio.wait_for(asyncio.gather(*senders), 1)


async def test_put_backs_into_a_long_buffer_keep_take_order_and_byte_counts(engine: Engine) -> None:
    for i in range(40):
        engine.send_nowait("s", msg(i), 100)
    taken = [await engine.receive("s", 0) for _ in range(3)]
    engine.give_back("s", [taken[2]])
    engine.give_back("s", taken[:2])  # merged ahead of the one given back before
    engine.attach("s", 100, [msg("h")])  # behind the given-back ones
    got = [m.uuid for m in engine.buffered("s")]
    assert got[:5] == ["u0", "u1", "u2", "uh", "u3"]
    info = engine.stream_info("s")
    assert info is not None and info.buffered_messages == 41
    assert info.buffered_bytes == sum(m.size for m in engine.buffered("s")) == engine.stats.buffered_bytes


async def test_capacity_and_stream_info_of_unknown_streams(engine: Engine) -> None:
    assert engine.capacity("nope") is None
    assert engine.stream_info("nope") is None
    engine.send_nowait("s", msg(1), 3)
    info = engine.stream_info("s")
    assert info is not None
    assert (info.capacity, info.buffered_messages, info.waiting_receivers, info.blocked_senders) == (3, 1, 0, 0)


async def test_released_waiters_are_told_why(engine: Engine) -> None:
    receiver = asyncio.create_task(engine.receive("r", 5))
    await settle()
    engine.release_waiters("node is shutting down")
    with pytest.raises(StreamReleased) as info:
        await receiver
    assert info.value.reason == "node is shutting down"
