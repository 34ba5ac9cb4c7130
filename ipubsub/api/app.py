"""Builds the aiohttp application and its runner for a node: every route
the node serves is mounted here."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from aiohttp import web

from ..errors import NotFound
from .errors import method_not_allowed_response
from .handler import Handler, make_wrapper
from .internal import InternalRoutes
from .openapi import add_openapi_routes
from .routes import PublicRoutes

if TYPE_CHECKING:
    from ..config import Config
    from ..node import Node

__all__ = ["AddRoute", "build_app", "build_runner"]

# add(method, path, handler): how route groups register their handlers.
AddRoute = Callable[[str, str, Handler], None]


def build_app(node: Node) -> web.Application:
    """The node's HTTP application: public API, metrics, OpenAPI, the
    dashboard and the internal cluster endpoints, every handler wrapped the same way, and JSON
    404/405 answers for everything else."""
    limit = node.config.limits.max_message_bytes
    app = web.Application(client_max_size=limit)
    wrap = make_wrapper(node.request_metrics, limit)
    methods: dict[str, list[str]] = {}

    def add(method: str, path: str, handler: Handler) -> None:
        wrapped = wrap(handler, path)
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped)
        methods.setdefault(path, []).append(method)

    PublicRoutes(node).add_to(add)
    add_openapi_routes(add)
    InternalRoutes(node.cluster, node.config.cluster.secret).add_to(add)
    node.dashboard.add_to(add)

    async def unmatched(request: web.Request) -> web.Response:
        allowed = methods.get(request.path)
        if allowed is None:
            raise NotFound(f"no such endpoint: {request.method} {request.path}")
        allow = sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set()))
        return method_not_allowed_response(request, allow)

    app.router.add_route("*", "/{tail:.*}", wrap(unmatched, "unmatched"))
    return app


def build_runner(app: web.Application, config: Config) -> web.AppRunner:
    """A runner that cancels the handler of a disconnected client (so a dead
    long poll never takes a message), with no access log unless configured."""
    access_log = logging.getLogger("ipubsub.access") if config.log.access_log else None
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=access_log,
        shutdown_timeout=config.node.shutdown_grace_seconds,
        handle_signals=False,
    )
