"""Streaming receive over Server-Sent Events: ``GET /api/v1/streams/subscribe``.

The wire format (see docs/design.md, "Streaming receive"):

* first a ``retry:`` hint; then one event per message: ``id:`` (the
  messageUuid, for a durable stream the resume token after the message,
  for a history (``fromHistory``) the message's ``position``) and ``data:``
  (the JSON a receive answers);
* history only: ``event: gap`` (data ``{"recovered": false, "gap", "position"}``,
  id the position reading goes on after) when the position asked for
  cannot be continued;
* a ``: keepalive`` comment after ``stream.heartbeat_seconds`` without one;
* at a chosen end (``maxMessages``, ``timeoutSeconds``) or a forced one
  (node stopping, stream handed off, an error) a final ``event: end`` whose
  data says why (``{"reason": ..., "code"?, "error"?}``), then EOF.

Flow control: the next message is taken only once the previous write has
left the connection's buffer (then up to :data:`WRITE_BATCH` that are there
already, in one write).  A message that cannot be written (the client
went away) is given back to the front of its stream.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import math
import struct
import termios
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from aiohttp import web

from ..auth.access import Access
from ..errors import BadRequest, IPubSubError, ReceiveTimeout, StreamReleased
from ..observability.logs import REQUEST_ID
from ..protocol import (
    EVENT_STREAM_CONTENT_TYPE,
    FROM_HISTORY_PARAM,
    LAST_EVENT_ID_HEADER,
    LAST_EVENT_ID_PARAM,
    POSITION_PARAM,
    REQUEST_ID_HEADER,
    SUBSCRIBE_PATH,
    WS_PATH,
)
from ..subscriptions import Item, Subscriber
from .codec import check_stream_id, encode_json, parse_bool
from .history_codec import check_position
from .history_stream import HistorySubscriber

if TYPE_CHECKING:
    from ..node import Node
    from .app import AddRoute

__all__ = ["StreamingRoutes", "SubscribeQuery", "parse_subscribe", "sse_event", "wait_writable"]

log = logging.getLogger("ipubsub.api")

_MAX_COUNT = 10**9
#: messages already there taken (and written) together, at most
WRITE_BATCH = 32
#: a subscriber takes its next message only while fewer bytes than this wait
#: unacknowledged in its socket (see :func:`wait_writable`)
MAX_UNACKED_BYTES = 64 * 1024
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)  # == SIOCOUTQ on Linux
SSE_HEADERS = {
    "Content-Type": EVENT_STREAM_CONTENT_TYPE + "; charset=utf-8",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # nginx: do not buffer the stream
}


class SubscribeQuery:
    """A validated subscribe request."""

    __slots__ = ("stream_id", "from_db", "token", "max_messages", "timeout", "from_history", "position")

    def __init__(
        self, stream_id: str, from_db: bool, token: str | None, max_messages: int | None, timeout: int | None,
        from_history: bool = False, position: str | None = None,
    ) -> None:
        self.stream_id = stream_id
        self.from_db = from_db
        self.token = token
        self.from_history = from_history
        self.position = position  # fromHistory: read after it (None: from the oldest held)
        self.max_messages = max_messages  # None: no limit
        self.timeout = timeout  # None: no end; 0: deliver what is there, then end


def _count(raw: str | None, field: str) -> int | None:
    if raw is None or raw == "":
        return None
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 10 or int(raw) > _MAX_COUNT:
        raise BadRequest(f"{field} must be a whole number from 0 to {_MAX_COUNT}, got {raw[:40]!r}", field=field)
    return int(raw)


def parse_subscribe(query: Mapping[str, str], last_event_id: str | None) -> SubscribeQuery:
    """Validate a subscribe query.  For a durable stream the resume point is
    ``Last-Event-ID`` (header, else the ``lastEventId`` parameter) when
    given, else ``dbResumeToken``: a reconnecting EventSource repeats the
    original URL, so the id it last saw must win.  For a history
    (``fromHistory``) the same goes for ``position``.

    Raises:
        BadRequest: a parameter is missing, malformed or out of range.
    """
    stream_id = check_stream_id(query.get("streamId"))
    from_db = parse_bool(query.get("readFromDB"), "readFromDB")
    from_history = parse_bool(query.get(FROM_HISTORY_PARAM), FROM_HISTORY_PARAM)
    if from_history and from_db:
        raise BadRequest("fromHistory and readFromDB cannot be combined: choose one", field=FROM_HISTORY_PARAM)
    resume = last_event_id or query.get(LAST_EVENT_ID_PARAM) or None
    token = (resume or query.get("dbResumeToken") or None) if from_db else None
    position = check_position(resume or query.get(POSITION_PARAM) or None) if from_history else None
    return SubscribeQuery(
        stream_id, from_db, token, _count(query.get("maxMessages"), "maxMessages"),
        _count(query.get("timeoutSeconds"), "timeoutSeconds"), from_history, position,
    )


def sse_event(item: Item) -> bytes:
    """One SSE event: ``id:`` and the data split into lines (a payload may
    hold line breaks in its JSON whitespace; the browser joins them with LF)."""
    body = item.body
    if b"\n" in body or b"\r" in body:
        lines = body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        data = b"".join(b"data: " + line + b"\n" for line in lines)
    else:
        data = b"data: " + body + b"\n"
    event_id = item.event_id
    if item.event is not None:
        data = b"event: " + item.event.encode() + b"\n" + data
    if "\n" in event_id or "\r" in event_id or "\x00" in event_id:
        return data + b"\n"  # an id that cannot travel as an SSE id is left out
    return b"id: " + event_id.encode() + b"\n" + data + b"\n"


def end_event(reason: str, error: IPubSubError | None = None) -> bytes:
    """The final ``end`` event: why the stream ends."""
    body: dict[str, object] = {"reason": reason}
    if error is not None:
        body.update(error.to_dict())
    return b"event: end\ndata: " + encode_json(body) + b"\n\n"


def _kernel_queued(transport: asyncio.BaseTransport) -> int:
    """Bytes written to the socket that its peer has not acknowledged yet
    (Linux ``SIOCOUTQ``; 0 where it is not available)."""
    sock = transport.get_extra_info("socket")
    if sock is None or _OUTQ is None:
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return 0


async def wait_writable(request: web.Request, stop: Callable[[], bool] | None = None) -> bool:
    """Wait until the connection can take another message: what was written
    has left the process's buffer and at most :data:`MAX_UNACKED_BYTES` wait
    in the kernel for the peer (a reader that stopped reading stops the
    queue there, however big the kernel's buffers).  Polls, backing off to
    100 ms: only slow readers wait here.  False once the connection is
    closing or gone, or once ``stop()`` holds."""
    delay = 0.002
    while True:
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        if stop is not None and stop():
            return True
        if not transport.get_write_buffer_size() and _kernel_queued(transport) <= MAX_UNACKED_BYTES:
            return True
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.1)


class StreamingRoutes:
    """``/api/v1/streams/subscribe`` (SSE) and ``/api/v1/ws`` (WebSocket)."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._subs = node.subscriptions
        self._retry = node.config.stream.sse_retry_ms

    def add_to(self, add: AddRoute) -> None:
        from .ws import WebSocketRoute

        add("GET", SUBSCRIBE_PATH, self.subscribe, Access.receive(query="streamId", query_token=True))
        # streams are named in frames: each subscribe / send is authorized by the handler
        ws_access = Access.connection()  # every send / subscribe frame also counts against the caller's rate
        add("GET", WS_PATH, WebSocketRoute(self._node).handle, ws_access)

    async def subscribe(self, request: web.Request) -> web.StreamResponse:
        q = parse_subscribe(request.query, request.headers.get(LAST_EVENT_ID_HEADER))
        if q.from_history:
            sub = self._subs.open(q.stream_id, kind=HistorySubscriber)
            assert isinstance(sub, HistorySubscriber)
            sub.position = q.position
        else:
            sub = self._subs.open(q.stream_id, from_db=q.from_db, token=q.token)
        try:
            response = web.StreamResponse(headers=SSE_HEADERS)
            request_id = REQUEST_ID.get()
            if request_id is not None:
                response.headers[REQUEST_ID_HEADER] = request_id
            await response.prepare(request)
            await response.write(b"retry: %d\n\n" % self._retry)
            reason, error = await self._pump(request, response, sub, q)
            try:
                await response.write(end_event(reason, error))
                await response.write_eof()
            except (ConnectionError, RuntimeError):
                pass
            return response
        finally:
            self._subs.close_one(sub)

    async def _pump(
        self, request: web.Request, response: web.StreamResponse, sub: Subscriber, q: SubscribeQuery
    ) -> tuple[str, IPubSubError | None]:
        """Write events until the stream ends; return why."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + q.timeout if q.timeout is not None else None
        heartbeat = self._subs.heartbeat_seconds
        sent = 0
        while True:
            if q.max_messages is not None and sent >= q.max_messages:
                return "maxMessages", None
            if sub.closing:
                return "shutdown", None
            wait = heartbeat
            if deadline is not None:  # timeoutSeconds=0: what is there now, then the end
                wait = max(0, min(heartbeat, math.ceil(deadline - loop.time() - 0.01)))
            if not await wait_writable(request, lambda: sub.closing):
                return "disconnected", None
            if sub.closing:
                return "shutdown", None
            limit = WRITE_BATCH if q.max_messages is None else min(WRITE_BATCH, q.max_messages - sent)
            try:
                items = await sub.next_batch(wait, limit)
            except ReceiveTimeout:
                if deadline is not None and loop.time() >= deadline - 0.01:
                    return "timeout", None
                try:
                    await response.write(b": keepalive\n\n")
                except ConnectionError:
                    return "disconnected", None
                continue
            except StreamReleased as exc:
                return ("shutdown" if sub.closing or self._subs.closing else "released"), exc
            except IPubSubError as exc:
                return "error", exc
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if sub.closing and task is not None and task.uncancel() == 0:
                    return "shutdown", None  # the node stops: end the stream cleanly
                raise
            try:
                await response.write(b"".join([sse_event(item) for item in items]))
            except ConnectionError:
                sub.give_back_all(items)
                return "disconnected", None
            except BaseException:
                sub.give_back_all(items)
                raise
            transport = request.transport
            if transport is None or transport.is_closing():
                # the loop dropped the bytes without raising (a reset already queued)
                sub.give_back_all(items)
                return "disconnected", None
            sent += sum(1 for item in items if item.event is None)  # a gap event is not a message
