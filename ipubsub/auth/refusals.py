"""Counters of everything the node refused to protect itself or its
streams (auth failures, limits, timeouts), exported to ``/metrics`` as
``ipubsub_refused_total{reason=...}`` plus a gauge of open connections."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

__all__ = ["REASONS", "Refusals", "RefusalsCollector"]

#: every reason a request or connection can be refused for (each is exported, 0 included)
REASONS = (
    "missing_credentials",
    "invalid_credentials",
    "credentials_expired",
    "stream_forbidden",
    "admin_required",
    "query_token_not_allowed",
    "rate_limited",
    "too_many_auth_failures",
    "bad_cluster_secret",
    "too_many_connections",
    "header_timeout",
    "body_timeout",
    "body_too_large",
    "too_many_polls",
    "too_many_stream_polls",
    "too_many_streams",
    "invalid_utf8",
    "line_too_long",
    "too_many_headers",
    "bad_http_request",
)


class Refusals:
    """Plain counters (the hot path only bumps a dict entry)."""

    __slots__ = ("counts",)

    def __init__(self) -> None:
        self.counts: dict[str, int] = dict.fromkeys(REASONS, 0)

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1

    def __getitem__(self, reason: str) -> int:
        return self.counts.get(reason, 0)


class RefusalsCollector:
    """Prometheus collector for a node's :class:`Refusals`."""

    def __init__(self, refusals: Refusals, open_connections: Callable[[], int]) -> None:
        self._refusals = refusals
        self._open_connections = open_connections

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "ipubsub_refused", "Requests and connections refused, by reason (auth, limits, timeouts)",
            labels=["reason"],
        )
        for reason, count in sorted(self._refusals.counts.items()):
            family.add_metric([reason], count)
        yield family
        yield GaugeMetricFamily(
            "ipubsub_http_connections", "Open connections on the public listener", value=self._open_connections()
        )
