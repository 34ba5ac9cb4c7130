"""Pieces shared by the storage backends.

* :class:`BatchPlan` dedupes an append batch and turns positions into
  results; :func:`guard` turns timeouts and driver errors into
  :class:`~ipubsub.errors.StorageUnavailable`; :func:`check_identifier` and
  :func:`url_location` check config values.  Every backend uses these.
* :class:`SqlStore` is the whole append/read/expire algorithm of the three
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
import re
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, AsyncIterator, ClassVar, Mapping, Protocol, Sequence
from urllib.parse import unquote, urlsplit

from ..config import ConfigError
from ..errors import StorageUnavailable
from .base import AppendResult, MessageStore, NewMessage, StoredMessage

__all__ = [
    "BatchPlan",
    "SqlConnection",
    "SqlStore",
    "check_identifier",
    "guard",
    "url_location",
    "url_password",
]

#: attempts of an append batch that hit a unique violation or a deadlock
MAX_ATTEMPTS = 5

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_identifier(value: str, key: str, max_length: int = 48) -> str:
    """Return ``value`` if it is a plain SQL/CQL identifier (it is pasted into
    statements), else raise :class:`ConfigError` naming the config ``key``."""
    if not _IDENTIFIER.fullmatch(value) or len(value) > max_length:
        raise ConfigError(
            f"{key}: must be letters, digits and underscores, not starting with a digit, "
            f"at most {max_length} characters; got {value!r}"
        )
    return value


def url_location(url: str, default_port: int) -> str:
    """``host:port`` of a database URL, without user or password."""
    parts = urlsplit(url)
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        return f"localhost:{default_port}"
    if "," in hosts or ":" in hosts.rpartition("]")[2]:
        return hosts
    return f"{hosts}:{default_port}"


def url_password(url: str) -> str:
    """The password in a database URL (to scrub from error messages), or ``""``."""
    try:
        password = urlsplit(url).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


@asynccontextmanager
async def guard(
    where: str,
    action: str,
    timeout: float,
    errors: tuple[type[BaseException], ...],
    secret: str = "",
) -> AsyncIterator[None]:
    """Bound the body by ``timeout`` seconds and report every way the database
    can fail as :class:`StorageUnavailable` ("postgres at h:5432 unreachable: ...").

    ``errors`` are the driver's exception classes; ``OSError`` is always
    included.  ``secret`` (a password) is scrubbed from the message.
    """
    try:
        async with asyncio.timeout(timeout):
            yield
    except StorageUnavailable:
        raise
    except TimeoutError:
        raise StorageUnavailable(f"{where} did not answer within {timeout:g} s ({action})") from None
    except OSError as exc:
        raise StorageUnavailable(_scrub(f"{where} unreachable ({action}): {exc}", secret)) from exc
    except errors as exc:
        text = f"{where} failed ({action}): {type(exc).__name__}: {exc}"
        raise StorageUnavailable(_scrub(text, secret)) from exc


def _scrub(text: str, secret: str) -> str:
    return text.replace(secret, "***") if secret else text


class BatchPlan:
    """One append batch: which messages are first occurrences of their
    ``(stream_id, uuid)``, and the result of each input.

    A backend walks :meth:`streams`, resolves each stream's :meth:`pending`
    messages as :meth:`found` (already stored) or :meth:`stored`, then
    :meth:`results` fills in the later in-batch copies as duplicates.
    """

    def __init__(self, batch: Sequence[NewMessage]) -> None:
        self.batch = batch
        self._results: list[AppendResult | None] = [None] * len(batch)
        self._firsts: dict[str, list[int]] = {}
        self._copies: list[tuple[int, int]] = []
        seen: dict[tuple[str, str], int] = {}
        for index, msg in enumerate(batch):
            first = seen.setdefault((msg.stream_id, msg.uuid), index)
            if first == index:
                self._firsts.setdefault(msg.stream_id, []).append(index)
            else:
                self._copies.append((index, first))

    def streams(self) -> list[str]:
        """The batch's streams in a fixed (sorted) order: the lock order."""
        return sorted(self._firsts)

    def pending(self, stream_id: str) -> list[int]:
        """Indexes of the stream's unresolved first occurrences, in input order."""
        return [i for i in self._firsts[stream_id] if self._results[i] is None]

    def found(self, index: int, position: int, timestamp_us: int) -> None:
        """The message was already stored at ``position``."""
        self._results[index] = AppendResult(position, timestamp_us, duplicate=True)

    def stored(self, index: int, position: int) -> None:
        """The message is now stored at ``position``."""
        self._results[index] = AppendResult(position, self.batch[index].timestamp_us)

    def skip_found(self, stream_id: str, found: Mapping[str, tuple[int, int]]) -> list[int]:
        """Mark pending messages whose uuid is in ``found`` (uuid to position
        and timestamp) as duplicates; return the others' indexes."""
        new = []
        for index in self.pending(stream_id):
            hit = found.get(self.batch[index].uuid)
            if hit is None:
                new.append(index)
            else:
                self.found(index, *hit)
        return new

    def results(self) -> list[AppendResult]:
        """One result per input, in input order.

        Raises:
            RuntimeError: a first occurrence was left unresolved (a bug).
        """
        for index, first in self._copies:
            original = self._results[first]
            if original is not None:
                self._results[index] = AppendResult(
                    original.position, original.timestamp_us, duplicate=True
                )
        if any(result is None for result in self._results):
            raise RuntimeError("append left a message without a result")
        return self._results  # type: ignore[return-value]


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
        return value  # type: ignore[no-any-return]

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
