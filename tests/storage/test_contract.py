"""The MessageStore contract, run against every backend (see conftest).

Times are explicit: ``now_us`` arguments are derived from the ``t0`` fixture,
nothing sleeps for expiry.  Expiries lie hours ahead of the real clock, so
the native expiry of Cassandra (TTL) and MongoDB (TTL index) never fires
during a test; their reads must filter on ``expires_at_us`` by themselves.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import time
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipubsub.config import ConfigError, StorageConfig
from ipubsub.errors import StorageUnavailable
from ipubsub.storage import AppendResult, MessageStore, NewMessage, StoredMessage, create_store
from ipubsub.storage.base import Claim, GroupInfo, LeaseRef, SpilledMessage, SpilledStream

from .conftest import BACKENDS, MakeStore, proxied_dsn, start_proxy, storage_config

pytestmark = pytest.mark.timeout(120)

HOUR_US = 3_600 * 1_000_000
NATIVE_EXPIRY = {"cassandra"}  # delete_expired is a no-op there
TRANSACTIONAL = {"sqlite", "postgres", "mysql"}


def msg(stream: str, uuid: str, at: int, *, ttl_us: int = HOUR_US, payload: bytes | None = None) -> NewMessage:
    return NewMessage(stream, uuid, payload if payload is not None else uuid.encode(), at, at + ttl_us)


async def read_all(store: MessageStore, stream: str, now_us: int, *, page: int = 3) -> list[StoredMessage]:
    """Page through the stream with read_after until it runs dry."""
    out: list[StoredMessage] = []
    after = None
    for _ in range(100_000):
        got = await store.read_after(stream, after, now_us, page)
        assert len(got) <= page
        if not got:
            return out
        out.extend(got)
        after = got[-1].position
    raise AssertionError("read_after never ran dry")


def assert_increasing(positions: list[int]) -> None:
    assert all(a < b for a, b in itertools.pairwise(positions)), positions


# -- order, resume, limit ----------------------------------------------------------


async def test_positions_follow_input_order_within_and_across_batches(store: MessageStore, t0: int) -> None:
    batch = [msg("A", "a1", t0), msg("B", "b1", t0), msg("A", "a2", t0), msg("A", "a3", t0), msg("B", "b2", t0)]
    results = await store.append(batch)
    assert [r.duplicate for r in results] == [False] * 5
    assert [r.timestamp_us for r in results] == [t0] * 5
    assert_increasing([results[0].position, results[2].position, results[3].position])
    assert_increasing([results[1].position, results[4].position])

    (later,) = await store.append([msg("A", "a4", t0 + 1)])
    assert later.position > results[3].position

    stored = await read_all(store, "A", t0)
    assert [m.uuid for m in stored] == ["a1", "a2", "a3", "a4"]
    expected = [results[0].position, results[2].position, results[3].position, later.position]
    assert [m.position for m in stored] == expected
    assert stored[0] == StoredMessage("A", results[0].position, "a1", b"a1", t0, t0 + HOUR_US)
    assert [m.uuid for m in await read_all(store, "B", t0)] == ["b1", "b2"]


async def test_read_after_resumes_from_a_position_and_honours_limit(store: MessageStore, t0: int) -> None:
    results = await store.append([msg("S", f"m{i}", t0) for i in range(5)])
    positions = [r.position for r in results]

    assert [m.uuid for m in await store.read_after("S", None, t0, 10)] == [f"m{i}" for i in range(5)]
    assert [m.uuid for m in await store.read_after("S", None, t0, 1)] == ["m0"]
    assert [m.uuid for m in await store.read_after("S", positions[1], t0, 2)] == ["m2", "m3"]
    assert await store.read_after("S", positions[-1], t0, 10) == []
    assert await store.read_after("other", None, t0, 10) == []
    assert await store.append([]) == []


async def test_after_none_starts_at_the_oldest_alive_message(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", f"m{h}", t0, ttl_us=h * HOUR_US) for h in (1, 2, 3)])
    alive = await store.read_after("S", None, t0 + HOUR_US + HOUR_US // 2, 10)
    assert [m.uuid for m in alive] == ["m2", "m3"]


async def test_read_latest_gives_the_newest_alive_messages_oldest_first(store: MessageStore, t0: int) -> None:
    results = await store.append([msg("S", f"m{i}", t0, ttl_us=(2 if i == 4 else 1) * HOUR_US) for i in range(5)])
    await store.append([msg("other", "o", t0)])
    latest = await store.read_latest("S", t0, 3)
    assert [m.uuid for m in latest] == ["m2", "m3", "m4"]
    assert [m.position for m in latest] == [r.position for r in results[2:]]
    assert latest[-1] == StoredMessage("S", results[4].position, "m4", b"m4", t0, t0 + 2 * HOUR_US)
    assert [m.uuid for m in await store.read_latest("S", t0, 10)] == [f"m{i}" for i in range(5)]
    assert [m.uuid for m in await store.read_latest("S", t0 + HOUR_US, 3)] == ["m4"]  # the others expired
    assert await store.read_latest("nothing", t0, 3) == []


# -- expiry -------------------------------------------------------------------------


async def test_expired_messages_are_never_returned(store: MessageStore, t0: int) -> None:
    (result,) = await store.append([msg("S", "m", t0)])
    expires = t0 + HOUR_US
    assert [m.uuid for m in await store.read_after("S", None, expires - 1, 10)] == ["m"]
    assert await store.read_after("S", None, expires, 10) == []
    assert await store.read_after("S", result.position - 1, expires + 1, 10) == []


async def test_short_ttl_behind_long_ttl_disappears_alone(store: MessageStore, backend: str, t0: int) -> None:
    long_ttl = 3 * HOUR_US
    batch = [msg("S", "long1", t0, ttl_us=long_ttl), msg("S", "short", t0), msg("S", "long2", t0, ttl_us=long_ttl)]
    results = await store.append(batch)
    later = t0 + 2 * HOUR_US

    alive = await store.read_after("S", None, later, 10)
    assert [(m.uuid, m.position) for m in alive] == [
        ("long1", results[0].position),
        ("long2", results[2].position),
    ]
    deleted = await store.delete_expired(later, 100)
    assert deleted == (0 if backend in NATIVE_EXPIRY else 1)
    assert await store.read_after("S", None, later, 10) == alive


async def test_delete_expired_is_bounded_by_limit(store: MessageStore, backend: str, t0: int) -> None:
    await store.append([msg(s, f"{s}{i}", t0) for s in "AB" for i in range(5)])
    await store.append([msg("A", "alive", t0, ttl_us=5 * HOUR_US)])
    later = t0 + 2 * HOUR_US

    counts = [await store.delete_expired(later, 4) for _ in range(4)]
    assert counts == ([0, 0, 0, 0] if backend in NATIVE_EXPIRY else [4, 4, 2, 0])
    assert await store.delete_expired(t0, 100) == 0  # nothing had expired at t0
    assert [m.uuid for m in await store.read_after("A", None, later, 10)] == ["alive"]
    assert await store.read_after("B", None, later, 10) == []


async def test_positions_are_never_reused_after_everything_expired(make_store: MakeStore, t0: int) -> None:
    store = await make_store()
    old = await store.append([msg("S", f"old{i}", t0) for i in range(3)])
    later = t0 + 2 * HOUR_US
    await store.delete_expired(later, 100)
    assert await store.read_after("S", None, later, 10) == []

    (fresh,) = await store.append([msg("S", "fresh", later)])
    assert fresh.position > max(r.position for r in old)
    await store.close()

    reopened = await make_store()
    (after_restart,) = await reopened.append([msg("S", "after-restart", later)])
    assert after_restart.position > fresh.position
    assert [m.uuid for m in await reopened.read_after("S", None, later, 10)] == ["fresh", "after-restart"]


# -- idempotency --------------------------------------------------------------------


async def test_duplicate_within_a_batch_gets_the_first_occurrence(store: MessageStore, t0: int) -> None:
    batch = [
        msg("A", "u1", t0, payload=b"first"),
        msg("A", "u2", t0 + 1),
        msg("A", "u1", t0 + 2, payload=b"second"),
        msg("B", "u1", t0 + 3),
    ]
    first, second, again, other_stream = await store.append(batch)
    assert again == AppendResult(first.position, t0, duplicate=True)
    assert not second.duplicate and second.position > first.position
    assert not other_stream.duplicate and other_stream.timestamp_us == t0 + 3
    stored = await read_all(store, "A", t0)
    assert [(m.uuid, m.payload) for m in stored] == [("u1", b"first"), ("u2", b"u2")]


async def test_duplicate_across_batches_returns_the_original(store: MessageStore, t0: int) -> None:
    (original,) = await store.append([msg("A", "u1", t0, payload=b"original")])
    (again,) = await store.append([msg("A", "u1", t0 + 5, payload=b"retry")])
    assert again == AppendResult(original.position, t0, duplicate=True)

    mixed = [msg("A", "u1", t0 + 6), msg("A", "u3", t0 + 6), msg("A", "u3", t0 + 7)]
    dup, new, dup_in_batch = await store.append(mixed)
    assert dup == AppendResult(original.position, t0, duplicate=True)
    assert not new.duplicate and new.position > original.position
    assert dup_in_batch == AppendResult(new.position, t0 + 6, duplicate=True)
    stored = await read_all(store, "A", t0)
    assert [(m.uuid, m.payload, m.timestamp_us) for m in stored] == [
        ("u1", b"original", t0),
        ("u3", b"u3", t0 + 6),
    ]


async def test_uuids_are_case_and_space_sensitive(store: MessageStore, t0: int) -> None:
    results = await store.append([msg("A", u, t0) for u in ("u", "U", "u ", " u", "ü" * 128)])
    assert not any(r.duplicate for r in results)
    assert [m.uuid for m in await read_all(store, "A", t0)] == ["u", "U", "u ", " u", "ü" * 128]


# -- concurrency, restart, owner change ---------------------------------------------


async def test_concurrent_writers_on_two_instances(make_store: MakeStore, t0: int) -> None:
    stores = [await make_store(), await make_store()]
    batches = [[msg("S", f"w{i}-0", t0), msg("S", f"w{i}-1", t0)] for i in range(40)]
    async with asyncio.timeout(60):
        results = await asyncio.gather(*(stores[i % 2].append(b) for i, b in enumerate(batches)))

    positions = [r.position for pair in results for r in pair]
    assert not any(r.duplicate for pair in results for r in pair)
    assert len(set(positions)) == len(positions) == 80
    assert all(pair[0].position < pair[1].position for pair in results)

    stored = await read_all(stores[0], "S", t0, page=7)
    assert_increasing([m.position for m in stored])
    by_uuid = {m.uuid: m.position for m in stored}
    assert len(stored) == len(by_uuid) == 80
    appended = zip(itertools.chain.from_iterable(batches), itertools.chain.from_iterable(results), strict=True)
    assert by_uuid == {m.uuid: r.position for m, r in appended}


async def test_reader_never_skips_a_message_while_writers_append(
    make_store: MakeStore, backend: str, t0: int
) -> None:
    # across instances only transactional backends promise this (see the
    # Cassandra/MongoDB module notes); one instance serializes its appends
    writers = [await make_store(), await make_store()] if backend in TRANSACTIONAL else [await make_store()]
    reader = await make_store()
    seen: list[StoredMessage] = []
    done = asyncio.Event()

    async def read_until_done() -> None:
        after = None
        while True:
            finished = done.is_set()
            got = await reader.read_after("S", after, t0, 5)
            seen.extend(got)
            if got:
                after = got[-1].position
            elif finished:
                return
            else:
                await asyncio.sleep(0)

    async def write() -> None:
        try:
            await asyncio.gather(
                *(writers[i % len(writers)].append([msg("S", f"m{i}", t0)]) for i in range(60))
            )
        finally:
            done.set()

    async with asyncio.timeout(60):
        await asyncio.gather(read_until_done(), write())
    assert_increasing([m.position for m in seen])
    assert sorted(m.uuid for m in seen) == sorted(f"m{i}" for i in range(60))


async def test_concurrent_duplicates_from_two_instances_store_once(make_store: MakeStore, t0: int) -> None:
    first, second = await make_store(), await make_store()
    async with asyncio.timeout(60):
        pairs = await asyncio.gather(
            *(
                asyncio.gather(first.append([msg("S", f"u{i}", t0)]), second.append([msg("S", f"u{i}", t0)]))
                for i in range(15)
            )
        )
    for (a,), (b,) in pairs:
        assert a.position == b.position
        assert sorted([a.duplicate, b.duplicate]) == [False, True]
    stored = await read_all(first, "S", t0)
    assert sorted(m.uuid for m in stored) == sorted(f"u{i}" for i in range(15))


async def test_restart_keeps_messages_and_counters(make_store: MakeStore, t0: int) -> None:
    store = await make_store()
    results = await store.append([msg("S", f"m{i}", t0) for i in range(3)])
    before = await read_all(store, "S", t0)
    await store.close()

    reopened = await make_store()
    assert await read_all(reopened, "S", t0) == before
    (again,) = await reopened.append([msg("S", "m1", t0 + 9)])
    assert again == AppendResult(results[1].position, t0, duplicate=True)
    (new,) = await reopened.append([msg("S", "m3", t0)])
    assert new.position > results[-1].position


async def test_owner_change_continues_the_stream(make_store: MakeStore, t0: int) -> None:
    owner_a, owner_b = await make_store(), await make_store()
    positions = []
    for name, owner in (("a", owner_a), ("b", owner_b), ("a2", owner_a)):
        for i in range(4):
            (result,) = await owner.append([msg("S", f"{name}-{i}", t0)])
            positions.append(result.position)
    assert_increasing(positions)

    stored = await read_all(owner_b, "S", t0, page=3)
    assert [m.position for m in stored] == positions
    assert [m.uuid for m in stored] == [f"{n}-{i}" for n in ("a", "b", "a2") for i in range(4)]


async def test_open_is_idempotent(make_store: MakeStore, t0: int) -> None:
    first = await make_store()
    await first.open()
    second = await make_store()
    (a,) = await first.append([msg("S", "a", t0)])
    (b,) = await second.append([msg("S", "b", t0)])
    assert b.position > a.position
    assert [m.uuid for m in await first.read_after("S", None, t0, 10)] == ["a", "b"]
    await first.ping()
    await second.ping()


# -- values -------------------------------------------------------------------------


async def test_payload_bytes_round_trip_exactly(store: MessageStore, t0: int) -> None:
    payloads = [
        b"",
        bytes(range(256)),
        "zürich ☃ 日本語 😀".encode(),
        b"\x00" * 17,
        b"'\"\\;-- %s ? $1",
        random.Random(7).randbytes(1024 * 1024),
    ]
    await store.append([msg("S", f"p{i}", t0, payload=p) for i, p in enumerate(payloads)])
    stored = await read_all(store, "S", t0, page=2)
    assert [m.payload for m in stored] == payloads


async def test_stream_ids_are_exact_strings(store: MessageStore, t0: int) -> None:
    ids = [
        "room", "Room", "ROOM", "room ", "room  ", " room",
        unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café"),
        "ストリーム/😀", "x" * 256, "é" * 128,
    ]
    results = await store.append([msg(s, "same-uuid", t0, payload=s.encode()) for s in ids])
    assert not any(r.duplicate for r in results)
    for stream in ids:
        stored = await store.read_after(stream, None, t0, 10)
        assert [(m.stream_id, m.payload) for m in stored] == [(stream, stream.encode())]


# -- failures -----------------------------------------------------------------------


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
async def silent_port() -> AsyncIterator[int]:
    """A local port that accepts connections and never answers."""
    held: list[asyncio.StreamWriter] = []

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()


def unreachable_config(backend: str, port: int, tmp_path: Path, timeout: float) -> StorageConfig:
    """A config whose database is at 127.0.0.1:``port`` (with a password to
    keep out of messages); sqlite's path sits under a regular file."""
    blocker = tmp_path / "not-a-directory"
    blocker.write_bytes(b"")
    overrides: dict[str, dict[str, Any]] = {
        "sqlite": {"path": str(blocker / "store.db")},
        "postgres": {"dsn": f"postgresql://postgres:s3cret@127.0.0.1:{port}/test"},
        "mysql": {"dsn": f"mysql://root:s3cret@127.0.0.1:{port}/test"},
        "cassandra": {"hosts": ["127.0.0.1"], "port": port, "username": "u", "password": "s3cret"},
        "mongodb": {"url": f"mongodb://u:s3cret@127.0.0.1:{port}/?directConnection=true"},
    }
    return storage_config(backend, "t_unreachable", tmp_path, timeout, **overrides[backend])


