"""What the dashboard reads of one node: its counters and gauges (sampled
into :class:`~ipubsub.dashboard.history.History`) and its summary (this
node's part of the cluster overview, also served to peers).

Both read one :class:`~ipubsub.observability.snapshot.NodeSnapshot` (plus
the per-route request counts); nothing here is proportional to the number
of streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..observability.views import health_view
from .history import GAUGES, SERIES, History, Sample

if TYPE_CHECKING:
    from ..node import Node
    from ..observability.snapshot import NodeSnapshot

__all__ = ["node_summary", "read_figures"]


def read_figures(node: Node) -> Sample:
    """Current counters and gauges of ``node`` (O(routes), never O(streams))."""
    return _figures(node, node.snapshot())


def _figures(node: Node, snapshot: NodeSnapshot) -> dict[str, float]:
    stats, storage = snapshot.engine, snapshot.storage
    forwarded = sum(n for _kind, path, n in snapshot.calls if path == "forwarded")
    errors = sum(h.count for (_route, status), h in node.request_metrics.by_route.items() if int(status) >= 500)
    return {
        "delivered": stats.delivered_total,
        "sent": stats.accepted_total + (storage.writes if storage is not None else 0),
        "forwarded": forwarded,
        "dropped": stats.dropped_total,
        "errors": errors,
        "bufferedMessages": stats.buffered_messages,
        "bufferedBytes": stats.buffered_bytes,
        "waitingReceivers": stats.waiting_receivers,
        "blockedSenders": stats.blocked_senders,
        "streams": snapshot.streams,
        "writeSeconds": storage.write_latency.total if storage is not None else 0.0,
        "writeCount": storage.write_latency.count if storage is not None else 0,
    }


def node_summary(node: Node, history: History, names: tuple[str, ...] = SERIES,
                 points: int | None = None) -> dict[str, Any]:
    """This node as the dashboard shows it: identity, ring view, totals,
    the newest point of every series and the chosen series themselves."""
    snapshot = node.snapshot()
    health = health_view(snapshot)
    cluster = snapshot.cluster
    figures = _figures(node, snapshot)
    storage = health["storage"]
    return {
        "node": node.name,
        "address": node.address,
        "status": health["status"],
        "version": health["version"],
        "uptimeSeconds": health["uptimeSeconds"],
        "ringHash": cluster.ring_hash,
        "ringVersion": cluster.ring_version,
        "ringSize": len(cluster.ring_members),
        "totals": {key: figures[key] for key in ("delivered", "sent", "forwarded", "dropped", "errors")},
        "latest": {**{key: figures[key] for key in GAUGES}, **_rates(history)},
        "storage": {"backend": storage.get("backend"), "status": storage.get("status"), "error": storage.get("error")},
        "intervalSeconds": history.interval,
        "series": history.series(names, points),
    }


def _rates(history: History) -> dict[str, Any]:
    latest = history.latest()
    rates = {name: latest.get(name, 0.0) for name in SERIES if name.endswith("PerSecond")}
    rates["storageWriteMs"] = latest.get("storageWriteMs")
    return rates
