"""The cluster as the dashboard shows it, gathered by the node the browser
talks to (a browser cannot reach the other nodes' addresses, e.g. inside
Kubernetes).

One gathering asks every member in the ring for its summary, at most
``concurrency`` at a time, each within ``timeout`` seconds, the whole within
two timeouts; its result is cached for ``ttl`` seconds and shared by every
page asking meanwhile, so N open pages cost one gathering per ``ttl``.  A
member that does not answer is shown with its last summary, marked stale.
Per member the answer carries a few numbers and one short series: with 100
nodes it stays around 100 KB, and nothing in it grows with the number of
streams.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ..errors import BadRequest
from ..observability.views import cluster_view
from ..protocol import INTERNAL_DASHBOARD_SUMMARY_PATH
from ..tasks import cancel_tasks
from .figures import node_summary
from .history import SERIES, History
from .peer import PeerAnswer, PeerUnreachable, ask_peer

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["OVERVIEW_SERIES", "ClusterOverview"]
# Series every member sends for the cluster charts; the browser gets their
# sums, plus each member's delivered/s as its sparkline.
OVERVIEW_SERIES = ("deliveredPerSecond", "sentPerSecond", "forwardedPerSecond")
SPARK = "deliveredPerSecond"

AskSummary = Callable[[str, dict[str, Any], float], Awaitable[dict[str, Any]]]


class ClusterOverview:
    """This node's view of the cluster with every member's summary.

    Args:
        node: this node.
        history: this node's history.
        ttl: seconds a gathering is reused.
        timeout: seconds one member has to answer.
        concurrency: members asked at the same time.
        points: points of each series (``points * history.interval`` seconds).
        ask: ``ask(address, request, timeout)`` -> a peer's summary (default:
            the internal endpoint through :func:`~.peer.ask_peer`).
    """

    def __init__(self, node: Node, history: History, *, ttl: float = 2.0, timeout: float = 1.0,
                 concurrency: int = 16, points: int = 90, ask: AskSummary | None = None) -> None:
        self._node = node
        self._history = history
        self._ttl = ttl
        self._timeout = timeout
        self._limit = asyncio.Semaphore(concurrency)
        self._points = points
        self._ask = ask or self._ask_peer
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._gathering: asyncio.Task[dict[str, Any]] | None = None
        # name -> (monotonic time, summary): shown, marked stale, when a member is silent
        self._last: dict[str, tuple[float, dict[str, Any]]] = {}
        self.gatherings_total = 0

    async def close(self) -> None:
        task, self._gathering = self._gathering, None
        await cancel_tasks([task])

    async def get(self) -> dict[str, Any]:
        """The overview, at most ``ttl`` seconds old."""
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        if self._gathering is None:
            self._gathering = asyncio.get_running_loop().create_task(
                self._gather(), name="ipubsub-dashboard-gather"
            )
        # shield: a page that goes away must not cancel the others' gathering.
        return await asyncio.shield(self._gathering)

    def summary(self, request: dict[str, Any]) -> dict[str, Any]:
        """This node's summary as a peer asks for it: ``series`` (names;
        ``null``: all) and ``points`` (``null``: all kept).

        Raises:
            BadRequest: ``series`` is not a list of names or ``points`` not a count.
        """
        names, points = request.get("series"), request.get("points")
        if names is not None and not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
            raise BadRequest("series must be a list of series names", field="series")
        if points is not None and (not isinstance(points, int) or isinstance(points, bool) or points < 0):
            raise BadRequest("points must be a non-negative integer", field="points")
        return node_summary(self._node, self._history, SERIES if names is None else tuple(names), points)

    async def _ask_peer(self, address: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
        return await ask_peer(self._node.cluster, address, INTERNAL_DASHBOARD_SUMMARY_PATH, request, timeout)

    async def _gather(self) -> dict[str, Any]:
        try:
            overview = await self._build()
            self._cached = (time.monotonic(), overview)
            self.gatherings_total += 1
            return overview
        finally:
            self._gathering = None

    async def _build(self) -> dict[str, Any]:
        node = self._node
        view = cluster_view(node.cluster.snapshot())
        ring = node.cluster.ring
        shares = ring.shares()
        members = sorted(cast(list[dict[str, Any]], view["members"]), key=lambda m: str(m["name"]))
        request = {"series": list(OVERVIEW_SERIES), "points": self._points}
        local = node_summary(node, self._history, OVERVIEW_SERIES, self._points)
        loop = asyncio.get_running_loop()
        asks = {
            m["name"]: loop.create_task(self._one(m["address"], request), name=f"ipubsub-dashboard-ask-{m['name']}")
            for m in members
            if m["name"] != node.name and m["name"] in ring
        }
        if asks:
            await asyncio.wait(asks.values(), timeout=2 * self._timeout)
        await cancel_tasks(asks.values())  # the late ones; the others are done
        now = time.monotonic()
        rows = []
        fresh: list[dict[str, Any]] = []
        for m in members:
            name = m["name"]
            row = {**m, "ringShare": round(shares.get(name, 0.0), 6), "inRing": name in ring}
            summary: dict[str, Any] | None
            if name == node.name:
                summary, error = local, None
            elif name in asks:
                summary, error = _result(asks[name], self._timeout)
            else:
                summary, error = None, f"not in the ring ({m['status']})"
            if summary is not None:
                self._last[name] = (now, summary)
                fresh.append(summary)
                row.update(_compact(summary), reachable=True, stale=False, error=None)
            else:
                last = self._last.get(name)
                if last is not None:
                    row.update(_compact(last[1]), stale=True, ageSeconds=round(now - last[0], 1))
                row.update(reachable=False, error=error)
            row["ringHashMatches"] = row.get("ringHash") == ring.fingerprint if "ringHash" in row else None
            rows.append(row)
        for gone in set(self._last) - {m["name"] for m in members}:
            del self._last[gone]
        hashes = Counter(s["ringHash"] for s in fresh)
        return {
            "self": node.name,
            "cluster": view["cluster"],
            "generatedAt": int(time.time() * 1000),
            "cacheSeconds": self._ttl,
            "intervalSeconds": self._history.interval,
            "ringHash": ring.fingerprint,
            "ringVersion": ring.version,
            "ringMembers": len(ring),
            "virtualNodes": view["virtualNodes"],
            "ringAgreement": {
                "agreed": len(hashes) == 1 and len(fresh) == len(ring),
                "answered": len(fresh),
                "sameAsHere": hashes.get(ring.fingerprint, 0),
            },
            "totals": _totals(fresh),
            "series": _sum_series(fresh),
            "members": rows,
        }

    async def _one(self, address: str, request: dict[str, Any]) -> dict[str, Any]:
        async with self._limit:
            return await self._ask(address, request, self._timeout)


def _result(task: asyncio.Future[dict[str, Any]], timeout: float) -> tuple[dict[str, Any] | None, str | None]:
    if task.cancelled():
        return None, f"no answer within {2 * timeout:g} s"
    exc = task.exception()
    if isinstance(exc, (PeerUnreachable, PeerAnswer)):
        return None, str(exc)
    if exc is not None:
        return None, f"{type(exc).__name__}: {exc}"
    return task.result(), None


def _compact(summary: dict[str, Any]) -> dict[str, Any]:
    """What the member table needs of a summary: no series but the sparkline."""
    out = {k: v for k, v in summary.items() if k not in ("series", "node", "address", "status")}
    out["health"] = summary.get("status")
    out["spark"] = summary.get("series", {}).get(SPARK, [])
    return out


def _totals(summaries: list[dict[str, Any]]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for summary in summaries:
        for part in ("totals", "latest"):
            for key, value in summary.get(part, {}).items():
                if isinstance(value, (int, float)) and key != "storageWriteMs":
                    totals[key] = totals.get(key, 0) + value
    return {k: round(v, 2) for k, v in totals.items()}


def _sum_series(summaries: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Each series summed over the members, aligned on their newest points
    (members sample on their own clocks: points differ by up to one interval)."""
    series = [s.get("series", {}) for s in summaries]
    length = max((len(one.get("t", [])) for one in series), default=0)
    times: list[Any] = next((one["t"] for one in series if len(one.get("t", [])) == length), [])
    out: dict[str, list[Any]] = {"t": list(times)}
    for name in OVERVIEW_SERIES:
        total = [0.0] * length
        for one in series:
            values = one.get(name, [])[-length:] if length else []
            offset = length - len(values)
            for i, value in enumerate(values):
                total[offset + i] += value or 0.0
        out[name] = [round(v, 2) for v in total]
    return out