async def assert_unavailable(store: MessageStore, budget: float) -> StorageUnavailable:
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as caught:
        async with asyncio.timeout(budget):
            await store.open()
    assert time.monotonic() - started < budget
    assert "s3cret" not in str(caught.value)
    calls: list[Callable[[], Awaitable[object]]] = [
        store.ping,
        lambda: store.append([msg("S", "u", 1)]),
        lambda: store.read_after("S", None, 0, 1),
        lambda: store.delete_expired(0, 1),
    ]
    for call in calls:
        with pytest.raises(StorageUnavailable):
            async with asyncio.timeout(budget):
                await call()
    await store.close()
    await store.close()
    return caught.value


async def test_unreachable_database_raises_storage_unavailable(
    backend_name: str, refusing_port: int, tmp_path: Path
) -> None:
    store = create_store(unreachable_config(backend_name, refusing_port, tmp_path, timeout=1.0))
    assert store is not None
    error = await assert_unavailable(store, budget=10)
    if backend_name != "sqlite":
        assert f"127.0.0.1:{refusing_port}" in error.message


@pytest.mark.parametrize("backend_name", [b for b in BACKENDS if b != "sqlite"], indirect=True)
async def test_silent_database_times_out(backend_name: str, silent_port: int, tmp_path: Path) -> None:
    store = create_store(unreachable_config(backend_name, silent_port, tmp_path, timeout=0.5))
    assert store is not None
    await assert_unavailable(store, budget=10)


