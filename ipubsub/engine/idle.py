"""Finding streams that have been idle long enough to evict, without
scanning every stream: O(1) per idle transition, O(evicted) per sweep."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from .clock import Clock
from .stream import Stream

__all__ = ["IdleTracker"]


class IdleTracker:
    """Streams that went idle, in generations.

    Each sweep opens a new bucket; a stream that goes idle is appended to the
    newest bucket once per generation.  A bucket is ripe when the next one
    opened at least ``idle_seconds`` ago: every stream in it went idle before
    that.  A ripe stream that became busy and idle again since is moved to
    the newest bucket instead of being evicted.
    """

    def __init__(self, clock: Clock, idle_seconds: float) -> None:
        self._clock = clock
        self._idle_seconds = idle_seconds
        self._gen = 0
        self._buckets: deque[tuple[float, list[Stream]]] = deque([(clock.monotonic(), [])])

    def note(self, stream: Stream) -> None:
        """``stream`` just became idle."""
        stream.idle_since = self._clock.monotonic()
        if stream.idle_gen != self._gen:
            stream.idle_gen = self._gen
            self._buckets[-1][1].append(stream)

    def ripe(self) -> Iterator[Stream]:
        """Open a new generation and yield the streams idle for long enough
        (the caller checks they are still idle and still held)."""
        now = self._clock.monotonic()
        self._gen += 1
        self._buckets.append((now, []))
        newest = self._buckets[-1][1]
        limit = self._idle_seconds
        while len(self._buckets) > 1 and self._buckets[1][0] + limit <= now:
            _, streams = self._buckets.popleft()
            for stream in streams:
                if not stream.is_idle:
                    continue
                if stream.idle_since + limit <= now:
                    yield stream
                elif stream.idle_gen != self._gen:
                    stream.idle_gen = self._gen
                    newest.append(stream)
