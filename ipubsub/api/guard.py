"""The request guard: what every route gets before its handler runs, in
this order:

1. the connection's header timer is disarmed (a complete head arrived);
2. a query string whose percent-escapes are not UTF-8 is a 400 (the same
   answer as invalid UTF-8 in a body; aiohttp would decode it to U+FFFD);
3. credentials and the route's permission, when auth is on
   (:class:`~ipubsub.auth.access.Access`): 401, 403, 429;
4. a body: 413 at once when its declared length is over the limit, and
   408 when it does not arrive within ``http.body_timeout_seconds``
   (aiohttp has no body timeout).  The body is then cached by aiohttp, so
   the handler's ``await request.read()`` returns it at once.

Routes whose stream ids are in the body call :func:`authorize` for each id
before acting on any.  With auth off, :func:`authorize` is one dict lookup.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from urllib.parse import unquote_to_bytes

from aiohttp import web

from ..auth.access import Access, Permission, Principal
from ..auth.authenticator import Authenticator
from ..auth.rate import FailureLimiter
from ..auth.refusals import Refusals
from ..errors import (
    BadRequest,
    BodyTimeout,
    CredentialsExpired,
    Forbidden,
    IPubSubError,
    MessageTooLarge,
    RateLimited,
    StreamForbidden,
    TooManyAuthFailures,
    Unauthorized,
)
from ..protocol import ACCESS_TOKEN_PARAM, AUTHORIZATION_HEADER
from .handler import Handler
from .listener import ConnectionGate

__all__ = ["Guard", "authorize"]

log = logging.getLogger("ipubsub.auth")

PRINCIPAL_KEY: web.RequestKey[Principal] = web.RequestKey("ipubsub.principal", Principal)
#: the node's refusal counters on the application (for :func:`authorize`'s refusals)
REFUSALS_KEY: web.AppKey[Refusals] = web.AppKey("ipubsub.refusals", Refusals)
#: on a connection whose every message takes from the caller's rate (Access.rate_each)
RATES_KEY: web.RequestKey[Authenticator] = web.RequestKey("ipubsub.rates", Authenticator)
_NEVER = float("inf")
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))
_REFUSAL_REASON = {
    TooManyAuthFailures: "too_many_auth_failures",
    RateLimited: "rate_limited",
    CredentialsExpired: "credentials_expired",
    StreamForbidden: "stream_forbidden",
}


def authorize(request: web.Request, permission: Permission, stream_ids: Iterable[str]) -> None:
    """Check that the caller may use ``permission`` on every stream id (a
    no-op when auth is off), and that its token has not expired since the
    request came in (a WebSocket outliving its token may open nothing more).

    Raises:
        StreamForbidden: one of them is not allowed (nothing was done).
        CredentialsExpired: the token expired (nothing was done).
        RateLimited: on a connection whose messages count as requests
            (``Access.rate_each``), the caller is over its rate.
    """
    principal: Principal | None = request.get(PRINCIPAL_KEY)
    if principal is not None:
        try:
            expires = principal.expires
            if expires != _NEVER and expires < time.time():
                raise CredentialsExpired(f"{principal.name} has expired; reconnect with a fresh token")
            principal.require(permission, stream_ids)
            rates = request.get(RATES_KEY)
            if rates is not None:
                rates.check_rate(principal)
        except IPubSubError as exc:
            refusals = request.app.get(REFUSALS_KEY)
            if refusals is not None:
                refusals.add(_reason(exc))
            raise


def _reason(exc: IPubSubError) -> str:
    for cls in type(exc).__mro__:
        reason = _REFUSAL_REASON.get(cls)
        if reason is not None:
            return reason
    if isinstance(exc, BadRequest):
        return "query_token_not_allowed"
    if isinstance(exc, Forbidden):
        return "admin_required" if exc.code == "admin_required" else "stream_forbidden"
    if isinstance(exc, Unauthorized):
        return "invalid_credentials" if exc.code == "invalid_credentials" else "missing_credentials"
    return exc.code


class Guard:
    """Builds the guarded version of each route's handler."""

    def __init__(
        self,
        *,
        authenticator: Authenticator | None,
        refusals: Refusals,
        max_body: int,
        body_timeout: float,
        secret_failures: FailureLimiter,
        gate: ConnectionGate | None = None,
    ) -> None:
        self.authenticator = authenticator
        self.secret_failures = secret_failures
        self.refusals = refusals
        self.max_body = max_body
        self.body_timeout = body_timeout
        self.gate = gate

    def wrap(self, handler: Handler, method: str, access: Access, *, max_body: int | None = None) -> Handler:
        """``handler`` behind the checks its route needs (``max_body``: this
        route's body limit, if not the node's ``limits.max_message_bytes``)."""
        if access.permission is Permission.INTERNAL:
            return self._wrap_internal(handler)
        auth = self.authenticator
        if access.permission in (Permission.PUBLIC, Permission.INTERNAL):
            auth = None
        refusals = self.refusals
        if max_body is None:
            max_body = self.max_body
        body_timeout = self.body_timeout
        read_body = method in _BODY_METHODS and access.permission is not Permission.INTERNAL
        first_request = self.gate.first_request if self.gate is not None else None
        permission = access.permission
        query_streams = access.query_streams
        query_token = access.query_token
        rates = auth is not None and auth.rates
        body_streams = access.body_streams
        multi = access.multiple_streams
        rate_each = access.rate_each and rates

        async def guarded(request: web.Request) -> web.StreamResponse:
            if first_request is not None:
                first_request(request.protocol)
            raw_query = request.rel_url.raw_query_string
            if "%" in raw_query:
                _check_query_utf8(raw_query, refusals)
            if auth is not None:
                try:
                    principal = _authenticate(auth, request, query_token, raw_query)
                except IPubSubError as exc:
                    refusals.add(_reason(exc))
                    raise
                try:
                    if rates:
                        auth.check_rate(principal)
                    if query_streams is not None:
                        if multi:
                            principal.require(permission, request.query.getall(query_streams, []))
                        elif (named := request.query.get(query_streams)) is not None:
                            principal.require(permission, (named,))
                    elif permission is not Permission.AUTHENTICATED:
                        principal.require(permission)
                except IPubSubError as exc:
                    refusals.add(_reason(exc))
                    raise
                if body_streams:
                    request[PRINCIPAL_KEY] = principal
                    if rate_each:
                        request[RATES_KEY] = auth
            if read_body:
                length = request.content_length
                if length is not None and length > max_body:
                    refusals.add("body_too_large")
                    raise MessageTooLarge(length, max_body)
                if not request.content.is_eof():
                    try:
                        async with asyncio.timeout(body_timeout):
                            await request.read()
                    except TimeoutError:
                        refusals.add("body_timeout")
                        raise BodyTimeout(
                            f"the request body did not arrive within {body_timeout:g} s (http.body_timeout_seconds)"
                        ) from None
            return await handler(request)

        return guarded

    def _wrap_internal(self, handler: Handler) -> Handler:
        """Internal routes check the cluster secret themselves; the guard
        bounds their time (body included) and blocks an address after
        repeated wrong secrets."""
        failures = self.secret_failures
        refusals = self.refusals
        timeout = self.body_timeout
        first_request = self.gate.first_request if self.gate is not None else None
        clock = time.monotonic

        async def guarded(request: web.Request) -> web.StreamResponse:
            if first_request is not None:
                first_request(request.protocol)
            remote = request.remote or "?"
            blocked = failures.blocked_for(remote, clock()) if failures.tracking(clock()) else 0.0
            if blocked:
                refusals.add("too_many_auth_failures")
                raise TooManyAuthFailures(
                    "too many wrong cluster secrets from this address; retry later", retry_after=max(1, round(blocked))
                )
            try:
                async with asyncio.timeout(timeout):
                    return await handler(request)
            except Unauthorized:
                failures.failed(remote, clock())
                refusals.add("bad_cluster_secret")
                raise
            except TimeoutError:
                refusals.add("body_timeout")
                raise BodyTimeout(f"the internal call did not complete within {timeout:g} s") from None

        return guarded