async def test_outage_raises_then_recovers(make_store: MakeStore, backend: str, t0: int) -> None:
    if backend not in ("postgres", "mysql"):
        pytest.skip("the outage is staged with a TCP proxy in front of the SQL servers")
    proxy = await start_proxy(backend)
    try:
        store = await make_store(timeout=1.0, dsn=proxied_dsn(backend, proxy.port))
        await store.append([msg("S", "before", t0)])

        await proxy.cut()
        calls = (lambda: store.append([msg("S", "during", t0)]), lambda: store.read_after("S", None, t0, 10))
        for call in calls:
            with pytest.raises(StorageUnavailable):
                async with asyncio.timeout(10):
                    await call()

        proxy.heal()
        async with asyncio.timeout(10):
            await store.append([msg("S", "after", t0)])
            assert [m.uuid for m in await store.read_after("S", None, t0, 10)] == ["before", "after"]
    finally:
        await proxy.stop()


# -- construction -------------------------------------------------------------------


async def test_create_store_builds_the_configured_backend(backend_name: str, tmp_path: Path) -> None:
    store = create_store(storage_config(backend_name, "t_any", tmp_path))
    assert store is not None and store.name == backend_name
    assert create_store(StorageConfig(backend="none")) is None
    if backend_name != "mongodb":  # table names are pasted into SQL/CQL
        with pytest.raises(ConfigError):
            create_store(storage_config(backend_name, "bad-name; DROP TABLE x", tmp_path))


