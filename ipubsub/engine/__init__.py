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
from .message import Message, format_timestamp, new_uuid, parse_timestamp
from .parked import Deliver, Parked
from .stats import EngineStats, StreamInfo
from .stream import Released

__all__ = [
    "DEFAULT_STREAM_SIZE",
    "Clock",
    "Deliver",
    "Engine",
    "EngineStats",
    "HeldLease",
    "HistoryEntry",
    "HistoryRead",
    "HistorySpec",
    "HistoryState",
    "HistoryStats",
    "Lease",
    "LeaseStats",
    "Leases",
    "ManualClock",
    "Message",
    "Parked",
    "ParkedRead",
    "Position",
    "ReadDeliver",
    "Released",
    "StreamInfo",
    "SystemClock",
    "format_position",
    "format_timestamp",
    "new_uuid",
    "parse_position",
    "parse_timestamp",
]
