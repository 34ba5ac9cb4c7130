"""Messages nodes exchange: membership gossip and leave (on the internal
HTTP endpoints) and hand-off batches (on the peer link).  Message payloads
travel as raw JSON, never re-encoded."""

from __future__ import annotations

from typing import TypeVar

import msgspec

from ..errors import BadRequest

__all__ = [
    "Gossip",
    "HandedHistory",
    "HandedHistoryEntry",
    "HandedLease",
    "HandedMessage",
    "HandedStream",
    "Handoff",
    "Leave",
    "MemberInfo",
    "decode",
    "encode",
]


class MemberInfo(msgspec.Struct, frozen=True):
    name: str
    address: str
    incarnation: int
    status: str = "alive"
    link: str = ""  # where its peer link listens


class Gossip(msgspec.Struct, frozen=True):
    """A heartbeat: the sender's identity and its view of the members."""

    cluster: str
    sender: MemberInfo
    members: list[MemberInfo]


class Leave(msgspec.Struct, frozen=True):
    cluster: str
    name: str
    incarnation: int


class HandedMessage(msgspec.Struct, frozen=True):
    uuid: str
    message: msgspec.Raw
    timestampUs: int
    deliveries: int = 0  # leased deliveries that ended unacknowledged


class HandedLease(msgspec.Struct, frozen=True):
    """A leased message moving with its stream: same receipt, same delivery,
    the rest of its lease (:class:`ipubsub.engine.HeldLease`)."""

    receipt: str
    message: HandedMessage
    delivery: int
    maxDeliveries: int
    remainingSeconds: float


class HandedHistoryEntry(msgspec.Struct, frozen=True, array_like=True):
    offset: int
    message: HandedMessage


class HandedHistory(msgspec.Struct, frozen=True):
    """A fan-out history moving with its stream, epoch and offsets kept
    (:class:`ipubsub.engine.history.HistoryState`)."""

    epoch: str
    size: int
    ttlSeconds: int
    top: int
    createdUs: int
    entries: list[HandedHistoryEntry]
    aliases: dict[str, tuple[int, int]] = {}


class HandedStream(msgspec.Struct, frozen=True):
    streamId: str
    capacity: int | None
    messages: list[HandedMessage]
    leases: list[HandedLease] = []
    history: HandedHistory | None = None


class Handoff(msgspec.Struct, frozen=True):
    """Buffered messages moving to a stream's new owner. ``batchId`` makes a
    retried batch apply once."""

    cluster: str
    batchId: str
    sender: str
    streams: list[HandedStream]


encode = msgspec.json.Encoder().encode

T = TypeVar("T", bound=msgspec.Struct)


def decode(data: bytes, kind: type[T]) -> T:
    """Decode an internal payload into ``kind``.

    Raises:
        BadRequest: malformed payload.
    """
    try:
        return msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise BadRequest(f"malformed {kind.__name__} payload: {exc}") from None
