"""Watches every node's ring while the checker runs, and writes each change
to the history (``ev: ring``), so the analysis knows when the cluster's
nodes disagreed on who owns what — including the changes no fault caused
(a member falsely suspected under load)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiohttp

from ..protocol import CLUSTER_PATH
from .history import History

__all__ = ["RingMonitor", "get_json"]

#: ``(name, url)`` of the nodes to watch now (a paused node left out)
Targets = Callable[[], list[tuple[str, str]]]


async def get_json(http: aiohttp.ClientSession, url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """GET a node's JSON view (``None`` if it does not answer 200 in time)."""
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return await resp.json() if resp.status == 200 else None
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return None


class RingMonitor:
    """Polls ``/api/v1/cluster`` of each target every ``interval`` seconds;
    one history line per change of a node's view."""

    def __init__(self, targets: Targets, history: History, interval: float = 0.25) -> None:
        self.targets = targets
        self.history = history
        self.interval = interval
        self.changes = 0
        self._views: dict[str, tuple[str, ...]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._watch(), name="check-ring-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _watch(self) -> None:
        first = True  # the views at the start are not changes
        async with aiohttp.ClientSession() as http:
            while True:
                targets = self.targets()
                bodies = await asyncio.gather(*(get_json(http, url + CLUSTER_PATH, 1.0) for _, url in targets))
                for (name, _), body in zip(targets, bodies):
                    if body is None:
                        continue
                    view = tuple(sorted(body.get("ringMembers", [])))
                    if self._views.get(name) != view:
                        self._views[name] = view
                        event = {"ev": "ring", "t": self.history.now(), "node": name, "members": list(view)}
                        if first:
                            event["initial"] = True
                        else:
                            self.changes += 1
                        self.history.write(event)
                first = False
                await asyncio.sleep(self.interval)