def test_mysql_dsn_parsing() -> None:
    from ipubsub.storage.mysql import parse_mysql_dsn

    assert parse_mysql_dsn("mysql://app:p%40ss@db.example:3307/ipubsub") == {
        "host": "db.example", "port": 3307, "user": "app", "password": "p@ss", "db": "ipubsub",
    }
    assert parse_mysql_dsn("mysql://root@127.0.0.1/test")["port"] == 3306
    assert parse_mysql_dsn("mysql://root@127.0.0.1/test")["password"] == ""
    for bad in ("postgresql://x@h/db", "mysql://h:3306", "mysql://root@host/db?ssl=1"):
        with pytest.raises(ConfigError):
            parse_mysql_dsn(bad)


# -- consumer groups -----------------------------------------------------------------

SECOND = 1_000_000
LEASE = 10 * SECOND


def uuids(claim: Claim) -> list[str]:
    return [leased.message.uuid for leased in claim.messages]


def receipts(claim: Claim) -> list[LeaseRef]:
    return [LeaseRef(leased.message.position, leased.delivery) for leased in claim.messages]


async def test_group_hands_each_message_to_one_consumer_in_order(store: MessageStore, t0: int) -> None:
    results = await store.append([msg("S", f"m{i}", t0) for i in range(10)])
    first = await store.claim("S", "g", "c1", 4, LEASE, t0, 0)
    second = await store.claim("S", "g", "c2", 4, LEASE, t0, 0)
    third = await store.claim("S", "g", "c1", 4, LEASE, t0, 0)
    assert (uuids(first), uuids(second), uuids(third)) == (
        ["m0", "m1", "m2", "m3"], ["m4", "m5", "m6", "m7"], ["m8", "m9"],
    )
    assert all(leased.delivery == 1 for c in (first, second, third) for leased in c.messages)
    assert first.messages[0].message == StoredMessage("S", results[0].position, "m0", b"m0", t0, t0 + HOUR_US)
    assert first.dead == [] and third.next_lease_end_us == t0 + LEASE
    empty = await store.claim("S", "g", "c2", 4, LEASE, t0 + 1, 0)
    assert empty.messages == [] and empty.dead == []
    assert uuids(await store.claim("S", "other", "c1", 3, LEASE, t0, 0)) == ["m0", "m1", "m2"]  # groups are independent

    (info, other) = await store.list_groups("S", t0)
    assert info == GroupInfo("g", results[-1].position, 0, 10, t0, t0 + 1)
    assert (other.group, other.lag, other.pending) == ("other", 7, 3)
    assert await store.list_groups("nothing", t0) == []


