"""What the client sends and gets back: request bodies and queries, and the
typed results parsed from the server's JSON.  Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from ..protocol import ACK_PATH, CLUSTER_PATH, GROUPS_PATH, NACK_PATH, RECEIVE_PATH, SEND_PATH

__all__ = [
    "ACK_PATH",
    "CLUSTER_PATH",
    "GROUPS_PATH",
    "NACK_PATH",
    "RECEIVE_PATH",
    "SEND_PATH",
    "ClusterView",
    "GroupInfo",
    "LeasedMessage",
    "Member",
    "ReceivedMessage",
    "SendResult",
    "lease_body",
    "parse_cluster",
    "parse_groups",
    "parse_leased",
    "parse_received",
    "parse_sent",
    "receive_query",
    "send_body",
    "whole_seconds",
]


encode_json = msgspec.json.encode
decode_json = msgspec.json.decode


@dataclass(frozen=True, slots=True)
class SendResult:
    """A message the server accepted.

    Attributes:
        uuid: the message's ``messageUuid`` (the caller's, or one the client
            generated).
        token: for persisted sends, the ``dbResumeToken`` right after this
            message in the stream's durable log; ``None`` otherwise.
    """

    uuid: str
    token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The server's answer as JSON keys (``messageUuid``, ``dbResumeToken``)."""
        out: dict[str, Any] = {"messageUuid": self.uuid}
        if self.token is not None:
            out["dbResumeToken"] = self.token
        return out


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """One received message.

    Attributes:
        uuid: the ``messageUuid`` the sender set or the server generated.
        message: the JSON payload decoded to Python values (dict, list, str,
            int, float, bool or None), types kept as the sender wrote them.
        timestamp: when the server accepted the message, a timezone-aware
            ``datetime`` in UTC with microseconds.
        token: for messages read from the durable log, the ``dbResumeToken``
            that continues right after this message; ``None`` for in-memory
            receives.
    """

    uuid: str
    message: Any
    timestamp: datetime
    token: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The message in the server's JSON shape (timestamp as RFC 3339 ``...Z``)."""
        out: dict[str, Any] = {
            "messageUuid": self.uuid,
            "message": self.message,
            "timestamp": self.timestamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if self.token is not None:
            out["dbResumeToken"] = self.token
        return out


# settle(message, action, delay): "ack" or "nack" the message's lease; True
# if it was still held (an awaitable of it on the asyncio client).
Settle = Callable[["LeasedMessage", str, float], Any]


@dataclass(frozen=True, slots=True)
class LeasedMessage(ReceivedMessage):
    """A message received with a lease (``leaseSeconds``, or from a
    consumer group): invisible to other receivers until :meth:`ack` (done),
    :meth:`nack` (deliver it again) or the end of the lease (delivered
    again, to anyone).

    Attributes:
        stream: the stream it came from.
        receipt: names this delivery for ``ack``/``nack``.
        delivery_count: 1 the first time, one more for each delivery whose
            lease ended unacknowledged.
        group: the consumer group, ``None`` for an in-memory lease.
    """

    stream: str = ""
    receipt: str = ""
    delivery_count: int = 1
    group: str | None = None
    _settle: Settle | None = field(default=None, repr=False, compare=False)

    def ack(self) -> Any:
        """Acknowledge: the message is done.  Returns (an awaitable of, on
        :class:`AsyncClient`) True, or False if the lease was no longer
        held (it ended and the message went to another delivery)."""
        assert self._settle is not None
        return self._settle(self, "ack", 0.0)

    def nack(self, delay: float = 0.0) -> Any:
        """Give the message back, to be delivered again after ``delay``
        seconds (0: at once).  Returns as :meth:`ack`."""
        assert self._settle is not None
        return self._settle(self, "nack", delay)

    def to_dict(self) -> dict[str, Any]:
        out = ReceivedMessage.to_dict(self)
        out["receipt"] = self.receipt
        out["deliveryCount"] = self.delivery_count
        return out


@dataclass(frozen=True, slots=True)
class GroupInfo:
    """A consumer group of a durable stream (``GET /api/v1/streams/groups``).

    Attributes:
        group: its name.
        lag: messages of the log never delivered to it.
        pending: delivered and not acknowledged.
        oldest_pending_age: seconds since the oldest pending message was
            first delivered (``None``: nothing pending).
        last_active: its last receive, ack or nack.
    """

    group: str
    lag: int
    pending: int
    oldest_pending_age: float | None
    last_active: datetime


@dataclass(frozen=True, slots=True)
class Member:
    """A node as the cluster sees it (``status``: alive, suspect or dead)."""

    name: str
    address: str
    status: str
    incarnation: int


@dataclass(frozen=True, slots=True)
class ClusterView:
    """One node's view of the cluster (``GET /api/v1/cluster``).

    ``ring_members`` are the names in the hash ring (they own streams);
    ``members`` may also list suspect and dead nodes.
    """

    node: str
    cluster: str
    members: tuple[Member, ...]
    ring_version: int
    ring_hash: int
    ring_members: tuple[str, ...]
    virtual_nodes: int


def whole_seconds(seconds: float) -> int:
    """A timeout as the server takes it: whole seconds >= 0, fractions rounded up."""
    return max(0, math.ceil(seconds))


def send_body(
    stream: str,
    message: Any,
    uuid: str,
    *,
    size: int | None,
    blocking_timeout: float | None,
    persist: bool,
    ttl: int | None,
    history_size: int | None = None,
    history_ttl: int | None = None,
) -> bytes:
    """The JSON body of a send; fields left ``None`` take the server's defaults.

    Raises:
        TypeError: ``message`` cannot be encoded as JSON.
    """
    body: dict[str, Any] = {"streamId": stream, "message": message, "messageUuid": uuid}
    if size is not None:
        body["inMemoryStreamSize"] = size
    if blocking_timeout is not None:
        body["blockingSendTimeoutSeconds"] = whole_seconds(blocking_timeout)
    if persist:
        body["writeToDB"] = True
    if ttl is not None:
        body["dbTTLSeconds"] = ttl
    if history_size is not None:
        body["historySize"] = history_size
    if history_ttl is not None:
        body["historyTTLSeconds"] = history_ttl
    try:
        return encode_json(body)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"the message cannot be encoded as JSON: {exc}") from None


