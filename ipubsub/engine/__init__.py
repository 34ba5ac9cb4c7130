"""In-memory streams and matching of senders with long-polling receivers.

No HTTP and no I/O here: the API and cluster layers call into :class:`Engine`.
"""

from .clock import Clock, ManualClock, SystemClock
from .engine import DEFAULT_STREAM_SIZE, Engine
from .history import (
    HistoryEntry,
    HistoryRead,
    HistorySpec,
    HistoryState,
    HistoryStats,
    Position,
    format_position,
    parse_position,
)
from .history_reads import ParkedRead, ReadDeliver
from .leases import HeldLease, Lease, Leases, LeaseStats
from .parked import Deliver, Parked
from .stream import Released
from .stats import EngineStats, StreamInfo
from .message import Message, format_timestamp, new_uuid, parse_timestamp

__all__ = [
    "DEFAULT_STREAM_SIZE",
    "Clock",
    "Deliver",
    "Engine",
    "EngineStats",
    "HeldLease",
    "Lease",
    "LeaseStats",
    "Leases",
    "HistoryEntry",
    "HistoryRead",
    "HistorySpec",
    "HistoryState",
    "HistoryStats",
    "ParkedRead",
    "Position",
    "ReadDeliver",
    "ManualClock",
    "Message",
    "Parked",
    "Released",
    "StreamInfo",
    "SystemClock",
    "format_position",
    "format_timestamp",
    "new_uuid",
    "parse_position",
    "parse_timestamp",
]
