"""Hand-off of fan-out histories: a stream's history leaves the engine with
its epoch, offsets and timestamps (:meth:`HistoryHandoff.export_history`)
and enters its new owner's engine as it was
(:meth:`HistoryHandoff.import_history`), so that readers' positions stay
valid across a planned ring change."""

from __future__ import annotations

from .history import History, HistoryState
from .history_reads import HistoryReads
from .matching import DEFAULT_STREAM_SIZE
from .stream import Stream

__all__ = ["HistoryHandoff"]


class HistoryHandoff(HistoryReads):
    """The hand-off half of the engine's histories."""

    def export_history(self, stream_id: str) -> tuple[HistoryState, History] | None:
        """Take the stream's history out of the engine (hand-off) and return
        it as it moves, with the detached history whose waiting readers are
        left waiting: release them with :meth:`release_readers` once the new
        owner has the history, so that their next read finds it there."""
        stream = self._streams.get(stream_id)
        history = stream.history if stream is not None else None
        if stream is None or history is None or history.spec is None:
            return None
        stream.history = None
        state = history.state()
        stats = self.history_stats
        stats.messages -= len(history.entries)
        stats.bytes -= history.nbytes
        stats.histories -= 1
        history.entries.clear()
        history.nbytes = 0
        return state, history

    def import_history(self, stream_id: str, state: HistoryState) -> None:
        """Take in a history handed over by the stream's previous owner, with
        its epoch, offsets and aliases.  If this node started a history of its
        own for the stream meanwhile (sends that came before the hand-off),
        the older of the two keeps its epoch, the other's messages are
        appended after it and the other's epoch becomes an alias: positions
        of both stay valid.  Readers waiting here (at the top, or with a
        position of an epoch unknown until now) are answered from the result.
        Call after :meth:`attach` of the stream's queue.

        Raises:
            ValueError: the state's offsets are not consecutive up to its top.
        """
        stats = self.history_stats
        incoming = History.from_state(state, stats)
        stream = self._streams.get(stream_id)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, DEFAULT_STREAM_SIZE)
        elif stream.capacity is None:
            stream.capacity = DEFAULT_STREAM_SIZE
        local = stream.history
        if local is None or local.spec is None:
            if local is not None:
                _move_readers(local, incoming)
            stream.history = incoming
            stats.histories += 1
        elif state.created_us <= local.created_us:  # the handed history is older: it keeps its epoch
            self._merge(incoming, local)
            _move_readers(local, incoming)
            stream.history = incoming
        else:
            self._merge(local, incoming)
        kept = stream.history
        assert kept is not None
        kept.trim(self._clock.time_us(), self._max_stream_bytes, stats)
        if kept.live_readers:
            self._schedule_wake(stream, kept)
        self._settle(stream)

    def _merge(self, into: History, other: History) -> None:
        """Append ``other``'s messages to ``into`` and make ``other``'s epoch
        (and aliases) aliases of ``into``; ``other`` ends empty."""
        stats = self.history_stats
        if other.epoch == into.epoch:  # the same history twice (a batch taken back and resent)
            entries = [e for e in other.entries if e.offset > into.top]
        else:
            entries = list(other.entries)
            base, floor = into.top, other.floor
            assert other.epoch is not None
            into.add_alias(other.epoch, floor, base)
            for epoch, (theirs, ours) in (other.aliases or {}).items():
                into.add_alias(epoch, theirs, base - floor + ours)
        for entry in entries:
            stats.messages -= 1
            stats.appended_total -= 1  # moved, not newly accepted
            into.append(entry.message, stats)
        stats.messages -= len(other.entries) - len(entries)
        stats.bytes -= other.nbytes
        other.entries.clear()
        other.nbytes = 0


def _move_readers(src: History, dst: History) -> None:
    """Readers waiting on ``src`` wait on ``dst`` from now on (a reader at
    ``src``'s top keeps its position in ``src``'s epoch, translated by
    ``dst``'s alias of it)."""
    for reader in src.readers or ():
        if reader._done:
            continue
        if reader.epoch is None and src.epoch is not None:
            reader.epoch = src.epoch
        reader._history = dst
        if dst.readers is None:
            dst.readers = [reader]
        else:
            dst.readers.append(reader)
        dst.live_readers += 1
    src.readers = None
    src.live_readers = 0
