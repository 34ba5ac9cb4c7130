"""MySQL / MariaDB backend (aiomysql pool, InnoDB).

Stream ids and uuids are stored UTF-8 encoded in ``VARBINARY`` columns, so
no collation can merge ``"A"`` and ``"a"`` or drop trailing spaces (they are
bound as utf8mb4 text; comparing text with a binary column compares bytes).
Connections run with autocommit off and ``READ COMMITTED`` isolation, so each
statement of an append sees rows committed by the writer that held the
stream's counter lock before it.

aiomysql inlines parameters into the SQL text, and aiomysql 0.3.2 cannot
escape ``bytes`` with PyMySQL >= 1.2.3 (aio-libs/aiomysql#1080), so payloads
are bound as hex text and decoded by ``UNHEX``.  The server's
``max_allowed_packet`` must therefore exceed twice the largest message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import unquote, urlsplit

try:
    import aiomysql
    import pymysql
    import pymysql.constants.CLIENT
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the mysql backend needs aiomysql: pip install 'ipubsub[mysql]'") from exc

from ..config import ConfigError, MysqlConfig
from .base import StoredMessage
from .common import url_location, url_password
from .groups_sql import SqlGroups
from .sql import SqlConnection, SqlStore

__all__ = ["MysqlStore", "parse_mysql_dsn"]

_DUPLICATE_KEY, _LOCK_WAIT_TIMEOUT, _DEADLOCK = 1062, 1205, 1213


def parse_mysql_dsn(dsn: str) -> dict[str, Any]:
    """``mysql://user[:password]@host[:port]/database`` as aiomysql connect
    arguments (port 3306 by default; user and password percent-decoded).

    Raises:
        ConfigError: the DSN does not have that shape.
    """
    try:
        parts = urlsplit(dsn)
        port = parts.port or 3306
    except ValueError as exc:
        raise ConfigError(f"storage.mysql.dsn: {exc}") from None
    database = parts.path.lstrip("/")
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not database or parts.query:
        raise ConfigError(
            "storage.mysql.dsn: expected mysql://user[:password]@host[:port]/database, "
            f"got {url_location(dsn, 3306)!r} with scheme {parts.scheme!r}"
        )
    return {
        "host": parts.hostname,
        "port": port,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "db": unquote(database),
    }


# A multi-row INSERT stays below these (hex doubles payload bytes).
_MAX_INSERT_BYTES = 4 * 1024 * 1024
_MAX_INSERT_ROWS = 500


class MysqlGroups(SqlGroups):
    """Group statements MySQL needs in its own words."""

    # no RETURNING with ON DUPLICATE KEY: upsert (locking the row), then read it
    LOCK = (
        "INSERT INTO {g} (stream_id, group_name, delivered_through, active_at_us) VALUES (?, ?, 0, ?)"
        " ON DUPLICATE KEY UPDATE active_at_us = VALUES(active_at_us)"
    )

    async def _lock(self, conn: SqlConnection, stream_id: str, group: str, now_us: int) -> int:
        await conn.execute(self._store.sql(self.LOCK), (stream_id, group, now_us))
        rows = await conn.fetch(self._store.sql(self.THROUGH), (stream_id, group))
        return int(rows[0][0])


class _Connection:
    def __init__(self, cursor: aiomysql.Cursor) -> None:
        self._cursor = cursor

    async def fetch(self, sql: str, args: Sequence[Any] = ()) -> Sequence[Sequence[Any]]:
        await self._cursor.execute(sql, args or None)
        return await self._cursor.fetchall()

    async def execute(self, sql: str, args: Sequence[Any] = ()) -> int:
        await self._cursor.execute(sql, args or None)
        return max(int(self._cursor.rowcount), 0)

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._cursor.executemany(sql, rows)


class MysqlStore(SqlStore):
    """Message log in MySQL/MariaDB tables ``{table}`` and ``{table}_streams``.

    Args:
        config: ``storage.mysql`` (``dsn``, ``table``, ``pool_size``).
        operation_timeout_seconds: bound on every call, connecting included.

    Raises:
        ConfigError: the DSN or table name is invalid.
    """

    name = "mysql"
    SCHEMA = (
        # "already exists" notes would surface as Python warnings (aiomysql)
        "SET SESSION sql_notes = 0",
        "CREATE TABLE IF NOT EXISTS {t} (stream_id VARBINARY(256) NOT NULL,"
        " position BIGINT NOT NULL, message_uuid VARBINARY(512) NOT NULL,"
        " payload LONGBLOB NOT NULL, timestamp_us BIGINT NOT NULL, expires_at_us BIGINT NOT NULL,"
        " PRIMARY KEY (stream_id, position), UNIQUE KEY {t}_uuid (stream_id, message_uuid),"
        " KEY {t}_expires (expires_at_us)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS {s} (stream_id VARBINARY(256) NOT NULL PRIMARY KEY,"
        " last_position BIGINT NOT NULL) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS {g} (stream_id VARBINARY(256) NOT NULL, group_name VARBINARY(256) NOT NULL,"
        " delivered_through BIGINT NOT NULL, active_at_us BIGINT NOT NULL, PRIMARY KEY (stream_id, group_name),"
        " KEY {g}_active (active_at_us)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS {p} (stream_id VARBINARY(256) NOT NULL, group_name VARBINARY(256) NOT NULL,"
        " position BIGINT NOT NULL, consumer VARBINARY(256) NOT NULL, lease_until_us BIGINT NOT NULL,"
        " deliveries INT NOT NULL, delivered_at_us BIGINT NOT NULL,"
        " PRIMARY KEY (stream_id, group_name, position)) ENGINE=InnoDB",
        "CREATE TABLE IF NOT EXISTS {x} (node VARBINARY(256) NOT NULL, spill_id BIGINT NOT NULL, seq INT NOT NULL,"
        " stream_id VARBINARY(256) NOT NULL, capacity INT, message_uuid VARBINARY(512) NOT NULL,"
        " payload LONGBLOB NOT NULL, timestamp_us BIGINT NOT NULL, PRIMARY KEY (node, spill_id, seq)) ENGINE=InnoDB",
    )
    # no RETURNING with ON DUPLICATE KEY: bump (locking the rows), then read back
    ALLOCATE = (
        "INSERT INTO {s} (stream_id, last_position) VALUES {values}"
        " ON DUPLICATE KEY UPDATE last_position = last_position + VALUES(last_position)"
    )
    BLOB = "UNHEX(?)"
    ROW = "(?, ?, ?, UNHEX(?), ?, ?)"
    INSERT = "INSERT INTO {t} (stream_id, position, message_uuid, payload, timestamp_us, expires_at_us)"
    GROUPS = MysqlGroups
    COUNTERS = "SELECT stream_id, last_position FROM {s} WHERE stream_id IN ({marks})"
    # MySQL rejects LIMIT inside an IN subquery, but allows it on DELETE
    DELETE = "DELETE FROM {t} WHERE expires_at_us <= ? LIMIT ?"

    def __init__(self, config: MysqlConfig, *, operation_timeout_seconds: float = 5.0) -> None:
        super().__init__(
            table=config.table,
            table_key="storage.mysql.table",
            where=f"mysql at {url_location(config.dsn, 3306)}",
            timeout=operation_timeout_seconds,
            # half the pool: reads and the sweeper keep connections
            concurrency=max(1, config.pool_size // 2),
            errors=(pymysql.err.MySQLError,),
            secret=url_password(config.dsn),
        )
        self._connect_args = parse_mysql_dsn(config.dsn)
        self._pool_size = config.pool_size
        self._pool: aiomysql.Pool | None = None

    def _dialect(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def blob(self, payload: bytes) -> str:
        return payload.hex()

    def text(self, value: Any) -> str:
        return bytes(value).decode("utf-8")

    def stored(self, stream_id: str, rows: Iterable[Sequence[Any]]) -> list[StoredMessage]:
        # VARBINARY uuids come back as bytes
        return [StoredMessage(stream_id, row[0], row[1].decode("utf-8"), bytes(row[2]), row[3], row[4]) for row in rows]

    async def _connect(self) -> None:
        if self._pool is None:
            self._pool = await aiomysql.create_pool(
                minsize=0,
                maxsize=self._pool_size,
                connect_timeout=self._timeout,
                autocommit=False,
                charset="utf8mb4",
                # UPDATE counts the rows it matched, not only those it changed
                client_flag=pymysql.constants.CLIENT.FOUND_ROWS,
                init_command="SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                **self._connect_args,
            )

    async def _disconnect(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), self._timeout)
        except TimeoutError:
            pool.terminate()

    @asynccontextmanager
    async def _session(self, write: bool) -> AsyncIterator[SqlConnection]:
        if self._pool is None:
            raise self._not_open()
        pool = self._pool
        conn = await pool.acquire()
        try:
            async with conn.cursor() as cursor:
                yield _Connection(cursor)
            # a read also opened a transaction (autocommit is off): end it
            await (conn.commit() if write else conn.rollback())
        except BaseException as exc:
            await self._recover(conn, exc)
            raise
        finally:
            pool.release(conn)

    async def _recover(self, conn: aiomysql.Connection, exc: BaseException) -> None:
        """After a failed statement: roll back and keep the connection if the
        server reported a plain SQL error, else close it (its state is unknown:
        cancelled mid-query or the link broke) and drop idle ones too."""
        link_error = isinstance(exc, (pymysql.err.OperationalError, pymysql.err.InterfaceError))
        sql_error = isinstance(exc, pymysql.err.MySQLError) and not link_error
        if sql_error or _errno(exc) in (_DEADLOCK, _LOCK_WAIT_TIMEOUT):
            try:
                await conn.rollback()
                return
            except (pymysql.err.MySQLError, OSError):
                pass
        conn.close()
        if self._pool is not None and not isinstance(exc, asyncio.CancelledError):
            await self._pool.clear()

    async def _allocate(self, conn: SqlConnection, counts: dict[str, int]) -> dict[str, int]:
        streams = sorted(counts)
        sql = self.sql(self.ALLOCATE, values=", ".join(["(?, ?)"] * len(streams)))
        await conn.execute(sql, [v for s in streams for v in (s, counts[s])])
        rows = await conn.fetch(self.sql(self.COUNTERS, marks=", ".join("?" * len(streams))), streams)
        return {self.text(row[0]): int(row[1]) for row in rows}

    async def _insert(self, conn: SqlConnection, rows: list[tuple[Any, ...]]) -> None:
        await self.insert_rows(conn, self.INSERT, self.ROW, rows)

    async def insert_rows(self, conn: SqlConnection, head: str, row: str, rows: Sequence[Sequence[Any]]) -> None:
        # PyMySQL only folds executemany into one multi-row INSERT for plain
        # placeholders, not UNHEX(%s): build the multi-row statement here,
        # in chunks that keep packets well under max_allowed_packet.
        row = row.replace("{blob}", self.BLOB)
        chunk: list[Sequence[Any]] = []
        size = 0
        for values in rows:
            chunk.append(values)
            size += sum(len(v) for v in values if isinstance(v, (str, bytes))) + 128
            if size > _MAX_INSERT_BYTES or len(chunk) == _MAX_INSERT_ROWS:
                await self._insert_chunk(conn, head, row, chunk)
                chunk, size = [], 0
        if chunk:
            await self._insert_chunk(conn, head, row, chunk)

    async def _insert_chunk(self, conn: SqlConnection, head: str, row: str, rows: list[Sequence[Any]]) -> None:
        sql = self.sql(f"{head} VALUES {{rows}}", rows=", ".join([row] * len(rows)))
        await conn.execute(sql, [v for values in rows for v in values])

    def _is_retryable(self, exc: BaseException) -> bool:
        return _errno(exc) in (_DUPLICATE_KEY, _DEADLOCK)


def _errno(exc: BaseException) -> int | None:
    if isinstance(exc, pymysql.err.MySQLError) and exc.args and isinstance(exc.args[0], int):
        return exc.args[0]
    return None
