"""Giving memory back to the operating system after a surge of connections.

A flood of connections (or of waiting polls, each holding one) makes the
allocators take pages that they keep once the flood is over: freed memory
is reused by the process, not returned.  :class:`MemoryReturner` watches the
open connections; when they fall to a quarter of a peak of at least
``min_peak``, it collects cyclic garbage (the connections' reference
cycles) and asks the C allocator to return its free pages (glibc's
``malloc_trim(0)``, which releases free pages anywhere in the heap), and
trims again at every look for ``settle_seconds`` (what the flood left, such
as idle streams, goes later).

How much comes back depends on the allocator Python uses for its objects:
with ``PYTHONMALLOC=malloc`` every object lives in the C heap and the RSS
returns close to where it was; with the default (pymalloc), pymalloc's 1 MiB
arenas stay as long as one object in them lives, so only the C heap's share
returns (docs/security.md has the figures).  Where ``malloc_trim`` does not
exist (not glibc) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import time
from collections.abc import Callable

__all__ = ["MemoryReturner", "rss_bytes", "trim_heap"]

log = logging.getLogger("ipubsub.memory")


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_trim = _load_trim()


def trim_heap() -> bool:
    """Return the C heap's free pages to the operating system; False where
    the C library cannot (not glibc)."""
    if _trim is None:
        return False
    _trim(0)
    return True


def rss_bytes() -> int:
    """This process's resident set size (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class MemoryReturner:
    """Trims the heap once the load that grew it has gone.

    Args:
        load: the current number of open connections.
        min_peak: a peak below this is not worth a trim.
        interval: seconds between looks at ``load``.
        settle_seconds: how long to keep trimming after the load fell.
    """

    def __init__(
        self,
        load: Callable[[], int],
        *,
        min_peak: int = 1000,
        interval: float = 2.0,
        settle_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._clock = clock
        self.min_peak = min_peak
        self.interval = interval
        self.settle_seconds = settle_seconds
        self.peak = 0
        self.trims = 0
        self._trim_until = 0.0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None and _trim is not None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ipubsub-memory-returner")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def check(self) -> bool:
        """One look at the load: collects garbage and trims (True) when it
        fell to a quarter of a peak of at least ``min_peak`` since the last
        drop; trims again (True) while within ``settle_seconds`` of that drop."""
        load = self._load()
        now = self._clock()
        if load > self.peak:
            self.peak = load
        if self.peak >= self.min_peak and load * 4 <= self.peak:
            before = rss_bytes()
            start = time.perf_counter()
            gc.collect()
            trim_heap()
            log.info("after a peak of %d connections (now %d): returned %.1f MiB to the OS in %.0f ms", self.peak,
                     load, max(0, before - rss_bytes()) / 2**20, (time.perf_counter() - start) * 1000)
            self.peak = load
            self._trim_until = now + self.settle_seconds
        elif now < self._trim_until:
            trim_heap()
        else:
            return False
        self.trims += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            self.check()
