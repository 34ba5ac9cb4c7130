"""A minimal HTTP/1.1 keep-alive client on asyncio protocols.

It does just what the load loops need (one request in flight per connection,
``Content-Length`` bodies) so that the load generator spends far less CPU per
call than the server it drives.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from ipubsub.protocol import HEALTH_PATH, INFO_PATH, JSON_CONTENT_TYPE

from .conn import Endpoint, OneCallConnection

__all__ = ["Connection", "get_json", "get_request", "healthy", "node_name", "post_request"]


class Connection(OneCallConnection[tuple[int, bytes]]):
    """HTTP/1.1: replies are ``(status, body)``."""

    def parse(self, buf: bytearray) -> tuple[tuple[int, bytes], int] | None:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            eol = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : eol if eol >= 0 else len(head)])
        if len(buf) < end + 4 + length:
            return None
        return (int(head[9:12]), bytes(buf[end + 4 : end + 4 + length])), end + 4 + length


def get_request(netloc: str, path: str, query: dict[str, str] | None = None, headers: str = "") -> bytes:
    """``headers``: extra header lines, each ending in CRLF."""
    target = f"{path}?{urllib.parse.urlencode(query)}" if query else path
    return f"GET {target} HTTP/1.1\r\nHost: {netloc}\r\n{headers}\r\n".encode()


def post_request(netloc: str, path: str, body: bytes, headers: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: {JSON_CONTENT_TYPE}\r\n{headers}"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def get_json(endpoint: Endpoint, path: str, query: dict[str, str] | None = None) -> tuple[int, Any]:
    """One GET on a fresh connection: ``(status, decoded JSON body)``.

    Raises:
        OSError: nothing answers at ``endpoint``.
    """
    conn = await Connection.open(endpoint)
    try:
        status, body = await conn.request(get_request(endpoint.netloc, path, query))
    finally:
        conn.close()
    return status, json.loads(body) if body else None


async def node_name(endpoint: Endpoint) -> str:
    """The ``node`` name an ipubsub node reports at ``/``."""
    _, body = await get_json(endpoint, INFO_PATH)
    return str(body["node"])


async def healthy(endpoint: Endpoint) -> bool:
    """True when ``/health`` answers 200 (False when nothing listens yet)."""
    try:
        status, _ = await get_json(endpoint, HEALTH_PATH)
    except (OSError, ValueError):
        return False
    return status == 200
