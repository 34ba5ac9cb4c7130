"""Pieces shared by the storage backends.

:class:`SqlStore` is the whole append/read/expire algorithm of the three
SQL backends, written once over a three-method connection protocol; the
backend modules only supply the driver, the schema and the SQL dialect.

How a SQL append stays correct across processes: per stream, inside one
transaction, (1) look up which uuids are already stored, (2) bump the
stream's counter row in ``{table}_streams`` by the number of new messages
(the upsert takes the row lock, so writers of one stream queue up behind it
and commit in position order), (3) insert the rows.  Streams are handled in
sorted order so two multi-stream batches cannot deadlock.  If another
process inserted one of the uuids between (1) and (3), the unique index on
``(stream_id, message_uuid)`` rejects the insert; the transaction rolls back
and the batch is retried, and the retry finds the existing row.
"""

from __future__ import annotations

import abc
import asyncio
import random
from contextlib import AbstractAsyncContextManager
from typing import Any, ClassVar, Protocol, Sequence

from ..errors import StorageUnavailable
from .base import AppendResult, MessageStore, NewMessage, StoredMessage
from .common import BatchPlan, check_identifier, guard

__all__ = ["SqlConnection", "SqlStore"]

#: attempts of an append batch that hit a unique violation or a deadlock
MAX_ATTEMPTS = 5

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
    READ: ClassVar[str] = (
        "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {t}"
        " WHERE stream_id = ? AND position > ? AND expires_at_us > ? ORDER BY position LIMIT ?"
    )
    INSERT: ClassVar[str] = (
        "INSERT INTO {t} (stream_id, position, message_uuid, payload, timestamp_us, expires_at_us)"
        " VALUES (?, ?, ?, ?, ?, ?)"
    )
    EXISTING: ClassVar[str] = (
        "SELECT message_uuid, position, timestamp_us FROM {t}"
        " WHERE stream_id = ? AND message_uuid IN ({marks})"
    )
    # the upsert locks the counter row until commit
    ALLOCATE: ClassVar[str] = (
        "INSERT INTO {s} (stream_id, last_position) VALUES (?, ?) ON CONFLICT (stream_id)"
        " DO UPDATE SET last_position = {s}.last_position + excluded.last_position"
        " RETURNING last_position"
    )
    DELETE: ClassVar[str] = (
        "DELETE FROM {t} WHERE (stream_id, position) IN"
        " (SELECT stream_id, position FROM {t} WHERE expires_at_us <= ? LIMIT ?)"
    )

    def __init__(
        self,
        *,
        table: str,
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
        self._open = False
        self._statements: dict[tuple[str, ...], str] = {}

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

    def _text(self, value: Any) -> str:
        """A stream id or uuid as read back (MySQL returns bytes)."""
        return value

    def _blob(self, payload: bytes) -> Any:
        """How a payload is bound (MySQL binds hex text, see its module)."""
        return payload

    # -- shared ----------------------------------------------------------------

    def _sql(self, template: str, **extra: str) -> str:
        """A statement with table names and the driver's placeholders (cached)."""
        key = (template, *extra.values())
        sql = self._statements.get(key)
        if sql is None:
            sql = self._dialect(template.format(t=self.table, s=f"{self.table}_streams", **extra))
            self._statements[key] = sql
        return sql

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
                    await conn.execute(self._sql(statement))
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
        async with self._guard("append"):
            for attempt in range(1, MAX_ATTEMPTS + 1):
                try:
                    async with self._session(write=True) as conn:
                        return await self._append_in(conn, batch)
                except Exception as exc:
                    if attempt == MAX_ATTEMPTS or not self._is_retryable(exc):
                        raise
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    async def _append_in(self, conn: SqlConnection, batch: Sequence[NewMessage]) -> list[AppendResult]:
        plan = BatchPlan(batch)
        for stream in plan.streams():
            uuids = [batch[i].uuid for i in plan.pending(stream)]
            new = plan.skip_found(stream, await self._find_existing(conn, stream, uuids))
            if not new:
                continue
            last = await self._allocate(conn, stream, len(new))
            first = last - len(new) + 1
            rows = []
            for offset, index in enumerate(new):
                msg = batch[index]
                rows.append((
                    stream, first + offset, msg.uuid, self._blob(msg.payload),
                    msg.timestamp_us, msg.expires_at_us,
                ))
                plan.stored(index, first + offset)
            await conn.executemany(self._sql(self.INSERT), rows)
        return plan.results()

    async def _find_existing(
        self, conn: SqlConnection, stream_id: str, uuids: list[str]
    ) -> dict[str, tuple[int, int]]:
        """Stored uuids among ``uuids``: uuid to (position, timestamp)."""
        sql = self._sql(self.EXISTING, marks=", ".join("?" * len(uuids)))
        rows = await conn.fetch(sql, (stream_id, *uuids))
        return {self._text(row[0]): (row[1], row[2]) for row in rows}

    async def _allocate(self, conn: SqlConnection, stream_id: str, count: int) -> int:
        """Bump the stream's counter by ``count`` (locking it); return the new value."""
        rows = await conn.fetch(self._sql(self.ALLOCATE), (stream_id, count))
        return int(rows[0][0])

    async def read_after(
        self, stream_id: str, after: int | None, now_us: int, limit: int
    ) -> list[StoredMessage]:
        """Alive messages after ``after``, oldest first; see :meth:`MessageStore.read_after`."""
        self._check_open()
        args = (stream_id, 0 if after is None else after, now_us, limit)
        async with self._guard("read"), self._session(write=False) as conn:
            rows = await conn.fetch(self._sql(self.READ), args)
        return [
            StoredMessage(stream_id, row[0], self._text(row[1]), bytes(row[2]), row[3], row[4])
            for row in rows
        ]

    async def delete_expired(self, now_us: int, limit: int) -> int:
        """Delete at most ``limit`` expired messages; return how many."""
        self._check_open()
        async with self._guard("delete expired"), self._session(write=True) as conn:
            return await conn.execute(self._sql(self.DELETE), (now_us, limit))

    async def ping(self) -> None:
        """One ``SELECT 1`` round trip."""
        self._check_open()
        async with self._guard("ping"), self._session(write=False) as conn:
            await conn.fetch("SELECT 1")
