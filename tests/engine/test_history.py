"""Fan-out histories (issue 13): every reader reads every message in order,
recovery from a position (complete, out of the window, new epoch), bounds
by count, age and bytes with every drop counted, readers that wait without
a task, queue receivers beside history readers, hand-off of a history."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import (
    Engine,
    HistoryRead,
    HistorySpec,
    ManualClock,
    Message,
    Position,
    Released,
    format_position,
    parse_position,
)
from ipubsub.errors import BufferFull, HistoryNotKept, StreamReleased

from .helpers import Outcomes, settle

pytestmark = pytest.mark.timeout(20)

SPEC = HistorySpec(size=100, ttl_seconds=60)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def engine(clock: ManualClock) -> Engine:
    return Engine(clock=clock, idle_seconds=30)


def stamped(clock: ManualClock, n: int, size: int = 0) -> Message:
    """Message ``u<n>`` stamped now on ``clock`` (history ages count from it)."""
    payload = f'{{"n":{n},"pad":"{"x" * size}"}}'.encode()
    return Message(f"u{n}", payload, clock.time_us())


def send(engine: Engine, clock: ManualClock, n: int, spec: HistorySpec = SPEC, stream: str = "s") -> None:
    engine.send_nowait(stream, stamped(clock, n), 1000, spec)


def uuids(read: HistoryRead) -> list[str]:
    return [e.message.uuid for e in read.entries]


def at(read: HistoryRead) -> Position:
    assert read.epoch is not None
    return Position(read.epoch, read.after)


async def read_all(engine: Engine, stream: str, start: Position | None, want: int, limit: int) -> list[str]:
    """Read ``want`` messages from ``start`` in batches of ``limit``, checking continuity."""
    got: list[str] = []
    position = start
    while len(got) < want:
        read = await engine.read_history(stream, position, 5, limit)
        assert read.recovered is not False
        assert len(read.entries) <= limit
        offsets = [e.offset for e in read.entries]
        assert offsets == list(range(offsets[0], offsets[0] + len(offsets))) if offsets else True
        if position is not None and offsets:
            assert offsets[0] == position.offset + 1  # no gap, no duplicate
        got += uuids(read)
        position = at(read)
    return got


# -- positions ---------------------------------------------------------------------------


def test_position_text_round_trips_and_rejects_garbage() -> None:
    assert parse_position(format_position("3f2a9c01b7de", 42)) == Position("3f2a9c01b7de", 42)
    for bad in ("", "abc", "abc-", "-5", "ab c-1", "e-1x", "e-" + "9" * 19, "é-1", "x" * 70 + "-1"):
        with pytest.raises(ValueError):
            parse_position(bad)


# -- every reader gets every message ------------------------------------------------------


async def test_many_waiting_readers_each_get_every_message_in_order(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 0)
    first = await engine.read_history("s", None, 0, 10)
    start = at(first)
    readers = [asyncio.ensure_future(read_all(engine, "s", start, 300, 7)) for _ in range(50)]
    await settle()
    assert engine.history_stats.waiting_readers == 50  # parked at the top, no task of their own
    for i in range(1, 301):
        send(engine, clock, i)
        if i % 13 == 0:
            await settle()
    results = await asyncio.gather(*readers)
    assert all(r == [f"u{i}" for i in range(1, 301)] for r in results)
    assert engine.history_stats.waiting_readers == 0


async def test_a_batch_send_reaches_each_waiting_reader_in_one_answer(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 0)
    start = at(await engine.read_history("s", None, 0, 1))
    readers = [asyncio.ensure_future(engine.read_history("s", start, 5, 100)) for _ in range(20)]
    await settle()
    for i in range(1, 6):  # one event loop step: one wake for all of them
        send(engine, clock, i)
    reads = await asyncio.gather(*readers)
    assert all(uuids(r) == ["u1", "u2", "u3", "u4", "u5"] for r in reads)
    assert reads[0] is reads[1]  # one answer for the readers at the same place: encoded once for all


async def test_a_read_without_position_starts_at_the_oldest_message_held(engine: Engine, clock: ManualClock) -> None:
    for i in range(5):
        send(engine, clock, i, HistorySpec(3, 60))
    read = await engine.read_history("s", None, 0, 10)
    assert uuids(read) == ["u2", "u3", "u4"] and read.recovered is None
    assert read.after == 5 and read.position == format_position(read.epoch or "", 5)


async def test_readers_that_come_before_the_first_send_get_it(engine: Engine, clock: ManualClock) -> None:
    reader = asyncio.ensure_future(engine.read_history("s", None, 5, 10))
    await settle()
    assert "s" in engine and engine.history_readers("s") == 1
    send(engine, clock, 1)
    send(engine, clock, 2)
    assert uuids(await reader) == ["u1", "u2"]


async def test_an_empty_answer_after_the_timeout_keeps_the_position(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1)
    start = at(await engine.read_history("s", None, 0, 10))
    read = await engine.read_history("s", start, 0.05, 10)
    assert read.entries == [] and read.recovered is True and at(read) == start
    pending = await engine.read_history("t", None, 0.05, 10)  # nothing there: no epoch yet
    assert pending.entries == [] and pending.epoch is None and pending.position is None
    assert "t" not in engine  # the placeholder went with its last reader


# -- recovery -----------------------------------------------------------------------------


async def test_recovery_inside_the_window_has_no_gap_and_no_duplicate(engine: Engine, clock: ManualClock) -> None:
    for i in range(1, 11):
        send(engine, clock, i)
    first = await engine.read_history("s", None, 0, 4)
    assert uuids(first) == ["u1", "u2", "u3", "u4"]
    for i in range(11, 21):  # the reader is away meanwhile
        send(engine, clock, i)
    back = await engine.read_history("s", at(first), 0, 100)
    assert back.recovered is True and uuids(back) == [f"u{i}" for i in range(5, 21)]
    assert engine.history_stats.recovered_total == 1


async def test_a_position_out_of_the_window_is_not_recovered(engine: Engine, clock: ManualClock) -> None:
    spec = HistorySpec(5, 60)
    send(engine, clock, 1, spec)
    start = at(await engine.read_history("s", None, 0, 1))
    for i in range(2, 12):
        send(engine, clock, i, spec)  # u2..u6 fall out of the window
    read = await engine.read_history("s", start, 5, 10)
    assert read.recovered is False and read.gap == "window" and read.entries == []
    assert read.after == 6  # the oldest available position: reading after it gives u7
    assert uuids(await engine.read_history("s", at(read), 0, 10)) == ["u7", "u8", "u9", "u10", "u11"]
    assert engine.history_stats.not_recovered_total == 1
    assert engine.history_stats.dropped["size"] == 6


async def test_a_position_of_another_epoch_is_not_recovered(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1)
    read = await engine.read_history("s", Position("0123456789ab", 1), 5, 10)
    assert read.recovered is False and read.gap == "epoch" and read.after == 0
    gone = await engine.read_history("nothing-here", Position("0123456789ab", 1), 5, 10)
    assert gone.recovered is False and gone.epoch is None


async def test_a_reader_the_window_overtakes_while_waiting_is_told(engine: Engine, clock: ManualClock) -> None:
    spec = HistorySpec(3, 10)
    send(engine, clock, 1, spec)
    start = at(await engine.read_history("s", None, 0, 1))
    clock.advance(11)  # u1 expires: the history is empty, a reader without position waits too
    with_position = asyncio.ensure_future(engine.read_history("s", start, 5, 10))
    without = asyncio.ensure_future(engine.read_history("s", None, 5, 10))
    await settle()
    assert engine.history_readers("s") == 2
    for i in range(2, 8):  # one step: more than the window before the wake
        send(engine, clock, i, spec)
    told = await with_position
    assert told.recovered is False and told.gap == "window" and told.after == 4
    assert uuids(await without) == ["u5", "u6", "u7"]  # it asked for the oldest held


async def test_eviction_makes_a_new_epoch(engine: Engine, clock: ManualClock) -> None:
    spec = HistorySpec(10, 5)
    send(engine, clock, 1, spec)
    old = at(await engine.read_history("s", None, 0, 10))
    # the queue holds u1 too: drain it so the stream can go idle
    await engine.receive("s", 0)
    clock.advance(31)
    engine.sweep()
    clock.advance(31)
    assert engine.sweep() == 1 and "s" not in engine
    assert engine.history_stats.dropped["ttl"] == 1 and engine.history_stats.bytes == 0
    send(engine, clock, 2, spec)
    read = await engine.read_history("s", old, 0, 10)
    assert read.recovered is False and read.gap == "epoch" and read.epoch != old.epoch


# -- bounds and eviction -----------------------------------------------------------------


async def test_messages_older_than_the_ttl_leave_the_window(engine: Engine, clock: ManualClock) -> None:
    spec = HistorySpec(100, 10)
    send(engine, clock, 1, spec)
    clock.advance(6)
    send(engine, clock, 2, spec)
    clock.advance(6)
    assert uuids(await engine.read_history("s", None, 0, 10)) == ["u2"]
    assert engine.history_stats.dropped["ttl"] == 1


async def test_a_history_with_live_messages_keeps_an_idle_stream(engine: Engine, clock: ManualClock) -> None:
    spec = HistorySpec(100, 100)
    send(engine, clock, 1, spec)
    await engine.receive("s", 0)  # queue empty, nobody waiting: idle
    for _ in range(3):  # idle for 93 s > idle_seconds, but u1 lives 100 s
        clock.advance(31)
        assert engine.sweep() == 0
    clock.advance(31)
    evicted = engine.sweep()
    clock.advance(31)
    assert evicted + engine.sweep() == 1 and engine.history_stats.histories == 0


async def test_the_stream_byte_bound_drops_the_oldest(clock: ManualClock) -> None:
    engine = Engine(clock=clock, idle_seconds=30, max_stream_bytes=4000, max_buffered_bytes=1 << 20)
    for i in range(20):
        engine.send_nowait("s", stamped(clock, i, 300), 1, SPEC)
    assert 0 < engine.history_stats.bytes <= 4000
    assert engine.history_stats.dropped["bytes"] + len((await engine.read_history("s", None, 0, 100)).entries) == 20


async def test_the_node_budget_counts_histories_sheds_own_history_then_refuses(clock: ManualClock) -> None:
    engine = Engine(clock=clock, idle_seconds=30, max_stream_bytes=60_000, max_buffered_bytes=60_000)
    for i in range(40):  # each message ~1 kB in history (charged twice + overhead) and in a 1-slot queue
        engine.send_nowait("h", stamped(clock, i, 1000), 1, SPEC)
    s = engine.history_stats
    assert s.dropped["budget"] > 0
    assert engine.stats.buffered_bytes + s.bytes <= 60_000
    with pytest.raises(BufferFull):  # a plain stream finds the budget taken by the history
        for i in range(100):
            engine.send_nowait(f"q{i}", stamped(clock, i, 1000), 10)
    assert engine.stats.buffered_bytes + s.bytes <= 60_000


async def test_a_stream_without_history_refuses_history_reads(engine: Engine, clock: ManualClock) -> None:
    engine.send_nowait("plain", stamped(clock, 1), 10)
    with pytest.raises(HistoryNotKept):
        await engine.read_history("plain", None, 1, 10)
    with pytest.raises(ValueError):
        await engine.read_history("s", None, 1, 0)


async def test_the_first_send_fixes_the_history(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1, HistorySpec(2, 60))
    for i in range(2, 6):
        send(engine, clock, i, HistorySpec(50, 60))  # ignored: fixed when the stream was created
    assert uuids(await engine.read_history("s", None, 0, 10)) == ["u4", "u5"]


# -- queue receivers beside history readers -------------------------------------------------


async def test_queue_receivers_and_history_readers_do_not_disturb_each_other(
    engine: Engine, clock: ManualClock
) -> None:
    queue = [asyncio.ensure_future(engine.receive("s", 5)) for _ in range(3)]
    history = asyncio.ensure_future(engine.read_history("s", None, 5, 10))
    await settle()
    for i in range(1, 6):
        send(engine, clock, i)
    taken = [m.uuid for m in await asyncio.gather(*queue)]
    assert taken == ["u1", "u2", "u3"]  # each queue message to one receiver
    assert uuids(await history) == ["u1", "u2", "u3", "u4", "u5"]  # the history reader sees all
    assert [m.uuid for m in await engine.receive_many("s", 0, 10)] == ["u4", "u5"]
    assert uuids(await engine.read_history("s", None, 0, 10)) == ["u1", "u2", "u3", "u4", "u5"]


async def test_blocked_senders_enter_the_history_when_admitted_in_order(engine: Engine, clock: ManualClock) -> None:
    engine.send_nowait("s", stamped(clock, 0), 1, SPEC)
    blocked = [asyncio.ensure_future(engine.send("s", stamped(clock, i), 1, 5, SPEC)) for i in (1, 2)]
    await settle()
    assert uuids(await engine.read_history("s", None, 0, 10)) == ["u0"]  # not accepted yet
    for _ in range(3):
        await engine.receive("s", 5)
    await asyncio.gather(*blocked)
    assert uuids(await engine.read_history("s", None, 0, 10)) == ["u0", "u1", "u2"]


# -- parked reads -----------------------------------------------------------------------------


async def test_park_read_answers_at_once_or_later_and_can_end(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1)
    now = Outcomes()
    assert engine.park_read("s", None, 5, 10, now) is None and uuids(now[0]) == ["u1"]
    later = Outcomes()
    parked = engine.park_read("s", at(now[0]), 5, 10, later)
    assert parked is not None and later == []
    send(engine, clock, 2)
    assert later == []  # answered from the event loop, never inside the send
    await settle()
    assert uuids(later[0]) == ["u2"] and not parked.end("gone")
    ended = Outcomes()
    parked = engine.park_read("s", at(later[0]), 5, 10, ended)
    assert parked is not None and parked.end("gone")
    await settle()
    assert isinstance(ended[0], Released) and engine.history_stats.waiting_readers == 0


async def test_a_cancelled_reader_leaves_nothing_behind(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1)
    start = at(await engine.read_history("s", None, 0, 1))
    task = asyncio.ensure_future(engine.read_history("s", start, 5, 10))
    await settle()
    task.cancel()
    await settle()
    assert engine.history_stats.waiting_readers == 0 and engine.history_readers("s") == 0
    send(engine, clock, 2)
    await settle()
    assert uuids(await engine.read_history("s", start, 0, 10)) == ["u2"]


async def test_shutdown_releases_history_readers(engine: Engine, clock: ManualClock) -> None:
    task = asyncio.ensure_future(engine.read_history("s", None, 5, 10))
    await settle()
    assert engine.release_waiters("node is shutting down") == 1
    with pytest.raises(StreamReleased):
        await task


async def test_waiting_readers_cost_no_task(engine: Engine, clock: ManualClock) -> None:
    send(engine, clock, 1)
    start = at(await engine.read_history("s", None, 0, 1))
    tasks_before = len(asyncio.all_tasks())
    got = [Outcomes() for _ in range(1000)]
    for outcomes in got:
        engine.park_read("s", start, 5, 10, outcomes)
    assert len(asyncio.all_tasks()) == tasks_before and engine.history_readers("s") == 1000
    send(engine, clock, 2)
    await settle()
    assert all(uuids(o[0]) == ["u2"] for o in got)
    assert engine.history_stats.delivered_total == 1 + 1000


# -- hand-off ---------------------------------------------------------------------------------


async def test_a_handed_history_keeps_its_epoch_and_offsets(clock: ManualClock) -> None:
    old, new = Engine(clock=clock, idle_seconds=30), Engine(clock=clock, idle_seconds=30)
    for i in range(1, 6):
        send(old, clock, i)
    reader_at = at(await old.read_history("s", None, 0, 2))
    waiting = asyncio.ensure_future(old.read_history("s", Position(reader_at.epoch, 5), 5, 10))
    await settle()
    exported = old.export_history("s")
    assert exported is not None
    state, detached = exported
    capacity, msgs = old.detach("s", "moved") or (None, [])
    assert not waiting.done()  # kept waiting until the new owner has the history
    new.attach("s", capacity, msgs)
    new.import_history("s", state)
    old.release_readers(detached, "stream moved")
    with pytest.raises(StreamReleased):
        await waiting
    read = await new.read_history("s", reader_at, 0, 10)
    assert read.recovered is True and uuids(read) == ["u3", "u4", "u5"] and read.epoch == reader_at.epoch
    assert old.history_stats.bytes == 0 and old.history_stats.histories == 0
    assert new.history_stats.histories == 1 and new.history_stats.messages == 5


async def test_an_older_handed_history_wins_over_one_started_meanwhile(clock: ManualClock) -> None:
    old, new = Engine(clock=clock, idle_seconds=30), Engine(clock=clock, idle_seconds=30)
    for i in range(1, 4):
        send(old, clock, i)
    position = at(await old.read_history("s", None, 0, 10))
    clock.advance(1)
    send(new, clock, 4)  # the new owner got a send before the hand-off arrived
    fresh = at(await new.read_history("s", None, 0, 10))
    exported = old.export_history("s")
    assert exported is not None
    new.import_history("s", exported[0])
    read = await new.read_history("s", position, 0, 10)
    assert read.recovered is True and uuids(read) == ["u4"]  # appended after the handed ones
    read_fresh = await new.read_history("s", fresh, 0, 10)  # the new owner's own epoch is an alias now
    assert read_fresh.recovered is True and read_fresh.entries == [] and read_fresh.epoch == position.epoch
    # the other way round: a stray newer history is appended to the owner's older one
    stray = Engine(clock=clock, idle_seconds=30)
    clock.advance(1)
    send(stray, clock, 5)
    exported = stray.export_history("s")
    assert exported is not None
    new.import_history("s", exported[0])
    read = await new.read_history("s", position, 0, 10)
    assert read.recovered is True and uuids(read) == ["u4", "u5"]
    assert uuids(await new.read_history("s", fresh, 0, 10)) == ["u5"]
    assert new.history_stats.messages == 5 and new.history_stats.histories == 1


async def test_aliases_travel_with_a_history_and_compose(clock: ManualClock) -> None:
    a, b, c = (Engine(clock=clock, idle_seconds=30) for _ in range(3))
    send(a, clock, 1)
    pa = at(await a.read_history("s", None, 0, 10))
    clock.advance(1)
    send(b, clock, 2)
    pb = at(await b.read_history("s", None, 0, 10))
    exported = a.export_history("s")
    assert exported is not None
    b.import_history("s", exported[0])  # a's is older: b's epoch becomes an alias
    exported = b.export_history("s")
    assert exported is not None
    c.import_history("s", exported[0])  # and moves on with it
    send(c, clock, 3)
    assert uuids(await c.read_history("s", pa, 0, 10)) == ["u2", "u3"]
    assert uuids(await c.read_history("s", pb, 0, 10)) == ["u3"]


async def test_an_unknown_epoch_waits_for_the_hand_off_during_a_ring_change(clock: ManualClock) -> None:
    old, new = Engine(clock=clock, idle_seconds=30), Engine(clock=clock, idle_seconds=30)
    for i in range(1, 4):
        send(old, clock, i)
    position = at(await old.read_history("s", None, 2, 10))
    early = await new.read_history("s", position, 0, 10, wait_unknown=True)  # no verdict yet, same position
    assert early.recovered is None and early.entries == [] and at(early) == position
    reader = asyncio.ensure_future(new.read_history("s", Position(position.epoch, 2), 5, 10, wait_unknown=True))
    clock.advance(1)
    send(new, clock, 4)  # the new owner starts its own history before the hand-off arrives
    await settle()
    assert not reader.done()  # its epoch is still unknown here
    exported = old.export_history("s")
    assert exported is not None
    new.import_history("s", exported[0])
    read = await reader
    assert read.recovered is True and uuids(read) == ["u3", "u4"] and read.epoch == position.epoch
    timed_out = await new.read_history("s", Position("0123456789ab", 7), 0.05, 10, wait_unknown=True)
    assert timed_out.recovered is None and at(timed_out) == Position("0123456789ab", 7)
    told = await new.read_history("s", Position("0123456789ab", 7), 5, 10)  # outside a ring change: told at once
    assert told.recovered is False and told.gap == "epoch"


async def test_readers_that_came_first_wait_on_an_imported_history(clock: ManualClock) -> None:
    old, new = Engine(clock=clock, idle_seconds=30), Engine(clock=clock, idle_seconds=30)
    send(old, clock, 1)
    reader = asyncio.ensure_future(new.read_history("s", None, 5, 10))
    await settle()
    exported = old.export_history("s")
    assert exported is not None
    new.attach("s", 1000, [])
    new.import_history("s", exported[0])
    assert uuids(await reader) == ["u1"]
