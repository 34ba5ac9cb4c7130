"""SQLite backend (aiosqlite): the embedded default for a single node.

Two connections, each with its own thread (aiosqlite): one writer, used
behind an :class:`asyncio.Lock` with ``BEGIN IMMEDIATE`` transactions, and
one reader.  WAL mode lets the reader run while the writer commits;
``synchronous=NORMAL`` keeps commits durable across a process crash (an OS
crash or power loss may lose the last commits).  Several stores may open the
same file (they queue on SQLite's write lock, up to the operation timeout),
but the file is local to one machine: it cannot be shared by cluster nodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from ..config import SqliteConfig
from .sql import SqlConnection, SqlStore

__all__ = ["SqliteStore"]


class _Connection:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        return list(await self._db.execute_fetchall(sql, args))

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        async with self._db.execute(sql, args) as cursor:
            return max(cursor.rowcount, 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        async with self._db.executemany(sql, rows):
            pass


class SqliteStore(SqlStore):
    """Message log in one SQLite file; creates the file's directory.

    Args:
        config: ``storage.sqlite`` (``path``, ``table``).
        operation_timeout_seconds: bound on every call, also SQLite's busy timeout.
    """

    name = "sqlite"
    SCHEMA = (
        # TEXT compares with the BINARY collation: case and trailing spaces count
        "CREATE TABLE IF NOT EXISTS {t} (stream_id TEXT NOT NULL, position INTEGER NOT NULL,"
        " message_uuid TEXT NOT NULL, payload BLOB NOT NULL, timestamp_us INTEGER NOT NULL,"
        " expires_at_us INTEGER NOT NULL, PRIMARY KEY (stream_id, position),"
        " UNIQUE (stream_id, message_uuid))",
        "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at_us)",
        "CREATE TABLE IF NOT EXISTS {s} (stream_id TEXT PRIMARY KEY, last_position INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS {g} (stream_id TEXT NOT NULL, group_name TEXT NOT NULL,"
        " delivered_through INTEGER NOT NULL, active_at_us INTEGER NOT NULL, PRIMARY KEY (stream_id, group_name))",
        "CREATE INDEX IF NOT EXISTS {g}_active ON {g} (active_at_us)",
        "CREATE TABLE IF NOT EXISTS {p} (stream_id TEXT NOT NULL, group_name TEXT NOT NULL,"
        " position INTEGER NOT NULL, consumer TEXT NOT NULL, lease_until_us INTEGER NOT NULL,"
        " deliveries INTEGER NOT NULL, delivered_at_us INTEGER NOT NULL,"
        " PRIMARY KEY (stream_id, group_name, position))",
        "CREATE TABLE IF NOT EXISTS {x} (node TEXT NOT NULL, spill_id INTEGER NOT NULL, seq INTEGER NOT NULL,"
        " stream_id TEXT NOT NULL, capacity INTEGER, message_uuid TEXT NOT NULL, payload BLOB NOT NULL,"
        " timestamp_us INTEGER NOT NULL, PRIMARY KEY (node, spill_id, seq))",
    )

    def __init__(self, config: SqliteConfig, *, operation_timeout_seconds: float = 5.0) -> None:
        super().__init__(
            table=config.table,
            table_key="storage.sqlite.table",
            where=f"sqlite database {config.path}",
            timeout=operation_timeout_seconds,
            errors=(sqlite3.Error,),
        )
        self._path = Path(config.path)
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> None:
        if self._writer is None:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._writer = await self._connection()
            self._reader = await self._connection()

    async def _connection(self) -> aiosqlite.Connection:
        # isolation_level=None: no implicit transactions, we BEGIN ourselves
        db = await aiosqlite.connect(self._path, isolation_level=None)
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute(f"PRAGMA busy_timeout={int(self._timeout * 1000)}")
        except BaseException:
            await db.close()
            raise
        return db

    async def _disconnect(self) -> None:
        for db in (self._writer, self._reader):
            if db is not None:
                await db.close()
        self._writer = self._reader = None

    @asynccontextmanager
    async def _session(self, write: bool) -> AsyncIterator[SqlConnection]:
        db = self._writer if write else self._reader
        if db is None:
            raise self._not_open()
        if not write:
            yield _Connection(db)
            return
        async with self._write_lock:
            try:
                # inside the try: if a timeout cancels us while BEGIN waits for
                # the lock, the ROLLBACK queued behind it ends that transaction
                await db.execute("BEGIN IMMEDIATE")
                yield _Connection(db)
                await db.commit()
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    await db.rollback()
                raise

    def _is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, sqlite3.IntegrityError)
