"""What nodes ask each other over the peer link: the call headers (one
tagged struct per kind) and the one reply header.  Payloads stay raw bytes:
a forwarded send carries the message's JSON as the client wrote it (its
other fields, validated by the entry node, in the header), every answer the
exact body the entry node writes to its client."""

from __future__ import annotations

import msgspec

from ..calls import AckCall, NackCall, ReceiveCall, SendCall

__all__ = [
    "Answer",
    "ForwardAck",
    "ForwardNack",
    "ForwardReceive",
    "ForwardSend",
    "ForwardSendBatch",
    "GiveBack",
    "HandoffBatch",
    "LinkCall",
]


class ForwardSend(msgspec.Struct, array_like=True, frozen=True, tag=1):
    """A public send for a stream the callee owns, validated by the entry
    node (the fields of :class:`~ipubsub.calls.SendCall`); payload: the
    message's JSON exactly as the client wrote it."""

    stream_id: str
    uuid: str | None
    size: int
    blocking_timeout: int
    persist: bool
    ttl_seconds: int
    history_size: int
    history_ttl: int
    request_id: str | None = None

    @classmethod
    def of(cls, cmd: SendCall, request_id: str | None) -> ForwardSend:
        return cls(
            cmd.stream_id, cmd.uuid, cmd.size, cmd.blocking_timeout, cmd.persist, cmd.ttl_seconds,
            cmd.history_size, cmd.history_ttl, request_id,
        )  # fmt: skip

    def call(self, payload: bytes) -> SendCall:
        return SendCall(
            self.stream_id, payload, self.uuid, self.size, self.blocking_timeout, self.persist, self.ttl_seconds,
            b"", self.history_size, self.history_ttl,
        )  # fmt: skip


class ForwardReceive(msgspec.Struct, array_like=True, frozen=True, tag=2):
    """A public receive (long poll, durable read, leased, group or history
    read) for a stream the callee owns; no payload.  Cancelling the call
    ends a waiting poll (answered 424 ``stream_released``, or with the
    message it was handed)."""

    call: ReceiveCall
    request_id: str | None = None


class ForwardSendBatch(msgspec.Struct, array_like=True, frozen=True, tag=3):
    """A sub-batch of a batch send, every item owned by the callee; payload:
    a ``sendBatch`` request body."""

    request_id: str | None = None


class GiveBack(msgspec.Struct, array_like=True, frozen=True, tag=4):
    """Messages a forwarded poll was answered with but that never reached
    its client; payload: that answer's body (one message or a batch)."""

    stream_id: str


class HandoffBatch(msgspec.Struct, array_like=True, frozen=True, tag=5):
    """Buffered messages moving to their stream's new owner; payload: a
    :class:`~ipubsub.cluster.messages.Handoff` as JSON."""


class ForwardAck(msgspec.Struct, array_like=True, frozen=True, tag=6):
    """Acknowledge in-memory leases the callee holds; answered with a JSON
    list of booleans, one per receipt."""

    call: AckCall
    request_id: str | None = None


class ForwardNack(msgspec.Struct, array_like=True, frozen=True, tag=7):
    """Give back in-memory leases the callee holds; answered like
    :class:`ForwardAck`."""

    call: NackCall
    request_id: str | None = None


LinkCall = ForwardSend | ForwardReceive | ForwardSendBatch | GiveBack | HandoffBatch | ForwardAck | ForwardNack


class Answer(msgspec.Struct, array_like=True, frozen=True):
    """Every reply: the HTTP status the entry node answers with (200, or the
    status of the callee's error) and its ``Retry-After``; payload: the
    body."""

    status: int
    retry_after: str | None = None
