"""DurableLog (the node's view of a store) against every backend: batch
reads, batch appends through the group commit, waiting readers."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from ipubsub.engine import SystemClock
from ipubsub.errors import ReceiveTimeout, StorageUnavailable
from ipubsub.storage import NewMessage, create_store
from ipubsub.storage.base import LeaseRef, SpilledMessage, SpilledStream
from ipubsub.storage.durable import MAX_READ_BATCH, DurableLog
from tests.support.wait import wait_until

from .conftest import drop_tables, proxied_dsn, start_proxy, storage_config

pytestmark = pytest.mark.timeout(120)

HOUR_US = 3_600 * 1_000_000
MakeLog = Callable[..., Awaitable[DurableLog]]


def msgs(stream: str, prefix: str, count: int) -> list[NewMessage]:
    now = time.time_ns() // 1000
    return [NewMessage(stream, f"{prefix}{i}", f'"{prefix}{i}"'.encode(), now, now + HOUR_US) for i in range(count)]


@pytest.fixture
async def make_log(backend: str, tmp_path: Path) -> AsyncIterator[MakeLog]:
    """Factory of started, connected durable logs on one fresh table."""
    table = f"t_{secrets.token_hex(6)}"
    logs: list[DurableLog] = []

    async def make(timeout: float = 5.0, dsn: str | None = None, **storage: object) -> DurableLog:
        """``dsn`` replaces the backend's; ``storage`` replaces ``storage.*`` keys."""
        config = storage_config(backend, table, tmp_path, timeout, **({"dsn": dsn} if dsn else {}))
        if storage:
            config = msgspec.structs.replace(config, **storage)
        store = create_store(config)
        assert store is not None
        log = DurableLog(store, config, SystemClock())
        logs.append(log)
        await log.start()
        assert await log.wait_up(60), log.last_error
        return log

    try:
        yield make
    finally:
        async with asyncio.timeout(60):
            for log in logs:
                await log.close()
            await drop_tables(backend, table)


async def test_batch_read_waits_for_the_first_message_then_takes_what_is_stored(make_log: MakeLog) -> None:
    log = await make_log()
    reader = asyncio.create_task(log.read_batch("S", None, 20, 50))
    # registered, and its first (empty) read done
    await wait_until(lambda: log.waiting_readers == 1 and log.reads_total == 1)
    reads_before = log.reads_total

    await log.append_batch(msgs("S", "m", 30))  # one transaction: all 30 visible at once
    got = await asyncio.wait_for(reader, 10)
    assert [m.uuid for m in got] == [f"m{i}" for i in range(30)]
    assert log.reads_total - reads_before == 1  # woken by the write, one range read
    assert log.waiting_readers == 0


async def test_batch_reads_page_through_the_log_one_read_per_batch(make_log: MakeLog) -> None:
    log = await make_log()
    for n in range(5):
        await log.append_batch(msgs("S", f"b{n}-", 500))
    expected = [f"b{n}-{i}" for n in range(5) for i in range(500)]

    reads_before = log.reads_total
    seen = []
    after = None
    for size in (1000, 1000, 500):
        got = await log.read_batch("S", after, 0, MAX_READ_BATCH)
        assert len(got) == size
        seen.extend(got)
        after = got[-1].position
    assert log.reads_total - reads_before == 3
    assert [m.uuid for m in seen] == expected
    assert all(a.position < b.position for a, b in itertools.pairwise(seen))
    assert [m.uuid for m in await log.read_batch("S", seen[1499].position, 0, 2)] == expected[1500:1502]
    with pytest.raises(ReceiveTimeout):
        await log.read_batch("S", after, 0, 10)


@pytest.mark.parametrize("limit", [0, MAX_READ_BATCH + 1])
async def test_batch_read_limit_is_checked(make_log: MakeLog, limit: int) -> None:
    log = await make_log()
    with pytest.raises(ValueError):
        await log.read_batch("S", None, 0, limit)


