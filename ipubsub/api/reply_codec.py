"""Encoding the answers of the public endpoints: sends and batch sends,
deliveries (one or a batch), acks and nacks, consumer groups."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import msgspec

from ..calls import AckCall, Delivery, NackCall, Sent
from ..engine import format_timestamp
from ..errors import IPubSubError, LeaseNotFound
from ..protocol import (
    AckReply,
    BatchItemError,
    GroupReply,
    GroupsReply,
    NackReply,
    ReceiveBatchReply,
    ReceiveReply,
    SendBatchReply,
    SendReply,
)

if TYPE_CHECKING:
    from ..storage.base import GroupInfo

__all__ = [
    "encode_ack",
    "encode_batch_results",
    "encode_deliveries",
    "encode_delivery",
    "encode_groups",
    "encode_json",
    "encode_sent",
]

_encoder = msgspec.json.Encoder()
encode_json = _encoder.encode


def encode_ack(call: AckCall | NackCall, answers: list[bool]) -> bytes:
    """The answer of an ack or nack whose leases were found as ``answers``
    says (one per receipt).

    Raises:
        LeaseNotFound: a single receipt named no lease held now.
    """
    count = sum(answers)
    if call.single and not count:
        raise LeaseNotFound(
            f"no lease with this receipt is held on stream {call.stream_id!r}: it expired (the message was "
            "delivered again or dead-lettered), was acknowledged or nacked already, or never existed",
            streamId=call.stream_id,
        )
    missing = None if call.single else [r for r, ok in zip(call.receipts, answers) if not ok]
    if isinstance(call, AckCall):
        return _encoder.encode(AckReply(count, missing))
    return _encoder.encode(NackReply(count, missing))


def encode_groups(stream_id: str, groups: list[GroupInfo], now_us: int) -> bytes:
    """The answer of ``GET /api/v1/streams/groups``."""
    return _encoder.encode(GroupsReply(stream_id, [
        GroupReply(
            g.group,
            g.lag,
            g.pending,
            None if g.oldest_pending_us is None else max(0.0, (now_us - g.oldest_pending_us) / 1_000_000),
            format_timestamp(g.active_at_us),
        )
        for g in groups
    ]))


def encode_sent(result: Sent) -> bytes:
    return _encoder.encode(SendReply(result.uuid, result.token))


def encode_delivery(delivery: Delivery) -> bytes:
    return _encoder.encode(_receive_reply(delivery))


def _receive_reply(delivery: Delivery) -> ReceiveReply:
    msg = delivery.message
    if delivery.receipt is None:
        return ReceiveReply(msg.uuid, msgspec.Raw(msg.payload), format_timestamp(msg.timestamp_us), delivery.token)
    return ReceiveReply(
        msg.uuid,
        msgspec.Raw(msg.payload),
        format_timestamp(msg.timestamp_us),
        None,
        delivery.receipt,
        delivery.delivery_count,
    )


def encode_deliveries(deliveries: list[Delivery]) -> bytes:
    """The answer of a batch receive: the messages, oldest first, and for
    durable reads the token after the last one.

    Plain deliveries (no receipt) are written piece by piece, the same bytes
    :class:`ReceiveBatchReply` encodes to, without a struct per message (the
    payload is already JSON; tokens are base64url)."""
    token = deliveries[-1].token if deliveries else None
    if any(d.receipt is not None for d in deliveries):
        return _encoder.encode(ReceiveBatchReply([_receive_reply(d) for d in deliveries], token))
    encode = _encoder.encode
    parts = []
    for d in deliveries:
        msg = d.message
        head = b'{"messageUuid":%b,"message":%b,"timestamp":"%b"' % (
            encode(msg.uuid), msg.payload, format_timestamp(msg.timestamp_us).encode())
        parts.append(head + b"}" if d.token is None else head + b',"dbResumeToken":"%b"}' % d.token.encode())
    tail = b"]}" if token is None else b'],"dbResumeToken":"%b"}' % token.encode()
    return b'{"messages":[' + b",".join(parts) + tail


def encode_batch_results(
    results: Sequence[Sent | IPubSubError | msgspec.Raw], status_of: Callable[[IPubSubError], int]
) -> bytes:
    """The answer of a batch send: per item, its send answer or its error
    (with the HTTP status ``status_of`` gives it); an owner's result of a
    forwarded item (``msgspec.Raw``) passes through unchanged."""
    out: list[Any] = []  # encoded as they are (the reply's type only documents the shape)
    for result in results:
        if type(result) is Sent:
            out.append(SendReply(result.uuid, result.token) if result.token is not None else {"messageUuid": result.uuid})
        elif isinstance(result, msgspec.Raw):
            out.append(result)
        else:
            assert isinstance(result, IPubSubError)
            field = result.fields.get("field")
            out.append(
                BatchItemError(status_of(result), result.code, result.message, field if isinstance(field, str) else None)
            )
    return _encoder.encode(SendBatchReply(out))
