"""What the dashboard reads of one node: its counters and gauges (sampled
into :class:`~ipubsub.dashboard.history.History`) and its summary (this
node's part of the cluster overview, also served to peers).

This is the only module of the dashboard that reads the node's components;
nothing here is proportional to the number of streams."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..observability.views import health_view
from .history import SERIES, History, Sample

if TYPE_CHECKING:
    from ..node import Node

__all__ = ["node_summary", "read_figures"]


def read_figures(node: Node) -> Sample:
    """Current counters and gauges of ``node`` (O(routes), never O(streams))."""
    stats = node.engine.stats
    durable = node.durable
    forwarded = sum(n for _kind, path, n in node.calls.items() if path == "forwarded")
    errors = sum(h.count for (_route, status), h in node.request_metrics.by_route.items() if int(status) >= 500)
    return {
        "delivered": stats.delivered_total,
        "sent": stats.accepted_total + (durable.writes_total if durable is not None else 0),
        "forwarded": forwarded,
        "dropped": stats.dropped_total,
        "errors": errors,
        "bufferedMessages": stats.buffered_messages,
        "bufferedBytes": stats.buffered_bytes,
        "waitingReceivers": stats.waiting_receivers,
        "blockedSenders": stats.blocked_senders,
        "streams": node.engine.stream_count,
        "writeSeconds": durable.write_latency.total if durable is not None else 0.0,
        "writeCount": durable.write_latency.count if durable is not None else 0,
    }


def node_summary(node: Node, history: History, names: tuple[str, ...] = SERIES,
                 points: int | None = None) -> dict[str, Any]:
    """This node as the dashboard shows it: identity, ring view, totals,
    the newest point of every series and the chosen series themselves."""
    health = health_view(node.snapshot())
    ring = node.cluster.ring
    counters = health["counters"]
    assert isinstance(counters, dict)
    storage = health["storage"]
    assert isinstance(storage, dict)
    figures = read_figures(node)
    return {
        "node": node.name,
        "address": node.address,
        "status": health["status"],
        "version": health["version"],
        "uptimeSeconds": health["uptimeSeconds"],
        "ringHash": ring.fingerprint,
        "ringVersion": ring.version,
        "ringSize": len(ring),
        "totals": {
            "delivered": figures["delivered"],
            "sent": figures["sent"],
            "forwarded": figures["forwarded"],
            "dropped": figures["dropped"],
            "errors": figures["errors"],
        },
        "latest": {**{name: figures.get(name) for name in ("bufferedMessages", "bufferedBytes", "waitingReceivers",
                                                           "blockedSenders", "streams")},
                   **_rates(history)},
        "storage": {"backend": storage.get("backend"), "status": storage.get("status"), "error": storage.get("error")},
        "intervalSeconds": history.interval,
        "series": history.series(names, points),
    }


def _rates(history: History) -> dict[str, Any]:
    latest = history.latest()
    rates = {name: latest.get(name, 0.0) for name in SERIES if name.endswith("PerSecond")}
    rates["storageWriteMs"] = latest.get("storageWriteMs")
    return rates
