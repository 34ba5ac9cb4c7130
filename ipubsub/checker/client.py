"""The checker's HTTP calls, each classified the way the analysis needs:
did the server surely accept the message, surely not, or can't we know?

A send is ``ok`` (200), ``rejected`` (the server says it was not accepted:
400, 413, 424, or 503 ``buffer_full``/``node_draining``) or ``unknown``
(any other 503 — a forwarding node cannot know whether the owner applied
it —, a 5xx, a connection lost after the request went out, or a timeout);
a connection that could not be opened is ``rejected``: nothing was sent.
A receive is ``ok`` (a message), ``empty`` (424), ``error`` (503,
connection error) or ``aborted`` (the checker itself gave up on it).
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import msgspec

from ..protocol import RECEIVE_PATH, SEND_PATH

__all__ = ["Caller", "Outcome"]

_REJECTING_503 = frozenset({"buffer_full", "node_draining"})
_decode = msgspec.json.Decoder(dict[str, Any]).decode


@dataclass(slots=True)
class Outcome:
    res: str  # ok | rejected | unknown | empty | error | aborted
    status: int = 0  # 0: no HTTP answer
    code: str = ""
    body: dict[str, Any] | None = None
    partial: bool = False  # an aborted poll had already received some bytes


class Caller:
    """One pooled aiohttp session for every call of the workload."""

    def __init__(self) -> None:
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, enable_cleanup_closed=True))
        # aiohttp sends a GET again, once, when a reused keep-alive connection
        # fails; a receive is not idempotent (the first one may have taken a
        # message on its way through a node that then died), so the checker
        # must see that failure, not a second attempt's answer.  (The same
        # switch aiohttp's own test client turns off.)
        self._http._retry_connection = False

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    async def send(self, url: str, body: bytes, timeout: float) -> Outcome:
        """One attempt of ``POST /api/v1/streams/send``."""
        assert self._http is not None
        try:
            async with self._http.post(
                url + SEND_PATH, data=body, headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                status, parsed = resp.status, _json(await resp.read())
        except aiohttp.ClientConnectorError as exc:  # never connected: nothing was sent
            return Outcome("rejected", 0, _error_name(exc))
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome("unknown", 0, _error_name(exc))
        code = str(parsed.get("code", "")) if parsed else ""
        if status == 200:
            return Outcome("ok", status, code, parsed)
        if status in (400, 413, 424) or (status == 503 and code in _REJECTING_503):
            return Outcome("rejected", status, code, parsed)
        return Outcome("unknown", status, code, parsed)

    async def receive(self, url: str, params: dict[str, str], timeout: float) -> Outcome:
        """One ``GET /api/v1/streams/receive`` (in-memory or durable)."""
        assert self._http is not None
        try:
            async with self._http.get(
                url + RECEIVE_PATH, params=params, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                status, parsed = resp.status, _json(await resp.read())
        except TimeoutError:
            return Outcome("aborted", 0, "client_timeout")
        except (aiohttp.ClientError, OSError) as exc:
            return Outcome("error", 0, _error_name(exc))
        code = str(parsed.get("code", "")) if parsed else ""
        if status == 200 and parsed is not None:
            return Outcome("ok", status, code, parsed)
        if status == 424:
            return Outcome("empty", status, code)
        return Outcome("error", status, code)

    async def request(self, method: str, url: str, params: dict[str, str] | None = None,
                      body: bytes | None = None, timeout: float = 10.0) -> Outcome:
        """Any other call: ``ok`` (200), ``error`` (an answer of another
        status, or none: ``status`` 0)."""
        assert self._http is not None
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            async with self._http.request(method, url, params=params, data=body, headers=headers,
                                          timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status, parsed = resp.status, _json(await resp.read())
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return Outcome("error", 0, _error_name(exc))
        code = str(parsed.get("code", "")) if parsed else ""
        return Outcome("ok" if status == 200 else "error", status, code, parsed)

    async def abandoned_receive(self, url: str, params: dict[str, str], hold: float) -> Outcome:
        """A long poll whose client goes away after ``hold`` seconds, as a
        crashed or impatient client would: a raw socket closed with a reset.

        Whatever arrived before the close is read first, in the same step
        as the close, so a message the server wrote is never thrown away
        by the checker (the window is a few system calls).
        """
        parts = urlsplit(url)
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        received = b""
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (parts.hostname, parts.port)), 2.0)
            request = f"GET {RECEIVE_PATH}?{urlencode(params)} HTTP/1.1\r\nHost: {parts.netloc}\r\n\r\n"
            await loop.sock_sendall(sock, request.encode())
            await asyncio.sleep(hold)
            while True:  # drain without waiting, then close at once (no await in between)
                try:
                    chunk = sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    break
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, OSError) as exc:
            sock.close()
            return Outcome("error", 0, _error_name(exc), partial=bool(received))
        sock.close()
        return _parse_raw(received)


def _parse_raw(data: bytes) -> Outcome:
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return Outcome("aborted", 0, "abandoned", partial=bool(data))
    lines = head.split(b"\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return Outcome("aborted", 0, "abandoned", partial=True)
    length = None
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    if length is None or len(body) < length:
        return Outcome("aborted", status, "abandoned", partial=True)
    parsed = _json(body[:length])
    code = str(parsed.get("code", "")) if parsed else ""
    if status == 200 and parsed is not None:
        return Outcome("ok", status, code, parsed)
    return Outcome("empty" if status == 424 else "error", status, code)


def _json(raw: bytes) -> dict[str, Any] | None:
    try:
        return _decode(raw)
    except msgspec.DecodeError:
        return None


def _error_name(exc: BaseException) -> str:
    if isinstance(exc, asyncio.TimeoutError):
        return "client_timeout"
    return type(exc).__name__
