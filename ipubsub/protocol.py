"""The wire contract of ipubsub, in one place: every HTTP path, header name
and content type, and the shapes of the public requests and replies.

The server (``ipubsub.api``), the cluster layer, the Python client and the
benchmarks all import these names; nothing else spells a path or a header.
Message payloads travel as ``msgspec.Raw``: the exact JSON text the sender
wrote, never decoded and re-encoded on the way.
"""

from __future__ import annotations

from typing import Final

import msgspec

__all__ = [
    "ACCESS_TOKEN_PARAM",
    "ACK_PATH",
    "AUTHORIZATION_HEADER",
    "CLUSTER_PATH",
    "DASHBOARD_NODE_PATH",
    "DASHBOARD_OVERVIEW_PATH",
    "DASHBOARD_PATH",
    "DASHBOARD_STREAM_PATH",
    "FORWARDED_HEADER",
    "FROM_HISTORY_PARAM",
    "GROUPS_PATH",
    "HEALTH_PATH",
    "INFO_PATH",
    "INTERNAL_DASHBOARD_STREAM_PATH",
    "INTERNAL_DASHBOARD_SUMMARY_PATH",
    "INTERNAL_GOSSIP_PATH",
    "INTERNAL_LEAVE_PATH",
    "JSON_CONTENT_TYPE",
    "METRICS_PATH",
    "NACK_PATH",
    "OPENAPI_PATH",
    "OWNER_PATH",
    "POSITION_PARAM",
    "RECEIVE_PATH",
    "REQUEST_ID_HEADER",
    "RETRY_AFTER_HEADER",
    "RING_HEADER",
    "SECRET_HEADER",
    "SEND_BATCH_PATH",
    "SEND_PATH",
    "STRICT_RECOVERY_PARAM",
    "WWW_AUTHENTICATE_HEADER",
    "AckBody",
    "AckReply",
    "BatchItemError",
    "ErrorReply",
    "GroupReply",
    "GroupsReply",
    "HistoryMessage",
    "HistoryReply",
    "NackBody",
    "NackReply",
    "OwnerReply",
    "ReceiveBatchReply",
    "ReceiveReply",
    "SendBatchBody",
    "SendBatchReply",
    "SendBody",
    "SendReply",
]

# -- public paths ---------------------------------------------------------------

INFO_PATH: Final = "/"
HEALTH_PATH: Final = "/health"
METRICS_PATH: Final = "/metrics"
SEND_PATH: Final = "/api/v1/streams/send"
SEND_BATCH_PATH: Final = "/api/v1/streams/sendBatch"
RECEIVE_PATH: Final = "/api/v1/streams/receive"
OWNER_PATH: Final = "/api/v1/streams/owner"
CLUSTER_PATH: Final = "/api/v1/cluster"
OPENAPI_PATH: Final = "/api/v1/openapi.json"
# at-least-once delivery (leases and consumer groups)
ACK_PATH: Final = "/api/v1/streams/ack"
NACK_PATH: Final = "/api/v1/streams/nack"
#: GET lists a stream's consumer groups, DELETE removes one
GROUPS_PATH: Final = "/api/v1/streams/groups"

# -- internal paths (node to node, guarded by cluster.secret) ---------------------

INTERNAL_GOSSIP_PATH: Final = "/internal/v1/gossip"
INTERNAL_LEAVE_PATH: Final = "/internal/v1/leave"

# -- the operators' dashboard (only with http.dashboard: true) ----------------------

#: the page; its files are ``DASHBOARD_PATH + "/" + name``
DASHBOARD_PATH: Final = "/dashboard"
#: the JSON the page polls (the page's own, not a stable API)
DASHBOARD_OVERVIEW_PATH: Final = "/dashboard/api/overview"
DASHBOARD_NODE_PATH: Final = "/dashboard/api/node"
DASHBOARD_STREAM_PATH: Final = "/dashboard/api/stream"
#: what a node asks a peer for its dashboard (internal, guarded by cluster.secret)
INTERNAL_DASHBOARD_SUMMARY_PATH: Final = "/internal/v1/dashboard/summary"
INTERNAL_DASHBOARD_STREAM_PATH: Final = "/internal/v1/dashboard/stream"

