"""Fan-out: reading a stream's history (see :mod:`.history`).

Every reader reads every message, in order, from a position of its own; a
read takes nothing, so history readers and queue receivers on one stream
never disturb each other.  A reader with nothing to read waits at the top of
the history as a :class:`ParkedRead` — a callback and a timer, no task;
appending to a history schedules one wake for the whole history (one event
loop step later, so that the messages of a batch send reach each waiting
reader together), which answers every waiting reader with up to its
``max_messages`` messages.

The engine records a message in its stream's history when the stream
accepts it (the points where ``accepted_total`` grows), so the history holds
exactly the accepted messages, in the order they were accepted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..errors import BufferFull, HistoryNotKept, StreamReleased
from .history import History, HistoryEntry, HistoryRead, HistorySpec, Position, entry_cost
from .message import Message
from .receiving import Receiving
from .stream import Released, Stream

__all__ = ["HistoryReads", "ParkedRead", "ReadDeliver"]

#: Gets the outcome of a parked history read exactly once: a
#: :class:`HistoryRead` (maybe with no entries: the timeout passed) or a
#: :class:`Released`.
ReadDeliver = Callable[[Any], None]

CANCELLED = "read cancelled"


class ParkedRead:
    """A history reader waiting at the top of a history (no task).

    ``epoch`` is ``None`` when ``after`` is an offset of the history it
    waits on; otherwise the reader came with a position of an epoch this
    node does not know yet (a hand-off may be bringing it) and ``after`` is
    that position's offset, translated once the epoch is known here."""

    __slots__ = (
        "_reads", "_stream", "_history", "after", "limit", "recovered", "epoch", "_deliver", "_handle", "_done",
    )

    def __init__(
        self,
        reads: HistoryReads,
        stream: Stream,
        history: History,
        after: int,
        limit: int,
        recovered: bool | None,
        deliver: ReadDeliver,
    ) -> None:
        self._reads = reads
        self._stream = stream
        self._history = history
        self.after = after
        self.limit = limit
        self.recovered = recovered
        self.epoch: str | None = None
        self._deliver = deliver
        self._handle: asyncio.TimerHandle | None = None
        self._done = False

    def done(self) -> bool:
        return self._done

    def end(self, reason: str = CANCELLED) -> bool:
        """Stop waiting: ``deliver`` gets ``Released(reason)`` (from the event
        loop).  Returns False if the read was answered already."""
        if self._done:
            return False
        self._reads._finish_read(self, Released(reason), at_once=False)
        self._reads._settle(self._stream)
        return True