async def test_concurrent_batches_are_each_committed_whole_and_in_order(make_log: MakeLog) -> None:
    log = await make_log()
    batches = [msgs("S", f"w{k}-", 100) for k in range(12)]
    results = await asyncio.wait_for(asyncio.gather(*(log.append_batch(b) for b in batches)), 60)

    for batch_results in results:
        positions = [r.position for r in batch_results]
        assert not any(r.duplicate for r in batch_results)
        assert all(a < b for a, b in itertools.pairwise(positions))
    assert log.writes_total == 1200
    assert log.batches_total <= 12  # group commit merged callers, never split one
    stored = []
    after = None
    while len(stored) < 1200:
        got = await log.read_batch("S", after, 0, MAX_READ_BATCH)
        stored.extend(got)
        after = got[-1].position
    by_writer: dict[str, list[str]] = {}
    for m in stored:
        by_writer.setdefault(m.uuid.partition("-")[0], []).append(m.uuid)
    assert by_writer == {f"w{k}": [f"w{k}-{i}" for i in range(100)] for k in range(12)}

    retry = await log.append_batch(batches[3])  # a whole batch retried: stored once
    assert [r.position for r in retry] == [r.position for r in results[3]]
    assert all(r.duplicate for r in retry)


# -- a database that stops answering (issue 9, item 7) ------------------------------


async def timed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    """How long ``call`` took and what it raised."""
    started = time.monotonic()
    try:
        await call
    except Exception as exc:
        return time.monotonic() - started, exc
    return time.monotonic() - started, None


@pytest.mark.parametrize("backend_name", ["postgres", "mysql"], indirect=True)
async def test_blackholed_database_bounds_every_call_and_reports_down(make_log: MakeLog, backend: str) -> None:
    """Packets dropped, not refused: every durable call fails within its own
    deadline (time queued behind a stuck batch included), the log says
    ``down`` as soon as one timed out, and a probe brings it back."""
    deadline = 1.0
    proxy = await start_proxy(backend)
    try:
        log = await make_log(
            timeout=deadline, reconnect_max_seconds=0.2, dsn=proxied_dsn(backend, proxy.port)
        )
        await log.append_batch(msgs("S", "before", 1))

        proxy.blackhole()
        started = time.monotonic()
        calls = [timed(log.append(m)) for m in msgs("S", "lost", 20)]
        calls += [timed(log.read("S", None, 5))]
        async with asyncio.timeout(30):
            outcomes = await asyncio.gather(*calls)
        for seconds, error in outcomes:
            assert isinstance(error, StorageUnavailable), error
            assert seconds < deadline + 0.5, f"a call took {seconds:.2f} s with a {deadline} s deadline"
        assert log.snapshot().status == "down"
        assert time.monotonic() - started < deadline + 0.5

        seconds, error = await timed(log.append(msgs("S", "while-down", 1)[0]))
        assert isinstance(error, StorageUnavailable) and seconds < 0.1  # refused at once

        proxy.heal()
        await wait_until(lambda: log.snapshot().status == "up", timeout=20)
        await log.append_batch(msgs("S", "after", 1))
        stored = [m.uuid for m in await log.read_batch("S", None, 0, 100)]
        # a batch caught mid-flight may have committed when the path healed
        assert stored[0] == "before0" and stored[-1] == "after0"
        assert set(stored[1:-1]) <= {f"lost{i}" for i in range(20)}
    finally:
        await proxy.stop()


@pytest.mark.parametrize("backend_name", ["postgres"], indirect=True)
async def test_idle_node_notices_a_blackholed_database(make_log: MakeLog, backend: str) -> None:
    """With no traffic at all, the liveness probe marks the storage down
    within a probe interval plus the deadline, and up again after."""
    proxy = await start_proxy(backend)
    try:
        log = await make_log(
            timeout=1.0, probe_interval_seconds=0.5, reconnect_max_seconds=0.2,
            dsn=proxied_dsn(backend, proxy.port),
        )
        proxy.blackhole()
        started = time.monotonic()
        await wait_until(lambda: log.snapshot().status == "down", timeout=10)
        assert time.monotonic() - started < 0.5 + 1.0 + 0.5
        proxy.heal()
        await wait_until(lambda: log.snapshot().status == "up", timeout=20)
    finally:
        await proxy.stop()


