"""Cheap in-process measurements, turned into Prometheus metrics only when
scraped (see :mod:`ipubsub.observability.metrics`), so hot paths pay a few increments."""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["REQUEST_BUCKETS", "STORAGE_BUCKETS", "CallCounts", "LatencyHistogram"]

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
    """How sends and receives were served: ``local`` (this node owns the
    stream), ``forwarded`` (to the owner) or ``for_peer`` (served here for a
    node that forwarded it)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts = {(kind, path): 0 for kind in ("send", "receive") for path in ("local", "forwarded", "for_peer")}

    def add(self, kind: str, path: str) -> None:
        self.counts[(kind, path)] += 1

    def items(self) -> list[tuple[str, str, int]]:
        """``(kind, path, count)`` rows."""
        return [(kind, path, n) for (kind, path), n in self.counts.items()]
