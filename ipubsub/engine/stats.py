"""Operator-facing counters of the engine."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["EngineStats", "StreamInfo"]


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """What one in-memory stream holds right now (for operators).

    ``capacity`` is ``None`` while only receivers have touched the stream
    (its first send fixes it); 0 means sync match."""

    capacity: int | None
    buffered_messages: int
    buffered_bytes: int
    waiting_receivers: int
    blocked_senders: int


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
        self.buffered_messages = 0
        self.buffered_bytes = 0
        self.waiting_receivers = 0
        self.blocked_senders = 0
        self.accepted_total = 0
        self.delivered_total = 0
        self.dropped_total = 0
        self.receive_timeouts_total = 0
        self.send_timeouts_total = 0
        self.requeued_total = 0
        self.released_total = 0
        self.evicted_streams_total = 0
        self.handed_in_total = 0
        self.handed_out_total = 0