# -- consumer groups and spilled buffers through the durable log --------------------


async def test_a_waiting_consumer_is_woken_by_a_write_and_by_a_lease_that_ends(make_log: MakeLog) -> None:
    log = await make_log()
    first = asyncio.create_task(log.claim("S", "g", "c1", 10, 0.3, 20))
    await wait_until(lambda: log.waiting_readers == 1)
    await log.append_batch(msgs("S", "m", 2))
    claim = await asyncio.wait_for(first, 10)
    assert [(m.message.uuid, m.delivery) for m in claim.messages] == [("m0", 1), ("m1", 1)]

    started = time.monotonic()  # c1 never acks: its 0.3 s lease ends, c2 gets both
    again = await asyncio.wait_for(log.claim("S", "g", "c2", 10, 30, 20), 10)
    assert [(m.message.uuid, m.delivery) for m in again.messages] == [("m0", 2), ("m1", 2)]
    assert time.monotonic() - started < 5
    stale = [LeaseRef(m.message.position, m.delivery) for m in claim.messages]
    fresh = [LeaseRef(m.message.position, m.delivery) for m in again.messages]
    assert await log.ack("S", "g", stale) == [False, False]
    assert await log.nack("S", "g", fresh[:1]) == [True]
    assert [m.message.uuid for m in (await log.claim("S", "g", "c3", 10, 30, 0)).messages] == ["m0"]
    (info,) = await log.groups("S")
    assert (info.group, info.pending, info.lag) == ("g", 2, 0)
    with pytest.raises(ReceiveTimeout):
        await log.claim("S", "g", "c3", 10, 30, 0.2)
    assert await log.delete_group("S", "g") is True
    assert await log.groups("S") == []


async def test_idle_groups_are_swept(make_log: MakeLog) -> None:
    log = await make_log(sweep_interval_seconds=0.2, group_idle_seconds=0.5)
    await log.append_batch(msgs("S", "m", 1))
    await log.claim("S", "g", "c", 1, 30, 0)
    assert [i.group for i in await log.groups("S")] == ["g"]
    async def swept() -> bool:
        return not await log.groups("S")

    await wait_until(swept, 10, "the idle group removed", interval=0.1)
    assert log.idle_groups_deleted_total == 1


async def test_restore_hands_spilled_streams_over_once(make_log: MakeLog) -> None:
    log = await make_log()
    streams = [
        SpilledStream("A", 4, [SpilledMessage(f"a{i}", b"1", 7) for i in range(3)]),
        SpilledStream("B", None, [SpilledMessage("b", b"2", 7)]),
    ]
    assert await log.spill("node-1", streams) == 4
    restored: list[SpilledStream] = []
    assert await log.restore_spilled("node-1", restored.extend, pytest.fail) == 4
    assert [(s.stream_id, s.capacity, s.messages) for s in restored] == [
        (s.stream_id, s.capacity, s.messages) for s in streams
    ]
    assert await log.restore_spilled("node-1", pytest.fail, pytest.fail) == 0  # gone once restored


@pytest.mark.parametrize("backend_name", ["postgres"], indirect=True)
async def test_a_restore_whose_delete_fails_is_undone_and_kept(make_log: MakeLog, backend: str) -> None:
    proxy = await start_proxy(backend)
    try:
        log = await make_log(timeout=1.0, reconnect_max_seconds=0.2, dsn=proxied_dsn(backend, proxy.port))
        await log.spill("node-1", [SpilledStream("A", 4, [SpilledMessage("a", b"1", 7)])])
        undone: list[SpilledStream] = []

        def restore(streams: list[SpilledStream]) -> None:
            proxy.blackhole()  # the database goes silent before the delete

        with pytest.raises(StorageUnavailable):
            await log.restore_spilled("node-1", restore, undone.extend)
        assert [s.stream_id for s in undone] == ["A"]
        proxy.heal()
        await wait_until(lambda: log.status == "up", timeout=20)
        again: list[SpilledStream] = []
        assert await log.restore_spilled("node-1", again.extend, pytest.fail) == 1
    finally:
        await proxy.stop()
