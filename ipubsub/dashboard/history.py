"""The last few minutes of a node's figures, sampled in the node itself.

A fresh dashboard page shows history at once because the node keeps it,
not the browser: one named task samples the node's counters and gauges every
``interval`` seconds into fixed-size ring buffers (one deque per series,
``keep`` points each, so memory is constant whatever the traffic).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping

from ..tasks import cancel_tasks

__all__ = ["COUNTERS", "GAUGES", "SERIES", "History", "Sample"]

log = logging.getLogger("ipubsub.dashboard")

# Counters (only go up) are charted as a rate per second; gauges as they are.
COUNTERS = {
    "delivered": "deliveredPerSecond",
    "sent": "sentPerSecond",
    "forwarded": "forwardedPerSecond",
    "dropped": "droppedPerSecond",
    "errors": "errorsPerSecond",
}
GAUGES = ("bufferedMessages", "bufferedBytes", "waitingReceivers", "blockedSenders", "streams")
# Average duration of one storage batch write during the interval (None: no write).
WRITE_MS = "storageWriteMs"
SERIES = (*COUNTERS.values(), *GAUGES, WRITE_MS)

# What a sample reads: counter and gauge values by name, plus the storage
# write histogram's running sum (seconds) and count.
Sample = Mapping[str, float]


class History:
    """Ring buffers of the last ``keep`` samples of every series.

    Args:
        read: returns the current counters, gauges, ``writeSeconds`` and
            ``writeCount`` (see :data:`Sample`); called once per interval.
        interval: seconds between samples.
        keep: points kept per series (``interval * keep`` seconds of history).
    """

    def __init__(self, read: Callable[[], Sample], *, interval: float = 2.0, keep: int = 150) -> None:
        self.interval = interval
        self.keep = keep
        self._read = read
        self._times: deque[int] = deque(maxlen=keep)
        self._series: dict[str, deque[float | None]] = {name: deque(maxlen=keep) for name in SERIES}
        self._previous: tuple[float, Sample] | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take a first reading now and start the sampling task."""
        if self._task is None:
            self._previous = (time.monotonic(), dict(self._read()))
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ipubsub-dashboard-history")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_tasks([task])

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.sample()
            except Exception:  # a failed reading must not end the history for good
                log.exception("dashboard history sample failed")

    def sample(self, now: float | None = None, wall_ms: int | None = None) -> None:
        """Read the figures and append one point to every series (rates are
        per second since the previous reading)."""
        now = time.monotonic() if now is None else now
        current = dict(self._read())
        previous = self._previous
        self._previous = (now, current)
        if previous is None:
            return
        elapsed = now - previous[0]
        if elapsed <= 0:
            return
        before = previous[1]
        self._times.append(int(time.time() * 1000) if wall_ms is None else wall_ms)
        for counter, name in COUNTERS.items():
            # max(): a counter that went down (component restarted) is no traffic.
            delta = max(0.0, current.get(counter, 0.0) - before.get(counter, 0.0))
            self._series[name].append(round(delta / elapsed, 2))
        for name in GAUGES:
            self._series[name].append(current.get(name, 0.0))
        writes = current.get("writeCount", 0.0) - before.get("writeCount", 0.0)
        seconds = current.get("writeSeconds", 0.0) - before.get("writeSeconds", 0.0)
        self._series[WRITE_MS].append(round(1000 * seconds / writes, 3) if writes > 0 else None)

    def __len__(self) -> int:
        return len(self._times)

    def latest(self) -> dict[str, float | None]:
        """The newest point of every series (empty before the first interval)."""
        if not self._times:
            return {}
        return {name: values[-1] for name, values in self._series.items()}

    def series(self, names: tuple[str, ...] = SERIES, points: int | None = None) -> dict[str, list]:
        """The last ``points`` points (all kept when ``None``) of the chosen
        series, oldest first, with their wall-clock times in ``t`` (ms)."""
        count = len(self._times) if points is None else max(0, min(points, len(self._times)))
        start = len(self._times) - count
        out: dict[str, list] = {"t": list(self._times)[start:]}
        for name in names:
            if name in self._series:
                out[name] = list(self._series[name])[start:]
        return out
