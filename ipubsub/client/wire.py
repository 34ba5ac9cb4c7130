"""What the client sends and gets back: request bodies and queries, and the
typed results parsed from the server's JSON.  Pure functions, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec

from ..protocol import CLUSTER_PATH, RECEIVE_PATH, SEND_PATH

__all__ = [
    "CLUSTER_PATH",
    "RECEIVE_PATH",
    "SEND_PATH",
    "ClusterView",
    "Member",
    "ReceivedMessage",
    "SendResult",
    "parse_cluster",
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
    try:
        return encode_json(body)
    except (TypeError, msgspec.EncodeError) as exc:
        raise TypeError(f"the message cannot be encoded as JSON: {exc}") from None


def receive_query(stream: str, timeout: int, *, from_db: bool, token: str | None) -> dict[str, str]:
    """The query string of a receive (in-memory, or durable with a token)."""
    query = {"streamId": stream, "timeoutSeconds": str(timeout)}
    if from_db:
        query["readFromDB"] = "true"
        if token is not None:
            query["dbResumeToken"] = token
    return query


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
