"""The contract every durable backend implements.

A store keeps, per stream, a log of messages ordered by a *position*: an
integer that strictly increases with every message ever appended to that
stream and is never reused, not after rows expire and are deleted, not after
a restart, not when another node takes the stream over.  Readers resume from
a position (carried in an opaque token, see :mod:`ipubsub.storage.tokens`).

Backends know nothing of HTTP, of the engine or of the cluster.  They raise
:class:`~ipubsub.errors.StorageUnavailable` when the database cannot be
reached; the layer above retries and reports status.
"""

from __future__ import annotations

import abc
from typing import Sequence

import msgspec

__all__ = ["AppendResult", "MessageStore", "NewMessage", "StoredMessage"]


# Values are msgspec structs: a batch read builds up to 1000 of them, and a
# struct costs a fraction of a frozen dataclass to create.


class NewMessage(msgspec.Struct, frozen=True, gc=False):
    """A message to append. Times are wall-clock microseconds since the epoch."""

    stream_id: str
    uuid: str
    payload: bytes
    timestamp_us: int
    expires_at_us: int


class AppendResult(msgspec.Struct, frozen=True, gc=False):
    """Where a message landed.  ``duplicate`` is true when the stream already
    held a message with the same uuid: nothing was stored and ``position`` /
    ``timestamp_us`` are the original message's."""

    position: int
    timestamp_us: int
    duplicate: bool = False


class StoredMessage(msgspec.Struct, frozen=True, gc=False):
    """A message as stored, with its position in its stream's log."""

    stream_id: str
    position: int
    uuid: str
    payload: bytes
    timestamp_us: int
    expires_at_us: int


class MessageStore(abc.ABC):
    """A durable per-stream message log with per-message expiry."""

    #: backend name as written in ``storage.backend``
    name: str = ""

    @property
    def append_concurrency(self) -> int:
        """How many :meth:`append` calls may usefully run at once (the
        durable log keeps up to this many group-commit batches in flight).
        Batches touching the same stream still commit one after another."""
        return 1

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and create tables/indexes/keyspace if missing (idempotent).

        Raises:
            StorageUnavailable: the database cannot be reached.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Safe to call twice, and after a failed open."""

    @abc.abstractmethod
    async def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch; return one result per input, in input order.

        Within the batch, messages of the same stream get increasing
        positions in input order.  A message whose ``(stream_id, uuid)`` is
        already stored (or appears earlier in the same batch) is not stored
        again: its result is the original's position with ``duplicate=True``.
        Concurrent appends to the same stream, from this or another process
        sharing the database, never produce the same position, and a reader
        never observes a position before every smaller position of that
        stream that will ever exist is visible (for backends with
        transactions; see each backend's notes).  Success means the database
        acknowledged the write durably.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def read_after(
        self, stream_id: str, after: int | None, now_us: int, limit: int
    ) -> list[StoredMessage]:
        """Up to ``limit`` messages of the stream with position greater than
        ``after`` (``None``: from the start) that have not expired at
        ``now_us`` (``expires_at_us > now_us``), in increasing position order.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def read_latest(self, stream_id: str, now_us: int, limit: int) -> list[StoredMessage]:
        """The ``limit`` alive messages of the stream with the greatest
        positions (fewer if it holds fewer), in increasing position order:
        what an operator inspecting a stream sees; readers use
        :meth:`read_after`.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def delete_expired(self, now_us: int, limit: int) -> int:
        """Delete at most ``limit`` messages with ``expires_at_us <= now_us``;
        return how many were deleted.  Backends with native expiry (Cassandra
        TTL, MongoDB TTL index) may return 0 and leave it to the database.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Cheap round trip proving the database answers.

        Raises:
            StorageUnavailable: it does not.
        """
