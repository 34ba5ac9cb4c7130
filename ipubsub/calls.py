"""The calls a node serves, as plain validated values, and their outcomes.

Independent of HTTP: the API builds them from requests, the cluster layer
carries them to a stream's owner, and tests build them directly.
"""

from __future__ import annotations

import msgspec

from .engine import HistorySpec, Message

__all__ = ["AckCall", "Delivery", "NackCall", "ReceiveCall", "Relayed", "SendCall", "Sent"]


class SendCall(msgspec.Struct, frozen=True):
    """One send, already validated against the node's limits.

    ``raw`` is the exact request body, passed on unchanged when the call is
    forwarded to the stream's owner.  ``history_size`` > 0 asks a new stream
    to keep a fan-out history of that many messages for ``history_ttl``
    seconds.
    """

    stream_id: str
    payload: bytes
    uuid: str | None = None
    size: int = 100
    blocking_timeout: int = 0
    persist: bool = False
    ttl_seconds: int = 86400
    raw: bytes = b""
    history_size: int = 0
    history_ttl: int = 0

    @property
    def history(self) -> HistorySpec | None:
        """The history a new stream keeps, ``None`` for none."""
        return HistorySpec(self.history_size, self.history_ttl) if self.history_size > 0 else None


class ReceiveCall(msgspec.Struct, frozen=True):
    """One long-poll receive, already validated.  ``max_messages`` set asks
    for a batch (answered as a list, 1 to that many messages).

    ``lease_seconds`` set asks for at-least-once delivery: each message is
    leased (and carries a receipt) instead of taken for good, and goes to the
    dead letters after ``max_deliveries`` (0: never).  With ``group`` (a
    durable stream, ``from_db``) the messages are claimed for ``consumer``
    of that consumer group.

    ``from_history`` reads the stream's history after ``position`` (see
    :meth:`ipubsub.node.Node.read_history`); ``strict`` makes a position that
    cannot be recovered an error instead of an answer."""

    stream_id: str
    timeout: int
    from_db: bool = False
    token: str | None = None
    max_messages: int | None = None
    lease_seconds: float | None = None
    max_deliveries: int = 0
    group: str | None = None
    consumer: str | None = None
    from_history: bool = False
    position: str | None = None
    strict: bool = False

    def query(self) -> dict[str, str]:
        """The query string that asks an owner for the same thing."""
        q = {"streamId": self.stream_id, "timeoutSeconds": str(self.timeout)}
        if self.from_db:
            q["readFromDB"] = "true"
            if self.token is not None:
                q["dbResumeToken"] = self.token
        if self.max_messages is not None:
            q["maxMessages"] = str(self.max_messages)
        if self.lease_seconds is not None:
            q["leaseSeconds"] = repr(self.lease_seconds)
            q["maxDeliveries"] = str(self.max_deliveries)
        if self.group is not None:
            q["group"] = self.group
            q["consumer"] = self.consumer or ""
        if self.from_history:
            q["fromHistory"] = "true"
            if self.position is not None:
                q["position"] = self.position
            if self.strict:
                q["strictRecovery"] = "true"
        return q


class Sent(msgspec.Struct, frozen=True):
    """An accepted send: the message's uuid and, for a durable send, the
    resume token right after it."""

    uuid: str
    token: str | None = None


class Delivery(msgspec.Struct, frozen=True):
    """A received message; ``token`` is set for replies read from storage,
    ``receipt`` and ``delivery_count`` for a leased delivery."""

    message: Message
    token: str | None = None
    receipt: str | None = None
    delivery_count: int = 0


class AckCall(msgspec.Struct, frozen=True):
    """Acknowledge leased deliveries of one stream by their receipts
    (``single``: the caller named one receipt, not a list)."""

    stream_id: str
    receipts: tuple[str, ...]
    group: str | None = None
    single: bool = True


class NackCall(msgspec.Struct, frozen=True):
    """Give leased deliveries back, to be delivered again after
    ``delay_seconds``."""

    stream_id: str
    receipts: tuple[str, ...]
    group: str | None = None
    single: bool = True
    delay_seconds: float = 0.0


class Relayed(msgspec.Struct, frozen=True):
    """The owner's answer to a forwarded call, passed back unchanged
    (``owner``: the node that answered)."""

    status: int
    body: bytes
    retry_after: str | None = None
    owner: str = ""
