"""A node's state at one instant, gathered from its components' snapshots.

The node builds a :class:`NodeSnapshot`; :mod:`.views` and :mod:`.metrics`
render it.  Nothing here reaches into a component.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..cluster.cluster import ClusterSnapshot
from ..engine import EngineStats
from ..storage.durable import StorageSnapshot

__all__ = ["NodeSnapshot", "NodeState", "ProcessSnapshot"]


class NodeState(enum.StrEnum):
    """Lifecycle of a node: ``new`` → ``running`` → ``draining`` → ``stopped``."""

    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class ProcessSnapshot:
    pid: int
    cpu_seconds: float
    max_rss_bytes: int


@dataclass(frozen=True, slots=True)
class NodeSnapshot:
    """Everything /health, /api/v1/cluster and /metrics show about a node.

    ``engine`` is a copy of the engine's counters; ``calls`` are
    ``(kind, path, count)`` rows (see :class:`~.counters.CallCounts`).
    """

    node: str
    version: str
    state: NodeState
    uptime_seconds: float
    streams: int
    engine: EngineStats
    cluster: ClusterSnapshot
    storage: StorageSnapshot | None
    calls: tuple[tuple[str, str, int], ...]
    process: ProcessSnapshot
