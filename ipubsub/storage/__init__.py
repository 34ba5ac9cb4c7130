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

from ..config import StorageConfig
from .base import AppendResult, MessageStore, NewMessage, StoredMessage

__all__ = ["AppendResult", "MessageStore", "NewMessage", "StoredMessage", "create_store"]


def create_store(config: StorageConfig) -> MessageStore | None:
    """The (not yet opened) store for ``config.backend``, or ``None`` for ``none``.

    Raises:
        ImportError: the backend's driver is not installed (names the extra).
        ConfigError: the backend's settings are unusable (bad DSN, table name).
    """
    timeout = config.operation_timeout_seconds
    backend = config.backend
    if backend == "none":
        return None
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
