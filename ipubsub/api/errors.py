"""The one place where errors become HTTP answers.

Every non-200 answer is a JSON object with an ``error`` text and a stable
``code``; unexpected exceptions are logged and answered with a generic 500
(never a traceback).
"""

from __future__ import annotations

import logging

from aiohttp import web

from ..errors import (
    BadRequest,
    BodyTimeout,
    Forbidden,
    HistoryGap,
    HistoryNotKept,
    IPubSubError,
    LeaseNotFound,
    MessageTooLarge,
    NotFound,
    RateLimited,
    ReceiveTimeout,
    SendTimeout,
    StreamReleased,
    TooManyAuthFailures,
    TooManyStreamPolls,
    Unauthorized,
    Unavailable,
    WrongCluster,
)
from ..protocol import JSON_CONTENT_TYPE, RETRY_AFTER_HEADER, WWW_AUTHENTICATE_HEADER
from .codec import encode_json

__all__ = [
    "STATUS_BY_ERROR",
    "error_response",
    "http_error_response",
    "internal_error_response",
    "json_response",
    "method_not_allowed_response",
    "status_of",
]

log = logging.getLogger("ipubsub.api")

STATUS_BY_ERROR: dict[type[IPubSubError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    BodyTimeout: 408,
    WrongCluster: 409,
    LeaseNotFound: 410,
    HistoryNotKept: 409,
    HistoryGap: 409,
    MessageTooLarge: 413,
    ReceiveTimeout: 424,
    SendTimeout: 424,
    StreamReleased: 424,
    RateLimited: 429,
    TooManyAuthFailures: 429,
    TooManyStreamPolls: 429,
    Unavailable: 503,
    IPubSubError: 500,
}

_HTTP_CODES = {404: "not_found", 413: "message_too_large"}


def status_of(exc: IPubSubError) -> int:
    """The HTTP status for a domain error (most specific class wins)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)
        if status is not None:
            return status
    return 500


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode_json(body), status=status, content_type=JSON_CONTENT_TYPE, headers=headers
    )


def error_response(exc: IPubSubError) -> web.Response:
    """The JSON answer for a domain error, with ``Retry-After`` where it applies."""
    headers = None
    if isinstance(exc, Unavailable):
        headers = {RETRY_AFTER_HEADER: str(exc.retry_after)}
    elif isinstance(exc, Unauthorized):
        headers = {WWW_AUTHENTICATE_HEADER: 'Bearer realm="ipubsub"'}
    return json_response(exc.to_dict(), status=status_of(exc), headers=headers)


def http_error_response(exc: web.HTTPException, request: web.Request, max_body: int) -> web.Response:
    """JSON answer for aiohttp's own errors (unknown route, wrong method,
    body over the size limit)."""
    if exc.status == 413:
        return error_response(MessageTooLarge(request.content_length, max_body))
    if exc.status == 405:
        return method_not_allowed_response(request, exc.headers.get("Allow", "").split(", "))
    code = _HTTP_CODES.get(exc.status, "http_error")
    return json_response({"error": f"{exc.reason}: {request.method} {request.path}", "code": code}, status=exc.status)


def method_not_allowed_response(request: web.Request, allowed: list[str]) -> web.Response:
    """The JSON 405 answer, with the ``Allow`` header listing ``allowed``."""
    allow = ", ".join(allowed)
    return json_response(
        {"error": f"method {request.method} not allowed on {request.path} (allowed: {allow})",
         "code": "method_not_allowed"},
        status=405,
        headers={"Allow": allow},
    )


def internal_error_response() -> web.Response:
    return json_response({"error": "internal error; see the node's log", "code": "internal_error"}, status=500)
