"""Durable message logs behind one contract, :class:`MessageStore`.

:func:`create_store` builds the backend named in ``storage.backend``.  Each
backend lives in its own module and imports its driver only when chosen, so
a node needs just the driver it uses (``pip install 'ipubsub[postgres]'``):

* ``sqlite`` (:mod:`.sqlite`): one local file, single node;
* ``postgres`` and ``mysql`` (:mod:`.postgres`, :mod:`.mysql`): shared by
  every node of a cluster, with transactional position allocation;
* ``cassandra`` and ``mongodb`` (:mod:`.cassandra`, :mod:`.mongodb`): shared,
  native expiry, weaker cross-node ordering (see each module).
"""

from __future__ import annotations

import importlib.util

from ..config import ConfigError, StorageConfig
from .base import AppendResult, MessageStore, NewMessage, StoredMessage

__all__ = ["AppendResult", "MessageStore", "NewMessage", "StoredMessage", "check_driver", "create_store"]

# backend -> (driver module, the extra that installs it)
_DRIVERS = {
    "postgres": ("asyncpg", "postgres"),
    "mysql": ("aiomysql", "mysql"),
    "cassandra": ("cassandra", "cassandra"),
    "mongodb": ("pymongo", "mongodb"),
}


def check_driver(backend: str) -> None:
    """Make sure the database driver ``storage.backend`` needs is installed,
    without importing it.

    Raises:
        ConfigError: it is not; the one-line message names what to install.
    """
    driver = _DRIVERS.get(backend)
    if driver is None:
        return
    try:
        found = importlib.util.find_spec(driver[0]) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise ConfigError(
            f"storage.backend is {backend}, but its driver {driver[0]} is not installed: "
            f"pip install 'ipubsub[{driver[1]}]'"
        )


def create_store(config: StorageConfig) -> MessageStore | None:
    """The (not yet opened) store for ``config.backend``, or ``None`` for ``none``.

    Raises:
        ConfigError: the backend's driver is not installed (the message names
            the extra to install), or its settings are unusable (bad DSN,
            table name).
    """
    timeout = config.operation_timeout_seconds
    backend = config.backend
    if backend == "none":
        return None
    check_driver(backend)
    if backend == "sqlite":
        from .sqlite import SqliteStore

        return SqliteStore(config.sqlite, operation_timeout_seconds=timeout)
    if backend == "postgres":
        from .postgres import PostgresStore

        return PostgresStore(config.postgres, operation_timeout_seconds=timeout)
    if backend == "mysql":
        from .mysql import MysqlStore

        return MysqlStore(config.mysql, operation_timeout_seconds=timeout)
    if backend == "cassandra":
        from .cassandra import CassandraStore

        return CassandraStore(config.cassandra, operation_timeout_seconds=timeout)
    if backend == "mongodb":
        from .mongodb import MongodbStore

        return MongodbStore(config.mongodb, operation_timeout_seconds=timeout)
    raise ValueError(f"unknown storage backend {backend!r}")
