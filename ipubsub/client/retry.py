"""When the client tries again, how long it waits, and what it counts."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from ..errors import IPubSubError

__all__ = ["ClientStats", "RetryPolicy", "Unreachable"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounds of the retries of one call.

    Only connection errors (refused, reset, timed out), 503 answers and
    424 ``stream_released`` answers are retried; anything else the server
    says is final.  After a connection error the next untried node is called
    at once; once every known node has failed, and after every 503 or
    ``stream_released``, the client waits
    ``min(max_backoff_seconds, initial_backoff_seconds * 2**n)`` (with
    jitter: 50-100 % of it), but at least the server's ``Retry-After``
    (capped at ``max_backoff_seconds``).

    Attributes:
        max_attempts: HTTP requests per call, first one included.
        max_total_seconds: time a call may spend on failed tries, membership
            refreshes and waits; the time a node may legitimately hold the
            call (its long-poll or blocking timeout) does not count.
        initial_backoff_seconds: first wait.
        max_backoff_seconds: longest single wait.
        retry_refused: whether to keep trying when every node tried so far
            refused the connection (nothing listens: a node restarting,
            or a wrong URL).  ``False`` fails at once instead, once each
            known node refused; timeouts, resets and 503s are still retried.
    """

    max_attempts: int = 10
    max_total_seconds: float = 15.0
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 2.0
    retry_refused: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.max_total_seconds < 0 or self.initial_backoff_seconds < 0:
            raise ValueError("max_total_seconds and initial_backoff_seconds must be >= 0")
        if self.max_backoff_seconds < self.initial_backoff_seconds:
            raise ValueError("max_backoff_seconds must be >= initial_backoff_seconds")

    def backoff(self, waits_so_far: int, retry_after: float | None = None) -> float:
        """Seconds to wait before the next try, after ``waits_so_far`` waits."""
        delay = min(self.max_backoff_seconds, self.initial_backoff_seconds * 2.0**waits_so_far)
        delay *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(float(retry_after), self.max_backoff_seconds))
        return delay


@dataclass(slots=True)
class ClientStats:
    """Counters of one client since it was created (for logs and tests)."""

    requests: int = 0
    retries: int = 0
    connection_errors: int = 0
    unavailable: int = 0
    released: int = 0
    refreshes: int = 0
    # answers whose X-IPubSub-Ring differed from the known ring (each started a refresh)
    ring_changes_seen: int = 0
    # acks and nacks that found their lease gone (410): the message is delivered again
    leases_lost: int = 0


class Unreachable(IPubSubError):
    """No node answered: connection errors on every try until the retry
    budget ran out.  ``errors`` lists the last failure per URL."""

    code = "unreachable"

    def __init__(self, message: str, errors: dict[str, str] | None = None, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.errors: dict[str, str] = dict(errors or {})


@dataclass(slots=True)
class Attempts:
    """The state of one call's retry loop.

    ``spent`` counts the seconds charged to the retry budget (see
    :attr:`RetryPolicy.max_total_seconds`).
    """

    policy: RetryPolicy
    count: int = 0
    waits: int = 0
    spent: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)
    #: every failure so far was a refused connection
    only_refused: bool = True

    def can_retry(self, delay: float = 0.0) -> bool:
        """Whether one more try, after waiting ``delay`` seconds, fits the policy."""
        policy = self.policy
        return self.count < policy.max_attempts and self.spent + delay <= policy.max_total_seconds
