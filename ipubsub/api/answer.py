"""Answers that carry messages taken for their receiver.

aiohttp writes a handler's response after the handler returned, and when
that write fails (the client reset the connection in the same loop step) it
only logs it: a message taken for that answer would be lost.  A handler
whose answer carries taken messages writes it itself, with
:func:`write_taken`, and learns whether the answer reached the client's
socket; if not, ``give_back`` runs and the messages go back (to the front of
their stream, in their order, or to the next waiting receiver).

The rule (README): once the answer was written to the client's socket it
counts as delivered.  An answer counts as not written when

* writing raised (the transport was closing or closed: ``ConnectionError``),
* the task was cancelled while writing (the client went away mid-write),
* the transport is closing right after the write: the kernel refused the
  bytes (a reset already queued on the socket) and the event loop dropped
  them without raising, or
* the request was ``HEAD``, whose answer has no body.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from aiohttp import web

from ..observability.logs import REQUEST_ID
from ..protocol import JSON_CONTENT_TYPE, REQUEST_ID_HEADER

__all__ = ["write_taken"]


async def write_taken(
    request: web.Request,
    body: bytes,
    give_back: Callable[[], None],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> web.StreamResponse:
    """Write a JSON answer carrying taken messages now, inside the handler.

    ``give_back`` is called exactly once if the answer did not reach the
    client's socket (see the module docstring), never if it did.  Returns the
    response, already written (or failed): the handler returns it as is.

    Raises:
        asyncio.CancelledError: the task was cancelled while writing
            (``give_back`` ran first).
    """
    response = web.Response(body=body, status=status, content_type=JSON_CONTENT_TYPE, headers=headers)
    request_id = REQUEST_ID.get()
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id
    written = False
    try:
        await response.prepare(request)
        await response.write_eof()
        transport = request.transport
        written = request.method != "HEAD" and transport is not None and not transport.is_closing()
    except ConnectionError:  # aiohttp's "Cannot write to closing transport" is one
        pass
    finally:
        if not written:
            give_back()
    return response
