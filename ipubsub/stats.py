"""Cheap in-process measurements, turned into Prometheus metrics only when
scraped (see :mod:`ipubsub.metrics`), so hot paths pay a few increments."""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["CallCounts", "LatencyHistogram", "REQUEST_BUCKETS", "STORAGE_BUCKETS"]

REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class LatencyHistogram:
    """Counts of observations per upper bound, plus count and sum."""

    __slots__ = ("bounds", "counts", "count", "total")

    def __init__(self, bounds: tuple[float, ...] = STORAGE_BUCKETS) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.count += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as Prometheus expects, ``+Inf`` last."""
        out = []
        running = 0
        for bound, n in zip(self.bounds, self.counts):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + self.counts[-1]))
        return out


class CallCounts:
    """How sends and receives were served: here as owner, forwarded to the
    owner, or here on behalf of a peer that forwarded them."""

    __slots__ = ("send_local", "send_forwarded", "send_for_peer", "receive_local", "receive_forwarded", "receive_for_peer")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def items(self) -> list[tuple[str, str, int]]:
        """``(kind, path, count)`` rows."""
        rows = []
        for name in self.__slots__:
            kind, _, path = name.partition("_")
            rows.append((kind, path, getattr(self, name)))
        return rows
