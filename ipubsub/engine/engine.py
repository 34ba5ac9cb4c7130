"""The engine: all in-memory streams of one node and their public calls.

Every waiter is a future (an awaiting call) or a :class:`Parked` receive in
its stream's queue plus one timer handle: no task or polling loop exists
per waiter or per stream.  The rules live in :mod:`.matching` (how messages
move, and the one place each kind of waiter is settled) and
:mod:`.receiving` (receives, batches, parked receives, give-back, poll
cancellation), :mod:`.history_reads` and :mod:`.history_handoff` (fan-out
histories); this module adds sending, hand-off, shutdown, eviction and the
sweeper task.
"""

from __future__ import annotations

import asyncio
import logging

from ..errors import SendTimeout, StreamReleased
from ..tasks import cancel_tasks
from .clock import Clock, SystemClock
from .history import HistorySpec
from .history_handoff import HistoryHandoff
from .matching import DEFAULT_STREAM_SIZE, GONE
from .message import Message
from .stats import StreamInfo
from .stream import Released, Stream

__all__ = ["DEFAULT_STREAM_SIZE", "Engine"]

log = logging.getLogger(__name__)


class Engine(HistoryHandoff):
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
        super().__init__(clock or SystemClock(), idle_seconds, max_stream_bytes, max_buffered_bytes)
        self._sweeper: asyncio.Task[None] | None = None
        self._init_polls()

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

    def send_nowait(self, stream_id: str, msg: Message, capacity: int, history: HistorySpec | None = None) -> None:
        """Accept ``msg`` without waiting (circular-buffer mode).

        A waiting receiver gets it at once; otherwise it is buffered, and a
        full stream drops its oldest message (counted in ``dropped_total``).
        A new stream is created with ``capacity`` and ``history`` (a stream
        with a history records every message it accepts in it).

        Raises:
            SendTimeout: the stream has size 0 and no receiver is waiting.
            BufferFull: buffering would exceed the node's byte budget.
        """
        stream = self._stream_for_send(stream_id, capacity, history)
        if stream.history is not None:
            self._make_room(stream, msg)
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

    async def send(
        self, stream_id: str, msg: Message, capacity: int, timeout: float, history: HistorySpec | None = None
    ) -> None:
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
            self.send_nowait(stream_id, msg, capacity, history)
            return
        stream = self._stream_for_send(stream_id, capacity, history)
        if stream.history is not None:
            self._make_room(stream, msg)
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
                self._sender_done(stream, fut, GONE)
                self._settle(stream)
        if result is None:
            raise SendTimeout(stream_id, timeout, sync=cap == 0)
        if type(result) is Released:
            raise StreamReleased(stream_id, result.reason)

    # -- hand-off and shutdown -------------------------------------------------

    def detach(self, stream_id: str, reason: str) -> tuple[int | None, list[Message]] | None:
        """Remove a stream: release its waiters with ``reason`` and return its
        capacity and buffered messages (oldest first), or ``None`` if unknown."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return None
        self._release(stream, reason)
        self._drop_history(stream, reason)  # unless export_history took it first
        msgs = stream.take_all()
        self.stats.buffered_messages -= len(msgs)
        self.stats.buffered_bytes -= sum(m.size for m in msgs)
        self.stats.handed_out_total += len(msgs)
        return stream.capacity, msgs

    def attach(self, stream_id: str, capacity: int | None, msgs: list[Message]) -> None:
        """Take in messages handed over by a stream's previous owner.  They go
        to waiting receivers first, then into the buffer behind earlier
        handed-over messages but ahead of anything accepted here since.  A
        stream created here keeps no history until its first send here asks
        for one (a history that moves with it comes by
        :meth:`import_history`; one that did not is gone: readers of its old
        positions are told ``recovered: false``)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, capacity)
            stream.history_open = True
        elif stream.capacity is None:
            stream.capacity = capacity if capacity is not None else DEFAULT_STREAM_SIZE
            stream.history_open = True
        if stream.capacity is None:
            stream.capacity = DEFAULT_STREAM_SIZE
        self.stats.handed_in_total += len(msgs)
        rest = self._hand_to_waiting(stream, msgs)
        if rest:
            stream.insert_at(stream.front, rest)
            stream.front += len(rest)
            self.stats.buffered_messages += len(rest)
            self.stats.buffered_bytes += sum(m.size for m in rest)
        self._settle(stream)

    def release_waiters(self, reason: str) -> int:
        """Let every waiting receiver, blocked sender and history reader go
        with ``reason`` (shutdown). Buffered messages and histories stay.
        Returns how many were released."""
        before = self.stats.released_total
        for stream in list(self._streams.values()):
            if stream.live_receivers or stream.live_senders:
                self._release(stream, reason)
                self._settle(stream)
            if stream.history is not None and stream.history.live_readers:
                self.release_readers(stream.history, reason)
                self._settle(stream)
        return self.stats.released_total - before

    # -- idle eviction -------------------------------------------------------

    def sweep(self) -> int:
        """Evict streams idle for ``idle_seconds`` (and whose history holds no
        unexpired message); return how many went."""
        evicted = 0
        for stream in self._idle.ripe():
            if self._streams.get(stream.id) is stream and stream.is_idle:
                if stream.history is not None and self._history_holds(stream):
                    self._idle.note(stream)  # look again once more time has passed
                    continue
                self._drop_history(stream, "stream evicted")
                del self._streams[stream.id]
                evicted += 1
        self.stats.evicted_streams_total += evicted
        return evicted
