"""The measurement window shared by every load mode.

Load loops run from the start; they count only while ``Window.measuring``
is set, which ``run_window`` sets after the warm-up for exactly the measured
duration, reading the servers' CPU time at both edges.  ``Tally.report``
turns the counts into one result row (a JSON object printed by bench.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .procstat import CpuMeter

__all__ = ["Credits", "Row", "Tally", "Window", "percentile", "run_window"]

Row = dict[str, Any]


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile ``p`` (0-100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class Window:
    """Flags the load loops read: measure only inside the window, then stop."""

    def __init__(self) -> None:
        self.measuring = False
        self.stop = False


class Credits:
    """How many messages one stream pair may still have in flight.

    The sender ``take``s before sending, the receiver ``give``s back what it
    received; ``close`` wakes a waiting sender for good at the end of a run.
    One sender per pair: at most one waiter.
    """

    def __init__(self, available: int) -> None:
        self.available = available
        self.closed = False
        self._wake: asyncio.Future[None] | None = None

    async def take(self, n: int = 1) -> None:
        while self.available < n and not self.closed:
            self._wake = asyncio.get_running_loop().create_future()
            try:
                await self._wake
            finally:
                self._wake = None
        self.available -= n

    def give(self, n: int = 1) -> None:
        self.available += n
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def close(self) -> None:
        self.closed = True
        self.give(0)


@dataclass
class Tally:
    """Counts of one measured window (only what happened inside it)."""

    sends: int = 0
    receives: int = 0
    delivered: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    send_rtt_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float | None = None
    client_cpu_seconds: float = 0.0
    servers: int = 0

    def report(self, label: str, trivial: bool = False) -> Row:
        """One result row.

        ``cpu_us_per_msg`` is server CPU (summed over all measured processes)
        per delivered message.  With ``trivial`` (a server that does no
        matching, each send and receive an independent request) a "message"
        is one send request plus one receive request.
        """
        requests = self.sends + self.receives
        seconds = self.seconds or float("nan")
        out: Row = {"label": label, "seconds": round(self.seconds, 2), "requests_per_s": round(requests / seconds),
                    "errors": self.errors}
        messages = requests / 2 if trivial else self.delivered
        out["msg_per_s"] = round(messages / seconds)
        if not trivial:
            out["latency_p50_ms"] = round(percentile(self.latencies_ms, 50), 3)
            out["latency_p99_ms"] = round(percentile(self.latencies_ms, 99), 3)
        out["send_rtt_p50_ms"] = round(percentile(self.send_rtt_ms, 50), 3)
        out["send_rtt_p99_ms"] = round(percentile(self.send_rtt_ms, 99), 3)
        out["client_cpu_util"] = round(self.client_cpu_seconds / seconds, 3)
        if self.cpu_seconds is not None:
            out["servers"] = self.servers
            out["server_cpu_util"] = round(self.cpu_seconds / seconds, 3)
            if messages:
                out["cpu_us_per_msg"] = round(self.cpu_seconds / messages * 1e6, 2)
            if requests:
                out["cpu_us_per_request"] = round(self.cpu_seconds / requests * 1e6, 2)
        return out


async def run_window(
    window: Window,
    tasks: list[asyncio.Task[None]],
    credits: Iterable[Credits],
    warmup: float,
    duration: float,
    cpu: CpuMeter,
    tally: Tally,
) -> None:
    """Warm up, measure for ``duration`` (server CPU too), then stop the loops.

    Loops get 5 s to notice ``window.stop`` and are cancelled after that; an
    exception in a loop is raised here (a broken run is not a result).
    """
    try:
        await asyncio.sleep(warmup)
        cpu.start()
        window.measuring = True
        await asyncio.sleep(duration)
        window.measuring = False
        tally.seconds, tally.cpu_seconds = cpu.stop()
        tally.client_cpu_seconds = cpu.own_seconds
        tally.servers = len(cpu.pids)
        window.stop = True
        for credit in credits:
            credit.close()
        await asyncio.wait(tasks, timeout=5)
    finally:  # also when the run is cancelled: no loop outlives its window
        for t in tasks:
            t.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    failed = [r for r in results if isinstance(r, Exception)]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(tasks)} load loops failed: {failed[0]!r}") from failed[0]
