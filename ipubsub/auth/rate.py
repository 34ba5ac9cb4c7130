"""Token buckets for per-caller request rates and a limiter of failed
credential attempts per remote address.  No I/O; the clock is passed in."""

from __future__ import annotations

import math

__all__ = ["FailureLimiter", "TokenBucket"]


class TokenBucket:
    """``rate`` tokens per second up to ``burst``; a request takes one."""

    __slots__ = ("rate", "burst", "_tokens", "_stamp")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(max(1, burst or math.ceil(rate)))
        self._tokens = self.burst
        self._stamp = now

    def take(self, now: float) -> float:
        """Take one token: 0.0 when granted, else the seconds until one is due."""
        tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if tokens >= 1.0:
            self._tokens = tokens - 1.0
            return 0.0
        self._tokens = tokens
        return (1.0 - tokens) / self.rate


class FailureLimiter:
    """Counts failed credentials per remote address in fixed windows; an
    address with ``max_failures`` in one window is blocked for
    ``block_seconds``.  At most ``max_addresses`` are tracked (the oldest
    entries go first), so a flood from many addresses costs bounded memory."""

    def __init__(self, max_failures: int, window: float, block: float, max_addresses: int = 65536) -> None:
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_addresses = max_addresses
        # address -> [window start, failures in it, blocked until]
        self._seen: dict[str, list[float]] = {}
        self._next_prune = 0.0
        #: False while no address has failed lately (read on every request: a plain attribute)
        self.active = False

    def tracking(self, now: float) -> bool:
        """Whether any address failed lately (else nobody is blocked); entries
        whose window and block are over are dropped here, once per window."""
        if self._seen and now >= self._next_prune:
            self._next_prune = now + self.window
            stale = [a for a, (start, _, until) in self._seen.items() if now - start >= self.window and until <= now]
            for address in stale:
                del self._seen[address]
            self.active = bool(self._seen)
        return bool(self._seen)

    def blocked_for(self, address: str, now: float) -> float:
        """Seconds ``address`` stays blocked (0.0: not blocked)."""
        entry = self._seen.get(address)
        if entry is None or entry[2] <= now:
            return 0.0
        return entry[2] - now

    def failed(self, address: str, now: float) -> None:
        entry = self._seen.get(address)
        if entry is None or now - entry[0] >= self.window:
            if entry is None and len(self._seen) >= self.max_addresses:
                self._forget_old(now)
            blocked_until = entry[2] if entry is not None else 0.0
            entry = self._seen[address] = [now, 0.0, blocked_until]
        entry[1] += 1
        self.active = True
        if entry[1] >= self.max_failures:
            entry[2] = now + self.block

    def _forget_old(self, now: float) -> None:
        """Drop entries whose window and block are over (the oldest one if none)."""
        stale = [a for a, (start, _, until) in self._seen.items() if now - start >= self.window and until <= now]
        for address in stale:
            del self._seen[address]
        if not stale:
            del self._seen[next(iter(self._seen))]
