"""The sections of the node configuration: frozen, typed ``msgspec.Struct``
classes, one per YAML section (``node``, ``cluster``, ``limits``, ...), with
their defaults and their own checks (``__post_init__``).

Every section rejects unknown keys, so a misspelt key stops the node at
start-up instead of being silently ignored.  Values carry their unit in their
name (``*_seconds``, ``*_bytes``).  The whole :class:`~ipubsub.config.Config`,
loading from YAML and environment overrides are :mod:`ipubsub.config`, which
re-exports every section: import them from there.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

import msgspec

from .security_config import ClusterTlsConfig, CorsConfig, HttpTlsConfig

__all__ = [
    "CassandraConfig",
    "ClusterConfig",
    "HashRingConfig",
    "HttpConfig",
    "LeasesConfig",
    "LimitsConfig",
    "LogConfig",
    "MatchConfig",
    "MongodbConfig",
    "MysqlConfig",
    "NodeConfig",
    "PostgresConfig",
    "SqliteConfig",
    "StorageBackend",
    "StorageConfig",
    "StreamConfig",
    "parse_address",
]

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
DAY_SECONDS = 86400

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonEmptyStr = Annotated[str, msgspec.Meta(min_length=1)]


def parse_address(value: str, *, allow_any_port: bool = False) -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` accepted) into its parts.

    ``allow_any_port`` accepts port 0 (a listener: the system picks a free
    port).

    Raises:
        ValueError: the value is not ``HOST:PORT`` with a port in 1..65535.
    """
    match = re.fullmatch(r"\[?([^\[\]]*?)\]?:(\d{1,5})", value)
    if match is None or not match.group(1):
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    port, lowest = int(match.group(2)), 0 if allow_any_port else 1
    if not lowest <= port <= 65535:
        raise ValueError(f"port must be {lowest}..65535, got {port}")
    return match.group(1), port


def _address(key: str, value: str, *, allow_any_port: bool = False) -> None:
    """Check a ``HOST:PORT`` setting; the error names ``key`` (see :func:`ipubsub.config._describe`).

    Raises:
        ValueError: ``key: what is wrong``.
    """
    try:
        parse_address(value, allow_any_port=allow_any_port)
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