# -- headers ----------------------------------------------------------------------

#: a caller's correlation id, echoed on the answer and passed to the owner
REQUEST_ID_HEADER: Final = "X-Request-Id"
#: formerly set by a node forwarding a call over HTTP; forwarded calls now
#: travel on the authenticated peer link and the public API ignores it
FORWARDED_HEADER: Final = "X-IPubSub-Forwarded-By"
#: on every answer: the hash of the answering node's ring (equal on nodes
#: whose rings hold the same members); a client that routes by owner
#: refreshes its member list when it changes
RING_HEADER: Final = "X-IPubSub-Ring"
#: the cluster secret on internal calls
SECRET_HEADER: Final = "X-IPubSub-Secret"
RETRY_AFTER_HEADER: Final = "Retry-After"
#: ``Bearer <API key or JWT>`` (see docs/security.md)
AUTHORIZATION_HEADER: Final = "Authorization"
WWW_AUTHENTICATE_HEADER: Final = "WWW-Authenticate"
#: a JWT in the query, for receive/subscribe only (EventSource cannot set headers); never logged
ACCESS_TOKEN_PARAM: Final = "access_token"

JSON_CONTENT_TYPE: Final = "application/json"

# -- public request and reply shapes ------------------------------------------------


class SendBody(msgspec.Struct):
    """The body of ``POST /api/v1/streams/send`` as the server decodes it.

    Fields are typed loosely on purpose where iPubSub clients send zero
    values for unset fields (see ``ipubsub.api.codec`` for the meaning of
    each value and docs/design.md for the differences from iPubSub).
    """

    streamId: str
    message: msgspec.Raw
    messageUuid: str | None = None
    inMemoryStreamSize: int | None = None
    blockingSendTimeoutSeconds: int | None = None
    writeToDB: bool | None = None
    dbTTLSeconds: int | None = None
    historySize: int | None = None
    historyTTLSeconds: int | None = None


class SendReply(msgspec.Struct, omit_defaults=True):
    """200 answer of a send."""

    messageUuid: str
    dbResumeToken: str | None = None


class ReceiveReply(msgspec.Struct, omit_defaults=True):
    """200 answer of a receive: one message (``dbResumeToken`` for durable
    reads; ``receipt`` and ``deliveryCount`` for a leased delivery, see
    :class:`AckBody`)."""

    messageUuid: str
    message: msgspec.Raw
    timestamp: str
    dbResumeToken: str | None = None
    receipt: str | None = None
    deliveryCount: int | None = None


class OwnerReply(msgspec.Struct):
    """200 answer of ``GET /api/v1/streams/owner``."""

    streamId: str
    node: str
    address: str


class ErrorReply(msgspec.Struct, omit_defaults=True):
    """Every non-200 answer: a text, a stable machine-readable code and,
    depending on the error, extra fields (``field``, ``limit``, ...)."""

    error: str
    code: str


# -- batches (an extension: iPubSub clients never see these shapes) ------------------


class SendBatchBody(msgspec.Struct):
    """The body of ``POST /api/v1/streams/sendBatch``: items with the fields
    of a send, each decoded and validated on its own (``msgspec.Raw``) so that
    one bad item fails alone."""

    messages: list[msgspec.Raw]


class BatchItemError(msgspec.Struct, omit_defaults=True):
    """The result of a batch item that failed: its HTTP status, code and text
    (plus ``field`` where one field is to blame)."""

    status: int
    code: str
    error: str
    field: str | None = None


class SendBatchReply(msgspec.Struct):
    """200 answer of a batch send: one result per item, in request order;
    each is a :class:`SendReply` or a :class:`BatchItemError`."""

    results: list[msgspec.Raw]


class ReceiveBatchReply(msgspec.Struct, omit_defaults=True):
    """200 answer of a receive with ``maxMessages``: 1 to N messages, oldest
    first; for durable reads ``dbResumeToken`` resumes after the last one."""

    messages: list[ReceiveReply]
    dbResumeToken: str | None = None


# -- at-least-once delivery (an extension: leases, ack/nack, consumer groups) --------


