"""The wrapper every handler gets when its route is added: request id,
per-route metrics, and the mapping of every failure to a JSON answer (via
:mod:`ipubsub.api.errors`).

A plain function wrapper rather than an aiohttp middleware on purpose: any
middleware makes aiohttp add a second wrapper of its own to every request,
which costs a coroutine frame per waiting long poll and about a microsecond
per request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from ..errors import IPubSubError
from ..observability.logs import REQUEST_ID
from ..observability.metrics import RequestMetrics
from ..protocol import REQUEST_ID_HEADER, RING_HEADER
from .errors import error_response, http_error_response, internal_error_response

__all__ = ["Handler", "make_wrapper"]

log = logging.getLogger("ipubsub.api")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_wrapper(
    metrics: RequestMetrics, max_body: int, ring_tag: Callable[[], str] | None = None
) -> Callable[[Handler, str], Handler]:
    """Returns ``wrap(handler, route_label)``.  ``ring_tag`` gives the value
    of the ring header every answer carries (see ``RING_HEADER``)."""
    observe = metrics.observe
    perf_counter = time.perf_counter

    def wrap(handler: Handler, route: str) -> Handler:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            started = perf_counter()
            request_id = request.headers.get(REQUEST_ID_HEADER)
            if request_id is not None:
                REQUEST_ID.set(request_id)
            try:
                response = await handler(request)
            except IPubSubError as exc:
                response = error_response(exc)
            except web.HTTPException as exc:
                if exc.status < 400:
                    raise
                response = http_error_response(exc, request, max_body)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("unexpected error serving %s %s", request.method, request.path)
                response = internal_error_response()
            observe(route, response.status, perf_counter() - started)
            request_id = REQUEST_ID.get()
            if request_id is not None and not response.prepared:  # a written answer set it itself
                response.headers[REQUEST_ID_HEADER] = request_id
            if ring_tag is not None:
                response.headers[RING_HEADER] = ring_tag()
            return response

        return wrapped

    return wrap
