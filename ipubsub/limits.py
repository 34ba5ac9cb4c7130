"""What one node holds at once: waiting long polls (per node and per
stream) and in-memory streams.  Checked by the node before a call would add
one; each refusal is a clear error and a ``ipubsub_refused_total`` count.
(Connections are limited by the listener: :mod:`ipubsub.api.listener`.)"""

from __future__ import annotations

from .auth.refusals import Refusals
from .config import LimitsConfig
from .engine import Engine
from .errors import TooManyPolls, TooManyStreamPolls, TooManyStreams

__all__ = ["NodeLimits"]


class NodeLimits:
    def __init__(self, config: LimitsConfig, engine: Engine, refusals: Refusals) -> None:
        self._max_polls = config.max_waiting_polls
        self._max_stream_polls = config.max_waiting_polls_per_stream
        self._max_streams = config.max_streams
        self._engine = engine
        self._refusals = refusals

    def check_stream(self, stream_id: str) -> None:
        """A call on ``stream_id`` may create it.

        Raises:
            TooManyStreams: it is new and the node holds ``limits.max_streams``.
        """
        engine = self._engine
        if engine.stream_count >= self._max_streams and stream_id not in engine:
            self._refusals.add("too_many_streams")
            raise TooManyStreams(
                f"this node holds {engine.stream_count} streams (limits.max_streams); a new stream is refused",
                retry_after=5,
            )

    def check_poll(self, stream_id: str) -> None:
        """A receive on ``stream_id`` may wait.

        Raises:
            TooManyPolls: the node has ``limits.max_waiting_polls`` waiting.
            TooManyStreamPolls: the stream has ``limits.max_waiting_polls_per_stream``.
            TooManyStreams: see :meth:`check_stream`.
        """
        engine = self._engine
        waiting = engine.stats.waiting_receivers + engine.history_stats.waiting_readers
        if waiting >= self._max_polls:
            self._refusals.add("too_many_polls")
            raise TooManyPolls(f"this node has {waiting} waiting polls (limits.max_waiting_polls)", retry_after=1)
        info = engine.stream_info(stream_id)
        if info is None:
            self.check_stream(stream_id)
        elif (on_stream := info.waiting_receivers + engine.history_readers(stream_id)) >= self._max_stream_polls:
            self._refusals.add("too_many_stream_polls")
            raise TooManyStreamPolls(
                f"stream {stream_id[:200]!r} has {on_stream} waiting polls "
                "(limits.max_waiting_polls_per_stream)",
                retry_after=1,
                streamId=stream_id,
            )
