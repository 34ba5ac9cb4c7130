"""Leases on in-memory messages: at-least-once delivery without a database.

A receive that asks for a lease takes its message from the stream as every
receive does; the message then waits here, invisible to other receivers,
until one of these ends its lease:

* **ack** (:meth:`Leases.ack`): the message is gone for good;
* **nack** (:meth:`Leases.nack`): it goes back to the front of its stream,
  now or after a delay;
* **expiry**: the lease ran out unacknowledged: back to the front of the
  stream;
* **give-back** (:meth:`Leases.give_back`): the answer carrying it never
  reached the receiver; back to the front *without* counting a delivery.

Each lease is one delivery of its message, numbered ``message.deliveries +
1``.  A lease that ends by nack or expiry counts (``message.deliveries``
becomes its number); if that number reached the lease's ``max_deliveries``
the message goes to ``on_dead`` (the node moves it to the dead-letter
stream) instead of back to its stream.  Messages returned to a stream keep
the order in which they were first taken, ahead of everything else
(:meth:`~ipubsub.engine.Engine.give_back`).

A lease is named by its *receipt*, unique across nodes (a random prefix per
:class:`Leases` and a counter), and kept with its receipt when its stream
moves to another node (:meth:`Leases.detach`, :meth:`Leases.attach`).
Each lease costs one timer handle on the event loop; no task exists per
lease.
"""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .message import Message

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["HeldLease", "Lease", "LeaseStats", "Leases"]


class Lease:
    """One leased delivery of a message taken from ``stream_id``."""

    __slots__ = ("receipt", "stream_id", "message", "delivery", "max_deliveries", "capacity", "ends_at", "handle")

    def __init__(
        self,
        receipt: str,
        stream_id: str,
        message: Message,
        delivery: int,
        max_deliveries: int,
        capacity: int | None,
    ) -> None:
        self.receipt = receipt
        self.stream_id = stream_id
        self.message = message
        self.delivery = delivery
        self.max_deliveries = max_deliveries  # 0: no limit
        self.capacity = capacity  # the stream's, to recreate it if it was evicted meanwhile
        self.ends_at = 0.0  # event-loop time
        self.handle: asyncio.TimerHandle | None = None


@dataclass(frozen=True, slots=True)
class HeldLease:
    """A lease as it moves to a stream's new owner: the message, which
    delivery it is, its limit and how long it still runs."""

    receipt: str
    message: Message
    delivery: int
    max_deliveries: int
    remaining_seconds: float


class LeaseStats:
    """Counters of the node's in-memory leases (``held*`` are gauges)."""

    __slots__ = (
        "held",
        "held_bytes",
        "granted_total",
        "acked_total",
        "nacked_total",
        "expired_total",
        "dead_lettered_total",
        "given_back_total",
    )

    def __init__(self) -> None:
        self.held = 0
        self.held_bytes = 0
        self.granted_total = 0
        self.acked_total = 0
        self.nacked_total = 0
        self.expired_total = 0
        self.dead_lettered_total = 0
        self.given_back_total = 0


