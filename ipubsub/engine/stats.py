"""Counters of the engine, and the result given to released waiters."""

from __future__ import annotations

__all__ = ["EngineStats", "Released"]


class Released:
    """Result given to a waiter that the engine lets go (stream moved, shutdown)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


class EngineStats:
    """Operator-facing counters. Gauges go up and down; ``*_total`` only up."""

    __slots__ = (
        "buffered_messages",
        "buffered_bytes",
        "waiting_receivers",
        "blocked_senders",
        "accepted_total",
        "delivered_total",
        "dropped_total",
        "receive_timeouts_total",
        "send_timeouts_total",
        "requeued_total",
        "released_total",
        "evicted_streams_total",
        "handed_in_total",
        "handed_out_total",
    )

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}
