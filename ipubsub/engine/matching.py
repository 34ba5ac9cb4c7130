"""The matching core: the rules that move messages between a stream's
buffer, its waiting receivers and its blocked senders.

Every waiter is settled exactly once, when it leaves the pending state —
served, its timer fired, released by the engine, or cancelled by its caller —
and only through :meth:`Matcher._receiver_done` or :meth:`Matcher._sender_done`:
those two methods are the only places where ``live_*`` and the waiter counters
of :class:`EngineStats` change.  Tidying the stream afterwards
(:meth:`Matcher._settle`) is the caller's, once per change.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from ..errors import BufferFull
from .clock import Clock
from .history import HistorySpec, HistoryStats
from .idle import IdleTracker
from .message import Message
from .stats import EngineStats
from .stream import Released, Stream

__all__ = ["DEFAULT_STREAM_SIZE", "GONE", "Matcher"]

DEFAULT_STREAM_SIZE = 100


class _Gone:
    """Outcome of a waiter whose caller went away (its future is cancelled)."""

    __slots__ = ()


GONE: Final = _Gone()


class Matcher:
    """In-memory streams and the rules between their buffers and waiters.
    :class:`~ipubsub.engine.Engine` adds the public calls on top."""

    def __init__(self, clock: Clock, idle_seconds: float, max_stream_bytes: int, max_buffered_bytes: int) -> None:
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._max_stream_bytes = max_stream_bytes
        self._max_buffered_bytes = max_buffered_bytes
        self._streams: dict[str, Stream] = {}
        self.stats = EngineStats()
        self.history_stats = HistoryStats()
        self._idle = IdleTracker(clock, idle_seconds)
        self._taken = 0  # engine-wide count of messages taken by receivers (Message.taken)

    # -- settling waiters (the only places the waiter counters change) ------------

    def _receiver_done(self, stream: Stream, waiter: Any, result: Message | Released | _Gone | None) -> None:
        """Settle a waiting receiver: hand it ``result`` (a message, a release,
        ``None`` when its timer fired; ``GONE`` when its caller was cancelled
        and its future with it) and count it gone."""
        stats = self.stats
        if type(result) is Message:
            stats.delivered_total += 1
        elif result is None:
            stats.receive_timeouts_total += 1
        elif type(result) is Released:
            stats.released_total += 1
        if result is not GONE:
            waiter.set_result(result)
        stream.live_receivers -= 1
        stats.waiting_receivers -= 1

    def _sender_done(self, stream: Stream, fut: Any, result: bool | Released | _Gone | None) -> None:
        """Settle a blocked sender: ``True`` admits its message (the caller
        puts it in the buffer or hands it over), ``None`` when its timer fired,
        a release, or ``GONE`` (its caller was cancelled)."""
        stats = self.stats
        if result is True:
            stats.accepted_total += 1
        elif result is None:
            stats.send_timeouts_total += 1
        elif type(result) is Released:
            stats.released_total += 1
        if result is not GONE:
            fut.set_result(result)
        stream.live_senders -= 1
        stats.blocked_senders -= 1

    def _expire_receiver(self, stream: Stream, waiter: Any) -> None:
        if not waiter.done():
            self._receiver_done(stream, waiter, None)
            self._settle(stream)

    def _expire_sender(self, stream: Stream, fut: asyncio.Future[bool | None]) -> None:
        if not fut.done():
            self._sender_done(stream, fut, None)
            self._settle(stream)

    def _release(self, stream: Stream, reason: str) -> None:
        """Let every waiter of ``stream`` go with ``reason``.

        A waiter whose task was just cancelled is done but still counted
        live until that task runs its ``finally`` (next loop turn), so the
        queues may run out before the counts do."""
        released = Released(reason)
        while stream.live_receivers:
            waiter = stream.next_receiver()
            if waiter is None:
                break
            self._receiver_done(stream, waiter, released)
        while stream.live_senders:
            entry = stream.next_sender()
            if entry is None:
                break
            self._sender_done(stream, entry[0], released)
        stream.compact()

    # -- moving messages ------------------------------------------------------------

    def _number(self, msg: Message) -> None:
        """Note the first time ``msg`` leaves its stream for a receiver."""
        if not msg.taken:
            self._taken += 1
            msg.taken = self._taken

    def _hand_to_receiver(self, stream: Stream, msg: Message, *, count: bool = True) -> bool:
        """Give ``msg`` to the longest-waiting receiver, if any (``count``: the
        message is accepted now, not handed in or given back)."""
        waiter = stream.next_receiver()
        if waiter is None:
            return False
        self._number(msg)
        self._receiver_done(stream, waiter, msg)
        if count:
            self.stats.accepted_total += 1
            if stream.history is not None:
                self._record(stream, msg)
        self._settle(stream)
        return True

    def _take(self, stream: Stream) -> Message | None:
        """The oldest message of the stream for a receiver that asks now, or ``None``."""
        stats = self.stats
        if stream.buffer is not None:
            msg = stream.pop_front()
            self._number(msg)
            stats.buffered_messages -= 1
            stats.buffered_bytes -= msg.size
            stats.delivered_total += 1
            if stream.live_senders:
                self._admit_senders(stream)
            self._settle(stream)
            return msg
        entry = stream.next_sender() if stream.live_senders else None  # None: all just cancelled (see _release)
        if entry is not None:  # nothing buffered (size 0): a blocked sender hands over directly
            fut, msg = entry
            self._sender_done(stream, fut, True)
            if stream.history is not None:
                self._record(stream, msg)
            self._number(msg)
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
            self._sender_done(stream, entry[0], True)
            stream.push_back(entry[1])
            stats.buffered_messages += 1
            stats.buffered_bytes += entry[1].size
            if stream.history is not None:
                self._record(stream, entry[1])

    def _give_back(self, stream: Stream, msgs: list[Message]) -> None:
        """Messages whose receiver could not take them: to waiting receivers
        first, the rest to the head of the buffer (never dropped for size)."""
        stats = self.stats
        stats.requeued_total += len(msgs)
        stats.delivered_total -= len(msgs)
        if len(msgs) > 1:  # restore the order they were taken in (never-taken ones first)
            msgs = sorted(msgs, key=_taken)
        rest = self._hand_to_waiting(stream, msgs)
        if rest:
            stream.put_back(rest)
            stats.buffered_messages += len(rest)
            stats.buffered_bytes += sum(m.size for m in rest)

    def _hand_to_waiting(self, stream: Stream, msgs: list[Message]) -> list[Message]:
        """Messages already accepted (handed in, given back) go to waiting
        receivers first, in order; returns those left over."""
        index = 0
        while index < len(msgs) and stream.live_receivers:
            if not self._hand_to_receiver(stream, msgs[index], count=False):
                break
            index += 1
        return msgs[index:] if index else msgs

    def _has_room(self, stream: Stream, size: int, cap: int) -> bool:
        return len(stream) < cap and stream.nbytes + size <= self._max_stream_bytes

    def _buffer(self, stream: Stream, msg: Message) -> None:
        stats = self.stats
        if stats.buffered_bytes + self.history_stats.bytes + msg.size > self._max_buffered_bytes:
            self._settle(stream)
            raise _buffer_full()
        stream.push_back(msg)
        stats.buffered_messages += 1
        stats.buffered_bytes += msg.size
        stats.accepted_total += 1
        if stream.history is not None:
            self._record(stream, msg)

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
        if self.stats.buffered_bytes + self.history_stats.bytes - freed + size > self._max_buffered_bytes:
            raise _buffer_full()
        for _ in range(n_drop):
            stream.pop_front()
        self.stats.buffered_messages -= n_drop
        self.stats.buffered_bytes -= freed
        self.stats.dropped_total += n_drop

    # -- streams ----------------------------------------------------------------------

    def _stream_for_send(self, stream_id: str, capacity: int, history: HistorySpec | None = None) -> Stream:
        """The stream, created with ``capacity`` and ``history`` if new (or if
        only receivers knew it so far); an existing stream keeps both, except
        that one taken in by :meth:`attach` gets ``history`` from its first
        send here (a hand-off or restore of a queue carries no history
        settings)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, capacity)
            if history is not None:
                self._configure_history(stream, history)
        elif stream.capacity is None:
            stream.capacity = capacity
            self._configure_history(stream, history)
        elif stream.history_open:  # its queue came without history settings: this send fixes them
            stream.history_open = False
            self._configure_history(stream, history)
        return stream

    # -- hooks of the fan-out history (defined in history_reads.py) -----------------------

    def _configure_history(self, stream: Stream, spec: HistorySpec | None) -> None:
        """The stream's first send fixes its history (``None``: none)."""

    def _record(self, stream: Stream, msg: Message) -> None:
        """``msg`` was just accepted by ``stream``, which has a history."""

    def _settle(self, stream: Stream) -> None:
        """Tidy a stream after a change: drop departed waiters, forget a
        never-configured empty stream, or note when it went idle."""
        history = stream.history
        if (
            stream.buffer is None
            and not stream.live_receivers
            and not stream.live_senders
            and (history is None or not history.live_readers)
        ):
            stream.receivers = None
            stream.senders = None
            if history is not None and history.spec is None:
                stream.history = None  # pending, and nobody waits on it any more
            if stream.capacity is None:
                if self._streams.get(stream.id) is stream:
                    del self._streams[stream.id]
                return
            self._idle.note(stream)
        elif (stream.receivers is not None and len(stream.receivers) > 16) or (
            stream.senders is not None and len(stream.senders) > 16
        ):
            stream.compact()


def _taken(msg: Message) -> int:
    return msg.taken


def _buffer_full() -> BufferFull:
    return BufferFull(
        "the node's in-memory buffers are full (limits.max_buffered_bytes); retry later",
        retry_after=1,
    )