def receive_query(
    stream: str,
    timeout: int,
    *,
    from_db: bool,
    token: str | None,
    lease: float | None = None,
    max_deliveries: int | None = None,
    group: str | None = None,
    consumer: str | None = None,
    max_messages: int | None = None,
) -> dict[str, str]:
    """The query string of a receive (in-memory, or durable with a token;
    leased, or for a consumer group; a batch with ``max_messages``)."""
    query = {"streamId": stream, "timeoutSeconds": str(timeout)}
    if from_db:
        query["readFromDB"] = "true"
        if token is not None:
            query["dbResumeToken"] = token
    if lease is not None:
        query["leaseSeconds"] = f"{lease:g}"
    if max_deliveries is not None:
        query["maxDeliveries"] = str(max_deliveries)
    if group is not None:
        query["group"] = group
        if consumer is not None:
            query["consumer"] = consumer
    if max_messages is not None:
        query["maxMessages"] = str(max_messages)
    return query


def lease_body(stream: str, receipts: list[str], delay: float | None = None) -> bytes:
    """The JSON body of an ack (``delay`` ``None``) or a nack."""
    body: dict[str, Any] = {"streamId": stream}
    if len(receipts) == 1:
        body["receipt"] = receipts[0]
    else:
        body["receipts"] = receipts
    if delay:
        body["delaySeconds"] = delay
    return encode_json(body)


def parse_sent(body: Any) -> SendResult:
    """The result of a 200 send answer.

    Raises:
        ValueError: the answer is not a send result.
    """
    try:
        return SendResult(str(body["messageUuid"]), body.get("dbResumeToken"))
    except (KeyError, TypeError, AttributeError):
        raise ValueError(f"unexpected send answer: {body!r}") from None


def parse_received(body: Any) -> ReceivedMessage:
    """The message of a 200 receive answer.

    Raises:
        ValueError: the answer is not a message.
    """
    try:
        return ReceivedMessage(
            str(body["messageUuid"]),
            body["message"],
            datetime.fromisoformat(body["timestamp"]),
            body.get("dbResumeToken"),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"unexpected receive answer: {body!r}") from None


def parse_leased(body: Any, stream: str, group: str | None, settle: Settle) -> list[LeasedMessage]:
    """The leased messages of a 200 receive answer (one message, or a batch
    ``{"messages": [...]}``).

    Raises:
        ValueError: the answer is not leased messages.
    """
    items: list[Any] = body["messages"] if isinstance(body, dict) and "messages" in body else [body]
    try:
        return [
            LeasedMessage(
                str(item["messageUuid"]),
                item["message"],
                datetime.fromisoformat(item["timestamp"]),
                None,
                stream,
                str(item["receipt"]),
                int(item["deliveryCount"]),
                group,
                settle,
            )
            for item in items
        ]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"unexpected leased receive answer: {body!r}") from None


def parse_groups(body: Any) -> list[GroupInfo]:
    """The groups of a ``GET /api/v1/streams/groups`` answer.

    Raises:
        ValueError: the answer is not a group list.
    """
    try:
        return [
            GroupInfo(
                str(g["group"]),
                int(g["lag"]),
                int(g["pending"]),
                None if g["oldestPendingAgeSeconds"] is None else float(g["oldestPendingAgeSeconds"]),
                datetime.fromisoformat(g["lastActive"]),
            )
            for g in body["groups"]
        ]
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"unexpected groups answer: {body!r}") from None


def parse_cluster(body: Any) -> ClusterView:
    """The cluster view of a ``/api/v1/cluster`` answer.

    Raises:
        ValueError: the answer is not a cluster view.
    """
    try:
        members = tuple(
            Member(str(m["name"]), str(m["address"]), str(m["status"]), int(m["incarnation"]))
            for m in body["members"]
        )
        return ClusterView(
            node=str(body["self"]),
            cluster=str(body["cluster"]),
            members=members,
            ring_version=int(body["ringVersion"]),
            ring_hash=int(body["ringHash"]),
            ring_members=tuple(str(n) for n in body["ringMembers"]),
            virtual_nodes=int(body["virtualNodes"]),
        )
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"unexpected cluster answer: {body!r}") from None