class _Section(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class NodeConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """This node: its unique name, where it listens and how peers reach it."""

    name: NonEmptyStr = "node-1"
    listen: str = "127.0.0.1:8080"
    advertise: str = ""
    shutdown_grace_seconds: PositiveFloat = 5.0
    event_loop: Literal["auto", "asyncio", "uvloop"] = "auto"

    def __post_init__(self) -> None:
        _address("listen", self.listen, allow_any_port=True)
        if self.advertise:
            _address("advertise", self.advertise)
        else:
            # with listen port 0 the node advertises the port it was given
            msgspec.structs.force_setattr(self, "advertise", self.listen)


class ClusterConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Membership: seeds to join through and failure-detection timings."""

    name: NonEmptyStr = "local"
    seeds: list[str] = msgspec.field(default_factory=list)
    secret: str = ""
    heartbeat_interval_seconds: PositiveFloat = 0.5
    suspect_after_seconds: PositiveFloat = 1.5
    dead_after_seconds: PositiveFloat = 4.0
    forget_dead_after_seconds: PositiveFloat = 600.0
    peer_connect_timeout_seconds: PositiveFloat = 1.0
    peer_request_timeout_seconds: PositiveFloat = 3.0
    handoff_retry_seconds: PositiveFloat = 0.5
    #: where the peer link listens (``HOST:PORT``, port 0: any free port);
    #: empty: ``node.listen``'s host on a free port
    link_listen: str = ""
    #: how peers reach the link (empty: the bound ``link_listen`` address,
    #: with ``node.advertise``'s host when it listens on a wildcard address)
    link_advertise: str = ""
    #: calls in flight on one link (waiting forwarded polls included); more
    #: are refused at once with 503 ``owner_unavailable``
    link_max_in_flight: PositiveInt = 20000
    tls: ClusterTlsConfig = msgspec.field(default_factory=ClusterTlsConfig)

    def __post_init__(self) -> None:
        for seed in self.seeds:
            parse_address(seed)
        if self.link_listen:
            parse_address(self.link_listen, allow_any_port=True)
        if self.link_advertise:
            parse_address(self.link_advertise)
        if not self.heartbeat_interval_seconds < self.suspect_after_seconds:
            raise ValueError("suspect_after_seconds must exceed heartbeat_interval_seconds")
        if not self.suspect_after_seconds <= self.dead_after_seconds:
            raise ValueError("dead_after_seconds must be >= suspect_after_seconds")


class HashRingConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Consistent-hash ring shape; every node of a cluster must agree on it."""

    virtual_nodes: Annotated[int, msgspec.Meta(ge=1, le=10000)] = 160


class MatchConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Long-poll timeouts and idle-stream eviction."""

    receive_default_timeout_seconds: NonNegativeInt = 30
    receive_max_timeout_seconds: NonNegativeInt = 300
    send_max_timeout_seconds: NonNegativeInt = 300
    stream_idle_seconds: PositiveFloat = 300.0

    def __post_init__(self) -> None:
        if self.receive_default_timeout_seconds > self.receive_max_timeout_seconds:
            raise ValueError(
                "receive_default_timeout_seconds must be <= receive_max_timeout_seconds"
            )


class LimitsConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Size limits: per request, per stream and for the whole node."""

    max_message_bytes: Annotated[int, msgspec.Meta(ge=64)] = 1 * MIB
    max_stream_size: PositiveInt = 1_000_000
    max_stream_bytes: PositiveInt = 64 * MIB
    max_buffered_bytes: PositiveInt = 1 * GIB
    max_batch_messages: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    max_batch_bytes: Annotated[int, msgspec.Meta(ge=64)] = 16 * MIB
    # what one node holds at once (see docs/security.md)
    max_connections: PositiveInt = 10_000
    max_waiting_polls: PositiveInt = 100_000
    max_waiting_polls_per_stream: PositiveInt = 10_000
    max_streams: PositiveInt = 1_000_000
    # fan-out histories (historySize, historyTTLSeconds on send; see docs/design.md)
    max_history_size: PositiveInt = 100_000
    default_history_ttl_seconds: PositiveInt = 300
    max_history_ttl_seconds: PositiveInt = 86_400

    def __post_init__(self) -> None:
        if self.max_stream_bytes < self.max_message_bytes:
            raise ValueError("max_stream_bytes must be >= max_message_bytes")
        if self.max_batch_bytes < self.max_message_bytes:
            raise ValueError("max_batch_bytes must be >= max_message_bytes")
        if self.max_buffered_bytes < self.max_stream_bytes:
            raise ValueError("max_buffered_bytes must be >= max_stream_bytes")
        if self.default_history_ttl_seconds > self.max_history_ttl_seconds:
            raise ValueError("default_history_ttl_seconds must be <= max_history_ttl_seconds")


class StreamConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Streaming receive: SSE (``/api/v1/streams/subscribe``) and WebSocket
    (``/api/v1/ws``) subscribers (see docs/design.md, "Streaming receive")."""

    # an SSE comment / a WebSocket ping after this long without a message
    heartbeat_seconds: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 15
    # the SSE ``retry:`` hint: how long a browser waits before reconnecting
    sse_retry_ms: Annotated[int, msgspec.Meta(ge=0, le=600_000)] = 1000
    max_subscribers: PositiveInt = 10_000
    max_subscribers_per_stream: PositiveInt = 1_000
    max_subscriptions_per_socket: PositiveInt = 100
    # durable subscribers read the log this many messages at a time when behind
    read_batch: Annotated[int, msgspec.Meta(ge=1, le=1000)] = 100


class LeasesConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """At-least-once delivery: leases on in-memory messages (``leaseSeconds``)
    and consumer groups on durable streams (``group``)."""

    # longest leaseSeconds (SQS's visibility timeout stops at 12 h too)
    max_lease_seconds: PositiveInt = 43200
    # leaseSeconds of a group receive that gives none
    group_lease_seconds: PositiveInt = 30
    # maxDeliveries of a leased receive that gives none (0: no limit, never dead-lettered)
    max_deliveries: NonNegativeInt = 5
    # a message past maxDeliveries moves to the stream <streamId><dead_letter_suffix>
    dead_letter_suffix: NonEmptyStr = ".dead"
    # in-memory leases one node holds at once (503 too_many_leases above)
    max_leased_messages: PositiveInt = 1_000_000

    def __post_init__(self) -> None:
        if self.group_lease_seconds > self.max_lease_seconds:
            raise ValueError("group_lease_seconds must be <= max_lease_seconds")


class SqliteConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    path: NonEmptyStr = "./ipubsub-data/ipubsub.db"
    table: NonEmptyStr = "ipubsub_messages"


class PostgresConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    dsn: NonEmptyStr = "postgresql://postgres@127.0.0.1:5432/test"
    table: NonEmptyStr = "ipubsub_messages"
    pool_size: PositiveInt = 8


class MysqlConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    dsn: NonEmptyStr = "mysql://root@127.0.0.1:3306/test"
    table: NonEmptyStr = "ipubsub_messages"
    pool_size: PositiveInt = 8


class CassandraConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    hosts: list[str] = msgspec.field(default_factory=lambda: ["127.0.0.1"])
    port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 9042
    keyspace: NonEmptyStr = "ipubsub"
    table: NonEmptyStr = "messages"
    replication_factor: PositiveInt = 1
    username: str = ""
    password: str = ""


class MongodbConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    url: NonEmptyStr = "mongodb://127.0.0.1:27017"
    database: NonEmptyStr = "ipubsub"
    collection: NonEmptyStr = "messages"


StorageBackend = Literal["none", "sqlite", "postgres", "mysql", "cassandra", "mongodb"]


class StorageConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Durable log backend for ``writeToDB`` messages and its tuning."""

    backend: StorageBackend = "sqlite"
    max_ttl_seconds: PositiveInt = 365 * DAY_SECONDS
    write_batch_max: PositiveInt = 512
    sweep_interval_seconds: PositiveFloat = 10.0
    sweep_batch: PositiveInt = 1000
    reconnect_max_seconds: PositiveFloat = 5.0
    operation_timeout_seconds: PositiveFloat = 5.0
    probe_interval_seconds: PositiveFloat = 2.0
    group_idle_seconds: PositiveFloat = 7 * DAY_SECONDS
    sqlite: SqliteConfig = msgspec.field(default_factory=SqliteConfig)
    postgres: PostgresConfig = msgspec.field(default_factory=PostgresConfig)
    mysql: MysqlConfig = msgspec.field(default_factory=MysqlConfig)
    cassandra: CassandraConfig = msgspec.field(default_factory=CassandraConfig)
    mongodb: MongodbConfig = msgspec.field(default_factory=MongodbConfig)


class LogConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["text", "json"] = "text"
    access_log: bool = False


class HttpConfig(_Section, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """What the HTTP listener serves besides the API, and how it treats
    slow or oversized requests (aiohttp's parser limits surfaced)."""

    dashboard: bool = True
    # accept -> first complete request head; slow-header clients are cut off
    header_timeout_seconds: PositiveFloat = 10.0
    # idle keep-alive connections; also bounds the head of every later request
    keepalive_timeout_seconds: PositiveFloat = 30.0
    # request head received -> whole body received (408 after)
    body_timeout_seconds: PositiveFloat = 30.0
    max_line_size: Annotated[int, msgspec.Meta(ge=256)] = 8190
    max_field_size: Annotated[int, msgspec.Meta(ge=256)] = 8190
    max_headers: Annotated[int, msgspec.Meta(ge=8)] = 128
    cors: CorsConfig = msgspec.field(default_factory=CorsConfig)
    tls: HttpTlsConfig = msgspec.field(default_factory=HttpTlsConfig)
