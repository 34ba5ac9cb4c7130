"""The append/read/expire algorithm of the three SQL backends.

:class:`SqlStore` is written once over a three-method connection protocol;
the backend modules only supply the driver, the schema and the SQL dialect.

How a SQL append stays correct across processes: inside one transaction,
for all the streams of the batch at once, (1) look up which uuids are already
stored, (2) bump each stream's counter row in ``{table}_streams`` by its
number of new messages (the upsert takes the row locks, so writers of one
stream queue up behind each other and commit in position order; rows are
upserted in sorted stream order, so two multi-stream batches cannot
deadlock), (3) insert the rows.  Four statements per batch, however many
streams it touches.  If another process inserted one of the uuids between
(1) and (3), the unique index on ``(stream_id, message_uuid)`` rejects the
insert; the transaction rolls back and the batch is retried, and the retry
finds the existing row.
"""

from __future__ import annotations

import abc
import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, ClassVar, Protocol, TypeVar

from ..errors import StorageUnavailable
from .base import (
    AppendResult,
    Claim,
    GroupInfo,
    LeaseRef,
    MessageStore,
    NewMessage,
    SpilledStream,
    StoredMessage,
)
from .common import BatchPlan, check_identifier, guard
from .groups_sql import SqlGroups

T = TypeVar("T")

__all__ = ["SqlConnection", "SqlStore"]

#: attempts of an append batch that hit a unique violation or a deadlock
MAX_ATTEMPTS = 5
_MAX_CACHED_STATEMENTS = 512

