"""Builds the aiohttp application and its runner for a node."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from aiohttp import web

from .errors import make_error_middleware
from .routes import PublicRoutes

if TYPE_CHECKING:
    from ..config import Config
    from ..node import Node

__all__ = ["build_app", "build_runner"]


def build_app(node: Node) -> web.Application:
    """The node's HTTP application: public API plus internal cluster endpoints."""
    limit = node.config.limits.max_message_bytes
    app = web.Application(client_max_size=limit, middlewares=[make_error_middleware(limit)])
    PublicRoutes(node).add_to(app)
    for extra in node.http_extensions():
        extra(app)
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
