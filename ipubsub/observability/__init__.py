"""What a node tells its operators: logs, counters, snapshots of its
components, and their renderings as /health, /api/v1/cluster and /metrics.

Submodules are imported directly (``ipubsub.observability.counters`` is
used on hot paths and by storage; ``metrics`` pulls in prometheus-client).
"""
