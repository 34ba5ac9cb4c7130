"""The message value held in memory, and its wire timestamp format."""

from __future__ import annotations

import calendar
import os
import time
from datetime import datetime

__all__ = ["Message", "format_timestamp", "new_uuid", "parse_timestamp"]


class Message:
    """One accepted message: its id, its JSON payload (kept as the exact bytes
    the sender sent) and when a node first accepted it.

    ``taken`` is set by the engine the first time the message leaves its
    stream for a receiver (an engine-wide counter, 0 until then): messages
    given back are restored in that order.  ``deliveries`` counts the leased
    deliveries of the message that ended without an ack (see
    :mod:`.leases`): its next lease is delivery ``deliveries + 1``.
    """

    __slots__ = ("uuid", "payload", "timestamp_us", "taken", "deliveries", "size")

    def __init__(self, uuid: str, payload: bytes, timestamp_us: int, deliveries: int = 0) -> None:
        self.uuid = uuid
        self.payload = payload
        self.timestamp_us = timestamp_us
        self.taken = 0
        self.deliveries = deliveries
        #: bytes charged against stream and node buffer limits (read several
        #: times per message on the hot path: computed once; a message's
        #: uuid and payload never change)
        self.size = len(payload) + len(uuid)

    def __repr__(self) -> str:
        return f"Message({self.uuid!r}, {self.payload[:40]!r}, {self.timestamp_us})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message):
            return NotImplemented
        return (self.uuid, self.payload, self.timestamp_us) == (
            other.uuid,
            other.payload,
            other.timestamp_us,
        )

    __hash__ = None  # type: ignore[assignment]


def format_timestamp(timestamp_us: int) -> str:
    """RFC 3339 UTC with microseconds, e.g. ``2026-11-22T10:00:00.123456Z``."""
    seconds, micros = divmod(timestamp_us, 1_000_000)
    global _cached_second, _cached_prefix
    if seconds != _cached_second:
        t = time.gmtime(seconds)
        _cached_prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}."
        )
        _cached_second = seconds
    return f"{_cached_prefix}{micros:06d}Z"


def parse_timestamp(text: str) -> int:
    """Microseconds since the epoch of a timestamp written by :func:`format_timestamp`.

    Raises:
        ValueError: not in that format.
    """
    parsed = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(parsed.timetuple()) * 1_000_000 + parsed.microsecond


# Consecutive messages mostly fall in the same second: format that part once.
_cached_second = -1
_cached_prefix = ""


class _UuidSource:
    """Random version-4 UUID strings, drawn from a pooled block of entropy
    (one ``os.urandom`` call per 256 ids instead of one per id)."""

    __slots__ = ("_pool", "_offset")
    _BLOCK = 16 * 256

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def reset(self) -> None:
        """Forget the pooled entropy (a forked child must not reuse it)."""
        self._pool = b""
        self._offset = 0

    def __call__(self) -> str:
        offset = self._offset
        if offset >= len(self._pool):
            self._pool = os.urandom(self._BLOCK)
            offset = 0
        self._offset = offset + 16
        raw = bytearray(self._pool[offset : offset + 16])
        raw[6] = (raw[6] & 0x0F) | 0x40
        raw[8] = (raw[8] & 0x3F) | 0x80
        h = raw.hex()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


new_uuid = _UuidSource()
# A forked child must not hand out the parent's remaining ids.
os.register_at_fork(after_in_child=new_uuid.reset)
