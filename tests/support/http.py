"""The suite's one set of HTTP helpers for the public API.

Every helper takes ``http`` (an :class:`aiohttp.ClientSession`, or an
aiohttp :class:`~aiohttp.test_utils.TestClient` for an in-process node) and
the node's base ``url`` (``""`` with a TestClient, whose paths are relative).
They return ``(status, body)`` with the body decoded from JSON (``None`` if
it is not JSON); :func:`expect` turns that into the body of an expected
status.  :func:`http_json` is the blocking twin for code outside the event
loop, :func:`open_raw` a bare socket for tests about client disconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from ipubsub.protocol import ACK_PATH, HEALTH_PATH, NACK_PATH, RECEIVE_PATH, SEND_BATCH_PATH, SEND_PATH

__all__ = [
    "Http", "Reply", "ack", "call", "expect", "health", "http_json", "nack", "open_raw", "receive", "refused_address",
    "send", "send_batch",
]

Http = aiohttp.ClientSession | TestClient
Reply = tuple[int, Any]


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


async def call(
    http: Http,
    method: str,
    url: str,
    *,
    body: Any = None,
    params: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """One request; ``body`` is sent as is if bytes or str, else as JSON."""
    data = body if body is None or isinstance(body, (bytes, str)) else json.dumps(body)
    async with http.request(method, url, data=data, params=params, headers=headers) as resp:
        return resp.status, _decode(await resp.read())


async def send(http: Http, url: str, body: Any, *, headers: dict[str, str] | None = None) -> Reply:
    """``POST /api/v1/streams/send`` with ``body`` (a mapping, or raw bytes/str)."""
    return await call(http, "POST", url + SEND_PATH, body=body, headers=headers)


async def send_batch(http: Http, url: str, items: Any, *, headers: dict[str, str] | None = None) -> Reply:
    """``POST /api/v1/streams/sendBatch`` with ``{"messages": items}`` (or
    ``items`` as is when it is raw bytes/str)."""
    body = items if isinstance(items, (bytes, str)) else {"messages": items}
    return await call(http, "POST", url + SEND_BATCH_PATH, body=body, headers=headers)


async def receive(http: Http, url: str, stream: str, timeout: int | float | str = 0, **params: Any) -> Reply:
    """``GET /api/v1/streams/receive`` for ``stream``; extra query ``params``
    (booleans written ``true``/``false``)."""
    query = {"streamId": stream, "timeoutSeconds": str(timeout)}
    query.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()})
    return await call(http, "GET", url + RECEIVE_PATH, params=query)


async def ack(http: Http, url: str, stream: str, receipt: str, **fields: Any) -> Reply:
    """``POST /api/v1/streams/ack`` of one receipt (extra body ``fields``)."""
    return await call(http, "POST", url + ACK_PATH, body={"streamId": stream, "receipt": receipt, **fields})


async def nack(http: Http, url: str, stream: str, receipt: str, **fields: Any) -> Reply:
    """``POST /api/v1/streams/nack`` of one receipt (``delaySeconds=…`` and other body ``fields``)."""
    return await call(http, "POST", url + NACK_PATH, body={"streamId": stream, "receipt": receipt, **fields})


async def health(http: Http, url: str) -> dict[str, Any]:
    """The body of ``/health`` (whatever its status: 200 ok, 503 draining)."""
    _, body = await call(http, "GET", url + HEALTH_PATH)
    assert isinstance(body, dict), body
    return body


def expect(reply: Reply, status: int = 200) -> Any:
    """The body of ``reply``, which must have ``status``."""
    got, body = reply
    assert got == status, f"expected HTTP {status}, got {got}: {body!r}"
    return body


def http_json(url: str, body: Any = None, timeout: float = 10.0) -> Reply:
    """Blocking JSON call (GET without ``body``, POST with it), for set-up
    code outside the event loop."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, _decode(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, _decode(exc.read())


async def open_raw(
    address: str, method: str, path: str, body: bytes = b""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Write one HTTP/1.1 request on a bare connection to ``host:port`` and
    return the connection, so a test can drop it mid-call."""
    host, port = address.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n\r\n"
    writer.write(head.encode() + body)
    await writer.drain()
    return reader, writer


@contextlib.contextmanager
def refused_address() -> Iterator[str]:
    """``127.0.0.1:PORT`` where connections are refused for as long as the
    block runs: the port is bound (nobody else can take it) but never
    listened on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"
