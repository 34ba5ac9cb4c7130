"""HTTP calls from this node to its peers over one pooled keep-alive session:
membership gossip and leave, and the dashboard's questions.  Everything else
between nodes travels on the peer link (:mod:`ipubsub.cluster.link`)."""

from __future__ import annotations

import asyncio
import ssl

import aiohttp

from ..protocol import JSON_CONTENT_TYPE, SECRET_HEADER

__all__ = ["PeerClient", "PeerUnreachable"]

# Connection-level failures: the peer did not (fully) answer.
_UNREACHABLE = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class PeerUnreachable(Exception):
    """A peer could not be reached or dropped the connection mid-call."""

    def __init__(self, address: str, cause: BaseException) -> None:
        super().__init__(f"{address}: {type(cause).__name__}: {cause}".rstrip(": "))
        self.address = address
        # False when the connection was never made, so the call surely had no effect.
        self.sent = not isinstance(cause, aiohttp.ClientConnectorError)


class PeerClient:
    """Owns the session used for forwarding and for internal cluster calls.

    Kept apart from the peer link on purpose: heartbeats never queue
    behind forwarded calls.
    """

    def __init__(self, *, secret: str, connect_timeout: float, request_timeout: float) -> None:
        self._secret = secret
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._session: aiohttp.ClientSession | None = None
        self._ssl: ssl.SSLContext | None = None
        self._scheme = "http"

    def use_tls(self, context: ssl.SSLContext | None) -> None:
        """Call peers over HTTPS, verified by ``context`` (before :meth:`start`)."""
        self._ssl = context
        self._scheme = "https" if context is not None else "http"

    async def start(self) -> None:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=0, keepalive_timeout=15.0, enable_cleanup_closed=True, ssl=self._ssl or True
            )
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("peer client is closed")
        return self._session

    async def call(
        self, address: str, path: str, payload: bytes, *, timeout: float | None = None
    ) -> tuple[int, bytes]:
        """POST an internal JSON payload; return status and body.

        Raises:
            PeerUnreachable: connection refused, reset or timed out.
        """
        headers = {"Content-Type": JSON_CONTENT_TYPE}
        if self._secret:
            headers[SECRET_HEADER] = self._secret
        limit = aiohttp.ClientTimeout(
            total=timeout or self._request_timeout, sock_connect=self._connect_timeout
        )
        try:
            async with self.session.post(
                f"{self._scheme}://{address}{path}", data=payload, headers=headers, timeout=limit
            ) as resp:
                return resp.status, await resp.read()
        except _UNREACHABLE as exc:
            raise PeerUnreachable(address, exc) from None
