"""A stream taken in without its history (a lone node's restore of spilled
buffers, a hand-off of a queue whose history did not come along) is not a
stream that keeps no history: its first send here fixes the history, and
readers of its old positions are told ``recovered: false``.

Found by ``ipubsub check`` (seed 7: after a lone node's SIGTERM and restart,
the restored stream answered ``history_not_kept`` for good, and the messages
sent to it afterwards reached no history reader, with no gap reported)."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, HistorySpec, ManualClock, Message, Position
from ipubsub.errors import HistoryNotKept

from .helpers import settle

pytestmark = pytest.mark.timeout(20)

SPEC = HistorySpec(size=100, ttl_seconds=60)


def stamped(clock: ManualClock, n: int) -> Message:
    return Message(f"u{n}", f'{{"n":{n}}}'.encode(), clock.time_us())


async def test_a_restored_stream_keeps_the_history_its_next_send_asks_for() -> None:
    clock = ManualClock()
    before, after = Engine(clock=clock, idle_seconds=30), Engine(clock=clock, idle_seconds=30)
    for i in range(1, 4):
        before.send_nowait("room", stamped(clock, i), 1, SPEC)
    old = await before.read_history("room", None, 0, 10)
    assert old.epoch is not None
    capacity, msgs = before.detach("room", "node is shutting down") or (None, [])
    after.attach("room", capacity, msgs)  # the restore: the queue only

    waiting = asyncio.ensure_future(after.read_history("room", None, 5, 10))  # waits, is not refused
    await settle()
    assert not waiting.done()
    after.send_nowait("room", stamped(clock, 4), 1, SPEC)
    got = await asyncio.wait_for(waiting, 5)
    assert [e.message.uuid for e in got.entries] == ["u4"]

    told = await after.read_history("room", Position(old.epoch, old.after), 0, 10)
    assert told.recovered is False and told.gap == "epoch"
    assert after.history_stats.histories == 1


async def test_the_first_send_after_a_restore_fixes_no_history_too() -> None:
    engine = Engine(clock=ManualClock(), idle_seconds=30)
    engine.attach("plain", 10, [Message("u1", b"1", 1)])
    engine.send_nowait("plain", Message("u2", b"2", 2), 10)  # no history asked for: none kept
    engine.send_nowait("plain", Message("u3", b"3", 3), 10, SPEC)  # too late: fixed by the send before
    with pytest.raises(HistoryNotKept):
        await engine.read_history("plain", None, 0, 10)
