"""Builds the aiohttp application and its runner for a node: every route
the node serves is mounted here."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol

from aiohttp import web

from ..auth.access import Access, route_access
from ..auth.authenticator import Authenticator
from ..auth.rate import FailureLimiter
from ..errors import NotFound
from .access_log import RedactingAccessLogger
from .cors import Cors
from .errors import method_not_allowed_response
from .guard import REFUSALS_KEY, Guard
from .handler import Handler, make_wrapper
from .internal import InternalRoutes
from .lease_routes import LeaseRoutes
from .openapi import add_openapi_routes
from .routes import PublicRoutes
from .streaming import StreamingRoutes

if TYPE_CHECKING:
    from ..config import Config
    from ..node import Node

__all__ = ["AddRoute", "build_app", "build_runner"]


class AddRoute(Protocol):
    """``add(method, path, handler, access=None)``: how route groups register
    their handlers.  ``access`` declares what the route requires (see
    :class:`ipubsub.auth.access.Access`); without it the route is for
    operators only (internal paths: the cluster secret).  ``max_body``
    raises the body limit of that route above ``limits.max_message_bytes``
    (batch sends: ``limits.max_batch_bytes``)."""

    def __call__(
        self, method: str, path: str, handler: Handler, access: Access | None = None, *, max_body: int | None = None
    ) -> None: ...


def build_app(node: Node) -> web.Application:
    """The node's HTTP application: public API, metrics, OpenAPI, the
    dashboard and the internal cluster endpoints, every handler wrapped the same way, and JSON
    404/405 answers for everything else."""
    config = node.config
    limit = config.limits.max_message_bytes
    # aiohttp's own cap fits the largest route (a batch); each route's own
    # limit is the guard's (413 before the body is read)
    app = web.Application(client_max_size=max(limit, config.limits.max_batch_bytes))
    app[REFUSALS_KEY] = node.refusals
    wrap = make_wrapper(node.request_metrics, limit, node.cluster.ring_tag)
    failed = config.auth.failed_attempts
    guard = Guard(
        authenticator=Authenticator(config.auth) if config.auth.enabled else None,
        refusals=node.refusals,
        max_body=limit,
        body_timeout=config.http.body_timeout_seconds,
        secret_failures=FailureLimiter(failed.max_failures, failed.window_seconds, failed.block_seconds),
        gate=node.gate,
    )
    methods: dict[str, list[str]] = {}

    def add(
        method: str, path: str, handler: Handler, access: Access | None = None, *, max_body: int | None = None
    ) -> None:
        guarded = guard.wrap(handler, method, route_access(path, access), max_body=max_body)
        wrapped = wrap(guarded, path)
        if method == "GET":
            app.router.add_get(path, wrapped)  # and HEAD
        else:
            app.router.add_route(method, path, wrapped)
        methods.setdefault(path, []).append(method)

    PublicRoutes(node).add_to(add)
    LeaseRoutes(node).add_to(add)
    StreamingRoutes(node).add_to(add)
    add_openapi_routes(add)
    InternalRoutes(node.cluster, node.config.cluster.secret).add_to(add)
    node.dashboard.add_to(add)

    cors = Cors(config.http.cors) if config.http.cors.origins else None
    if cors is not None:
        app.on_response_prepare.append(cors.on_response_prepare)

    async def unmatched(request: web.Request) -> web.Response:
        allowed = methods.get(request.path)
        if allowed is None:
            raise NotFound(f"no such endpoint: {request.method} {request.path}")
        if cors is not None and request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return cors.preflight(request, allowed + (["HEAD"] if "GET" in allowed else []))
        allow = sorted(set(allowed) | ({"HEAD"} if "GET" in allowed else set()))
        return method_not_allowed_response(request, allow)

    app.router.add_route("*", "/{tail:.*}", wrap(guard.wrap(unmatched, "GET", Access.public()), "unmatched"))
    return app


def build_runner(app: web.Application, config: Config) -> web.AppRunner:
    """A runner that cancels the handler of a disconnected client (so a dead
    long poll never takes a message), with no access log unless configured
    (and then without ``access_token`` values), and the HTTP limits of
    ``http.*``."""
    access_log = logging.getLogger("ipubsub.access") if config.log.access_log else None
    http = config.http
    return web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=access_log,
        access_log_class=RedactingAccessLogger,
        shutdown_timeout=config.node.shutdown_grace_seconds,
        handle_signals=False,
        # idle keep-alive; in aiohttp >= 3.14.5 also the bound on a request head's arrival
        keepalive_timeout=http.keepalive_timeout_seconds,
        max_line_size=http.max_line_size,
        max_field_size=http.max_field_size,
        max_headers=http.max_headers,
        # a refused body is read and discarded for at most this long before closing
        lingering_time=1.0,
    )
