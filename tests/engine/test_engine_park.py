"""Engine.park: a receive that waits without a task (the owner's side of a
forwarded long poll).  Its outcome goes to a callback exactly once."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, Released
from tests.support.wait import wait_until

from .helpers import Outcomes, msg, settle

pytestmark = pytest.mark.timeout(20)


async def test_a_ready_message_is_delivered_before_park_returns(engine: Engine) -> None:
    engine.send_nowait("s", msg(1), 100)
    got = Outcomes()
    assert engine.park("s", 5, got) is None
    assert [m.uuid for m in got] == ["u1"]
    assert engine.stats.delivered_total == 1 and engine.stats.buffered_messages == 0


async def test_a_zero_timeout_with_nothing_there_times_out_at_once(engine: Engine) -> None:
    got = Outcomes()
    assert engine.park("s", 0, got) is None
    assert got == [None]
    assert engine.stats.receive_timeouts_total == 1 and engine.stats.waiting_receivers == 0


async def test_a_parked_receive_gets_the_next_message(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park("s", 5, got)
    assert parked is not None and got == []
    assert engine.stats.waiting_receivers == 1
    engine.send_nowait("s", msg(2), 100)
    await settle()
    assert [m.uuid for m in got] == ["u2"]
    assert engine.stats.waiting_receivers == 0 and engine.stats.buffered_messages == 0
    parked.end("too late")  # nothing left to end
    await settle()
    assert len(got) == 1


async def test_a_parked_receive_times_out(engine: Engine) -> None:
    got = Outcomes()
    engine.park("s", 0.05, got)
    await wait_until(lambda: got, 5, "the parked receive timing out")
    assert got == [None]
    assert engine.stats.receive_timeouts_total == 1 and engine.stats.waiting_receivers == 0
    engine.send_nowait("s", msg(3), 100)  # nobody takes it: buffered
    assert engine.stats.buffered_messages == 1


async def test_ending_a_parked_receive_releases_it_and_leaves_the_message_for_the_next(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park("s", 5, got)
    assert parked is not None
    parked.end("the caller went away")
    await settle()
    assert len(got) == 1 and isinstance(got[0], Released) and got[0].reason == "the caller went away"
    assert engine.stats.waiting_receivers == 0 and engine.stats.released_total == 1
    engine.send_nowait("s", msg(4), 100)
    assert (await engine.receive("s", 0)).uuid == "u4"


async def test_ending_after_a_message_was_handed_but_not_delivered_gives_it_back(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park("s", 5, got)
    assert parked is not None
    engine.send_nowait("s", msg(5), 100)  # handed to the parked receive ...
    engine.send_nowait("s", msg(6), 100)
    assert parked.end("the caller went away")  # ... whose caller leaves before deliver ran
    await settle()
    assert len(got) == 1 and isinstance(got[0], Released) and got[0].reason == "the caller went away"
    assert engine.stats.requeued_total == 1 and engine.stats.delivered_total == 0
    assert [m.uuid for m in engine.buffered("s")] == ["u5", "u6"]  # back at the front, in order
    assert not parked.end("again")


async def test_ending_after_deliver_ran_changes_nothing(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park("s", 5, got)
    assert parked is not None
    engine.send_nowait("s", msg(7), 100)
    await settle()
    assert [m.uuid for m in got] == ["u7"]
    assert not parked.end("too late")  # the caller owns the message now
    engine.requeue("s", got[0])  # ... and gives it back if it cannot use it
    assert (await engine.receive("s", 0)).uuid == "u7"


async def test_parked_and_awaiting_receivers_share_one_fifo_queue(engine: Engine) -> None:
    first, third = Outcomes(), Outcomes()
    engine.park("s", 5, first)
    second = asyncio.ensure_future(engine.receive("s", 5))
    await settle()
    engine.park("s", 5, third)
    for i in range(3):
        engine.send_nowait("s", msg(i), 100)
    await settle()
    assert [m.uuid for m in first] == ["u0"]
    assert (await second).uuid == "u1"
    assert [m.uuid for m in third] == ["u2"]


async def test_a_stream_moving_away_releases_parked_receives(engine: Engine) -> None:
    got = Outcomes()
    engine.park("s", 5, got)
    engine.detach("s", "stream moved to node n2")
    await settle()
    assert len(got) == 1 and isinstance(got[0], Released) and "n2" in got[0].reason
    assert engine.stats.waiting_receivers == 0


async def test_a_receive_parked_without_a_timeout_has_no_timer_and_waits_until_served_or_ended(engine: Engine) -> None:
    got = Outcomes()
    parked = engine.park_many("s", None, 10, got)
    assert parked is not None and parked._handle is None
    await settle()
    assert got == [] and engine.stats.waiting_receivers == 1
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    await settle()
    assert [[m.uuid for m in batch] for batch in got] == [["u1", "u2"]]
    other = Outcomes()
    parked = engine.park("s", None, other)
    assert parked is not None
    assert parked.end("the subscriber went away")
    await settle()
    assert len(other) == 1 and isinstance(other[0], Released)
    assert engine.stats.waiting_receivers == 0 and engine.stats.receive_timeouts_total == 0
