"""Fixtures of the storage contract suite: one param per backend.

PostgreSQL and MariaDB/MySQL are expected on their default local ports
(override with ``IPUBSUB_TEST_POSTGRES`` / ``IPUBSUB_TEST_MYSQL`` DSNs); when
one is unreachable its runs are skipped, or fail when ``CI`` is set.
Cassandra and MongoDB run only when ``IPUBSUB_TEST_CASSANDRA`` (``host`` or
``host:port``) / ``IPUBSUB_TEST_MONGODB`` (a ``mongodb://`` URL) is set, and
are skipped with that reason otherwise (see :func:`require`); their pure
parts are covered by ``test_cassandra_unit.py`` / ``test_mongodb_unit.py``.
Every test gets a fresh table (``t_<hex>``), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest

from ipubsub.config import (
    CassandraConfig,
    MongodbConfig,
    MysqlConfig,
    PostgresConfig,
    SqliteConfig,
    StorageConfig,
)
from ipubsub.storage import MessageStore, create_store

from ..support.tcp_proxy import TcpProxy

BACKENDS = ["sqlite", "postgres", "mysql", "cassandra", "mongodb"]
POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_DSN = os.environ.get("IPUBSUB_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
CASSANDRA = os.environ.get("IPUBSUB_TEST_CASSANDRA", "")
MONGODB = os.environ.get("IPUBSUB_TEST_MONGODB", "")
TEST_KEYSPACE = TEST_DATABASE = "ipubsub_test"

MakeStore = Callable[..., Awaitable[MessageStore]]


def storage_config(
    backend: str, table: str, tmp_path: Path, timeout: float = 5.0, **overrides: Any
) -> StorageConfig:
    """A config for ``backend`` using ``table`` on the test servers;
    ``overrides`` replace fields of the backend's own section."""
    host, _, port = CASSANDRA.partition(":")
    config = StorageConfig(
        backend=backend,  # type: ignore[arg-type]
        operation_timeout_seconds=timeout,
        sqlite=SqliteConfig(path=str(tmp_path / "data" / "store.db"), table=table),
        postgres=PostgresConfig(dsn=POSTGRES_DSN, table=table, pool_size=4),
        mysql=MysqlConfig(dsn=MYSQL_DSN, table=table, pool_size=4),
        cassandra=CassandraConfig(
            hosts=[host or "127.0.0.1"], port=int(port or 9042), keyspace=TEST_KEYSPACE, table=table
        ),
        mongodb=MongodbConfig(url=MONGODB or "mongodb://127.0.0.1", database=TEST_DATABASE, collection=table),
    )
    if not overrides:
        return config
    section = msgspec.structs.replace(getattr(config, backend), **overrides)
    return msgspec.structs.replace(config, **{backend: section})


async def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        async with asyncio.timeout(2):
            _, writer = await asyncio.open_connection(parts.hostname, parts.port or default_port)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def require(backend: str) -> None:
    """Skip, or fail, when the backend's server is not available.

    PostgreSQL and MySQL/MariaDB are part of every test run: without them a
    test is skipped, or fails under ``CI`` (CI must run them).  Cassandra and
    MongoDB run only when ``IPUBSUB_TEST_CASSANDRA`` / ``IPUBSUB_TEST_MONGODB``
    name a server: unset, the test is skipped with that reason (under ``CI``
    too: no server is set up for them); set but unreachable, it is skipped,
    or fails under ``CI``.
    """
    ci = bool(os.environ.get("CI"))
    if backend in ("postgres", "mysql"):
        url, port, label = (
            (POSTGRES_DSN, 5432, "PostgreSQL") if backend == "postgres" else (MYSQL_DSN, 3306, "MySQL/MariaDB")
        )
    elif backend == "cassandra":
        if not CASSANDRA:
            pytest.skip("Cassandra: no server configured (IPUBSUB_TEST_CASSANDRA=host[:port]); "
                        "this backend has not been run against a real server here")
        url, port, label = f"cql://{CASSANDRA}", 9042, "Cassandra"
    elif backend == "mongodb":
        if not MONGODB:
            pytest.skip("MongoDB: no server configured (IPUBSUB_TEST_MONGODB=mongodb://...); "
                        "this backend has not been run against a real server here")
        url, port, label = MONGODB, 27017, "MongoDB"
    else:
        return
    if not await _reachable(url, port):
        where = f"{urlsplit(url).hostname}:{urlsplit(url).port or port}"
        if ci:
            pytest.fail(f"CI requires {label} at {where}")
        pytest.skip(f"{label} at {where} is unreachable")


