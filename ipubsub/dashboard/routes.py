"""The dashboard component of a node: its history sampler, the cluster
overview, and its routes.

Public (only with ``http.dashboard: true``): ``GET /dashboard/`` (the page and
its files) and the JSON the page polls, ``GET /dashboard/api/overview``,
``/dashboard/api/node?node=NAME`` and ``/dashboard/api/stream?streamId=S``.
Internal (always, behind the cluster secret): the summary and stream lookups
peers ask of each other.  The page's JSON lives under ``/dashboard/`` rather
than ``/api/v1/`` because it is the page's, not a stable API.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING, Any, cast

import msgspec
from aiohttp import web

from ..api.codec import check_stream_id
from ..api.errors import json_response
from ..api.internal import require_secret
from ..errors import BadRequest, NotFound, OwnerUnavailable
from ..observability.views import cluster_view
from ..protocol import (
    DASHBOARD_NODE_PATH,
    DASHBOARD_OVERVIEW_PATH,
    DASHBOARD_PATH,
    DASHBOARD_STREAM_PATH,
    INTERNAL_DASHBOARD_STREAM_PATH,
    INTERNAL_DASHBOARD_SUMMARY_PATH,
)
from .figures import node_summary, read_figures
from .history import History
from .inspect import inspect_here, inspect_stream, parse_messages
from .overview import ClusterOverview
from .peer import PeerAnswer, PeerUnreachable, ask_peer

if TYPE_CHECKING:
    from ..api.app import AddRoute
    from ..node import Node

__all__ = ["ASSETS", "Dashboard"]

# The page's files (in ipubsub/dashboard/static/) and their content types.
ASSETS = {
    "index.html": "text/html",
    "dashboard.css": "text/css",
    "dashboard.js": "text/javascript",
}
# The page loads only its own files and talks only to this node; it may not be framed.
_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
}
# A peer's answer to the dashboard must come quickly: the page polls every 2 s.
PEER_TIMEOUT_SECONDS = 1.0


class Dashboard:
    """Owns the history sampling task and the overview's gathering task."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._enabled = node.config.http.dashboard
        self._secret = node.config.cluster.secret
        self._timeout = min(PEER_TIMEOUT_SECONDS, node.config.cluster.peer_request_timeout_seconds)
        self.history = History(lambda: read_figures(node))
        self.overview = ClusterOverview(node, self.history, timeout=self._timeout)
        self._files: dict[str, bytes] = {}

    def start(self) -> None:
        self.history.start()

    async def close(self) -> None:
        await self.overview.close()
        await self.history.close()

    def add_to(self, add: AddRoute) -> None:
        add("POST", INTERNAL_DASHBOARD_SUMMARY_PATH, require_secret(self._secret, self.peer_summary))
        add("POST", INTERNAL_DASHBOARD_STREAM_PATH, require_secret(self._secret, self.peer_stream))
        if not self._enabled:
            return
        static = resources.files(__package__) / "static"
        self._files = {name: (static / name).read_bytes() for name in ASSETS}
        add("GET", DASHBOARD_PATH, self.redirect)
        add("GET", DASHBOARD_PATH + "/", self.page)
        add("GET", DASHBOARD_PATH + "/{asset}", self.asset)
        add("GET", DASHBOARD_OVERVIEW_PATH, self.get_overview)
        add("GET", DASHBOARD_NODE_PATH, self.get_node)
        add("GET", DASHBOARD_STREAM_PATH, self.get_stream)

    # -- the page ------------------------------------------------------------------

    async def redirect(self, request: web.Request) -> web.Response:
        # Relative, so the page also works behind a proxy that adds a prefix.
        return web.Response(status=302, headers={"Location": "dashboard/"})

    async def page(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def asset(self, request: web.Request) -> web.Response:
        name = request.match_info["asset"]
        if name not in ASSETS:
            raise NotFound(f"no such dashboard file: {name}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], content_type=ASSETS[name], charset="utf-8", headers=_HEADERS)

    # -- the page's JSON -----------------------------------------------------------

    async def get_overview(self, request: web.Request) -> web.Response:
        return json_response(await self.overview.get())

    async def get_node(self, request: web.Request) -> web.Response:
        """One member's summary with every series (asked of it if remote)."""
        node = self._node
        name = request.query.get("node") or node.name
        if name == node.name:
            return json_response(node_summary(node, self.history))
        members = {m["name"]: m for m in cast(list[dict[str, Any]], cluster_view(node.cluster.snapshot())["members"])}
        member = members.get(name)
        if member is None:
            raise NotFound(f"no member named {name!r}", field="node")
        try:
            summary = await ask_peer(node.cluster, member["address"], INTERNAL_DASHBOARD_SUMMARY_PATH, {"series": None}, self._timeout)
        except (PeerUnreachable, PeerAnswer) as exc:
            raise OwnerUnavailable(f"node {name} did not answer ({exc})", retry_after=1, node=name) from None
        return json_response(summary)

    async def get_stream(self, request: web.Request) -> web.Response:
        stream_id = check_stream_id(request.query.get("streamId"))
        messages = parse_messages(request.query.get("messages"))
        return json_response(await inspect_stream(self._node, stream_id, messages, self._timeout))

    # -- what peers ask --------------------------------------------------------------

    async def peer_summary(self, request: web.Request) -> web.Response:
        asked = _object(await request.read())
        return json_response(self.overview.summary(asked))

    async def peer_stream(self, request: web.Request) -> web.Response:
        asked = _object(await request.read())
        stream_id = asked.get("streamId")
        if not isinstance(stream_id, str):
            raise BadRequest("streamId must be a string", field="streamId")
        return json_response(await inspect_here(self._node, check_stream_id(stream_id),
                                                parse_messages(asked.get("messages"))))


def _object(body: bytes) -> dict[str, Any]:
    try:
        decoded = msgspec.json.decode(body) if body else {}
    except msgspec.DecodeError:
        decoded = None
    if not isinstance(decoded, dict):
        raise BadRequest("expected a JSON object")
    return decoded
