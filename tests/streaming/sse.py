"""A small Server-Sent Events reader for the streaming tests (what a browser
does: events, ids, comments), over an aiohttp response or raw socket bytes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from ipubsub.protocol import SUBSCRIBE_PATH

__all__ = ["Event", "SseStream", "parse_events"]


class Event:
    def __init__(self, kind: str, event_id: str | None, data: str) -> None:
        self.kind = kind
        self.id = event_id
        self.data = data

    @property
    def json(self) -> Any:
        return json.loads(self.data)

    def __repr__(self) -> str:
        return f"Event({self.kind!r}, id={self.id!r}, data={self.data[:80]!r})"


def parse_events(raw: bytes) -> tuple[list[Event], int, bytes]:
    """Complete events in ``raw``, how many comments, and the unparsed rest."""
    events: list[Event] = []
    comments = 0
    *blocks, rest = raw.replace(b"\r\n", b"\n").split(b"\n\n")
    for block in blocks:
        kind, event_id, data = "message", None, []
        for line in block.split(b"\n"):
            if line.startswith(b":"):
                comments += 1
                continue
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"data":
                data.append(value.decode())
            elif field == b"id":
                event_id = value.decode()
            elif field == b"event":
                kind = value.decode()
        if data:
            events.append(Event(kind, event_id, "\n".join(data)))
    return events, comments, rest


class SseStream:
    """``GET /api/v1/streams/subscribe`` read event by event (bounded waits)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0
        self._buffer = b""
        self._events: list[Event] = []

    @classmethod
    async def open(cls, http: aiohttp.ClientSession, url: str, stream: str, headers: dict[str, str] | None = None,
                   **params: Any) -> SseStream:
        query = {"streamId": stream}
        query.update({k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()})
        response = await http.get(url + SUBSCRIBE_PATH, params=query, headers=headers,
                                  timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        return cls(response)

    async def next(self, timeout: float = 10.0) -> Event:
        """The next event (comments are counted, not returned)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self._events:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"no SSE event within {timeout} s (buffer: {self._buffer[-200:]!r})")
            chunk = await asyncio.wait_for(self.response.content.readany(), left)
            if not chunk:
                raise EOFError("the event stream ended")
            events, comments, self._buffer = parse_events(self._buffer + chunk)
            self.comments += comments
            self._events.extend(events)
        return self._events.pop(0)

    async def messages(self, n: int, timeout: float = 10.0) -> list[Event]:
        out = []
        for _ in range(n):
            event = await self.next(timeout)
            assert event.kind == "message", event
            out.append(event)
        return out

    def close(self) -> None:
        self.response.close()