class SqlConnection(Protocol):
    """The three calls :class:`SqlStore` makes, over any driver."""

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Sequence[Any]]: ...

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        """Run one statement; return the affected row count."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class SqlStore(MessageStore):
    """Shared algorithm of the SQL backends.

    Statements are written with ``?`` placeholders and ``{t}`` (messages
    table) / ``{s}`` (counter table); :meth:`_dialect` rewrites placeholders
    for the driver.  A subclass provides ``SCHEMA``, the connection plumbing
    (:meth:`_connect`, :meth:`_disconnect`, :meth:`_session`) and
    :meth:`_is_retryable`, and may override the statements it needs.
    """

    SCHEMA: ClassVar[tuple[str, ...]]
    #: how a payload is bound (MySQL: ``UNHEX(?)``, see its module)
    BLOB: ClassVar[str] = "?"
    #: append without looking uuids up first: the insert fails on a stored
    #: uuid (unique index) and the batch is retried with the lookup.  Worth it
    #: where the insert is one cheap statement (PostgreSQL's COPY).
    OPTIMISTIC: ClassVar[bool] = False
    #: the group and spill statements (MySQL has its own)
    GROUPS: ClassVar[type[SqlGroups]] = SqlGroups
    READ: ClassVar[str] = (
        "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {t}"
        " WHERE stream_id = ? AND position > ? AND expires_at_us > ? ORDER BY position LIMIT ?"
    )
    READ_LATEST: ClassVar[str] = (
        "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {t}"
        " WHERE stream_id = ? AND expires_at_us > ? ORDER BY position DESC LIMIT ?"
    )
    INSERT: ClassVar[str] = (
        "INSERT INTO {t} (stream_id, position, message_uuid, payload, timestamp_us, expires_at_us)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    # Stored (stream, uuid) pairs of a batch: a superset query on both
    # columns (it uses the unique index), filtered to the real pairs after.
    EXISTING: ClassVar[str] = (
        "SELECT stream_id, message_uuid, position, timestamp_us FROM {t}"
        " WHERE stream_id IN ({streams}) AND message_uuid IN ({uuids})"
    )
    # One upsert for every stream of the batch, rows in sorted stream order so
    # that concurrent batches lock counter rows in the same order; each row
    # stays locked until commit.
    ALLOCATE: ClassVar[str] = (
        "INSERT INTO {s} (stream_id, last_position) VALUES {values} ON CONFLICT (stream_id)"
        " DO UPDATE SET last_position = {s}.last_position + excluded.last_position"
        " RETURNING stream_id, last_position"
    )
    DELETE: ClassVar[str] = (
        "DELETE FROM {t} WHERE (stream_id, position) IN"
        " (SELECT stream_id, position FROM {t} WHERE expires_at_us <= ? LIMIT ?)"
    )

    def __init__(
        self,
        *,
        table: str,
        concurrency: int = 1,
        table_key: str,
        where: str,
        timeout: float,
        errors: tuple[type[BaseException], ...],
        secret: str = "",
    ) -> None:
        self.table = check_identifier(table, table_key, max_length=48)
        self._where = where
        self._timeout = timeout
        self._errors = errors
        self._secret = secret
        self._concurrency = concurrency
        self._open = False
        self._statements: dict[tuple[str, ...], str] = {}
        self._groups = self.GROUPS(self)

    @property
    def append_concurrency(self) -> int:
        return self._concurrency

    # -- what a backend supplies ---------------------------------------------

    def _dialect(self, sql: str) -> str:
        """Rewrite ``?`` placeholders for the driver (default: leave them)."""
        return sql

    @abc.abstractmethod
    async def _connect(self) -> None:
        """Create the driver's connection(s) or pool, if not yet done."""

    @abc.abstractmethod
    async def _disconnect(self) -> None:
        """Release everything :meth:`_connect` created; safe to repeat."""

    @abc.abstractmethod
    def _session(self, write: bool) -> AbstractAsyncContextManager[SqlConnection]:
        """A connection; with ``write`` inside a transaction committed on exit
        and rolled back on error."""

    @abc.abstractmethod
    def _is_retryable(self, exc: BaseException) -> bool:
        """True for a unique violation or deadlock: the batch may be retried."""

    def text(self, value: Any) -> str:
        """A stream id or uuid as read back (MySQL returns bytes)."""
        return value

    def blob(self, payload: bytes) -> Any:
        """How a payload is bound (MySQL binds hex text, see its module)."""
        return payload

    # -- shared ----------------------------------------------------------------

    def sql(self, template: str, **extra: str) -> str:
        """A statement with table names and the driver's placeholders (cached)."""
        key = (template, *extra.values())
        sql = self._statements.get(key)
        if sql is None:
            if len(self._statements) >= _MAX_CACHED_STATEMENTS:
                self._statements.clear()  # batch shapes vary: keep the cache bounded
            table = self.table
            names = {"t": table, "s": f"{table}_streams", "g": f"{table}_groups", "p": f"{table}_pending",
                     "x": f"{table}_spill", "blob": self.BLOB}
            sql = self._dialect(template.format(**names, **extra))
            self._statements[key] = sql
        return sql

    async def in_transaction(self, action: str, body: Callable[[SqlConnection], Awaitable[T]]) -> T:
        """Run ``body`` in a transaction (bounded by the operation timeout),
        retried from scratch after a unique violation or a deadlock."""
        self._check_open()
        async with self._guard(action):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    async with self._session(write=True) as conn:
                        return await body(conn)
                except Exception as exc:
                    if attempt == MAX_ATTEMPTS or not self._is_retryable(exc):
                        raise
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    @asynccontextmanager
    async def reading(self, action: str) -> AsyncIterator[SqlConnection]:
        """A connection for reads, bounded by the operation timeout."""
        self._check_open()
        async with self._guard(action), self._session(write=False) as conn:
            yield conn

    async def insert_rows(self, conn: SqlConnection, head: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
        """``head VALUES row`` for every row (MySQL folds them into multi-row statements)."""
        await conn.executemany(self.sql(f"{head} VALUES {row}"), rows)

    def _guard(self, action: str) -> AbstractAsyncContextManager[None]:
        return guard(self._where, action, self._timeout, self._errors, self._secret)

    def _check_open(self) -> None:
        if not self._open:
            raise self._not_open()

    def _not_open(self) -> StorageUnavailable:
        return StorageUnavailable(f"{self._where} is not open")

    async def open(self) -> None:
        """Connect and create the tables and indexes if missing (idempotent)."""
        async with self._guard("open"):
            await self._connect()
            async with self._session(write=True) as conn:
                for statement in self.SCHEMA:
                    await conn.execute(self.sql(statement))
        self._open = True

    async def close(self) -> None:
        """Release connections; safe to call twice and after a failed open."""
        self._open = False
        await self._disconnect()

    async def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch in one transaction; see :meth:`MessageStore.append`."""
        self._check_open()
        if not batch:
            return []
        attempts = 0

        async def body(conn: SqlConnection) -> list[AppendResult]:
            nonlocal attempts
            attempts += 1
            # optimistic first try: no uuid lookup, the unique index rejects
            # a stored uuid and the retry looks them up
            return await self._append_in(conn, batch, lookup=attempts > 1 or not self.OPTIMISTIC)

        return await self.in_transaction("append", body)

    async def _append_in(self, conn: SqlConnection, batch: Sequence[NewMessage], lookup: bool) -> list[AppendResult]:
        """Four statements whatever the number of streams in the batch: find
        stored uuids (unless ``lookup`` is false), bump every counter, insert
        every new row (then commit)."""
        plan = BatchPlan(batch)
        streams = plan.streams()
        wanted = {s: [batch[i].uuid for i in plan.pending(s)] for s in streams}
        found = await self._find_existing(conn, wanted) if lookup else {}
        new = {s: plan.skip_found(s, found.get(s, {})) for s in streams}
        counts = {s: len(indexes) for s, indexes in new.items() if indexes}
        if not counts:
            return plan.results()
        lasts = await self._allocate(conn, counts)
        rows = []
        for stream, count in counts.items():
            first = lasts[stream] - count + 1
            for offset, index in enumerate(new[stream]):
                msg = batch[index]
                rows.append((
                    stream, first + offset, msg.uuid, self.blob(msg.payload),
                    msg.timestamp_us, msg.expires_at_us,
                ))
                plan.stored(index, first + offset)
        await self._insert(conn, rows)
        return plan.results()

    async def _find_existing(
        self, conn: SqlConnection, wanted: dict[str, list[str]]
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """Stored messages among ``wanted`` (stream to uuids): stream to
        uuid to (position, timestamp)."""
        uuids = sorted({u for values in wanted.values() for u in values})
        sql = self.sql(
            self.EXISTING, streams=", ".join("?" * len(wanted)), uuids=", ".join("?" * len(uuids))
        )
        rows = await conn.fetch(sql, (*wanted, *uuids))
        return self._pairs(rows, wanted)

    def _pairs(
        self, rows: Sequence[Sequence[Any]], wanted: dict[str, list[str]]
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """Rows (stream, uuid, position, timestamp) of the superset query,
        kept only where the pair was asked for."""
        asked = {(s, u) for s, values in wanted.items() for u in values}
        out: dict[str, dict[str, tuple[int, int]]] = {}
        for row in rows:
            stream, uuid = self.text(row[0]), self.text(row[1])
            if (stream, uuid) in asked:
                out.setdefault(stream, {})[uuid] = (int(row[2]), int(row[3]))
        return out

    async def _allocate(self, conn: SqlConnection, counts: dict[str, int]) -> dict[str, int]:
        """Bump each stream's counter by its count (locking the rows); return
        stream to its new last position."""
        streams = sorted(counts)
        sql = self.sql(self.ALLOCATE, values=", ".join(["(?, ?)"] * len(streams)))
        rows = await conn.fetch(sql, [v for s in streams for v in (s, counts[s])])
        return {self.text(row[0]): int(row[1]) for row in rows}

    async def _insert(self, conn: SqlConnection, rows: list[tuple[Any, ...]]) -> None:
        """Insert the new message rows (one statement, many rows)."""
        await conn.executemany(self.sql(self.INSERT), rows)

    async def read_after(
        self, stream_id: str, after: int | None, now_us: int, limit: int
    ) -> list[StoredMessage]:
        """Alive messages after ``after``, oldest first; see :meth:`MessageStore.read_after`."""
        self._check_open()
        args = (stream_id, 0 if after is None else after, now_us, limit)
        async with self._guard("read"), self._session(write=False) as conn:
            rows = await conn.fetch(self.sql(self.READ), args)
        return self.stored(stream_id, rows)

    async def read_latest(self, stream_id: str, now_us: int, limit: int) -> list[StoredMessage]:
        """The newest alive messages, oldest of them first; see :meth:`MessageStore.read_latest`."""
        self._check_open()
        async with self._guard("read"), self._session(write=False) as conn:
            rows = await conn.fetch(self.sql(self.READ_LATEST), (stream_id, now_us, limit))
        return self.stored(stream_id, reversed(rows))

    def stored(self, stream_id: str, rows: Iterable[Sequence[Any]]) -> list[StoredMessage]:
        """Rows ``(position, uuid, payload, timestamp, expiry)`` as messages.
        The drivers of SQLite and PostgreSQL return ``str`` and ``bytes``
        already: no conversion per row (a batch read makes 1000 of these)."""
        return [StoredMessage(stream_id, *row) for row in rows]

    async def delete_expired(self, now_us: int, limit: int) -> int:
        """Delete at most ``limit`` expired messages; return how many."""
        self._check_open()
        async with self._guard("delete expired"), self._session(write=True) as conn:
            return await conn.execute(self.sql(self.DELETE), (now_us, limit))

    async def ping(self) -> None:
        """One ``SELECT 1`` round trip."""
        self._check_open()
        async with self._guard("ping"), self._session(write=False) as conn:
            await conn.fetch("SELECT 1")

    # -- consumer groups and spilled buffers (see :mod:`.groups_sql`) -----------------

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        return await self._groups.claim(stream_id, group, consumer, limit, lease_us, now_us, max_deliveries)

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        return await self._groups.ack(stream_id, group, refs, now_us)

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        return await self._groups.nack(stream_id, group, refs, now_us, delay_us)

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        return await self._groups.list_groups(stream_id, now_us)

    async def delete_group(self, stream_id: str, group: str) -> bool:
        return await self._groups.delete_group(stream_id, group)

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        return await self._groups.delete_idle_groups(idle_before_us, limit)

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        return await self._groups.spill(node, spill_id, streams)

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        return await self._groups.read_spilled(node)

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        return await self._groups.delete_spilled(node, through_spill_id)
