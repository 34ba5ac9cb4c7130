"""Readings of server processes from /proc: CPU time and resident memory.

CPU time is user + system time of the whole process (all its threads), so
Redis's background threads and a node's executor threads count too.  Several
pids are summed: a cluster's cost is the cost of all its nodes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

__all__ = ["CpuMeter", "cpu_seconds", "rss_bytes"]

_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds used so far by all of ``pids``, summed.

    Raises:
        FileNotFoundError: one of the processes does not exist.
    """
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / _TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes.

    Raises:
        FileNotFoundError: the process does not exist.
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for pid {pid}")


class CpuMeter:
    """CPU seconds used by a set of processes over one window.

    With no pids every reading is None: the harness still runs, without CPU
    figures (the server may be on another host).
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self.pids = list(pids)
        self._cpu0 = 0.0
        self._own0 = 0.0
        self._t0 = 0.0
        #: CPU seconds the harness itself used over the last window (is the
        #: load generator, rather than the server, the bottleneck?)
        self.own_seconds = 0.0

    def start(self) -> None:
        self._t0 = time.perf_counter()
        self._own0 = time.process_time()
        if self.pids:
            self._cpu0 = cpu_seconds(self.pids)

    def stop(self) -> tuple[float, float | None]:
        """Wall seconds since ``start`` and CPU seconds used (None without pids)."""
        wall = time.perf_counter() - self._t0
        self.own_seconds = time.process_time() - self._own0
        if not self.pids:
            return wall, None
        return wall, cpu_seconds(self.pids) - self._cpu0
