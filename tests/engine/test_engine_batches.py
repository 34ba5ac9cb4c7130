"""Batches, give-back and poll cancellation: receive_many, park_many,
give_back and cancel_poll (issues 9, 10 and 11) — order, races, counters."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, Released
from ipubsub.errors import ReceiveTimeout, StreamReleased

from .helpers import Outcomes, ids, msg, settle

pytestmark = pytest.mark.timeout(20)


def counters(engine: Engine) -> dict[str, int]:
    s = engine.stats
    return {
        "buffered": s.buffered_messages,
        "waiting": s.waiting_receivers,
        "delivered": s.delivered_total,
        "requeued": s.requeued_total,
        "released": s.released_total,
        "timeouts": s.receive_timeouts_total,
    }


# -- receive_many ---------------------------------------------------------------------------


async def test_receive_many_takes_what_is_there_up_to_the_limit_in_order(engine: Engine) -> None:
    for i in range(5):
        engine.send_nowait("s", msg(i), 100)
    assert ids(await engine.receive_many("s", 5, 3)) == ["u0", "u1", "u2"]
    assert ids(await engine.receive_many("s", 5, 10)) == ["u3", "u4"]
    assert counters(engine)["delivered"] == 5 and counters(engine)["buffered"] == 0


async def test_receive_many_waits_for_the_first_then_takes_those_that_came_with_it(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive_many("s", 5, 10))
    await settle()
    for i in range(4):  # one step: the first goes to the waiting batch, the rest are buffered
        engine.send_nowait("s", msg(i), 100)
    assert ids(await task) == ["u0", "u1", "u2", "u3"]
    assert counters(engine) == dict(counters(engine), buffered=0, waiting=0, delivered=4)


async def test_receive_many_times_out_and_refuses_a_zero_limit(engine: Engine) -> None:
    with pytest.raises(ReceiveTimeout):
        await engine.receive_many("s", 0, 5)
    with pytest.raises(ValueError):
        await engine.receive_many("s", 1, 0)
    assert engine.stats.receive_timeouts_total == 1


async def test_receive_many_lets_blocked_senders_flow_into_the_batch(engine: Engine) -> None:
    engine.send_nowait("q", msg(0), 1)
    senders = [asyncio.ensure_future(engine.send("q", msg(i), 1, 5)) for i in range(1, 4)]
    await settle()
    assert engine.stats.blocked_senders == 3
    assert ids(await engine.receive_many("q", 1, 10)) == ["u0", "u1", "u2", "u3"]
    await asyncio.wait_for(asyncio.gather(*senders), 1)
    # Size 0 (sync match): each blocked sender hands over directly.
    sync = [asyncio.ensure_future(engine.send("z", msg(f"z{i}"), 0, 5)) for i in range(3)]
    await settle()
    assert ids(await engine.receive_many("z", 1, 2)) == ["uz0", "uz1"]
    assert ids(await engine.receive_many("z", 1, 2)) == ["uz2"]
    await asyncio.wait_for(asyncio.gather(*sync), 1)


async def test_waiting_batches_are_served_first_come_first_served(engine: Engine) -> None:
    first = asyncio.ensure_future(engine.receive_many("s", 5, 10))
    await settle()
    second = asyncio.ensure_future(engine.receive("s", 5))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    engine.send_nowait("s", msg(3), 100)
    assert ids(await first) == ["u1", "u3"]  # its first, then what was left when it ran
    assert (await second).uuid == "u2"


async def test_a_batch_receiver_cancelled_after_its_first_message_gives_it_back(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive_many("s", 5, 10))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ids(engine.buffered("s")) == ["u1", "u2"]
    assert counters(engine) == dict(counters(engine), delivered=0, requeued=1, buffered=2)


# -- give_back ------------------------------------------------------------------------------


async def test_give_back_puts_a_batch_at_the_front_in_order_and_corrects_counters(engine: Engine) -> None:
    for i in range(5):
        engine.send_nowait("s", msg(i), 100)
    batch = await engine.receive_many("s", 0, 3)
    engine.give_back("s", batch)  # the answer could not be written
    assert ids(engine.buffered("s")) == ["u0", "u1", "u2", "u3", "u4"]
    assert counters(engine) == dict(counters(engine), delivered=0, requeued=3, buffered=5)
    engine.give_back("s", [])
    assert engine.stats.requeued_total == 3


async def test_batches_given_back_out_of_order_are_restored_in_take_order(engine: Engine) -> None:
    for i in range(6):
        engine.send_nowait("s", msg(i), 100)
    a = await engine.receive_many("s", 0, 2)
    b = await engine.receive_many("s", 0, 2)
    engine.give_back("s", b)
    engine.give_back("s", a)
    assert ids(engine.buffered("s")) == ["u0", "u1", "u2", "u3", "u4", "u5"]


async def test_give_back_serves_waiting_receivers_first_in_order(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    engine.send_nowait("s", msg(3), 100)
    batch = await engine.receive_many("s", 0, 3)
    waiting = [asyncio.ensure_future(engine.receive("s", 5)) for _ in range(2)]
    await settle()
    engine.give_back("s", batch)
    assert [(await w).uuid for w in waiting] == ["u1", "u2"]
    assert ids(engine.buffered("s")) == ["u3"]
    assert counters(engine) == dict(counters(engine), delivered=2, requeued=3, waiting=0)


async def test_give_back_never_drops_for_capacity(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 2)
    engine.send_nowait("s", msg(2), 2)
    taken = await engine.receive_many("s", 0, 2)
    engine.send_nowait("s", msg(3), 2)
    engine.send_nowait("s", msg(4), 2)
    engine.give_back("s", taken)
    assert ids(engine.buffered("s")) == ["u1", "u2", "u3", "u4"]
    assert engine.stats.dropped_total == 0
    # Later circular sends shrink the stream back to its size, oldest first.
    engine.send_nowait("s", msg(5), 2)
    assert ids(engine.buffered("s")) == ["u4", "u5"]
    assert engine.stats.dropped_total == 3


async def test_give_back_to_a_stream_nobody_configured_gives_it_the_default_size(engine: Engine) -> None:
    engine.give_back("gone", [msg(1)])
    assert engine.capacity("gone") == 100
    waiter = asyncio.ensure_future(engine.receive("fresh", 5))
    await settle()
    assert engine.capacity("fresh") is None
    engine.give_back("fresh", [msg(2)])
    assert (await waiter).uuid == "u2"
    assert engine.capacity("fresh") == 100


# -- park_many ------------------------------------------------------------------------------


async def test_park_many_answers_at_once_with_what_is_there(engine: Engine) -> None:
    for i in range(3):
        engine.send_nowait("s", msg(i), 100)
    got = Outcomes()
    assert engine.park_many("s", 5, 2, got) is None
    assert [ids(x) for x in got] == [["u0", "u1"]]
    with pytest.raises(ValueError):
        engine.park_many("s", 5, 0, got)


async def test_a_parked_batch_gets_its_first_message_and_those_of_the_same_step(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park_many("s", 5, 3, got)
    assert parked is not None and parked.poll_id is None
    for i in range(5):
        engine.send_nowait("s", msg(i), 100)
    assert got == []  # answered from the event loop, not inside send_nowait
    await settle()
    assert [ids(x) for x in got] == [["u0", "u1", "u2"]]
    assert ids(engine.buffered("s")) == ["u3", "u4"]


async def test_a_parked_batch_times_out_or_is_released(engine: Engine) -> None:
    timed, released = Outcomes(), Outcomes()
    engine.park_many("t", 0.01, 3, timed)
    for _ in range(200):
        if timed:
            break
        await asyncio.sleep(0.01)
    assert timed == [None]
    engine.park_many("r", 5, 3, released)
    assert engine.release_waiters("node is shutting down") == 1
    await settle()
    assert len(released) == 1 and isinstance(released[0], Released)
    assert counters(engine) == dict(counters(engine), waiting=0, released=1, timeouts=1)


async def test_a_parked_batch_whose_stream_moved_before_it_answered_keeps_only_its_first(engine: Engine) -> None:
    got = Outcomes()
    engine.park_many("s", 5, 3, got)
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    detached = engine.detach("s", "moved")
    await settle()
    assert [ids(x) for x in got] == [["u1"]]
    assert detached is not None and ids(detached[1]) == ["u2"]


# -- cancel_poll ------------------------------------------------------------------------------


async def test_cancel_poll_ends_a_waiting_parked_poll(engine: Engine) -> None:
    got = Outcomes()
    engine.park_many("s", 5, 3, got, poll_id="p1")
    assert engine.cancel_poll("p1", "client left")
    await settle()
    assert len(got) == 1 and isinstance(got[0], Released) and got[0].reason == "client left"
    assert counters(engine) == dict(counters(engine), waiting=0, released=1)
    engine.send_nowait("s", msg(1), 100)
    assert engine.stats.buffered_messages == 1


async def test_cancel_poll_after_handing_but_before_the_answer_gives_the_message_back(engine: Engine) -> None:
    got = Outcomes()
    engine.park_many("s", 5, 3, got, poll_id="p1")
    engine.send_nowait("s", msg(1), 100)  # handed to the parked poll
    engine.send_nowait("s", msg(2), 100)
    assert engine.cancel_poll("p1", "client left")  # before its answer was made
    await settle()
    assert len(got) == 1 and isinstance(got[0], Released)
    assert ids(engine.buffered("s")) == ["u1", "u2"]
    assert counters(engine) == dict(counters(engine), delivered=0, requeued=1, released=0, buffered=2)
    assert not engine.cancel_poll("p1", "again")


async def test_cancel_poll_after_the_answer_returns_false_and_refuses_the_id_later(engine: Engine) -> None:
    got = Outcomes()
    engine.park("s", 5, got, poll_id="p1")
    engine.send_nowait("s", msg(1), 100)
    await settle()
    assert ids(got) == ["u1"]
    assert not engine.cancel_poll("p1", "too late")  # the caller owns the message now
    late = Outcomes()
    assert engine.park("s", 5, late, poll_id="p1") is None
    assert len(late) == 1 and isinstance(late[0], Released)
    with pytest.raises(StreamReleased):
        await engine.receive("s", 5, "p1")


async def test_cancel_poll_before_the_poll_arrives_refuses_it(engine: Engine) -> None:
    assert not engine.cancel_poll("early")
    got = Outcomes()
    engine.send_nowait("s", msg(1), 100)
    assert engine.park_many("s", 5, 3, got, poll_id="early") is None
    assert len(got) == 1 and isinstance(got[0], Released)
    assert engine.stats.buffered_messages == 1  # it took nothing


async def test_cancel_poll_revokes_an_awaiting_poll_handed_a_message_its_task_has_not_taken(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive("s", 5, "p1"))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    assert engine.cancel_poll("p1", "client left")
    with pytest.raises(StreamReleased):
        await task
    assert ids(engine.buffered("s")) == ["u1"]
    assert counters(engine) == dict(counters(engine), delivered=0, requeued=1, waiting=0)


async def test_a_revoked_awaiting_poll_whose_task_is_also_cancelled_gives_back_once(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive_many("s", 5, 5, "p1"))
    await settle()
    engine.send_nowait("s", msg(1), 100)
    assert engine.cancel_poll("p1", "client left")
    task.cancel()  # the forwarding node's connection went too
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ids(engine.buffered("s")) == ["u1"]
    assert engine.stats.requeued_total == 1


async def test_cancel_poll_of_a_waiting_awaiting_poll_releases_it(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive("s", 5, "p1"))
    await settle()
    assert engine.cancel_poll("p1", "client left")
    with pytest.raises(StreamReleased):
        await task
    assert counters(engine) == dict(counters(engine), waiting=0, released=1)


async def test_a_batch_of_one_is_allowed_and_limits_say_what_is_wrong(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    assert ids(await engine.receive_many("s", 0, 1)) == ["u1"]
    got = Outcomes()
    assert engine.park_many("s", 0, 1, got) is None
    assert [ids(x) for x in got] == [["u2"]]
    with pytest.raises(ValueError, match="^max_messages must be at least 1$"):
        await engine.receive_many("s", 1, 0)
    with pytest.raises(ValueError, match="^max_messages must be at least 1$"):
        engine.park_many("s", 1, 0, got)


async def test_a_waiting_batch_whose_stream_moved_in_the_same_step_keeps_its_first(engine: Engine) -> None:
    task = asyncio.ensure_future(engine.receive_many("s", 5, 10))
    await settle()
    engine.send_nowait("s", msg(1), 100)  # handed to the waiting batch ...
    engine.send_nowait("s", msg(2), 100)
    detached = engine.detach("s", "moved")  # ... and the stream leaves before its task runs
    assert ids(await task) == ["u1"]
    assert detached is not None and ids(detached[1]) == ["u2"]


async def test_a_poll_refused_for_an_earlier_cancel_is_told_so(engine: Engine) -> None:
    engine.cancel_poll("early")
    got = Outcomes()
    engine.park("s", 5, got, poll_id="early")
    assert got[0].reason == "poll cancelled by the forwarding node"


async def test_answered_polls_leave_no_entry_behind(engine: Engine) -> None:
    got = Outcomes()
    engine.park("s", 5, got, poll_id="p1")
    engine.park_many("s", 5, 3, got, poll_id="p2")
    task = asyncio.ensure_future(engine.receive("s", 5, "p3"))
    await settle()
    for i in range(3):
        engine.send_nowait("s", msg(i), 100)
    await task
    await settle()
    assert len(got) == 2
    assert engine._polls == {}  # the table of polls by id holds only unanswered ones


async def test_a_batch_whose_first_message_waited_while_an_older_one_came_back_is_in_stream_order(
    engine: Engine,
) -> None:
    """A batch poll is handed ``u1``; before its answer is made, ``u0``
    (taken earlier by a poll that could not write it) is given back to the
    front: the batch answers ``u0, u1, u2``, the stream's order."""
    single, batch = Outcomes(), Outcomes()
    engine.park("s", 5, single)
    engine.send_nowait("s", msg(0), 100)
    await settle()
    assert ids(single) == ["u0"]
    engine.park_many("s", 5, 10, batch)
    engine.send_nowait("s", msg(1), 100)  # handed to the batch poll, answered on the next loop turn
    engine.send_nowait("s", msg(2), 100)
    engine.give_back("s", [single[0]])  # the single poll's answer could not be written
    await settle()
    assert [ids(b) for b in batch] == [["u0", "u1", "u2"]]
