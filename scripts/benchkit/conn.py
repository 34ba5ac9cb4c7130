"""What the raw HTTP and RESP clients share: an address, and a connection
that carries one call at a time (write a request, parse one reply)."""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Generic, Self, TypeVar

__all__ = ["Endpoint", "OneCallConnection"]

T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where a server listens, from a URL such as ``http://127.0.0.1:8080``
    or ``redis://127.0.0.1:6379``."""

    host: str
    port: int
    netloc: str

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        u = urllib.parse.urlsplit(url)
        host = u.hostname or "127.0.0.1"
        port = u.port or (6379 if u.scheme == "redis" else 80)
        return cls(host, port, u.netloc or f"{host}:{port}")

    @property
    def url(self) -> str:
        return f"http://{self.netloc}"


class OneCallConnection(asyncio.Protocol, Generic[T]):
    """One keep-alive connection with at most one call in flight.

    Subclasses say how a reply is framed in ``parse``.
    """

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[T] | None = None

    @classmethod
    async def open(cls, endpoint: Endpoint) -> Self:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, endpoint.host, endpoint.port)
        return proto

    def parse(self, buf: bytearray) -> tuple[T | Exception, int] | None:
        """The reply at the start of ``buf`` and its length, or None while incomplete."""
        raise NotImplementedError

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None:
            return
        parsed = self.parse(self.buf)
        if parsed is None:
            return
        value, end = parsed
        del self.buf[:end]
        self.waiter = None
        if waiter.done():
            return
        if isinstance(value, Exception):
            waiter.set_exception(value)
        else:
            waiter.set_result(value)

    def start(self, data: bytes) -> asyncio.Future[T]:
        """Write one request; the future gets its reply."""
        assert self.transport is not None and self.waiter is None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.waiter

    async def request(self, data: bytes) -> T:
        """Write one request and await its reply.

        Raises:
            ConnectionError: the connection closed first.
        """
        return await self.start(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
