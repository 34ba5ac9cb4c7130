"""Matching of senders and long-polling receivers over in-memory streams.

Every waiter is a plain future in its stream's queue plus one timer handle:
no task or polling loop exists per waiter or per stream.  Each waiter follows
the same shape: register, await, and settle the bookkeeping in ``finally``.
The counters (``live_*`` and :class:`EngineStats`) change exactly once per
waiter, at the moment its future leaves the pending state: when a peer
serves it, when its timer fires, when the engine releases it, or (for a
cancelled request) in its own ``finally``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Callable

from ..errors import BufferFull, ReceiveTimeout, SendTimeout, StreamReleased
from ..tasks import cancel_tasks
from .clock import Clock, SystemClock
from .idle import IdleTracker
from .message import Message
from .stats import EngineStats, StreamInfo
from .stream import Released, Stream

__all__ = ["DEFAULT_STREAM_SIZE", "Deliver", "Engine", "Parked"]

log = logging.getLogger(__name__)

DEFAULT_STREAM_SIZE = 100

# Gets the outcome of a parked receive: the message, None (timed out) or Released.
Deliver = Callable[["Message | Released | None"], None]


class Parked:
    """A receive waiting through :meth:`Engine.park` (no task behind it)."""

    __slots__ = ("_engine", "_stream", "_fut", "_handle", "_deliver")

    def __init__(
        self,
        engine: Engine,
        stream: Stream,
        fut: asyncio.Future[Message | None],
        handle: asyncio.TimerHandle,
        deliver: Deliver,
    ) -> None:
        self._engine = engine
        self._stream = stream
        self._fut = fut
        self._handle = handle
        self._deliver = deliver
        fut.add_done_callback(self._settled)

    def end(self, reason: str) -> None:
        """Stop waiting: ``deliver`` gets ``Released(reason)``, unless a
        message or the timeout got there first (then it gets that)."""
        if not self._fut.done():
            self._engine._release_receiver(self._stream, self._fut, reason)

    def _settled(self, fut: asyncio.Future[Message | None]) -> None:
        self._handle.cancel()
        self._deliver(fut.result())


class Engine:
    """All in-memory streams of one node.

    Args:
        clock: source of monotonic and wall time (injectable for tests).
        idle_seconds: an empty stream nobody waits on is evicted after this long.
        max_stream_bytes: per-stream byte bound of the buffer.
        max_buffered_bytes: byte bound of all buffers of the node together.
    """

    def __init__(
        self,
        *,
        clock: Clock | None = None,
        idle_seconds: float = 300.0,
        max_stream_bytes: int = 64 * 1024 * 1024,
        max_buffered_bytes: int = 1024 * 1024 * 1024,
    ) -> None:
        self._clock = clock or SystemClock()
        self._idle_seconds = idle_seconds
        self._max_stream_bytes = max_stream_bytes
        self._max_buffered_bytes = max_buffered_bytes
        self._streams: dict[str, Stream] = {}
        self.stats = EngineStats()
        self._idle = IdleTracker(self._clock, idle_seconds)
        self._sweeper: asyncio.Task[None] | None = None
        # Waiters of forwarded polls, by poll id, so the forwarding node can
        # cancel them; and recently cancelled ids whose poll had not arrived.
        self._polls: dict[str, tuple[Stream, asyncio.Future[Message | None]]] = {}
        self._cancelled_polls: OrderedDict[str, None] = OrderedDict()
        # Engine-wide count of messages taken by receivers (Message.taken).
        self._taken = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start the idle-stream sweeper task."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(
                self._sweep_loop(), name="ipubsub-engine-idle-sweeper"
            )

    async def close(self) -> None:
        """Stop the sweeper. Buffered messages stay until released or dropped."""
        task, self._sweeper = self._sweeper, None
        await cancel_tasks([task])

    async def _sweep_loop(self) -> None:
        interval = max(0.05, min(self._idle_seconds / 8, 30.0))
        while True:
            await asyncio.sleep(interval)
            try:
                self.sweep()
            except Exception:  # never let one bad sweep stop eviction for good
                log.exception("idle sweep failed")

    # -- introspection -------------------------------------------------------

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id: str) -> bool:
        return stream_id in self._streams

    def stream_ids(self) -> list[str]:
        """A snapshot of the ids of every stream held in memory."""
        return list(self._streams)

    def buffered(self, stream_id: str) -> list[Message]:
        """A copy of the stream's buffer, oldest first (empty if unknown)."""
        stream = self._streams.get(stream_id)
        return [] if stream is None or stream.buffer is None else list(stream.buffer)

    def stream_info(self, stream_id: str) -> StreamInfo | None:
        """Figures of one stream in O(1), ``None`` if it is not in memory."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return None
        return StreamInfo(stream.capacity, len(stream), stream.nbytes, stream.live_receivers, stream.live_senders)

    def capacity(self, stream_id: str) -> int | None:
        stream = self._streams.get(stream_id)
        return None if stream is None else stream.capacity

    # -- sending -------------------------------------------------------------

    def send_nowait(self, stream_id: str, msg: Message, capacity: int) -> None:
        """Accept ``msg`` without waiting (circular-buffer mode).

        A waiting receiver gets it at once; otherwise it is buffered, and a
        full stream drops its oldest message (counted in ``dropped_total``).

        Raises:
            SendTimeout: the stream has size 0 and no receiver is waiting.
            BufferFull: buffering would exceed the node's byte budget.
        """
        stream = self._stream_for_send(stream_id, capacity)
        if stream.live_receivers and self._hand_to_receiver(stream, msg):
            return
        cap = stream.capacity
        assert cap is not None
        if cap == 0:
            self.stats.send_timeouts_total += 1
            self._settle(stream)
            raise SendTimeout(stream_id, 0, sync=True)
        self._drop_to_fit(stream, msg.size, cap)
        self._buffer(stream, msg)

    async def send(self, stream_id: str, msg: Message, capacity: int, timeout: float) -> None:
        """Accept ``msg``, waiting up to ``timeout`` seconds for room.

        With ``timeout`` 0 this is :meth:`send_nowait`.  Otherwise nothing is
        dropped: a full stream makes the sender wait (FIFO among waiting
        senders); on a size-0 stream the call returns only once a receiver
        took the message (sync match).  If the caller is cancelled while
        waiting, the message is not enqueued.

        Raises:
            SendTimeout: no room (or no receiver, for size 0) in time.
            StreamReleased: the stream moved away or the node is stopping.
            BufferFull: buffering would exceed the node's byte budget.
        """
        if timeout <= 0:
            self.send_nowait(stream_id, msg, capacity)
            return
        stream = self._stream_for_send(stream_id, capacity)
        if stream.live_receivers and self._hand_to_receiver(stream, msg):
            return
        cap = stream.capacity
        assert cap is not None
        if cap > 0 and not stream.live_senders and self._has_room(stream, msg.size, cap):
            self._buffer(stream, msg)
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool | None] = loop.create_future()
        stream.add_sender(fut, msg)
        self.stats.blocked_senders += 1
        handle = loop.call_later(timeout, self._expire_sender, stream, fut)
        try:
            result = await fut
        finally:
            handle.cancel()
            if fut.cancelled():  # the caller went away before admission
                stream.live_senders -= 1
                self.stats.blocked_senders -= 1
                self._settle(stream)
        if result is None:
            raise SendTimeout(stream_id, timeout, sync=cap == 0)
        if type(result) is Released:
            raise StreamReleased(stream_id, result.reason)

    # -- receiving -----------------------------------------------------------

    async def receive(self, stream_id: str, timeout: float, poll_id: str | None = None) -> Message:
        """Take the oldest message of the stream, waiting up to ``timeout`` s.

        Waiting receivers are served first come, first served.  If the caller
        is cancelled after a message was handed to it, the message goes back
        to the front of the stream (or to the next waiting receiver).

        ``poll_id`` names the waiter so that :meth:`cancel_poll` can end it.

        Raises:
            ReceiveTimeout: nothing arrived in time.
            StreamReleased: the stream moved away, the node is stopping, or
                the poll was cancelled (:meth:`cancel_poll`).
        """
        if poll_id is not None and poll_id in self._cancelled_polls:
            raise StreamReleased(stream_id, "poll cancelled by the forwarding node")
        stream = self._streams.get(stream_id)
        if stream is not None:
            msg = self._take(stream)
            if msg is not None:
                return msg
        if timeout <= 0:
            self.stats.receive_timeouts_total += 1
            raise ReceiveTimeout(stream_id, timeout)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, None)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message | None] = loop.create_future()
        stream.add_receiver(fut)
        self.stats.waiting_receivers += 1
        handle = loop.call_later(timeout, self._expire_receiver, stream, fut)
        if poll_id is not None:
            self._polls[poll_id] = (stream, fut)
        try:
            result = await fut
        except asyncio.CancelledError:
            # A sender may have handed us a message in the same loop iteration
            # in which our client disconnected: give it back, never lose it.
            if fut.done() and not fut.cancelled():
                taken = fut.result()
                if type(taken) is Message:
                    self.requeue(stream_id, taken)
            raise
        finally:
            handle.cancel()
            if poll_id is not None:
                self._polls.pop(poll_id, None)
            if fut.cancelled():
                stream.live_receivers -= 1
                self.stats.waiting_receivers -= 1
                self._settle(stream)
        if result is None:
            raise ReceiveTimeout(stream_id, timeout)
        if type(result) is Released:
            raise StreamReleased(stream_id, result.reason)
        return result

    def park(self, stream_id: str, timeout: float, deliver: Deliver) -> Parked | None:
        """Take the oldest message of the stream now or once one arrives,
        without a task: the waiter is a future in the stream's queue and a
        timer, and its outcome goes to ``deliver`` exactly once — the
        message, ``None`` if ``timeout`` passed, or a :class:`Released`
        (the stream moved, the node stops, or :meth:`Parked.end`).

        ``deliver`` runs before ``park`` returns when a message is ready or
        ``timeout`` is 0 (then ``park`` returns ``None``); otherwise it runs
        from the event loop, and the returned :class:`Parked` can end the
        wait.  A message handed to ``deliver`` is taken: if it cannot reach
        its receiver, give it back with :meth:`requeue`.
        """
        stream = self._streams.get(stream_id)
        if stream is not None:
            msg = self._take(stream)
            if msg is not None:
                deliver(msg)
                return None
        if timeout <= 0:
            self.stats.receive_timeouts_total += 1
            deliver(None)
            return None
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, None)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message | None] = loop.create_future()
        stream.add_receiver(fut)
        self.stats.waiting_receivers += 1
        handle = loop.call_later(timeout, self._expire_receiver, stream, fut)
        return Parked(self, stream, fut, handle, deliver)

    def requeue(self, stream_id: str, msg: Message) -> None:
        """Give back a message whose receiver could not take it: to the next
        waiting receiver, else to the front of the stream (even beyond its
        capacity: an accepted message is never dropped for this).  Messages
        given back while others wait at the front are restored in the order
        they were first taken; hand-off batches arriving later go behind them."""
        self.stats.requeued_total += 1
        self.stats.delivered_total -= 1
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, DEFAULT_STREAM_SIZE)
        elif stream.capacity is None:
            stream.capacity = DEFAULT_STREAM_SIZE
        if stream.live_receivers and self._hand_to_receiver(stream, msg, count=False):
            return
        stream.put_back([msg])
        self.stats.buffered_messages += 1
        self.stats.buffered_bytes += msg.size

    def cancel_poll(self, poll_id: str, reason: str) -> bool:
        """End the waiting receive named ``poll_id`` with :class:`StreamReleased`.
        Returns False if no such receive waits (it was served, or has not
        arrived yet: then it is refused when it does)."""
        entry = self._polls.pop(poll_id, None)
        if entry is None or entry[1].done():
            self._cancelled_polls[poll_id] = None
            while len(self._cancelled_polls) > 10000:
                self._cancelled_polls.popitem(last=False)
            return False
        self._release_receiver(*entry, reason)
        return True

    def _release_receiver(self, stream: Stream, fut: asyncio.Future[Message | None], reason: str) -> None:
        fut.set_result(Released(reason))  # type: ignore[arg-type]
        stream.live_receivers -= 1
        self.stats.waiting_receivers -= 1
        self.stats.released_total += 1
        self._settle(stream)

    # -- hand-off and shutdown -------------------------------------------------

    def detach(self, stream_id: str, reason: str) -> tuple[int | None, list[Message]] | None:
        """Remove a stream: release its waiters with ``reason`` and return its
        capacity and buffered messages (oldest first), or ``None`` if unknown."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return None
        self._release(stream, reason)
        msgs = stream.take_all()
        self.stats.buffered_messages -= len(msgs)
        self.stats.buffered_bytes -= sum(m.size for m in msgs)
        self.stats.handed_out_total += len(msgs)
        return stream.capacity, msgs

    def attach(self, stream_id: str, capacity: int | None, msgs: list[Message]) -> None:
        """Take in messages handed over by a stream's previous owner.  They go
        to waiting receivers first, then into the buffer behind earlier
        handed-over messages but ahead of anything accepted here since."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, capacity)
        elif stream.capacity is None:
            stream.capacity = capacity if capacity is not None else DEFAULT_STREAM_SIZE
        if stream.capacity is None:
            stream.capacity = DEFAULT_STREAM_SIZE
        self.stats.handed_in_total += len(msgs)
        index = 0
        while index < len(msgs) and stream.live_receivers:
            if not self._hand_to_receiver(stream, msgs[index], count=False):
                break
            index += 1
        rest = msgs[index:]
        if rest:
            stream.insert_at(stream.front, rest)
            stream.front += len(rest)
            self.stats.buffered_messages += len(rest)
            self.stats.buffered_bytes += sum(m.size for m in rest)
        self._settle(stream)

    def release_waiters(self, reason: str) -> int:
        """Let every waiting receiver and blocked sender go with ``reason``
        (shutdown). Buffered messages stay. Returns how many were released."""
        before = self.stats.released_total
        for stream in list(self._streams.values()):
            if stream.live_receivers or stream.live_senders:
                self._release(stream, reason)
                self._settle(stream)
        return self.stats.released_total - before

    # -- idle eviction -------------------------------------------------------

    def sweep(self) -> int:
        """Evict streams idle for ``idle_seconds``; return how many went."""
        evicted = 0
        for stream in self._idle.ripe():
            if self._streams.get(stream.id) is stream and stream.is_idle:
                del self._streams[stream.id]
                evicted += 1
        self.stats.evicted_streams_total += evicted
        return evicted

    # -- internals -----------------------------------------------------------

    def _stream_for_send(self, stream_id: str, capacity: int) -> Stream:
        """The stream, created with ``capacity`` if new (or if only receivers
        knew it so far); an existing stream keeps its size."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, capacity)
        elif stream.capacity is None:
            stream.capacity = capacity
        return stream

    def _hand_to_receiver(self, stream: Stream, msg: Message, *, count: bool = True) -> bool:
        fut = stream.next_receiver()
        if fut is None:
            return False
        if not msg.taken:
            self._taken += 1
            msg.taken = self._taken
        fut.set_result(msg)
        stream.live_receivers -= 1
        stats = self.stats
        stats.waiting_receivers -= 1
        stats.delivered_total += 1
        if count:
            stats.accepted_total += 1
        self._settle(stream)
        return True

    def _has_room(self, stream: Stream, size: int, cap: int) -> bool:
        return len(stream) < cap and stream.nbytes + size <= self._max_stream_bytes

    def _buffer(self, stream: Stream, msg: Message) -> None:
        stats = self.stats
        if stats.buffered_bytes + msg.size > self._max_buffered_bytes:
            self._settle(stream)
            raise BufferFull(
                "the node's in-memory buffers are full (limits.max_buffered_bytes); retry later",
                retry_after=1,
            )
        stream.push_back(msg)
        stats.buffered_messages += 1
        stats.buffered_bytes += msg.size
        stats.accepted_total += 1

    def _drop_to_fit(self, stream: Stream, size: int, cap: int) -> None:
        """Circular mode: drop the oldest messages until ``size`` more fits.
        Checks the node budget first so that a rejected send drops nothing."""
        count = len(stream)
        if count < cap and stream.nbytes + size <= self._max_stream_bytes:
            return
        buf = stream.buffer
        assert buf is not None
        n_drop = 0
        freed = 0
        while n_drop < count and (
            count - n_drop >= cap or stream.nbytes - freed + size > self._max_stream_bytes
        ):
            freed += buf[n_drop].size
            n_drop += 1
        if self.stats.buffered_bytes - freed + size > self._max_buffered_bytes:
            raise BufferFull(
                "the node's in-memory buffers are full (limits.max_buffered_bytes); retry later",
                retry_after=1,
            )
        for _ in range(n_drop):
            stream.pop_front()
        self.stats.buffered_messages -= n_drop
        self.stats.buffered_bytes -= freed
        self.stats.dropped_total += n_drop

    def _take(self, stream: Stream) -> Message | None:
        stats = self.stats
        if stream.buffer is not None:
            msg = stream.pop_front()
            if not msg.taken:
                self._taken += 1
                msg.taken = self._taken
            stats.buffered_messages -= 1
            stats.buffered_bytes -= msg.size
            stats.delivered_total += 1
            if stream.live_senders:
                self._admit_senders(stream)
            self._settle(stream)
            return msg
        if stream.live_senders:  # size-0 stream: a blocked sender hands over directly
            entry = stream.next_sender()
            assert entry is not None
            fut, msg = entry
            self._taken += 1
            msg.taken = self._taken
            fut.set_result(True)
            stream.live_senders -= 1
            stats.blocked_senders -= 1
            stats.accepted_total += 1
            stats.delivered_total += 1
            self._settle(stream)
            return msg
        return None

    def _admit_senders(self, stream: Stream) -> None:
        cap = stream.capacity or 0
        stats = self.stats
        while stream.live_senders:
            waiting = stream.peek_sender()
            if waiting is None or not self._has_room(stream, waiting.size, cap):
                return
            entry = stream.next_sender()
            assert entry is not None
            entry[0].set_result(True)
            stream.live_senders -= 1
            stats.blocked_senders -= 1
            stream.push_back(entry[1])
            stats.buffered_messages += 1
            stats.buffered_bytes += entry[1].size
            stats.accepted_total += 1

    def _expire_receiver(self, stream: Stream, fut: asyncio.Future[Message | None]) -> None:
        if not fut.done():
            fut.set_result(None)
            stream.live_receivers -= 1
            self.stats.waiting_receivers -= 1
            self.stats.receive_timeouts_total += 1
            self._settle(stream)

    def _expire_sender(self, stream: Stream, fut: asyncio.Future[bool | None]) -> None:
        if not fut.done():
            fut.set_result(None)
            stream.live_senders -= 1
            self.stats.blocked_senders -= 1
            self.stats.send_timeouts_total += 1
            self._settle(stream)

    def _release(self, stream: Stream, reason: str) -> None:
        released = Released(reason)
        stats = self.stats
        while stream.live_receivers:
            fut = stream.next_receiver()
            assert fut is not None
            fut.set_result(released)  # type: ignore[arg-type]
            stream.live_receivers -= 1
            stats.waiting_receivers -= 1
            stats.released_total += 1
        while stream.live_senders:
            entry = stream.next_sender()
            assert entry is not None
            entry[0].set_result(released)  # type: ignore[arg-type]
            stream.live_senders -= 1
            stats.blocked_senders -= 1
            stats.released_total += 1
        stream.compact()

    def _settle(self, stream: Stream) -> None:
        """Tidy a stream after a change: drop departed waiters, forget a
        never-configured empty stream, or note when it went idle."""
        if stream.buffer is None and not stream.live_receivers and not stream.live_senders:
            stream.receivers = None
            stream.senders = None
            if stream.capacity is None:
                if self._streams.get(stream.id) is stream:
                    del self._streams[stream.id]
                return
            self._idle.note(stream)
        elif (stream.receivers is not None and len(stream.receivers) > 16) or (
            stream.senders is not None and len(stream.senders) > 16
        ):
            stream.compact()
