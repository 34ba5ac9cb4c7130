"""Watches every running node's ring while the checker runs, and writes each
change to the history (``ev: ring``), so the analysis knows when the
cluster's nodes disagreed on who owns what — including the changes no fault
caused (a member falsely suspected under load)."""

from __future__ import annotations

import asyncio

from ..protocol import CLUSTER_PATH
from .cluster import LocalCluster
from .history import History

__all__ = ["RingMonitor"]


class RingMonitor:
    """Polls ``/api/v1/cluster`` of each running, unpaused node every
    ``interval`` seconds; one history line per change of a node's view."""

    def __init__(self, cluster: LocalCluster, history: History, interval: float = 0.25) -> None:
        self.cluster = cluster
        self.history = history
        self.interval = interval
        self.changes = 0
        self._views: dict[str, tuple[str, ...] | None] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="check-ring-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        first = True  # the views at the start are not changes
        while True:
            nodes = [n for n in self.cluster.running if not n.paused]
            bodies = await asyncio.gather(*(self.cluster.get_json(n, CLUSTER_PATH, timeout=1.0) for n in nodes))
            for node, body in zip(nodes, bodies):
                if body is None:
                    continue
                view = tuple(sorted(body.get("ringMembers", [])))
                if self._views.get(node.name) != view:
                    self._views[node.name] = view
                    event = {"ev": "ring", "t": self.history.now(), "node": node.name, "members": list(view)}
                    if first:
                        event["initial"] = True
                    else:
                        self.changes += 1
                    self.history.write(event)
            first = False
            for node in self.cluster.nodes:
                if not node.up:
                    self._views.pop(node.name, None)  # a restarted node's first view is a change
            await asyncio.sleep(self.interval)