async def test_ack_removes_pending_entries_and_refuses_stale_receipts(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", f"m{i}", t0) for i in range(3)])
    claim = await store.claim("S", "g", "c", 3, LEASE, t0, 0)
    r0, r1, r2 = receipts(claim)
    assert await store.ack("S", "g", [r0, LeaseRef(r1.position, 2), LeaseRef(10**12)], t0) == [True, False, False]
    assert await store.ack("S", "g", [r0, LeaseRef(r1.position), LeaseRef(r1.position)], t0) == [False, True, False]
    assert await store.ack("S", "unknown", [r2], t0) == [False]
    assert await store.nack("S", "unknown", [r2], t0, 0) == [False]
    assert [i.group for i in await store.list_groups("S", t0)] == ["g"]  # ack creates no group
    (info,) = await store.list_groups("S", t0)
    assert (info.pending, info.oldest_pending_us) == (1, t0)
    assert await store.ack("S", "g", [r2], t0) == [True]
    (info,) = await store.list_groups("S", t0)
    assert (info.pending, info.oldest_pending_us) == (0, None)
    assert (await store.claim("S", "g", "c", 3, LEASE, t0 + 2 * LEASE, 0)).messages == []  # acked: never again


async def test_an_expired_lease_is_redelivered_first_counting_deliveries(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", f"m{i}", t0) for i in range(4)])
    first = await store.claim("S", "g", "c1", 2, LEASE, t0, 0)
    assert (await store.claim("S", "g", "c2", 1, LEASE, t0 + LEASE - 1, 0)).messages[0].message.uuid == "m2"

    later = t0 + LEASE  # c1's lease ends now
    again = await store.claim("S", "g", "c2", 3, LEASE, later, 0)
    assert uuids(again) == ["m0", "m1", "m3"]
    assert [leased.delivery for leased in again.messages] == [2, 2, 1]
    assert await store.ack("S", "g", receipts(first), later) == [False, False]  # c1 was too late
    assert await store.ack("S", "g", receipts(again), later) == [True, True, True]


async def test_nack_gives_back_to_the_front_now_or_after_a_delay(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", f"m{i}", t0) for i in range(4)])
    claim = await store.claim("S", "g", "c", 2, LEASE, t0, 0)
    r0, r1 = receipts(claim)
    assert await store.nack("S", "g", [r0, LeaseRef(r1.position, 5)], t0, 0) == [True, False]
    front = await store.claim("S", "g", "c", 2, LEASE, t0 + 1, 0)
    assert uuids(front) == ["m0", "m2"] and front.messages[0].delivery == 2

    assert await store.nack("S", "g", [receipts(front)[1]], t0 + 1, 5 * SECOND) == [True]
    assert uuids(await store.claim("S", "g", "c", 1, LEASE, t0 + 2, 0)) == ["m3"]
    assert (await store.claim("S", "g", "c", 1, LEASE, t0 + 2, 0)).messages == []
    assert uuids(await store.claim("S", "g", "c", 1, LEASE, t0 + 1 + 5 * SECOND, 0)) == ["m2"]


async def test_past_max_deliveries_a_message_is_handed_out_as_dead(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", "poison", t0), msg("S", "fine", t0)])
    now = t0
    for delivery in (1, 2):
        claim = await store.claim("S", "g", "c", 1, LEASE, now, 2)
        assert [(leased.message.uuid, leased.delivery) for leased in claim.messages] == [("poison", delivery)]
        now += LEASE
    claim = await store.claim("S", "g", "c", 1, LEASE, now, 2)
    assert [(leased.message.uuid, leased.delivery) for leased in claim.dead] == [("poison", 2)]
    assert uuids(claim) == ["fine"]
    # leased while the caller moves it to the dead-letter stream; back as dead if it dies
    assert (await store.claim("S", "g", "c", 1, LEASE, now + 1, 2)).dead == []
    assert [d.message.uuid for d in (await store.claim("S", "g", "c", 1, LEASE, now + LEASE, 2)).dead] == ["poison"]
    dead_ref = LeaseRef(claim.dead[0].message.position, claim.dead[0].delivery)
    assert await store.ack("S", "g", [dead_ref], now + LEASE) == [True]
    assert (await store.claim("S", "g", "c", 5, LEASE, now + 3 * LEASE, 2)).dead == []


async def test_expired_messages_are_skipped_and_their_leases_dropped(store: MessageStore, t0: int) -> None:
    await store.append([msg("S", "short", t0, ttl_us=LEASE // 2), msg("S", "long", t0)])
    claim = await store.claim("S", "g", "c", 1, LEASE, t0, 0)
    assert uuids(claim) == ["short"]
    later = t0 + LEASE  # the lease ended and the message expired
    assert uuids(await store.claim("S", "g", "c", 5, LEASE, later, 0)) == ["long"]
    (info,) = await store.list_groups("S", later)
    assert info.pending == 1  # the expired message's lease was dropped
    await store.append([msg("S", "gone", later, ttl_us=1), msg("S", "kept", later)])
    assert uuids(await store.claim("S", "g", "c", 5, LEASE, later + 1, 0)) == ["kept"]


async def test_groups_are_deleted_explicitly_or_when_idle(store: MessageStore, t0: int) -> None:
    await store.append([msg(s, f"{s}{i}", t0) for s in "AB" for i in range(3)])
    await store.claim("A", "old", "c", 1, LEASE, t0, 0)
    await store.claim("A", "busy", "c", 1, LEASE, t0, 0)
    await store.claim("B", "old", "c", 1, LEASE, t0, 0)
    await store.ack("A", "busy", [LeaseRef(10**12)], t0 + 100)  # any ack keeps a group active

    assert await store.delete_idle_groups(t0 + 50, 1) == 1
    assert await store.delete_idle_groups(t0 + 50, 10) == 1
    assert await store.delete_idle_groups(t0 + 50, 10) == 0
    assert [(i.group, i.lag) for i in await store.list_groups("A", t0)] == [("busy", 2)]
    assert await store.list_groups("B", t0) == []
    assert await store.delete_group("A", "busy") is True
    assert await store.delete_group("A", "busy") is False
    assert uuids(await store.claim("A", "busy", "c", 5, LEASE, t0, 0)) == ["A0", "A1", "A2"]  # starts afresh


async def test_concurrent_claims_from_two_instances_never_share_a_message(make_store: MakeStore, t0: int) -> None:
    first, second = await make_store(), await make_store()
    await first.append([msg("S", f"m{i}", t0) for i in range(120)])
    async with asyncio.timeout(60):
        claims = await asyncio.gather(
            *((first if k % 2 else second).claim("S", "g", f"c{k}", 7, LEASE, t0, 0) for k in range(24))
        )
    got = [u for claim in claims for u in uuids(claim)]
    assert sorted(got) == sorted(f"m{i}" for i in range(120)) and len(got) == 120
    acks = await asyncio.gather(*((second if k % 2 else first).ack("S", "g", receipts(c), t0) for k, c in enumerate(claims)))
    assert all(all(answers) for answers in acks)
    (info,) = await second.list_groups("S", t0)
    assert (info.pending, info.lag) == (0, 0)


# -- spilled in-memory buffers ----------------------------------------------------------


async def test_spilled_streams_come_back_in_order_until_deleted(make_store: MakeStore, t0: int) -> None:
    store = await make_store()
    first = [
        SpilledStream("A", 5, [SpilledMessage(f"a{i}", f'"a{i}"'.encode(), t0 + i) for i in range(3)]),
        SpilledStream("B", None, [SpilledMessage("b0", bytes(range(256)), t0)]),
        SpilledStream("empty", 3, []),
    ]
    assert await store.spill("n1", t0, first) == 4
    assert await store.spill("n1", t0 + 1, [SpilledStream("A", 7, [SpilledMessage("a3", b"3", t0)])]) == 1
    assert await store.spill("n2", t0, [SpilledStream("A", 1, [SpilledMessage("x", b"x", t0)])]) == 1

    reopened = await make_store()  # another process (or the restarted node) reads it back
    spilled = await reopened.read_spilled("n1")
    assert spilled == [
        SpilledStream("A", 5, first[0].messages, t0),
        SpilledStream("B", None, first[1].messages, t0),
        SpilledStream("A", 7, [SpilledMessage("a3", b"3", t0)], t0 + 1),
    ]
    assert await reopened.delete_spilled("n1", t0) == 4
    assert [s.stream_id for s in await reopened.read_spilled("n1")] == ["A"]
    assert await reopened.delete_spilled("n1", t0 + 1) == 1
    assert await reopened.delete_spilled("n1", t0 + 1) == 0
    assert await reopened.read_spilled("n1") == []
    assert [m.uuid for s in await reopened.read_spilled("n2") for m in s.messages] == ["x"]
