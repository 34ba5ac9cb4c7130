"""Handlers of the public HTTP API.  They decode the request, call the node
and encode its answer; all decisions are the node's."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from .. import SERVICE_NAME, __version__
from ..auth.access import Access, Permission
from ..calls import ReceiveCall, Relayed, SendCall
from ..errors import IPubSubError
from ..observability.metrics import METRICS_CONTENT_TYPE
from ..observability.views import cluster_view, health_view, is_healthy
from ..protocol import (
    CLUSTER_PATH,
    HEALTH_PATH,
    INFO_PATH,
    JSON_CONTENT_TYPE,
    METRICS_PATH,
    OWNER_PATH,
    RECEIVE_PATH,
    REQUEST_ID_HEADER,
    RETRY_AFTER_HEADER,
    RING_HEADER,
    SEND_BATCH_PATH,
    SEND_PATH,
)
from .answer import write_taken
from .codec import (
    check_stream_id,
    encode_batch_results,
    encode_deliveries,
    encode_delivery,
    encode_sent,
    parse_receive,
    parse_send,
    parse_send_batch,
)
from .errors import json_response, status_of
from .guard import authorize
from .history_codec import encode_history

if TYPE_CHECKING:
    from ..node import Node
    from .app import AddRoute

__all__ = ["PublicRoutes", "relayed_response"]


class PublicRoutes:
    """The public endpoints of one node."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._config = node.config

    def add_to(self, add: AddRoute) -> None:
        add("GET", INFO_PATH, self.info, Access.public())
        add("GET", HEALTH_PATH, self.health, Access.public())
        add("GET", METRICS_PATH, self.metrics, Access.admin())
        add("POST", SEND_PATH, self.send, Access.send())
        add("POST", SEND_BATCH_PATH, self.send_batch, Access.send(), max_body=self._config.limits.max_batch_bytes)
        add("GET", RECEIVE_PATH, self.receive, Access.receive(query="streamId", query_token=True))
        add("GET", OWNER_PATH, self.owner, Access.authenticated())
        # clients route by the member list: any caller with credentials may read it
        add("GET", CLUSTER_PATH, self.cluster, Access.authenticated())

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
        snapshot = self._node.snapshot()
        return json_response(health_view(snapshot), status=200 if is_healthy(snapshot) else 503)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._node.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE})

    async def send(self, request: web.Request) -> web.Response:
        cmd = parse_send(await request.read(), self._config)
        authorize(request, Permission.SEND, (cmd.stream_id,))
        result = await self._node.send(cmd, request_id=request.headers.get(REQUEST_ID_HEADER))
        if isinstance(result, Relayed):
            return relayed_response(result)
        return web.Response(body=encode_sent(result), content_type=JSON_CONTENT_TYPE)

    async def send_batch(self, request: web.Request) -> web.Response:
        items = parse_send_batch(await request.read(), self._config)
        for i, item in enumerate(items):  # per item: a forbidden stream fails that item alone
            if isinstance(item, SendCall):
                try:
                    authorize(request, Permission.SEND, (item.stream_id,))
                except IPubSubError as exc:
                    items[i] = exc
        results = await self._node.send_batch(items, request_id=request.headers.get(REQUEST_ID_HEADER))
        return web.Response(body=encode_batch_results(results, status_of), content_type=JSON_CONTENT_TYPE)

    async def receive(self, request: web.Request) -> web.StreamResponse:
        cmd = parse_receive(request.query, self._config)
        if cmd.from_history:
            return await self._read_history(cmd, request)
        result = await self._node.receive(cmd, request_id=request.headers.get(REQUEST_ID_HEADER))
        if isinstance(result, Relayed):
            if result.status == 200:
                return await self._write_forwarded(request, cmd, result)
            return relayed_response(result)
        deliveries = result if isinstance(result, list) else [result]
        if isinstance(result, list):  # leased deliveries (one, or a batch with maxMessages)
            body = encode_deliveries(result) if cmd.max_messages is not None else encode_delivery(result[0])
        else:
            body = encode_delivery(result)
        # written here, not after returning: an answer that cannot be written gives its messages back
        return await write_taken(
            request,
            body,
            lambda: self._node.give_back(cmd, deliveries),
            headers={RING_HEADER: self._node.cluster.ring_tag()},
        )

    async def _write_forwarded(self, request: web.Request, cmd: ReceiveCall, answer: Relayed) -> web.StreamResponse:
        """Write a forwarded poll's 200 answer here, where a failed write is
        seen: the messages of an answer that did not reach the client's
        socket go back to the owner."""
        return await write_taken(
            request,
            answer.body,
            lambda: self._node.give_back_forwarded(cmd, answer),
            headers={RING_HEADER: self._node.cluster.ring_tag()},
        )

    async def _read_history(self, cmd: ReceiveCall, request: web.Request) -> web.Response:
        read = await self._node.read_history(cmd, request_id=request.headers.get(REQUEST_ID_HEADER))
        if isinstance(read, Relayed):
            return relayed_response(read)
        return web.Response(body=encode_history(read), content_type=JSON_CONTENT_TYPE)

    async def owner(self, request: web.Request) -> web.Response:
        stream_id = check_stream_id(request.query.get("streamId"))
        name, address = self._node.owner_of(stream_id)
        return json_response({"streamId": stream_id, "node": name, "address": address})

    async def cluster(self, request: web.Request) -> web.Response:
        return json_response(cluster_view(self._node.cluster.snapshot()))


def relayed_response(reply: Relayed) -> web.Response:
    """The owner's answer to a forwarded call, status and body unchanged."""
    headers = {RETRY_AFTER_HEADER: reply.retry_after} if reply.retry_after else None
    return web.Response(body=reply.body, status=reply.status, content_type=JSON_CONTENT_TYPE, headers=headers)
