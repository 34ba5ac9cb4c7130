"""When things happened during a run: the faults, and the moments the
nodes' rings changed — which the analysis needs to tell an anomaly a
guarantee allows (a loss at a SIGKILL, an order change while the ring
changes) from one it does not."""

from __future__ import annotations

from typing import Any

__all__ = ["RING_FAULTS", "SETTLE_SECONDS", "Timeline"]

#: faults that change the ring (all but a database outage)
RING_FAULTS = frozenset({"kill", "term", "join", "leave", "partition", "pause", "solo"})
#: after a ring change, the hand-off of buffered streams may take this long
SETTLE_SECONDS = 3.0
#: the ring monitor's poll interval: a change seen at t happened up to this much earlier
SEEN_LATE_SECONDS = 0.5


class Timeline:
    """Faults by number (``begin``/``end`` events merged) and ring changes."""

    def __init__(self, faults: dict[int, dict[str, Any]], rings: list[dict[str, Any]], faults_from: float) -> None:
        self.faults = faults
        self._spans: list[tuple[float, float, int]] = []
        for number, fault in sorted(faults.items()):
            begin = fault.get("begin", {}).get("t")
            if begin is not None:
                self._spans.append((begin, fault.get("end", {}).get("recovered", begin), number))
        windows = [(b, e + SETTLE_SECONDS) for b, e, n in self._spans if faults[n].get("kind") in RING_FAULTS]
        self.unplanned_changes = 0
        for change in rings:
            if change.get("initial"):
                continue
            t = change["t"]
            windows.append((t - SEEN_LATE_SECONDS, t + SETTLE_SECONDS))
            if t > faults_from and not any(b - SEEN_LATE_SECONDS <= t <= e + SETTLE_SECONDS for b, e, _ in self._spans):
                self.unplanned_changes += 1
        self._unstable = _merge(windows)

    def fault_at(self, t: float) -> int | None:
        """The fault whose span holds ``t`` (± 0.5 s), else the first one
        that began after it (``None``: none did)."""
        after = None
        for begin, end, number in self._spans:
            if begin - 0.5 <= t <= end + 0.5:
                return number
            if begin > t and after is None:
                after = number
        return after

    def kind(self, number: int | None) -> str | None:
        return None if number is None else self.faults[number].get("kind")

    def ring_changed(self, start: float, end: float) -> bool:
        """Whether the ring changed (or was settling) at some moment of [start, end]."""
        return any(b <= end and start <= e for b, e in self._unstable)


def _merge(windows: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for b, e in sorted(windows):
        if merged and b <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((b, e))
    return merged
