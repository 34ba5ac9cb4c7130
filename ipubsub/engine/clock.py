"""Clocks the engine reads, injectable so tests need not sleep."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """What the engine needs to know about time."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (idle tracking)."""
        ...

    def time_us(self) -> int:
        """Wall-clock microseconds since the Unix epoch (message timestamps)."""
        ...


class SystemClock:
    """The real clocks."""

    __slots__ = ()

    monotonic = staticmethod(time.monotonic)

    @staticmethod
    def time_us() -> int:
        return time.time_ns() // 1000


class ManualClock:
    """A clock that moves only when told to (for tests)."""

    def __init__(self, start: float = 1000.0, wall_us: int = 1_790_000_000_000_000) -> None:
        self.now = start
        self.wall_us = wall_us

    def monotonic(self) -> float:
        return self.now

    def time_us(self) -> int:
        return self.wall_us

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.wall_us += int(seconds * 1_000_000)