class AckBody(msgspec.Struct):
    """The body of ``POST /api/v1/streams/ack``: the receipt of a leased
    delivery (or ``receipts``, several of one stream).  ``group`` may be
    given for a group's receipt (the receipt names its group anyway)."""

    streamId: str
    receipt: str | msgspec.UnsetType = msgspec.UNSET
    receipts: list[str] | msgspec.UnsetType = msgspec.UNSET
    group: str | msgspec.UnsetType = msgspec.UNSET


class NackBody(msgspec.Struct):
    """The body of ``POST /api/v1/streams/nack``: like :class:`AckBody`, and
    ``delaySeconds`` before the message may be delivered again (default 0)."""

    streamId: str
    receipt: str | msgspec.UnsetType = msgspec.UNSET
    receipts: list[str] | msgspec.UnsetType = msgspec.UNSET
    group: str | msgspec.UnsetType = msgspec.UNSET
    delaySeconds: float | msgspec.UnsetType = msgspec.UNSET


class AckReply(msgspec.Struct, omit_defaults=True):
    """200 answer of an ack: how many leases it ended; with ``receipts``,
    also those that named no lease held now (``notFound``)."""

    acked: int
    notFound: list[str] | None = None


class NackReply(msgspec.Struct, omit_defaults=True):
    """200 answer of a nack (see :class:`AckReply`)."""

    nacked: int
    notFound: list[str] | None = None


class GroupReply(msgspec.Struct):
    """One consumer group of a durable stream: messages never delivered to
    it (``lag``), delivered and not acknowledged (``pending``), the age of
    the oldest of those (``oldestPendingAgeSeconds``, ``null`` when none)
    and when it was last used."""

    group: str
    lag: int
    pending: int
    oldestPendingAgeSeconds: float | None
    lastActive: str


class GroupsReply(msgspec.Struct):
    """200 answer of ``GET /api/v1/streams/groups``."""

    streamId: str
    groups: list[GroupReply]


# -- fan-out histories (an extension: receive?fromHistory=true) ------------------------

#: the query parameters of a history read (with ``streamId``, ``timeoutSeconds``
#: and ``maxMessages``)
FROM_HISTORY_PARAM: Final = "fromHistory"
POSITION_PARAM: Final = "position"
STRICT_RECOVERY_PARAM: Final = "strictRecovery"


class HistoryMessage(msgspec.Struct):
    """One message of a history read: a receive answer plus its ``position``
    (opaque: the owner's history epoch and the message's offset; read after
    it to go on)."""

    messageUuid: str
    message: msgspec.Raw
    timestamp: str
    position: str


class HistoryReply(msgspec.Struct, omit_defaults=True):
    """200 answer of ``receive?fromHistory=true``: 0 to ``maxMessages``
    messages, oldest first, and the ``position`` to read after next time
    (``null`` while the stream keeps no history yet).

    ``recovered`` is set when the read came with a ``position``: ``true``
    when everything after it was still held, ``false`` when not — then
    ``messages`` is empty, ``position`` is the oldest available position and
    ``gap`` says why (``epoch``: the history was recreated — owner restart,
    eviction, a new owner without it; ``window``: the messages after it left
    the history).  An answer with no messages after the timeout keeps the
    reader's position."""

    messages: list[msgspec.Raw]
    position: str | None
    recovered: bool | None = None
    gap: str | None = None


# -- streaming receive: Server-Sent Events and WebSocket (docs/design.md) ----------

__all__ += [
    "EVENT_STREAM_CONTENT_TYPE",
    "LAST_EVENT_ID_HEADER",
    "LAST_EVENT_ID_PARAM",
    "SUBSCRIBE_PATH",
    "WS_PATH",
]

#: ``GET``: a ``text/event-stream`` of the stream's messages (SSE)
SUBSCRIBE_PATH: Final = "/api/v1/streams/subscribe"
#: ``GET`` + Upgrade: JSON text frames (send, subscribe, credit, unsubscribe)
WS_PATH: Final = "/api/v1/ws"
EVENT_STREAM_CONTENT_TYPE: Final = "text/event-stream"
#: sent by a reconnecting EventSource: the id of the last event it got
LAST_EVENT_ID_HEADER: Final = "Last-Event-ID"
#: the same as a query parameter (a first connection that resumes; the header wins)
LAST_EVENT_ID_PARAM: Final = "lastEventId"