class HistoryReads(Receiving):
    """The history half of :class:`~ipubsub.engine.Engine`."""

    # -- reading ----------------------------------------------------------------------

    async def read_history(
        self, stream_id: str, position: Position | None, timeout: float, max_messages: int,
        *, wait_unknown: bool = False,
    ) -> HistoryRead:
        """Read up to ``max_messages`` messages of the stream's history after
        ``position`` (from the oldest held without one), waiting up to
        ``timeout`` seconds for the first if there is none yet.

        The answer's ``recovered`` is ``False`` (at once, with no messages and
        the oldest available position) when ``position`` cannot be
        continued without a gap; an answer with no messages after the
        timeout keeps the reader's position.  With ``wait_unknown`` (a ring
        change is under way: a hand-off may bring the history) a position of
        an epoch this node does not know waits like a reader at the top,
        instead of being told at once, and times out without a verdict
        (``recovered`` ``None``).

        Raises:
            HistoryNotKept: the stream exists and keeps no history.
            StreamReleased: the stream moved away or the node is stopping.
            BufferFull: never (listed for symmetry: reading stores nothing).
        """
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def deliver(outcome: Any) -> None:
            if not fut.done():
                fut.set_result(outcome)

        parked = self.park_read(stream_id, position, timeout, max_messages, deliver, wait_unknown=wait_unknown)
        try:
            outcome = await fut
        finally:
            if parked is not None and not parked._done:  # the caller went away
                self._finish_read(parked, None, at_once=True)
                self._settle(parked._stream)
        if type(outcome) is Released:
            raise StreamReleased(stream_id, outcome.reason)
        return outcome

    def park_read(
        self, stream_id: str, position: Position | None, timeout: float, max_messages: int, deliver: ReadDeliver,
        *, wait_unknown: bool = False,
    ) -> ParkedRead | None:
        """:meth:`read_history` without a task: ``deliver`` gets the
        :class:`HistoryRead` or a :class:`Released` exactly once.  When the
        answer is known at once ``deliver`` runs before this returns and the
        result is ``None``; otherwise it runs later from the event loop and
        the :class:`ParkedRead` is returned (:meth:`ParkedRead.end` stops it).

        Raises:
            HistoryNotKept: the stream exists and keeps no history (one
                taken in by a hand-off or a restore is not known to keep none
                until its first send here: readers wait).
            ValueError: ``max_messages`` < 1.
        """
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        stats = self.history_stats
        stats.reads_total += 1
        stream = self._streams.get(stream_id)
        history = stream.history if stream is not None else None
        if history is None and stream is not None and stream.capacity is not None and not stream.history_open:
            raise HistoryNotKept(stream_id)
        foreign: Position | None = None  # a position of an epoch not known here (yet)
        after, recovered = 0, None
        if history is not None and history.spec is not None:
            history.expire(self._clock.time_us(), stats)
            floor = history.floor
            offset = None if position is None else history.translate(*position)
            if position is None:
                after = floor
            elif offset is None:
                foreign = position
            elif not floor <= offset <= history.top:
                deliver(self._counted(HistoryRead([], history.epoch, floor, False, "window")))
                return None
            else:
                after, recovered = offset, True
            if foreign is None:
                entries = history.after(after, max_messages)
                if entries or timeout <= 0:
                    deliver(self._answer(history, entries, after, recovered))
                    return None
        elif position is not None:
            foreign = position
        if foreign is not None:
            if not wait_unknown:  # its history is gone: nothing to continue from
                known = history is not None and history.epoch is not None
                floor = history.floor if history is not None and known else 0
                deliver(self._counted(HistoryRead([], history.epoch if history else None, floor, False, "epoch")))
                return None
            after, recovered = foreign.offset, True
            if timeout <= 0:  # no verdict yet: the history may be on its way
                deliver(HistoryRead([], foreign.epoch, foreign.offset))
                return None
        elif timeout <= 0:
            deliver(self._counted(HistoryRead([], None, 0, recovered)))
            return None
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, None)
        if history is None:
            history = stream.history = History(None)
        reader = ParkedRead(self, stream, history, after, max_messages, recovered, deliver)
        if foreign is not None:
            reader.epoch = foreign.epoch
        readers = history.readers
        if readers is None:
            history.readers = [reader]
        else:
            if len(readers) > 2 * history.live_readers + 16:  # drop those answered by their timers
                readers[:] = [r for r in readers if not r._done]
            readers.append(reader)
        history.live_readers += 1
        stats.waiting_readers += 1
        reader._handle = asyncio.get_running_loop().call_later(timeout, self._expire_read, reader)
        return reader

    def history_readers(self, stream_id: str) -> int:
        """History readers waiting on the stream now."""
        stream = self._streams.get(stream_id)
        return 0 if stream is None or stream.history is None else stream.history.live_readers

    def history_top(self, stream_id: str) -> tuple[str, int, int] | None:
        """``(epoch, floor, top)`` of the stream's history, ``None`` without one."""
        stream = self._streams.get(stream_id)
        history = stream.history if stream is not None else None
        if history is None or history.epoch is None:
            return None
        return history.epoch, history.floor, history.top

    # -- hand-off -----------------------------------------------------------------------

    def release_readers(self, history: History, reason: str) -> None:
        """Let every reader still waiting on ``history`` go with ``reason``."""
        readers, history.readers = history.readers, None
        for reader in readers or ():
            if not reader._done:
                self._finish_read(reader, Released(reason), at_once=False)

    # -- hooks from sending and eviction --------------------------------------------------

    def _configure_history(self, stream: Stream, spec: HistorySpec | None) -> None:
        history = stream.history
        if spec is None:
            return  # readers that came first (a pending history) wait until their timeout
        if history is None:
            stream.history = History(spec, created_us=self._clock.time_us())
        elif history.spec is None:
            history.spec = spec
            history.epoch = History(spec).epoch
            history.created_us = self._clock.time_us()
        else:
            return
        self.history_stats.histories += 1

    def _make_room(self, stream: Stream, msg: Message) -> None:
        """Before a send to a stream with a history: make sure the node's
        byte budget holds the message in the queue and in the history,
        expiring and then shedding this history's oldest messages if not.

        Raises:
            BufferFull: still no room.
        """
        history = stream.history
        if history is None or history.spec is None:
            return
        stats = self.history_stats
        need = self.stats.buffered_bytes + stats.bytes + msg.size + entry_cost(msg) - self._max_buffered_bytes
        if need <= 0:
            return
        history.expire(self._clock.time_us(), stats)
        need = self.stats.buffered_bytes + stats.bytes + msg.size + entry_cost(msg) - self._max_buffered_bytes
        if need > 0 and history.shed(need, stats) < need:
            self._settle(stream)
            raise BufferFull(
                "the node's in-memory buffers and histories are full (limits.max_buffered_bytes); retry later",
                retry_after=1,
            )

    def _record(self, stream: Stream, msg: Message) -> None:
        history = stream.history
        if history is None or history.spec is None:
            return
        stats = self.history_stats
        history.append(msg, stats)
        history.trim(msg.timestamp_us, self._max_stream_bytes, stats)
        if history.live_readers and not history.wake_pending:
            self._schedule_wake(stream, history)

    def _history_holds(self, stream: Stream) -> bool:
        """Whether an idle stream must stay for its history (unexpired messages)."""
        history = stream.history
        if history is None or history.spec is None:
            return False
        history.expire(self._clock.time_us(), self.history_stats)
        return bool(history.entries)

    def _drop_history(self, stream: Stream, reason: str) -> None:
        """The stream leaves the engine: forget its history, release its readers."""
        history, stream.history = stream.history, None
        if history is None:
            return
        if history.spec is not None:
            history.clear(self.history_stats)
            self.history_stats.histories -= 1
        self.release_readers(history, reason)

    # -- answering readers -----------------------------------------------------------------

    def _schedule_wake(self, stream: Stream, history: History) -> None:
        history.wake_pending = True
        asyncio.get_running_loop().call_soon(self._wake, stream, history)

    def _wake(self, stream: Stream, history: History) -> None:
        """Answer every reader waiting on ``history`` that has something to read."""
        history.wake_pending = False
        readers, history.readers = history.readers, None
        if not readers:
            return
        floor, top = history.floor, history.top
        keep: list[ParkedRead] = []
        # readers at the same place get the same answer object (its encoding is made once)
        shared: dict[tuple[int, int, bool | None], HistoryRead] = {}
        for reader in readers:
            if reader._done:
                continue
            if reader.epoch is not None:  # came with an epoch unknown here: known by now?
                offset = history.translate(reader.epoch, reader.after) if history.spec is not None else None
                if offset is None:
                    keep.append(reader)
                    continue
                reader.epoch, reader.after = None, offset
                if offset > top:
                    self._finish_read(reader, HistoryRead([], history.epoch, floor, False, "window"), at_once=True)
                    continue
            if reader.after < floor:  # the window moved past it while it waited
                if reader.recovered is not None:
                    self._finish_read(reader, HistoryRead([], history.epoch, floor, False, "window"), at_once=True)
                    continue
                reader.after = floor  # it asked for the oldest held: that is it now
            if reader.after >= top:
                keep.append(reader)
                continue
            key = (reader.after, reader.limit, reader.recovered)
            read = shared.get(key)
            if read is None:
                entries = history.after(reader.after, reader.limit)
                read = shared[key] = HistoryRead(entries, history.epoch, entries[-1].offset, reader.recovered)
            self._finish_read(reader, read, at_once=True)
        if keep:
            if history.readers is None:
                history.readers = keep
            else:
                history.readers.extend(keep)
        self._settle(stream)

    def _expire_read(self, reader: ParkedRead) -> None:
        if not reader._done:
            if reader.epoch is not None:  # still unknown here: no verdict, its own position back
                outcome = HistoryRead([], reader.epoch, reader.after)
            else:
                outcome = HistoryRead([], reader._history.epoch, reader.after, reader.recovered)
            self._finish_read(reader, outcome, at_once=True)
            self._settle(reader._stream)

    def _finish_read(self, reader: ParkedRead, outcome: HistoryRead | Released | None, *, at_once: bool) -> None:
        """Settle a waiting reader (the only place the reader counters change):
        hand it ``outcome``, now or from the event loop (``None``: its caller
        is gone, nothing to hand)."""
        reader._done = True
        if reader._handle is not None:
            reader._handle.cancel()
        reader._history.live_readers -= 1
        self.history_stats.waiting_readers -= 1
        if type(outcome) is HistoryRead:
            self._counted(outcome)
            self.history_stats.delivered_total += len(outcome.entries)
        elif type(outcome) is Released:
            self.stats.released_total += 1
        else:
            return
        if at_once:
            reader._deliver(outcome)
        else:
            asyncio.get_running_loop().call_soon(reader._deliver, outcome)

    def _answer(
        self, history: History, entries: list[HistoryEntry], after: int, recovered: bool | None
    ) -> HistoryRead:
        self.history_stats.delivered_total += len(entries)
        return self._counted(HistoryRead(entries, history.epoch, entries[-1].offset if entries else after, recovered))

    def _counted(self, read: HistoryRead) -> HistoryRead:
        if read.recovered is True:
            self.history_stats.recovered_total += 1
        elif read.recovered is False:
            self.history_stats.not_recovered_total += 1
        return read