class Leases:
    """The in-memory leases of one node.

    Args:
        engine: the streams leased messages come from and go back to.
        on_dead: gets ``(stream_id, message)`` for a message whose last
            allowed delivery ended unacknowledged (called from the event
            loop or from :meth:`nack`, never while an engine call runs).
        max_held: how many leases may be held at once (:meth:`has_room`).
    """

    def __init__(self, engine: Engine, on_dead: Callable[[str, Message], None], max_held: int = 1_000_000) -> None:
        self._engine = engine
        self._on_dead = on_dead
        self._max_held = max_held
        self._streams: dict[str, dict[str, Lease]] = {}
        self._prefix = base64.urlsafe_b64encode(os.urandom(9)).decode("ascii")
        self._counter = 0
        self._arrived = asyncio.Event()  # set when leases come in with their stream (attach)
        self.stats = LeaseStats()

    # -- granting ------------------------------------------------------------------

    def has_room(self, count: int = 1) -> bool:
        """Whether ``count`` more leases fit under ``max_held``."""
        return self.stats.held + count <= self._max_held

    def grant(self, stream_id: str, msg: Message, seconds: float, max_deliveries: int) -> Lease:
        """Lease ``msg``, just taken from ``stream_id`` for a receiver, for
        ``seconds`` (> 0); ``max_deliveries`` 0 means no limit.  The lease's
        ``delivery`` is ``msg.deliveries + 1``."""
        self._counter += 1
        lease = Lease(
            f"{self._prefix}{self._counter:x}",
            stream_id,
            msg,
            msg.deliveries + 1,
            max_deliveries,
            self._engine.capacity(stream_id),
        )
        self._hold(lease, seconds)
        self.stats.granted_total += 1
        return lease

    # -- ending --------------------------------------------------------------------

    def ack(self, stream_id: str, receipt: str) -> bool:
        """Acknowledge: the leased message is gone for good.  False if no
        lease of ``stream_id`` has this receipt (it ended, was acknowledged,
        or never existed)."""
        lease = self._release(stream_id, receipt)
        if lease is None:
            return False
        self.stats.acked_total += 1
        return True

    def nack(self, stream_id: str, receipt: str, delay_seconds: float = 0.0) -> bool:
        """End the lease unacknowledged: the message goes back to the front
        of its stream (or to ``on_dead``) now, or once ``delay_seconds``
        passed; until then the receipt still acknowledges it.  False if no
        lease of ``stream_id`` has this receipt."""
        lease = self._streams.get(stream_id, {}).get(receipt)
        if lease is None:
            return False
        self.stats.nacked_total += 1
        if delay_seconds > 0:
            assert lease.handle is not None
            lease.handle.cancel()
            self._schedule(lease, delay_seconds)
        else:
            self._end(lease)
        return True

    def give_back(self, stream_id: str, receipt: str) -> bool:
        """The answer carrying this lease's message never reached its
        receiver: end the lease without counting a delivery and put the
        message back at the front of its stream.  False if unknown."""
        lease = self._release(stream_id, receipt)
        if lease is None:
            return False
        self.stats.given_back_total += 1
        self._engine.give_back(stream_id, [lease.message], lease.capacity)
        return True

    def return_all(self) -> int:
        """Give every leased message back to its stream, not counted as a
        delivery (a node that stops with nobody to hand its streams to
        keeps them this way); return how many."""
        count = 0
        for stream_id in list(self._streams):
            for lease in sorted(self._streams[stream_id].values(), key=_first_taken):
                self.give_back(stream_id, lease.receipt)
                count += 1
        return count

    # -- moving with a stream ---------------------------------------------------------

    def stream_ids(self) -> list[str]:
        """Streams that have leases held here."""
        return list(self._streams)

    def holds(self, stream_id: str, receipt: str) -> bool:
        """Whether this node holds the lease of ``stream_id`` named ``receipt``."""
        return receipt in self._streams.get(stream_id, ())

    async def wait_held(self, stream_id: str, receipts: Sequence[str], timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until this node holds every lease
        of ``stream_id`` named in ``receipts`` (a hand-off may be bringing
        them); return whether it does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not all(receipt in self._streams.get(stream_id, ()) for receipt in receipts):
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                return False
        return True

    def held(self, stream_id: str) -> int:
        """How many leases of ``stream_id`` are held here."""
        return len(self._streams.get(stream_id, ()))

    def detach(self, stream_id: str) -> list[HeldLease]:
        """Remove the stream's leases (its new owner takes them, see
        :meth:`attach`), in the order their messages were first taken."""
        leases = self._streams.pop(stream_id, None)
        if not leases:
            return []
        now = asyncio.get_running_loop().time()
        out: list[HeldLease] = []
        for lease in sorted(leases.values(), key=_first_taken):
            assert lease.handle is not None
            lease.handle.cancel()
            self._forget(lease)
            out.append(
                HeldLease(lease.receipt, lease.message, lease.delivery, lease.max_deliveries, max(0.0, lease.ends_at - now))
            )
        return out

    def attach(self, stream_id: str, held: list[HeldLease], capacity: int | None) -> int:
        """Take over leases from the stream's previous owner, receipts
        unchanged; return how many (a receipt held already is skipped)."""
        count = 0
        leases = self._streams.get(stream_id, {})
        for h in held:
            if h.receipt in leases:
                continue
            lease = Lease(h.receipt, stream_id, h.message, h.delivery, h.max_deliveries, capacity)
            self._hold(lease, h.remaining_seconds)
            leases = self._streams[stream_id]
            count += 1
        if count:
            self._arrived.set()
        return count

    def close(self) -> None:
        """Cancel every lease timer (the leases are kept, unserved)."""
        for lease in self._all():
            if lease.handle is not None:
                lease.handle.cancel()

    # -- internals ------------------------------------------------------------------------

    def _hold(self, lease: Lease, seconds: float) -> None:
        self._streams.setdefault(lease.stream_id, {})[lease.receipt] = lease
        stats = self.stats
        stats.held += 1
        stats.held_bytes += lease.message.size
        self._schedule(lease, seconds)

    def _schedule(self, lease: Lease, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        lease.ends_at = loop.time() + seconds
        lease.handle = loop.call_later(seconds, self._expire, lease)

    def _expire(self, lease: Lease) -> None:
        if self._streams.get(lease.stream_id, {}).get(lease.receipt) is lease:
            self.stats.expired_total += 1
            self._end(lease)

    def _end(self, lease: Lease) -> None:
        """A delivery ended unacknowledged (nack or expiry): count it, then
        back to the stream's front, or to the dead letters."""
        self._release(lease.stream_id, lease.receipt)
        msg = lease.message
        msg.deliveries = lease.delivery
        if lease.max_deliveries and lease.delivery >= lease.max_deliveries:
            self.stats.dead_lettered_total += 1
            self._on_dead(lease.stream_id, msg)
        else:
            self._engine.give_back(lease.stream_id, [msg], lease.capacity)

    def _release(self, stream_id: str, receipt: str) -> Lease | None:
        leases = self._streams.get(stream_id)
        if leases is None:
            return None
        lease = leases.pop(receipt, None)
        if lease is None:
            return None
        if not leases:
            del self._streams[stream_id]
        if lease.handle is not None:
            lease.handle.cancel()
        self._forget(lease)
        return lease

    def _forget(self, lease: Lease) -> None:
        self.stats.held -= 1
        self.stats.held_bytes -= lease.message.size

    def _all(self) -> Iterator[Lease]:
        for leases in self._streams.values():
            yield from leases.values()


def _first_taken(lease: Lease) -> int:
    return lease.message.taken
