"""The iterator :meth:`AsyncClient.stream` returns: messages pushed by a
node over Server-Sent Events or a WebSocket, reconnecting by itself.

After a disconnect (node stopped, stream handed off, connection lost) it
connects again, to the stream's owner if it can, else to another node; a
durable stream resumes from the token after the last message yielded (SSE:
``Last-Event-ID``; WebSocket: ``dbResumeToken``), so nothing is skipped or
repeated.  An in-memory stream simply competes for the next messages again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal, Self

import aiohttp
import msgspec

from ..errors import StreamReleased, Unavailable, error_from_response
from ..protocol import LAST_EVENT_ID_HEADER, RETRY_AFTER_HEADER, SUBSCRIBE_PATH, WS_PATH
from .retry import Unreachable
from .wire import ReceivedMessage, parse_received

if TYPE_CHECKING:
    from .transport import ClientTransport

__all__ = ["MessageStream"]

log = logging.getLogger("ipubsub.client")

_CHOSEN_ENDS = frozenset(("maxMessages", "timeout"))
_RECONNECT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


class _Reconnect(Exception):
    """The stream ended in a way that calls for another connection
    (``avoid``: on another node, this one is stopping)."""

    def __init__(self, avoid: bool = False) -> None:
        super().__init__()
        self.avoid = avoid


class MessageStream:
    """Async iterator over the messages a node pushes (see
    :meth:`AsyncClient.stream`).

    Attributes:
        token: for a durable stream, the resume token after the last message
            yielded (the starting token before the first).
        reconnects: how many times it connected again.
    """

    def __init__(
        self,
        client: ClientTransport,
        stream: str,
        *,
        from_db: bool,
        token: str | None,
        transport: Literal["sse", "ws"],
        max_messages: int | None,
        window: int,
        idle_timeout: float,
    ) -> None:
        if transport not in ("sse", "ws"):
            raise ValueError("transport must be 'sse' or 'ws'")
        if window < 1 or idle_timeout <= 0 or (max_messages is not None and max_messages < 1):
            raise ValueError("window and max_messages must be at least 1, idle_timeout > 0")
        self.stream = stream
        self.from_db = from_db
        self.token = token
        self.transport = transport
        self.reconnects = 0
        self._client = client
        self._left = max_messages
        self._window = window
        self._idle = idle_timeout
        self._gen: AsyncIterator[ReceivedMessage] | None = None
        self._connected = False  # set by a connection that was accepted
        self._last_error: Exception | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ReceivedMessage:
        """The next message.

        Raises:
            StopAsyncIteration: ``max_messages`` were yielded, or the client was closed.
            IPubSubError: the node refused the subscription (bad stream id, token, auth...).
            Unreachable-like Unavailable: still failing after the client's retry budget.
        """
        if self._gen is None:
            self._gen = self._run()
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Close the connection (an in-memory message not yet yielded stays with the node)."""
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]

    async def _run(self) -> AsyncIterator[ReceivedMessage]:
        client = self._client
        loop = asyncio.get_running_loop()
        failures = 0
        failing_since: float | None = None
        errors: dict[str, str] = {}
        tried: set[str] = set()
        while not client.closed and (self._left is None or self._left > 0):
            if self._connected:
                failures, failing_since, self._connected = 0, None, False
                errors.clear()
            elif failing_since is not None and (
                failures >= client.retry.max_attempts or loop.time() - failing_since > client.retry.max_total_seconds
            ):
                if self._last_error is not None:
                    raise self._last_error
                text = "; ".join(f"{u}: {why}" for u, why in errors.items())
                raise Unreachable(f"no ipubsub node could be reached after {failures} attempts ({text})", errors)
            session = client._get_session()
            if client.router.refreshed_at is None:
                try:
                    await client._refresh(force=True)
                except Exception:
                    pass
            url = client.router.pick(self.stream, tried) or client.router.seeds[0]
            got = False
            self._last_error = None
            try:
                source = self._sse(session, url) if self.transport == "sse" else self._ws(session, url)
                async for message in source:
                    got = True
                    failures = 0
                    if self.from_db and message.token is not None:
                        self.token = message.token
                    if self._left is not None:
                        self._left -= 1
                    yield message
                    if self._left is not None and self._left <= 0:
                        return
                return  # a chosen end
            except _Reconnect as end:
                tried.clear()
                if end.avoid:
                    tried.add(url)
            except (Unavailable, StreamReleased) as exc:
                tried.add(url)
                self._last_error = exc
                failing_since = loop.time() if failing_since is None else failing_since
                delay = float(getattr(exc, "retry_after", 0) or 0)
                failures += 1
                await asyncio.sleep(min(max(delay, client.retry.backoff(failures)), 5.0))
            except _RECONNECT_ERRORS as exc:
                log.debug("stream %r on %s: %s; reconnecting", self.stream, url, exc)
                client.router.mark_down(url)
                tried.add(url)
                failures += 1
                errors[url] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                if not got:
                    failing_since = loop.time() if failing_since is None else failing_since
                if not got:
                    await asyncio.sleep(min(client.retry.backoff(failures), 5.0))
            self.reconnects += 1
            if len(tried) >= len(client.router.seeds) + 8:
                tried.clear()
            try:
                await client._refresh(force=True)
            except Exception:
                pass

    # -- Server-Sent Events -------------------------------------------------------

    async def _sse(self, session: aiohttp.ClientSession, url: str) -> AsyncIterator[ReceivedMessage]:
        query = {"streamId": self.stream}
        headers = {}
        if self.from_db:
            query["readFromDB"] = "true"
            if self.token:
                headers[LAST_EVENT_ID_HEADER] = self.token
        if self._left is not None:
            query["maxMessages"] = str(self._left)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self._client._connect_timeout, sock_read=self._idle)
        async with session.get(url + SUBSCRIBE_PATH, params=query, headers=headers, timeout=timeout) as response:
            if response.status != 200:
                raise _error(response.status, await response.read(), response.headers.get(RETRY_AFTER_HEADER, ""))
            self._connected = True
            event, data = "message", []
            async for raw in response.content:
                line = raw.rstrip(b"\r\n")
                if line:
                    field, _, value = line.partition(b":")
                    value = value[1:] if value.startswith(b" ") else value
                    if field == b"data":
                        data.append(value)
                    elif field == b"event":
                        event = value.decode()
                    continue
                if data:
                    body = msgspec.json.decode(b"\n".join(data))
                    if event == "end":
                        _ended(body)
                        return
                    yield parse_received(body)
                event, data = "message", []
        raise _Reconnect  # EOF without an end event

    # -- WebSocket ------------------------------------------------------------------

    async def _ws(self, session: aiohttp.ClientSession, url: str) -> AsyncIterator[ReceivedMessage]:
        window = self._window if self._left is None else min(self._window, self._left)
        sub: dict[str, Any] = {"op": "subscribe", "sub": "s", "streamId": self.stream, "credit": window}
        if self.from_db:
            sub["readFromDB"] = True
            if self.token:
                sub["dbResumeToken"] = self.token
        async with session.ws_connect(url + WS_PATH, heartbeat=self._idle / 2, timeout=aiohttp.ClientWSTimeout(ws_close=5.0)) as ws:
            await ws.send_str(msgspec.json.encode(sub).decode())
            self._connected = True
            owed = 0
            async for frame in ws:
                if frame.type is not aiohttp.WSMsgType.TEXT:
                    break
                body = msgspec.json.decode(frame.data)
                op = body.get("op")
                if op == "message":
                    body.pop("op", None)
                    body.pop("sub", None)
                    yield parse_received(body)
                    owed += 1
                    if owed * 2 >= window:  # grant the consumed credit back in halves
                        await ws.send_str(f'{{"op":"credit","sub":"s","n":{owed}}}')
                        owed = 0
                elif op == "error":
                    raise error_from_response(int(body.get("status", 400)), body)
                elif op == "end":
                    _ended(body)
        raise _Reconnect


def _ended(body: dict[str, Any]) -> None:
    """An ``end`` event/frame: return for a chosen end, else raise what to do.

    Raises:
        _Reconnect: the stream moved or the node stops.
        IPubSubError: the node ended it with an error (e.g. storage unavailable).
    """
    reason = body.get("reason")
    if reason in _CHOSEN_ENDS:
        return
    if reason == "error":
        raise error_from_response(int(body.get("status", 500)), body)
    raise _Reconnect(avoid=reason == "shutdown")


def _error(status: int, raw: bytes, retry_after: str) -> Exception:
    try:
        body = msgspec.json.decode(raw) if raw else None
    except msgspec.DecodeError:
        body = None
    return error_from_response(status, body, retry_after=int(retry_after) if retry_after.isdigit() else None)
