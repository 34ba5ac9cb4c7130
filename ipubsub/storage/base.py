"""The contract every durable backend implements.

A store keeps, per stream, a log of messages ordered by a *position*: an
integer that strictly increases with every message ever appended to that
stream and is never reused, not after rows expire and are deleted, not after
a restart, not when another node takes the stream over (there may be gaps).
Readers resume from a position (carried in an opaque token, see
:mod:`ipubsub.storage.tokens`).

Two more things live in the same database:

* **Consumer groups** (:meth:`MessageStore.claim` and the methods after it):
  per ``(stream, group)``, the position through which every message was
  delivered at least once, and the *pending* entries: messages leased to a
  consumer and not yet acknowledged (position, consumer, lease end,
  delivery count, first delivery time).  A group shares the work of one
  durable stream among its consumers: each message goes to one of them; an
  unacknowledged lease that ends makes the message claimable again (by any
  consumer, counting one more delivery); after ``max_deliveries`` it is
  handed out as *dead* for the caller to move to the dead-letter stream.
  Everything a group knows is in the database, so any node serves it after
  the owner changes, and two processes claiming for the same group at once
  never lease a message twice (row locks in SQL, conditional writes in
  Cassandra and MongoDB).
* **Spilled buffers** (:meth:`MessageStore.spill`): the in-memory messages
  of a node that stops with no peer to hand them to, kept under the node's
  name until it starts again.

Backends know nothing of HTTP, of the engine or of the cluster.  They raise
:class:`~ipubsub.errors.StorageUnavailable` when the database cannot be
reached; the layer above retries and reports status.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import msgspec

__all__ = [
    "AppendResult",
    "Claim",
    "GroupInfo",
    "LeaseRef",
    "Leased",
    "MessageStore",
    "NewMessage",
    "SpilledMessage",
    "SpilledStream",
    "StoredMessage",
]


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


class Leased(msgspec.Struct, frozen=True, gc=False):
    """A message of a group's stream leased to a consumer.  ``delivery`` is
    1 the first time it is handed out and grows with each redelivery; a
    receipt is ``(message.position, delivery)`` (see :class:`LeaseRef`)."""

    message: StoredMessage
    delivery: int


class Claim(msgspec.Struct, frozen=True):
    """What :meth:`MessageStore.claim` handed to one consumer.

    * ``messages``: leased to the consumer, in position order (redeliveries
      of expired leases come first: they are older).
    * ``dead``: messages whose last allowed delivery expired unacknowledged.
      They are leased to the claiming consumer too (same lease), not counted
      as a delivery; the caller appends each to the dead-letter stream
      (``<streamId>.dead``) with the message's own uuid, then acknowledges
      it.  If the caller dies in between, the lease ends, the next claim
      returns it as dead again, and the append's uuid makes the retry a
      duplicate: each dead message lands in the dead-letter stream once.
    * ``next_lease_end_us``: the earliest lease end among the group's
      pending entries after this claim (``None``: nothing pending), so a
      waiting consumer knows when an expired lease may become claimable.
    """

    messages: list[Leased]
    dead: list[Leased]
    next_lease_end_us: int | None


class LeaseRef(msgspec.Struct, frozen=True, gc=False):
    """Which pending entry an ack or nack means: a receipt.  With
    ``delivery`` it matches only that delivery (a stale receipt, from a lease
    that ended and was claimed again, matches nothing); without, any."""

    position: int
    delivery: int | None = None


class GroupInfo(msgspec.Struct, frozen=True, gc=False):
    """One consumer group of a stream, as :meth:`MessageStore.list_groups`
    reports it.

    * ``delivered_through``: every message at or before this position was
      delivered at least once (0: nothing yet);
    * ``lag``: alive messages after it, never delivered;
    * ``pending``: leased and not acknowledged (expired leases included);
    * ``oldest_pending_us``: first delivery time of the oldest pending entry
      (its age is now minus this), ``None`` when nothing is pending;
    * ``active_at_us``: the last claim, ack or nack.
    """

    group: str
    delivered_through: int
    lag: int
    pending: int
    oldest_pending_us: int | None
    active_at_us: int


class SpilledMessage(msgspec.Struct, frozen=True, gc=False):
    """One buffered in-memory message, as spilled."""

    uuid: str
    payload: bytes
    timestamp_us: int


class SpilledStream(msgspec.Struct, frozen=True):
    """An in-memory stream's capacity and buffered messages, oldest first.
    ``spill_id`` tells which spill it came from (restores read it back)."""

    stream_id: str
    capacity: int | None
    messages: list[SpilledMessage]
    spill_id: int = 0


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

    # -- consumer groups -----------------------------------------------------------
    #
    # A group is created by its first claim (starting at the beginning of the
    # log: every alive message is delivered) and removed by delete_group or,
    # once idle, by delete_idle_groups.  Times are wall-clock microseconds.

    @abc.abstractmethod
    async def claim(
        self,
        stream_id: str,
        group: str,
        consumer: str,
        limit: int,
        lease_us: int,
        now_us: int,
        max_deliveries: int,
    ) -> Claim:
        """Lease up to ``limit`` messages of the stream to ``consumer`` of
        ``group`` until ``now_us + lease_us``.

        First the group's pending entries whose lease ended (at or before
        ``now_us``), oldest position first: an entry whose message expired
        or is gone is dropped; one already delivered ``max_deliveries``
        times (``0``: no limit) goes to ``dead`` (at most ``limit`` of
        them); the others are re-leased with ``delivery + 1``.  Then, to
        fill up to ``limit``, messages never delivered to the group (after
        ``delivered_through``, alive at ``now_us``, expired ones skipped)
        with ``delivery = 1``, and ``delivered_through`` moves past them.
        Atomic per group: concurrent claims (any process) never lease the
        same message twice, and a crash leaves either all or none of it.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        """Acknowledge pending entries: each matching one is removed for
        good.  One answer per ref: ``True`` if it was pending (and matched
        the ref's delivery) and is now acknowledged; ``False`` if unknown,
        already acknowledged, or the receipt is stale.  An unknown group
        answers all ``False`` (and is not created).

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        """Give leased messages back: each matching entry's lease ends at
        ``now_us + delay_us`` (``0``: now), so the next claim after that
        redelivers it before any new message.  Its delivery count is kept
        (the redelivery adds one).  Answers as :meth:`ack`.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        """The stream's groups, by name.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def delete_group(self, stream_id: str, group: str) -> bool:
        """Remove a group and its pending entries; ``False`` if unknown.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        """Remove at most ``limit`` groups (of any stream) whose last claim,
        ack or nack was before ``idle_before_us``; return how many.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    # -- spilled in-memory buffers ---------------------------------------------------

    @abc.abstractmethod
    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        """Keep ``streams`` (capacity and messages in order) for ``node``
        under ``spill_id`` (a number greater than the node's earlier spills:
        the wall clock in microseconds); return how many messages were
        stored.  All or nothing where the database has transactions.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def read_spilled(self, node: str) -> list[SpilledStream]:
        """Every stream spilled for ``node``, in spill order (a stream
        spilled twice appears twice, older spill first), messages in order.
        Reading removes nothing: see :meth:`delete_spilled`.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """

    @abc.abstractmethod
    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        """Remove what was spilled for ``node`` with a spill id up to
        ``through_spill_id``; return how many messages.  Idempotent.

        Raises:
            StorageUnavailable: the database cannot be reached or failed.
        """
