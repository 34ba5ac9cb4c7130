"""The public listener: aiohttp's connection handling behind a gate that
holds the connection limit and the header timeout.

aiohttp bounds a new connection's time to its first complete request only
by ``keepalive_timeout`` (3.14.5; nothing before), and has no limit on the
number of connections.  :class:`ConnectionGate` is the protocol factory the
listening socket calls for each accepted connection:

* over ``limits.max_connections`` open connections it answers a fixed 503
  (``too_many_connections``) and closes, without involving aiohttp;
* otherwise it hands the connection to aiohttp and arms a timer: a
  connection that has not delivered one complete request head within
  ``http.header_timeout_seconds`` is closed (slowloris).  The request
  wrapper disarms it (:meth:`ConnectionGate.first_request`).

Later requests on a keep-alive connection are bounded by aiohttp's own
``keepalive_timeout`` (the idle timer is not reset by partial bytes).

A request aiohttp cannot parse (a request line or header over
``http.max_line_size`` / ``max_field_size``, more than ``http.max_headers``
headers, malformed HTTP) gets a JSON error with a ``code`` like every other
refusal, is counted in ``ipubsub_refused_total``, and is logged at debug
level only: aiohttp's own answer is plain text and logs a traceback each
time, which a flood of bad requests would turn into a flood of logs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from typing import Any, ClassVar, cast

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from ..auth.refusals import Refusals
from ..memory import MemoryReturner
from ..protocol import JSON_CONTENT_TYPE

__all__ = ["ConnectionGate", "GatedSite"]

log = logging.getLogger("ipubsub.api")

_BUSY_BODY = b'{"error":"this node has too many open connections; retry later","code":"too_many_connections"}'
_BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: " + JSON_CONTENT_TYPE.encode()
    + b"\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: " + str(len(_BUSY_BODY)).encode()
    + b"\r\n\r\n" + _BUSY_BODY
)


# How long a refused connection may stay to read our 503 before it is cut.
REFUSE_LINGER_SECONDS = 1.0


class _Refuse(asyncio.Protocol):
    """Writes the fixed 503, half-closes and discards what the client sends
    until it closes too (at most :data:`REFUSE_LINGER_SECONDS`): closing
    with unread bytes would reset the connection and the client might lose
    the answer."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._transport = transport
        transport.write(_BUSY_ANSWER)
        if transport.can_write_eof():
            transport.write_eof()
        self._timer = asyncio.get_running_loop().call_later(REFUSE_LINGER_SECONDS, transport.abort)

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> bool:
        self._transport.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._timer.cancel()


# what a request aiohttp could not parse gets: (code, refusal reason, text);
# the text never echoes the request's bytes
_TOO_LONG = ("line_too_long", "line_too_long",
             "a request line or header field is too long (http.max_line_size, http.max_field_size)")
_TOO_MANY = ("too_many_headers", "too_many_headers", "the request has too many headers (http.max_headers)")
_MALFORMED = ("bad_request", "bad_http_request", "malformed HTTP request")


class _ParseErrorAnswers(RequestHandler):
    """aiohttp's connection handler, answering a request it could not
    parse with a counted JSON error (see the module's docstring).

    Connections are made as aiohttp's own handler and then given this
    class (same layout: no new slots), so aiohttp's ``web.Server`` keeps
    building them with its own arguments.  ``refusals`` is set on a
    subclass per gate."""

    __slots__ = ()
    refusals: ClassVar[Refusals]

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if not isinstance(exc, BadHttpMessage) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        if isinstance(exc, LineTooLong):
            code, reason, text = _TOO_LONG
        elif "too many headers" in str(exc.message).lower():
            code, reason, text = _TOO_MANY
        else:
            code, reason, text = _MALFORMED
        self.refusals.add(reason)
        log.debug("refused an unparsable request from %s: %s", request.remote, exc)
        response = web.Response(
            status=exc.code or 400, content_type=JSON_CONTENT_TYPE,
            body=json.dumps({"error": text, "code": code}).encode(),
        )
        response.force_close()
        return response


class ConnectionGate:
    """Protocol factory in front of aiohttp's ``web.Server``.

    ``open_connections`` counts aiohttp's live connections; ``fresh`` maps a
    connection that has not yet delivered a request to its timer.
    """

    def __init__(self, *, max_connections: int, header_timeout: float, refusals: Refusals) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._refusals = refusals
        self._server: web.Server | None = None
        self._fresh: dict[Any, asyncio.TimerHandle] = {}
        self._handler_class = type("ParseErrorAnswers", (_ParseErrorAnswers,), {"__slots__": (), "refusals": refusals})

    def attach(self, server: web.Server) -> None:
        self._server = server

    @property
    def open_connections(self) -> int:
        return len(self._server.connections) if self._server is not None else 0

    def __call__(self) -> asyncio.BaseProtocol:
        server = self._server
        assert server is not None, "attach() the runner's server first"
        if len(server.connections) >= self.max_connections:
            self._refusals.add("too_many_connections")
            return _Refuse()
        protocol = server()
        if type(protocol) is RequestHandler:
            protocol.__class__ = self._handler_class
        loop = asyncio.get_running_loop()
        self._fresh[protocol] = loop.call_later(self.header_timeout, self._expire, protocol)
        return protocol

    def first_request(self, protocol: object) -> None:
        """The connection delivered a complete request head: no header timer."""
        handle = self._fresh.pop(protocol, None)
        if handle is not None:
            handle.cancel()

    def _expire(self, protocol: Any) -> None:
        if self._fresh.pop(protocol, None) is None:
            return
        if protocol.transport is not None:
            self._refusals.add("header_timeout")
            protocol.force_close()

    def close(self) -> None:
        for handle in self._fresh.values():
            handle.cancel()
        self._fresh.clear()


class GatedSite(web.BaseSite):
    """A site on an already bound socket whose connections go through a
    :class:`ConnectionGate` (and TLS when ``ssl_context`` is given); after a
    surge of connections its :class:`~ipubsub.memory.MemoryReturner` gives
    the freed heap back to the operating system."""

    def __init__(
        self,
        runner: web.BaseRunner,
        sock: socket.socket,
        gate: ConnectionGate,
        *,
        ssl_context: ssl.SSLContext | None = None,
        backlog: int = 4096,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._sock = sock
        self._gate = gate
        self.memory = MemoryReturner(lambda: gate.open_connections)

    @property
    def name(self) -> str:
        host, port = self._sock.getsockname()[:2]
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{host}:{port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert isinstance(server, web.Server)
        self._gate.attach(server)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._gate, sock=self._sock, backlog=self._backlog, ssl=self._ssl_context
        )
        self.memory.start()

    async def stop(self) -> None:
        await self.memory.close()
        self._gate.close()
        await super().stop()
