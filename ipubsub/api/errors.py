"""The one place where errors become HTTP answers.

Every non-200 answer is a JSON object with an ``error`` text and a stable
``code``; unexpected exceptions are logged and answered with a generic 500
(never a traceback).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

from aiohttp import web

from ..errors import (
    BadRequest,
    IPubSubError,
    MessageTooLarge,
    NotFound,
    ReceiveTimeout,
    SendTimeout,
    StreamReleased,
    Unauthorized,
    Unavailable,
    WrongCluster,
)
from .wire import encode_json

__all__ = ["STATUS_BY_ERROR", "error_response", "json_response", "make_error_middleware", "status_of"]

log = logging.getLogger("ipubsub.api")

STATUS_BY_ERROR: dict[type[IPubSubError], int] = {
    BadRequest: 400,
    Unauthorized: 401,
    NotFound: 404,
    WrongCluster: 409,
    MessageTooLarge: 413,
    ReceiveTimeout: 424,
    SendTimeout: 424,
    StreamReleased: 424,
    Unavailable: 503,
    IPubSubError: 500,
}

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "message_too_large"}


def status_of(exc: IPubSubError) -> int:
    """The HTTP status for a domain error (most specific class wins)."""
    for cls in type(exc).__mro__:
        status = STATUS_BY_ERROR.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    return 500


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=encode_json(body), status=status, content_type="application/json", headers=headers
    )


def error_response(exc: IPubSubError) -> web.Response:
    """The JSON answer for a domain error, with ``Retry-After`` where it applies."""
    headers = None
    if isinstance(exc, Unavailable):
        headers = {"Retry-After": str(exc.retry_after)}
    return json_response(exc.to_dict(), status=status_of(exc), headers=headers)


def make_error_middleware(max_body: int) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Middleware mapping domain errors, aiohttp's own HTTP errors (404, 405,
    413) and unexpected failures to JSON answers."""

    @web.middleware
    async def error_middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except IPubSubError as exc:
            return error_response(exc)
        except web.HTTPException as exc:
            if exc.status == 413:
                return error_response(MessageTooLarge(request.content_length, max_body))
            if exc.status < 400:
                raise
            code = _HTTP_CODES.get(exc.status, "http_error")
            text = f"{exc.reason}: {request.method} {request.path}"
            if exc.status == 405:
                allowed = exc.headers.get("Allow", "")
                text = f"method {request.method} not allowed on {request.path} (allowed: {allowed})"
            return json_response({"error": text, "code": code}, status=exc.status)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unexpected error serving %s %s", request.method, request.path)
            return json_response(
                {"error": "internal error; see the node's log", "code": "internal_error"}, status=500
            )

    return error_middleware

