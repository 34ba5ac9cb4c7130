"""Prometheus metrics of the fan-out histories (issue 13), read from the
engine's :class:`~ipubsub.engine.HistoryStats` at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..engine import HistoryStats

__all__ = ["HistoryCollector"]


class HistoryCollector:
    """Prometheus collector for an engine's histories."""

    def __init__(self, stats: HistoryStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self._stats
        yield GaugeMetricFamily("ipubsub_history_streams", "Streams keeping a fan-out history", value=s.histories)
        yield GaugeMetricFamily("ipubsub_history_messages", "Messages held in histories", value=s.messages)
        yield GaugeMetricFamily(
            "ipubsub_history_bytes",
            "Bytes charged to histories (counted in limits.max_buffered_bytes)",
            value=s.bytes,
        )
        yield GaugeMetricFamily(
            "ipubsub_history_waiting_readers", "History reads waiting for a message", value=s.waiting_readers
        )
        yield CounterMetricFamily(
            "ipubsub_history_appended", "Messages recorded in histories", value=s.appended_total
        )
        yield CounterMetricFamily(
            "ipubsub_history_delivered", "Message copies handed to history readers", value=s.delivered_total
        )
        yield CounterMetricFamily("ipubsub_history_reads", "History reads served", value=s.reads_total)
        recoveries = CounterMetricFamily(
            "ipubsub_history_recoveries",
            "History reads that came with a position: complete (everything after it was held) "
            "or incomplete (answered recovered: false)",
            labels=["result"],
        )
        recoveries.add_metric(["complete"], s.recovered_total)
        recoveries.add_metric(["incomplete"], s.not_recovered_total)
        yield recoveries
        dropped = CounterMetricFamily(
            "ipubsub_history_dropped",
            "Messages that left a history, by reason: size (historySize), bytes (limits.max_stream_bytes), "
            "budget (limits.max_buffered_bytes), ttl (historyTTLSeconds), evicted (the stream went away)",
            labels=["reason"],
        )
        for reason, count in s.dropped.items():
            dropped.add_metric([reason], count)
        yield dropped