def _authenticate(auth: Authenticator, request: web.Request, query_token: bool, raw_query: str) -> Principal:
    header = request.headers.get(AUTHORIZATION_HEADER)
    credentials = None
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("the Authorization header must be: Bearer <API key or token>")
        credentials = value.strip()
    token = request.query.get(ACCESS_TOKEN_PARAM) if ACCESS_TOKEN_PARAM in raw_query else None
    if token is not None:
        if not query_token:
            raise BadRequest(
                f"{ACCESS_TOKEN_PARAM} is accepted on receive and subscribe only; use Authorization: Bearer",
                field=ACCESS_TOKEN_PARAM,
            )
        if credentials is None:
            return auth.authenticate(token, lambda: request.remote or "?", token_only=True)
    return auth.authenticate(credentials, lambda: request.remote or "?")


def _check_query_utf8(raw_query: str, refusals: Refusals) -> None:
    """Raises BadRequest when a percent-escape of the query is not UTF-8."""
    try:
        unquote_to_bytes(raw_query).decode("utf-8")
    except UnicodeDecodeError:
        refusals.add("invalid_utf8")
        field = None
        for part in raw_query.split("&"):
            name, _, value = part.partition("=")
            try:
                unquote_to_bytes(value).decode("utf-8")
            except UnicodeDecodeError:
                field = unquote_to_bytes(name).decode("utf-8", "replace")
                break
        raise BadRequest(f"the query parameter {field} is not valid UTF-8", field=field) from None
