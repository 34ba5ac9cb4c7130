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
        its epoch and offsets.  If this node started a history of its own
        for the stream meanwhile, the older of the two keeps its epoch and the
        other's messages are appended after it (with new offsets; readers
        holding positions of the epoch that ends are told so when they come
        back).  Call after :meth:`attach` of the stream's queue.

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
            if local is not None:  # readers that came first wait on the handed history now
                incoming.readers, incoming.live_readers = local.readers, local.live_readers
                for reader in incoming.readers or ():
                    reader._history = incoming
            stream.history = incoming
            stats.histories += 1
        elif state.created_us <= local.created_us:
            self._merge(incoming, local)
            stream.history = incoming
            self.release_readers(local, "the stream's history was taken over by an older one; read again")
        else:
            self._merge(local, incoming)
        kept = stream.history
        assert kept is not None
        kept.trim(self._clock.time_us(), self._max_stream_bytes, stats)
        if kept.live_readers:
            self._schedule_wake(stream, kept)
        self._settle(stream)

    def _merge(self, into: History, other: History) -> None:
        """Append ``other``'s messages to ``into`` (new offsets), emptying ``other``."""
        stats = self.history_stats
        for entry in other.entries:
            stats.messages -= 1
            stats.appended_total -= 1  # moved, not newly accepted
            into.append(entry.message, stats)
        stats.bytes -= other.nbytes
        other.entries.clear()
        other.nbytes = 0
