"""Serves the OpenAPI 3.1 description of the public API.

The document is the hand-maintained package file ``ipubsub/api/openapi.json``;
it is read once and served byte for byte at ``GET /api/v1/openapi.json``.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING

from aiohttp import web

from ..auth.access import Access
from ..protocol import JSON_CONTENT_TYPE, OPENAPI_PATH, REQUEST_ID_HEADER

if TYPE_CHECKING:
    from .app import AddRoute

__all__ = ["add_openapi_routes", "openapi_document", "serve_openapi"]


@functools.cache
def openapi_document() -> bytes:
    """The document's bytes, read from the package once.

    Raises:
        OSError: the package was installed without its ``openapi.json``.
    """
    return resources.files(__package__).joinpath("openapi.json").read_bytes()


async def serve_openapi(request: web.Request) -> web.Response:
    response = web.Response(body=openapi_document(), content_type=JSON_CONTENT_TYPE)
    request_id = request.headers.get(REQUEST_ID_HEADER)
    if request_id is not None:  # also when mounted without the common wrapper
        response.headers[REQUEST_ID_HEADER] = request_id
    return response


def add_openapi_routes(add: AddRoute) -> None:
    """Route group for :func:`ipubsub.api.app.build_app`, whose ``add(method,
    path, handler)`` gives the route the common wrapper (request id, metrics,
    errors) and the JSON 405 for other methods, like every public route."""
    openapi_document()  # a broken install fails at start-up, not on the first request
    add("GET", OPENAPI_PATH, serve_openapi, Access.public())
