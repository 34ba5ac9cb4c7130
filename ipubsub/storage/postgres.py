"""PostgreSQL backend (asyncpg pool).

Several nodes may share one database and table: positions come from the
per-stream counter row, locked by the append transaction (see
:mod:`ipubsub.storage.sql`), so they are never duplicated and commit in
order.  Stream ids and uuids are ``TEXT COLLATE "C"``: compared byte by
byte, case-sensitive, trailing spaces kept.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

try:
    import asyncpg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the postgres backend needs asyncpg: pip install 'ipubsub[postgres]'") from exc

from ..config import PostgresConfig
from .common import url_location, url_password
from .sql import SqlConnection, SqlStore

__all__ = ["PostgresStore"]

_DRIVER_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
_RETRYABLE = (asyncpg.UniqueViolationError, asyncpg.DeadlockDetectedError, asyncpg.SerializationError)
_PLACEHOLDER = re.compile(r"\?")
_COLUMNS = ("stream_id", "position", "message_uuid", "payload", "timestamp_us", "expires_at_us")


class _Connection:
    def __init__(self, con: asyncpg.Connection) -> None:
        self._con = con

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        return await self._con.fetch(sql, *args)

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        status = await self._con.execute(sql, *args)
        tail = status.rpartition(" ")[2]  # "DELETE 3", "CREATE TABLE"
        return int(tail) if tail.isdigit() else 0

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._con.executemany(sql, rows)

    async def copy(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        await self._con.copy_records_to_table(table, records=rows, columns=list(columns))


class PostgresStore(SqlStore):
    """Message log in PostgreSQL tables ``{table}`` and ``{table}_streams``.

    Args:
        config: ``storage.postgres`` (``dsn``, ``table``, ``pool_size``).
        operation_timeout_seconds: bound on every call, connecting included.
    """

    name = "postgres"
    OPTIMISTIC = True
    SCHEMA = (
        # concurrent CREATE ... IF NOT EXISTS can still collide in the catalog
        "SELECT pg_advisory_xact_lock(hashtext('ipubsub:{t}'))",
        'CREATE TABLE IF NOT EXISTS {t} (stream_id TEXT COLLATE "C" NOT NULL,'
        ' position BIGINT NOT NULL, message_uuid TEXT COLLATE "C" NOT NULL,'
        " payload BYTEA NOT NULL, timestamp_us BIGINT NOT NULL, expires_at_us BIGINT NOT NULL,"
        " PRIMARY KEY (stream_id, position), UNIQUE (stream_id, message_uuid))",
        "CREATE INDEX IF NOT EXISTS {t}_expires ON {t} (expires_at_us)",
        'CREATE TABLE IF NOT EXISTS {s} (stream_id TEXT COLLATE "C" PRIMARY KEY,'
        " last_position BIGINT NOT NULL)",
        'CREATE TABLE IF NOT EXISTS {g} (stream_id TEXT COLLATE "C" NOT NULL, group_name TEXT COLLATE "C" NOT NULL,'
        " delivered_through BIGINT NOT NULL, active_at_us BIGINT NOT NULL, PRIMARY KEY (stream_id, group_name))",
        "CREATE INDEX IF NOT EXISTS {g}_active ON {g} (active_at_us)",
        'CREATE TABLE IF NOT EXISTS {p} (stream_id TEXT COLLATE "C" NOT NULL, group_name TEXT COLLATE "C" NOT NULL,'
        ' position BIGINT NOT NULL, consumer TEXT COLLATE "C" NOT NULL, lease_until_us BIGINT NOT NULL,'
        " deliveries INTEGER NOT NULL, delivered_at_us BIGINT NOT NULL,"
        " PRIMARY KEY (stream_id, group_name, position))",
        'CREATE TABLE IF NOT EXISTS {x} (node TEXT COLLATE "C" NOT NULL, spill_id BIGINT NOT NULL,'
        ' seq INTEGER NOT NULL, stream_id TEXT COLLATE "C" NOT NULL, capacity INTEGER,'
        ' message_uuid TEXT COLLATE "C" NOT NULL, payload BYTEA NOT NULL, timestamp_us BIGINT NOT NULL,'
        " PRIMARY KEY (node, spill_id, seq))",
    )
    # Array parameters keep one statement text (asyncpg prepares per text).
    # The exact (stream, uuid) pairs, joined: one unique-index probe per pair
    # whatever plan is cached (``stream_id = ANY(..) AND message_uuid =
    # ANY(..)`` got a generic plan scanning the whole stream once the table grew).
    EXISTING = (
        "SELECT m.stream_id, m.message_uuid, m.position, m.timestamp_us"
        " FROM unnest(?::text[], ?::text[]) AS k(s, u)"
        " JOIN {t} m ON m.stream_id = k.s AND m.message_uuid = k.u"
    )
    ALLOCATE = (
        "INSERT INTO {s} (stream_id, last_position)"
        " SELECT s, n FROM unnest(?::text[], ?::bigint[]) AS u(s, n) ORDER BY s COLLATE \"C\""
        " ON CONFLICT (stream_id) DO UPDATE SET last_position = {s}.last_position + excluded.last_position"
        " RETURNING stream_id, last_position"
    )

    def __init__(self, config: PostgresConfig, *, operation_timeout_seconds: float = 5.0) -> None:
        super().__init__(
            table=config.table,
            table_key="storage.postgres.table",
            where=f"postgres at {url_location(config.dsn, 5432)}",
            timeout=operation_timeout_seconds,
            # half the pool: reads and the sweeper keep connections
            concurrency=max(1, config.pool_size // 2),
            errors=_DRIVER_ERRORS,
            secret=url_password(config.dsn),
        )
        self._dsn = config.dsn
        self._pool_size = config.pool_size
        self._pool: asyncpg.Pool | None = None

    def _dialect(self, sql: str) -> str:
        numbers = itertools.count(1)
        return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)

    async def _connect(self) -> None:
        if self._pool is None:
            # min_size=0: creating the pool cannot fail half-way; the first
            # statement (the schema) proves the server answers
            self._pool = await asyncpg.create_pool(
                self._dsn,
                min_size=0,
                max_size=self._pool_size,
                timeout=self._timeout,
                command_timeout=self._timeout,
                # Every statement here is an index probe or an ordered index
                # range with a LIMIT.  With stale statistics (a young or fast
                # growing table) the planner chose bitmap scans reading the
                # whole rest of a stream and sorting it for each batch of
                # 1000: replay ran 4-8 times slower until autoanalyze caught up.
                server_settings={"enable_bitmapscan": "off"},
            )

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), self._timeout)
        except (TimeoutError, *_DRIVER_ERRORS, OSError):
            pool.terminate()

    @asynccontextmanager
    async def _session(self, write: bool) -> AsyncIterator[SqlConnection]:
        if self._pool is None:
            raise self._not_open()
        pool = self._pool
        con = await pool.acquire()
        transaction = con.transaction() if write else None
        try:
            if transaction is not None:
                await transaction.start()
            yield _Connection(con)
            if transaction is not None:
                await transaction.commit()
        except BaseException as exc:
            if isinstance(exc, asyncpg.PostgresError):  # the server said no: the link is fine
                if transaction is not None:
                    await transaction.rollback()
            else:
                # cancelled (a deadline), or the link broke: the connection's
                # state is unknown and a graceful clean-up would wait on it
                # (on a dead network path, for a whole timeout): drop it
                con.terminate()
            raise
        finally:
            await pool.release(con)

    async def _find_existing(
        self, conn: SqlConnection, wanted: dict[str, list[str]]
    ) -> dict[str, dict[str, tuple[int, int]]]:
        streams = [s for s, uuids in wanted.items() for _ in uuids]
        uuids = [u for values in wanted.values() for u in values]
        rows = await conn.fetch(self.sql(self.EXISTING), (streams, uuids))
        return self._pairs(rows, wanted)

    async def _allocate(self, conn: SqlConnection, counts: dict[str, int]) -> dict[str, int]:
        streams = sorted(counts)
        rows = await conn.fetch(self.sql(self.ALLOCATE), (streams, [counts[s] for s in streams]))
        return {row[0]: int(row[1]) for row in rows}

    async def _insert(self, conn: SqlConnection, rows: list[tuple[Any, ...]]) -> None:
        # COPY: a fraction of the CPU of INSERT on both sides (no per-row
        # statement, no array encoding); a duplicate uuid still fails the
        # unique index, and the batch is retried like any other.
        assert isinstance(conn, _Connection)
        await conn.copy(self.table, _COLUMNS, rows)

    def _is_retryable(self, exc: BaseException) -> bool:
        return isinstance(exc, _RETRYABLE)
