"""Handlers of the public HTTP API.  They decode the request, call the node
and encode its answer; all decisions are the node's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .. import SERVICE_NAME, __version__
from ..commands import Relayed
from .errors import json_response
from .wire import check_stream_id, encode_delivery, encode_send_result, parse_receive, parse_send

if TYPE_CHECKING:
    from ..node import Node
    from .app import AddRoute

__all__ = ["FORWARDED_HEADER", "POLL_ID_HEADER", "PublicRoutes", "REQUEST_ID_HEADER", "relayed_response"]

FORWARDED_HEADER = "X-IPubSub-Forwarded-By"
POLL_ID_HEADER = "X-IPubSub-Poll-Id"
REQUEST_ID_HEADER = "X-Request-Id"
_JSON = "application/json"


class PublicRoutes:
    """The public endpoints of one node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._config = node.config

    def add_to(self, add: AddRoute) -> None:
        add("GET", "/", self.info)
        add("GET", "/health", self.health)
        add("POST", "/api/v1/streams/send", self.send)
        add("GET", "/api/v1/streams/receive", self.receive)
        add("GET", "/api/v1/streams/owner", self.owner)
        add("GET", "/api/v1/cluster", self.cluster)

    async def info(self, request: web.Request) -> web.Response:
        return json_response(
            {
                "service": SERVICE_NAME,
                "implementation": "ipubsub",
                "version": __version__,
                "node": self._node.name,
            }
        )

    async def health(self, request: web.Request) -> web.Response:
        body = self._node.health()
        return json_response(body, status=200 if body["status"] == "ok" else 503)

    async def send(self, request: web.Request) -> web.Response:
        cmd = parse_send(await request.read(), self._config)
        headers = request.headers
        result = await self._node.send(
            cmd, forwarded_by=headers.get(FORWARDED_HEADER), request_id=headers.get(REQUEST_ID_HEADER)
        )
        if isinstance(result, Relayed):
            return relayed_response(result)
        return web.Response(body=encode_send_result(result), content_type=_JSON)

    async def receive(self, request: web.Request) -> web.Response:
        cmd = parse_receive(request.query, self._config)
        headers = request.headers
        result = await self._node.receive(
            cmd,
            forwarded_by=headers.get(FORWARDED_HEADER),
            poll_id=headers.get(POLL_ID_HEADER),
            request_id=headers.get(REQUEST_ID_HEADER),
        )
        if isinstance(result, Relayed):
            return relayed_response(result)
        return web.Response(body=encode_delivery(result), content_type=_JSON)

    async def owner(self, request: web.Request) -> web.Response:
        stream_id = check_stream_id(request.query.get("streamId"))
        name, address = self._node.owner_of(stream_id)
        return json_response({"streamId": stream_id, "node": name, "address": address})

    async def cluster(self, request: web.Request) -> web.Response:
        return json_response(self._node.cluster_view())


def relayed_response(reply: Relayed) -> web.Response:
    """The owner's answer to a forwarded call, status and body unchanged."""
    headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
    return web.Response(body=reply.body, status=reply.status, content_type=_JSON, headers=headers)
