"""Internal HTTP endpoints nodes call on each other (``/internal/v1/...``):
membership gossip and leave, kept on HTTP so that heartbeats travel on
their own connection, never queued behind forwarded calls on the peer link
(which carries everything else: see :mod:`ipubsub.cluster.link`).  They
require ``cluster.secret`` when one is configured (401 otherwise)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from ..errors import BadRequest, Unauthorized
from ..protocol import (
    INTERNAL_GOSSIP_PATH,
    INTERNAL_LEAVE_PATH,
    JSON_CONTENT_TYPE,
    SECRET_HEADER,
)
from .errors import json_response

if TYPE_CHECKING:
    from ..cluster.cluster import Cluster
    from .app import AddRoute

__all__ = ["InternalRoutes", "require_secret"]

# Gossip of a large cluster may exceed the public body limit (limits.max_message_bytes).
MAX_INTERNAL_BODY = 64 * 1024 * 1024

Handler = Callable[[web.Request], Awaitable[web.Response]]


def require_secret(secret: str, handler: Handler) -> Handler:
    """``handler`` behind the cluster secret: 401 unless the request carries
    it (compared in constant time); ``handler`` itself when no secret is set."""
    if not secret:
        return handler
    expected = secret.encode()

    async def guarded(request: web.Request) -> web.Response:
        # aiohttp keeps undecodable header bytes as surrogates: compare the bytes sent
        given = request.headers.get(SECRET_HEADER, "").encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(given, expected):
            raise Unauthorized("internal endpoints need the cluster secret (X-IPubSub-Secret)")
        return await handler(request)

    return guarded


class InternalRoutes:
    def __init__(self, cluster: Cluster, secret: str) -> None:
        self._cluster = cluster
        self._secret = secret.encode()

    def add_to(self, add: AddRoute) -> None:
        add("POST", INTERNAL_GOSSIP_PATH, self._guard(self.gossip))
        add("POST", INTERNAL_LEAVE_PATH, self._guard(self.leave))

    def _guard(self, handler: Handler) -> Handler:
        return require_secret(self._secret.decode(), handler)

    @staticmethod
    async def _body(request: web.Request) -> bytes:
        if request.content_length is not None and request.content_length > MAX_INTERNAL_BODY:
            raise BadRequest(f"internal payload over {MAX_INTERNAL_BODY} bytes")
        return await request.content.read()

    async def gossip(self, request: web.Request) -> web.Response:
        return web.Response(body=self._cluster.on_gossip(await self._body(request)), content_type=JSON_CONTENT_TYPE)

    async def leave(self, request: web.Request) -> web.Response:
        self._cluster.on_leave(await self._body(request))
        return json_response({"ok": True})
