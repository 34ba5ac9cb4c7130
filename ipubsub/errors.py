"""Domain errors. Each carries structured fields; the API maps them to HTTP
statuses in one place (``ipubsub.api.errors``), and the client maps statuses
back to the same classes."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "BadRequest",
    "BufferFull",
    "IPubSubError",
    "InvalidToken",
    "MessageTooLarge",
    "NodeDraining",
    "NotFound",
    "OwnerUnavailable",
    "PersistenceNotConfigured",
    "ReceiveTimeout",
    "SendTimeout",
    "StorageUnavailable",
    "StreamReleased",
    "Unauthorized",
    "Unavailable",
    "WrongCluster",
]


class IPubSubError(Exception):
    """Base class of every error the service reports to a caller.

    ``code`` is a stable machine-readable name; ``fields`` are extra facts
    (which field, which limit) that travel with the JSON error body.
    """

    code: ClassVar[str] = "internal_error"

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": text, "code": code, ...fields}``."""
        body: dict[str, Any] = {"error": self.message, "code": self.code}
        for key, value in self.fields.items():
            if value is not None:
                body[key] = value
        return body


class BadRequest(IPubSubError):
    """The request is malformed or a field is out of range (HTTP 400)."""

    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, **fields: Any) -> None:
        super().__init__(message, field=field, **fields)
        self.field = field


class PersistenceNotConfigured(BadRequest):
    code = "persistence_not_configured"


class InvalidToken(BadRequest):
    code = "invalid_token"


class Unauthorized(IPubSubError):
    code = "unauthorized"


class WrongCluster(IPubSubError):
    code = "wrong_cluster"


class NotFound(IPubSubError):
    code = "not_found"


class MessageTooLarge(IPubSubError):
    """The request body exceeds ``limits.max_message_bytes`` (HTTP 413)."""

    code = "message_too_large"

    def __init__(self, size: int | None, limit: int) -> None:
        what = f"{size} bytes" if size is not None else "the request body"
        super().__init__(
            f"{what} exceeds limits.max_message_bytes ({limit} bytes)", size=size, limit=limit
        )
        self.size = size
        self.limit = limit


class ReceiveTimeout(IPubSubError):
    """No message arrived within the long poll's timeout (HTTP 424)."""

    code = "receive_timeout"

    def __init__(self, stream_id: str, timeout: float) -> None:
        super().__init__(
            f"no message arrived on stream {stream_id!r} within {timeout:g} s",
            streamId=stream_id,
            timeoutSeconds=timeout,
        )


class SendTimeout(IPubSubError):
    """A blocking or sync-match send was not accepted in time (HTTP 424)."""

    code = "send_timeout"

    def __init__(self, stream_id: str, timeout: float, *, sync: bool) -> None:
        if sync:
            text = f"no receiver took the message on stream {stream_id!r} within {timeout:g} s"
        else:
            text = f"stream {stream_id!r} stayed full for {timeout:g} s; the message was not accepted"
        super().__init__(text, streamId=stream_id, timeoutSeconds=timeout)


class StreamReleased(IPubSubError):
    """A waiting receiver or blocked sender was let go because the stream moved
    to another node or this node is shutting down (HTTP 424: retry)."""

    code = "stream_released"

    def __init__(self, stream_id: str, reason: str) -> None:
        super().__init__(f"stream {stream_id!r}: {reason}; retry", streamId=stream_id)
        self.reason = reason


class Unavailable(IPubSubError):
    """The call cannot be served now; retry after ``retry_after`` seconds (HTTP 503)."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.retry_after = retry_after


class OwnerUnavailable(Unavailable):
    code = "owner_unavailable"


class StorageUnavailable(Unavailable):
    code = "storage_unavailable"


class NodeDraining(Unavailable):
    code = "node_draining"


class BufferFull(Unavailable):
    """Accepting the message would exceed the node's total buffer budget."""

    code = "buffer_full"
