"""Domain errors. Each carries structured fields; the API maps them to HTTP
statuses in one place (``ipubsub.api.errors``), and the client maps statuses
back to the same classes."""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AdminRequired",
    "BadRequest",
    "BodyTimeout",
    "BufferFull",
    "CredentialsExpired",
    "Forbidden",
    "GroupNotFound",
    "HistoryGap",
    "HistoryNotKept",
    "IPubSubError",
    "InvalidCredentials",
    "InvalidPosition",
    "InvalidToken",
    "LeaseNotFound",
    "MessageTooLarge",
    "NodeDraining",
    "NotFound",
    "OwnerUnavailable",
    "PersistenceNotConfigured",
    "RateLimited",
    "ReceiveTimeout",
    "SendTimeout",
    "StorageUnavailable",
    "StreamForbidden",
    "StreamReleased",
    "TooManyAuthFailures",
    "TooManyLeases",
    "TooManyPolls",
    "TooManyStreamPolls",
    "TooManyStreams",
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


class InvalidPosition(BadRequest):
    """A history ``position`` that no history ever wrote (HTTP 400)."""

    code = "invalid_position"


class HistoryNotKept(IPubSubError):
    """A history read on a stream that keeps no history (HTTP 409): its
    first send did not ask for one (``historySize``)."""

    code = "history_not_kept"

    def __init__(self, stream_id: str) -> None:
        super().__init__(
            f"stream {stream_id[:200]!r} keeps no history (its first send set no historySize)", streamId=stream_id
        )


class HistoryGap(IPubSubError):
    """A strict history read (``strictRecovery=true``) from a position that
    cannot be recovered (HTTP 409): ``gap`` says why (``epoch``: the history
    was recreated; ``window``: the messages after it are gone) and
    ``position`` is the oldest available position (read after it to go on,
    accepting the gap)."""

    code = "history_gap"

    def __init__(self, stream_id: str, gap: str, position: str | None) -> None:
        why = "the stream's history was recreated" if gap == "epoch" else "the messages after it left the history"
        super().__init__(
            f"stream {stream_id[:200]!r}: the position cannot be recovered ({why}); "
            "read after the oldest available position (position) to go on, accepting the gap",
            streamId=stream_id,
            gap=gap,
            position=position,
        )


class Unauthorized(IPubSubError):
    code = "unauthorized"


class InvalidCredentials(Unauthorized):
    """The API key or token is unknown, malformed or its signature is wrong (HTTP 401)."""

    code = "invalid_credentials"


class CredentialsExpired(Unauthorized):
    """The token is past its ``exp`` or before its ``nbf`` (HTTP 401)."""

    code = "credentials_expired"


class Forbidden(IPubSubError):
    """Valid credentials that do not allow this call (HTTP 403)."""

    code = "forbidden"


class StreamForbidden(Forbidden):
    """The caller may not send to / receive from this stream (HTTP 403)."""

    code = "stream_forbidden"


class AdminRequired(Forbidden):
    """The endpoint is for operators: a key with ``admin: true`` (HTTP 403)."""

    code = "admin_required"


class BodyTimeout(IPubSubError):
    """The request body did not arrive within ``http.body_timeout_seconds`` (HTTP 408)."""

    code = "body_timeout"


class WrongCluster(IPubSubError):
    code = "wrong_cluster"


class NotFound(IPubSubError):
    code = "not_found"


class GroupNotFound(NotFound):
    """No consumer group of that name on the stream (HTTP 404)."""

    code = "group_not_found"


class LeaseNotFound(IPubSubError):
    """An ack or nack names no lease held now: it expired (and the message
    was delivered again or dead-lettered), was acknowledged or nacked
    already, or the receipt never existed (HTTP 410)."""

    code = "lease_not_found"


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


class RateLimited(Unavailable):
    """The caller's request rate is over its limit (HTTP 429, ``Retry-After``)."""

    code = "rate_limited"


class TooManyAuthFailures(Unavailable):
    """Too many failed credentials from this address lately (HTTP 429)."""

    code = "too_many_auth_failures"


class TooManyPolls(Unavailable):
    """The node holds ``limits.max_waiting_polls`` waiting polls (HTTP 503)."""

    code = "too_many_polls"


class TooManyStreamPolls(Unavailable):
    """The stream has ``limits.max_waiting_polls_per_stream`` waiting polls (HTTP 429)."""

    code = "too_many_stream_polls"


class TooManyLeases(Unavailable):
    """The node holds ``leases.max_leased_messages`` leases (HTTP 503)."""

    code = "too_many_leases"


class TooManyStreams(Unavailable):
    """The node holds ``limits.max_streams`` streams; a new one is refused (HTTP 503)."""

    code = "too_many_streams"


# -- the client side: server answers back to these classes ---------------------

__all__ += ["error_from_response"]

_BY_CODE: dict[str, type[IPubSubError]] = {
    cls.code: cls
    for cls in (
        IPubSubError, BadRequest, PersistenceNotConfigured, InvalidToken, Unauthorized, WrongCluster,
        NotFound, MessageTooLarge, ReceiveTimeout, SendTimeout, StreamReleased, Unavailable,
        OwnerUnavailable, StorageUnavailable, NodeDraining, BufferFull, InvalidCredentials,
        CredentialsExpired, Forbidden, StreamForbidden, AdminRequired, BodyTimeout, RateLimited,
        TooManyAuthFailures, TooManyPolls, TooManyStreamPolls, TooManyStreams, InvalidPosition,
        HistoryNotKept, HistoryGap,
        GroupNotFound, LeaseNotFound, TooManyLeases,
    )
}
# For answers without a code we know (a proxy, an older or newer server).
_BY_STATUS: dict[int, type[IPubSubError]] = {
    400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 408: BodyTimeout, 409: WrongCluster, 410: LeaseNotFound,
    413: MessageTooLarge, 424: ReceiveTimeout, 429: RateLimited, 503: Unavailable,
}


def error_from_response(
    status: int, body: dict[str, Any] | None, *, retry_after: int | None = None
) -> IPubSubError:
    """The error a non-200 server answer stands for.

    The class is chosen by the body's ``code``, else by the HTTP ``status``,
    else :class:`IPubSubError`.  The instance carries the server's text as
    ``message`` (nothing is re-derived), every other body key in ``fields``,
    and the server's ``code`` even when no class has it.  The class-specific
    attributes are filled from the body: ``BadRequest.field``,
    ``MessageTooLarge.size``/``.limit``, ``StreamReleased.reason`` (the
    text), ``Unavailable.retry_after`` (from the ``Retry-After`` header,
    passed as ``retry_after``; 1 when absent).  Never raises.
    """
    body = body if isinstance(body, dict) else {}
    code = body.get("code")
    text = body.get("error")
    if not isinstance(text, str):
        text = f"HTTP {status} without an error text"
    fields = {k: v for k, v in body.items() if k not in ("error", "code")}
    cls = _BY_CODE.get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(status, IPubSubError)
    # The constructors derive their own text from their arguments; build the
    # instance with the base initialiser so the server's text is kept as is.
    exc = cls.__new__(cls)
    IPubSubError.__init__(exc, text, **fields)
    if isinstance(code, str) and code != cls.code:
        exc.code = code  # type: ignore[misc]
    if isinstance(exc, BadRequest):
        exc.field = fields.get("field")
    if isinstance(exc, MessageTooLarge):
        exc.size = fields.get("size")
        exc.limit = fields.get("limit", 0)
    if isinstance(exc, StreamReleased):
        exc.reason = text
    if isinstance(exc, Unavailable):
        exc.retry_after = retry_after if retry_after is not None else 1
    return exc