async def start_proxy(backend: str) -> TcpProxy:
    """A started TCP proxy (on a port the kernel picked) in front of the
    backend's server (postgres or mysql)."""
    dsn, default_port = (POSTGRES_DSN, 5432) if backend == "postgres" else (MYSQL_DSN, 3306)
    parts = urlsplit(dsn)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or default_port)
    await proxy.start()
    return proxy


def proxied_dsn(backend: str, port: int) -> str:
    """The backend's test DSN pointed at a proxy on 127.0.0.1:``port``."""
    dsn = POSTGRES_DSN if backend == "postgres" else MYSQL_DSN
    parts = urlsplit(dsn)
    credentials = parts.netloc.rpartition("@")[0]
    return dsn.replace(parts.netloc, f"{credentials}@127.0.0.1:{port}")


def sql_tables(table: str) -> str:
    """Every table a SQL store creates for ``table``, comma-separated."""
    return ", ".join(f"{table}{suffix}" for suffix in ("", "_streams", "_groups", "_pending", "_spill"))


async def drop_tables(backend: str, table: str) -> None:
    """Remove everything a store created for ``table``."""
    if backend == "postgres":
        import asyncpg

        con = await asyncpg.connect(POSTGRES_DSN, timeout=5)
        try:
            await con.execute(f"DROP TABLE IF EXISTS {sql_tables(table)}")
        finally:
            await con.close()
    elif backend == "mysql":
        import aiomysql

        from ipubsub.storage.mysql import parse_mysql_dsn

        conn = await aiomysql.connect(**parse_mysql_dsn(MYSQL_DSN), connect_timeout=5)
        try:
            async with conn.cursor() as cursor:
                await cursor.execute("SET SESSION sql_notes = 0")
                await cursor.execute(f"DROP TABLE IF EXISTS {sql_tables(table)}")
        finally:
            conn.close()
    elif backend == "cassandra":
        from cassandra.cluster import Cluster

        config = storage_config(backend, table, Path()).cassandra

        def drop() -> None:
            cluster = Cluster(config.hosts, port=config.port)
            try:
                session = cluster.connect()
                for suffix in ("", "_streams", "_uuids"):
                    session.execute(f"DROP TABLE IF EXISTS {TEST_KEYSPACE}.{table}{suffix}", timeout=30)
            finally:
                cluster.shutdown()

        await asyncio.to_thread(drop)
    elif backend == "mongodb":
        from pymongo import AsyncMongoClient

        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(MONGODB)
        try:
            await client[TEST_DATABASE].drop_collection(table)
            await client[TEST_DATABASE].drop_collection(f"{table}_streams")
        finally:
            await client.close()


@pytest.fixture(params=BACKENDS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend's name, without requiring its server."""
    return str(request.param)


@pytest.fixture
async def backend(backend_name: str) -> str:
    """The backend's name; skips when its server is not available."""
    await require(backend_name)
    return backend_name


@pytest.fixture
async def make_store(backend: str, tmp_path: Path) -> AsyncIterator[MakeStore]:
    """Factory of opened stores sharing one fresh table; closes them and
    drops the table afterwards."""
    table = f"t_{secrets.token_hex(6)}"
    stores: list[MessageStore] = []

    async def make(timeout: float = 5.0, **overrides: Any) -> MessageStore:
        store = create_store(storage_config(backend, table, tmp_path, timeout, **overrides))
        assert store is not None
        stores.append(store)
        async with asyncio.timeout(60):
            await store.open()
        return store

    try:
        yield make
    finally:
        async with asyncio.timeout(60):
            for store in stores:
                await store.close()
            await drop_tables(backend, table)


@pytest.fixture
async def store(make_store: MakeStore) -> MessageStore:
    return await make_store()


@pytest.fixture
def t0() -> int:
    """Now, in microseconds.  Tests pass explicit ``now_us`` values from
    here; expiries lie hours ahead in real time, so Cassandra's TTL and
    MongoDB's TTL monitor never drop a row while a test runs."""
    return time.time_ns() // 1000
