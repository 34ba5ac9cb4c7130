"""Validated requests and their results as the node sees them: plain values,
independent of HTTP, so the API, the cluster layer and tests share them."""

from __future__ import annotations

import msgspec

from .engine import Message

__all__ = ["Delivery", "ReceiveCommand", "Relayed", "SendCommand", "SendResult"]


class SendCommand(msgspec.Struct, frozen=True):
    """One send, already validated against the node's limits.

    ``raw`` is the exact request body, passed on unchanged when the call is
    forwarded to the stream's owner.
    """

    stream_id: str
    payload: bytes
    uuid: str | None = None
    size: int = 100
    blocking_timeout: int = 0
    persist: bool = False
    ttl_seconds: int = 86400
    raw: bytes = b""


class ReceiveCommand(msgspec.Struct, frozen=True):
    """One long-poll receive, already validated."""

    stream_id: str
    timeout: int
    from_db: bool = False
    token: str | None = None

    def query(self) -> dict[str, str]:
        """The query string that asks an owner for the same thing."""
        q = {"streamId": self.stream_id, "timeoutSeconds": str(self.timeout)}
        if self.from_db:
            q["readFromDB"] = "true"
            if self.token is not None:
                q["dbResumeToken"] = self.token
        return q


class SendResult(msgspec.Struct, frozen=True):
    uuid: str
    token: str | None = None


class Delivery(msgspec.Struct, frozen=True):
    """A received message; ``token`` is set for replies read from storage."""

    message: Message
    token: str | None = None


class Relayed(msgspec.Struct, frozen=True):
    """The owner's answer to a forwarded call, passed back unchanged."""

    status: int
    body: bytes
    retry_after: str | None = None
