"""Handlers of at-least-once delivery: ack and nack of leased deliveries,
and the consumer groups of a durable stream.  Leased and group receives
are ordinary receives (:mod:`.routes`) with ``leaseSeconds`` / ``group``.

Access: ack and nack need the receive permission on the body's stream;
listing a stream's groups needs the receive permission on it; deleting a
group (which forgets what it has delivered: a group of the same name
starts again from the oldest message) is for operators (admin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from ..auth.access import Access, Permission
from ..protocol import ACK_PATH, GROUPS_PATH, JSON_CONTENT_TYPE, NACK_PATH, REQUEST_ID_HEADER
from .codec import encode_ack, encode_groups, parse_ack, parse_group_query, parse_nack
from .errors import json_response
from .guard import authorize

if TYPE_CHECKING:
    from ..node import Node
    from .app import AddRoute

__all__ = ["LeaseRoutes"]


class LeaseRoutes:
    """``POST ack``, ``POST nack``, ``GET`` and ``DELETE groups``."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._config = node.config

    def add_to(self, add: AddRoute) -> None:
        add("POST", ACK_PATH, self.ack, Access.receive(query=None, query_token=False))
        add("POST", NACK_PATH, self.nack, Access.receive(query=None, query_token=False))
        add("GET", GROUPS_PATH, self.groups, Access.receive(query="streamId", query_token=False))
        add("DELETE", GROUPS_PATH, self.delete_group, Access.admin())

    async def ack(self, request: web.Request) -> web.Response:
        call = parse_ack(await request.read(), self._config)
        authorize(request, Permission.RECEIVE, (call.stream_id,))
        answers = await self._node.ack(call, request_id=request.headers.get(REQUEST_ID_HEADER))
        return web.Response(body=encode_ack(call, answers), content_type=JSON_CONTENT_TYPE)

    async def nack(self, request: web.Request) -> web.Response:
        call = parse_nack(await request.read(), self._config)
        authorize(request, Permission.RECEIVE, (call.stream_id,))
        answers = await self._node.nack(call, request_id=request.headers.get(REQUEST_ID_HEADER))
        return web.Response(body=encode_ack(call, answers), content_type=JSON_CONTENT_TYPE)

    async def groups(self, request: web.Request) -> web.Response:
        stream_id, _ = parse_group_query(request.query, need_group=False)
        groups = await self._node.groups(stream_id)
        return web.Response(
            body=encode_groups(stream_id, groups, self._node.clock.time_us()), content_type=JSON_CONTENT_TYPE
        )

    async def delete_group(self, request: web.Request) -> web.Response:
        stream_id, group = parse_group_query(request.query, need_group=True)
        assert group is not None
        await self._node.delete_group(stream_id, group)
        return json_response({"streamId": stream_id, "group": group, "deleted": True})
