"""Prometheus metrics of a node, read from its components at scrape time.

Each node has its own registry (several nodes can share a test process).
Stream ids never appear in labels: their number is unbounded.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..cluster.membership import MemberStatus
from .counters import REQUEST_BUCKETS, LatencyHistogram
from .snapshot import NodeSnapshot

__all__ = ["METRICS_CONTENT_TYPE", "NodeMetrics", "RequestMetrics"]

METRICS_CONTENT_TYPE = CONTENT_TYPE_LATEST


class RequestMetrics:
    """Requests by route and status with their latency."""

    def __init__(self) -> None:
        self.by_route: dict[tuple[str, ...], LatencyHistogram] = {}

    def observe(self, route: str, status: int, seconds: float) -> None:
        key = (route, str(status))
        hist = self.by_route.get(key)
        if hist is None:
            hist = self.by_route[key] = LatencyHistogram(REQUEST_BUCKETS)
        hist.observe(seconds)


def _histogram(
    name: str, doc: str, labels: list[str], series: Mapping[tuple[str, ...], LatencyHistogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, hist in sorted(series.items()):
        family.add_metric(list(values), hist.cumulative(), hist.total)
    return family


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _NodeCollector:
    def __init__(self, snapshot: Callable[[], NodeSnapshot], requests: RequestMetrics) -> None:
        self._snapshot = snapshot
        self._requests = requests

    def collect(self) -> Iterator[Metric]:
        snap = self._snapshot()
        yield _histogram(
            "ipubsub_http_request_duration_seconds",
            "HTTP requests by route and status, with their duration (long polls included)",
            ["route", "status"],
            self._requests.by_route,
        )
        calls = CounterMetricFamily(
            "ipubsub_calls", "Sends and receives by how they were served: local (owner), "
            "forwarded (to the owner), for_peer (served here for a forwarding node)", labels=["kind", "path"]
        )
        for kind, path, count in snap.calls:
            calls.add_metric([kind, path], count)
        yield calls
        s = snap.engine
        yield _gauge("ipubsub_streams", "In-memory streams held", snap.streams)
        yield _gauge("ipubsub_buffered_messages", "Messages buffered in memory", s.buffered_messages)
        yield _gauge("ipubsub_buffered_bytes", "Bytes buffered in memory", s.buffered_bytes)
        yield _gauge("ipubsub_waiting_receivers", "Long polls waiting for a message", s.waiting_receivers)
        yield _gauge("ipubsub_blocked_senders", "Senders waiting for room or a receiver", s.blocked_senders)
        yield _counter("ipubsub_messages_accepted", "Messages accepted into memory", s.accepted_total)
        yield _counter("ipubsub_messages_delivered", "In-memory messages handed to receivers", s.delivered_total)
        yield _counter("ipubsub_messages_dropped", "Messages overwritten by circular buffers", s.dropped_total)
        yield _counter("ipubsub_messages_requeued", "Messages put back after their receiver left", s.requeued_total)
        yield _counter("ipubsub_receive_timeouts", "Long polls that ended with 424", s.receive_timeouts_total)
        yield _counter("ipubsub_send_timeouts", "Blocking or sync sends that ended with 424", s.send_timeouts_total)
        yield _counter("ipubsub_waiters_released", "Waiters let go on hand-off or shutdown", s.released_total)
        yield _counter("ipubsub_streams_evicted", "Idle streams evicted", s.evicted_streams_total)
        yield from _cluster(snap)
        yield from _storage(snap)


def _cluster(snap: NodeSnapshot) -> Iterator[Metric]:
    cluster = snap.cluster
    members = GaugeMetricFamily("ipubsub_cluster_members", "Known members by status", labels=["status"])
    counts = dict.fromkeys((str(status) for status in MemberStatus), 0)
    for m in cluster.members:
        counts[str(m.status)] += 1
    for status, n in counts.items():
        members.add_metric([status], n)
    yield members
    yield _gauge("ipubsub_ring_size", "Nodes in this node's hash ring", len(cluster.ring_members))
    yield _counter("ipubsub_ring_changes", "Changes of this node's ring", cluster.ring_changes)
    handoff = CounterMetricFamily("ipubsub_handoff_messages", "Messages handed over on ring changes", labels=["direction"])
    handoff.add_metric(["out"], cluster.handed_out)
    handoff.add_metric(["in"], cluster.handed_in)
    yield handoff
    yield _counter("ipubsub_handoff_batches", "Hand-off batches delivered", cluster.handoff_batches)
    yield _gauge("ipubsub_handoff_pending_messages", "Messages in hand-offs of unknown fate", cluster.handoff_pending)


def _storage(snap: NodeSnapshot) -> Iterator[Metric]:
    storage = snap.storage
    if storage is None:
        return
    yield _gauge("ipubsub_storage_up", "1 when the database answers", 1 if storage.status == "up" else 0)
    yield _counter("ipubsub_storage_writes", "Messages written to the database", storage.writes)
    yield _counter("ipubsub_storage_batches", "Write batches (group commits)", storage.batches)
    yield _counter("ipubsub_storage_reads", "Database reads", storage.reads)
    yield _counter("ipubsub_storage_errors", "Failed database operations", storage.errors)
    yield _counter("ipubsub_storage_expired_deleted", "Expired messages deleted", storage.expired_deleted)
    yield _histogram("ipubsub_storage_write_seconds", "Duration of a batch write", [], {(): storage.write_latency})
    yield _histogram("ipubsub_storage_read_seconds", "Duration of a read", [], {(): storage.read_latency})


class NodeMetrics:
    """The Prometheus registry of one node (each node has its own, so several
    nodes can share a test process)."""

    def __init__(self, snapshot: Callable[[], NodeSnapshot], requests: RequestMetrics) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_NodeCollector(snapshot, requests))
        ProcessCollector(registry=self.registry)

    def render(self) -> bytes:
        """The exposition text (content type :data:`METRICS_CONTENT_TYPE`)."""
        return generate_latest(self.registry)
