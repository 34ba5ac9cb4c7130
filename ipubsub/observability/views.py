"""The JSON bodies of ``GET /health`` and ``GET /api/v1/cluster``, rendered
from snapshots (pure functions: no I/O, no component access)."""

from __future__ import annotations

from typing import Any

from ..cluster.cluster import ClusterSnapshot
from ..cluster.membership import MemberStatus
from ..storage.durable import StorageSnapshot
from .snapshot import NodeSnapshot, NodeState

__all__ = ["cluster_view", "health_view", "is_healthy"]

# Clients see a member that announced its leave as dead: it owns nothing.
_PUBLIC_STATUS = {
    MemberStatus.ALIVE: "alive",
    MemberStatus.SUSPECT: "suspect",
    MemberStatus.DEAD: "dead",
    MemberStatus.LEFT: "dead",
}


def is_healthy(snapshot: NodeSnapshot) -> bool:
    """Whether /health answers 200 (the node is running and serving)."""
    return snapshot.state is NodeState.RUNNING


def health_view(snapshot: NodeSnapshot) -> dict[str, Any]:
    """The /health body: ``status`` is ``ok`` while serving, else the state."""
    stats = snapshot.engine
    return {
        "status": "ok" if is_healthy(snapshot) else str(snapshot.state),
        "node": snapshot.node,
        "version": snapshot.version,
        "uptimeSeconds": round(snapshot.uptime_seconds, 3),
        "streams": snapshot.streams,
        "bufferedMessages": stats.buffered_messages,
        "bufferedBytes": stats.buffered_bytes,
        "waitingReceivers": stats.waiting_receivers,
        "blockedSenders": stats.blocked_senders,
        "droppedMessages": stats.dropped_total,
        "cluster": _cluster_counters(snapshot.cluster),
        "storage": _storage_view(snapshot.storage),
        "counters": {
            "accepted": stats.accepted_total,
            "delivered": stats.delivered_total,
            "dropped": stats.dropped_total,
            "receiveTimeouts": stats.receive_timeouts_total,
            "sendTimeouts": stats.send_timeouts_total,
            "requeued": stats.requeued_total,
            "released": stats.released_total,
            "evictedStreams": stats.evicted_streams_total,
            "handedIn": stats.handed_in_total,
            "handedOut": stats.handed_out_total,
        },
        "process": {
            "pid": snapshot.process.pid,
            "cpuSeconds": round(snapshot.process.cpu_seconds, 6),
            "maxRssBytes": snapshot.process.max_rss_bytes,
        },
    }


def cluster_view(cluster: ClusterSnapshot) -> dict[str, Any]:
    """The /api/v1/cluster body: this node's members and ring.

    ``ringHash`` is equal on nodes whose rings agree; ``ringVersion`` only
    counts this node's own ring changes.
    """
    return {
        "self": cluster.node,
        "cluster": cluster.cluster,
        "members": [
            {"name": m.name, "address": m.address, "status": _PUBLIC_STATUS[m.status], "incarnation": m.incarnation}
            for m in cluster.members
        ],
        "ringVersion": cluster.ring_version,
        "ringHash": cluster.ring_hash,
        "ringMembers": list(cluster.ring_members),
        "virtualNodes": cluster.virtual_nodes,
    }


def _cluster_counters(cluster: ClusterSnapshot) -> dict[str, Any]:
    return {
        "members": len(cluster.members),
        "alive": sum(1 for m in cluster.members if m.status is MemberStatus.ALIVE),
        "ringSize": len(cluster.ring_members),
        "ringVersion": cluster.ring_version,
        "ringHash": cluster.ring_hash,
        "ringChanges": cluster.ring_changes,
        "forwarded": cluster.forwarded,
        "handedOutMessages": cluster.handed_out,
        "handedInMessages": cluster.handed_in,
        "handoffPending": cluster.handoff_pending,
        "link": {
            "listen": cluster.link_listen,
            "advertise": cluster.link_advertise,
            "peersConnected": cluster.link["out_connected"],
            "callsOut": cluster.link["out_calls"],
            "callsIn": cluster.link["in_calls"],
            "connectionsIn": cluster.link["in_connections"],
            "refused": cluster.link["in_refused"],
        },
    }


def _storage_view(storage: StorageSnapshot | None) -> dict[str, Any]:
    if storage is None:
        return {"backend": "none"}
    return {
        "backend": storage.backend,
        "status": str(storage.status),
        "error": storage.error,
        "pendingWrites": storage.pending_writes,
        "writes": storage.writes,
        "batches": storage.batches,
        "reads": storage.reads,
        "errors": storage.errors,
        "expiredDeleted": storage.expired_deleted,
    }
