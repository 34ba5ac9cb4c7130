"""Fan-out history readers over SSE and WebSocket (``fromHistory=true``,
issue 13) against real ``ipubsub serve`` processes: every reader gets every
message in order, nothing is taken from the queue, ``Last-Event-ID``
resumes exactly, and a position outside the window is told as a gap."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from ipubsub.protocol import SUBSCRIBE_PATH
from tests.streaming.sse import SseStream
from tests.streaming.test_ws import connect
from tests.support.cluster import FAST, ClusterHarness
from tests.support.config import node_config
from tests.support.http import expect, health, receive, send
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

STREAM_CONFIG = {"heartbeat_seconds": 1}


async def _send(http: aiohttp.ClientSession, url: str, stream: str, i: int, size: int = 100) -> None:
    expect(await send(http, url, {"streamId": stream, "message": {"i": i}, "historySize": size}))


async def test_many_sse_readers_and_a_ws_reader_each_get_every_message_in_order(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream=STREAM_CONFIG)).start()
    async with aiohttp.ClientSession() as http:
        for i in range(3):  # before the readers come: read from the oldest held
            await _send(http, node.url, "room", i)
        readers = [await SseStream.open(http, node.url, "room", fromHistory=True, maxMessages=10) for _ in range(3)]
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "h", "streamId": "room", "fromHistory": True, "credit": 100})
        assert await ws.get() == {"op": "subscribed", "sub": "h"}
        for i in range(3, 10):
            await _send(http, node.url, "room", i)
        for reader in readers:
            events = await reader.messages(10)
            assert [e.json["message"] for e in events] == [{"i": i} for i in range(10)]
            assert all(e.id == e.json["position"] for e in events)
            assert len({e.id for e in events}) == 10
            end = await reader.next()
            assert end.kind == "end" and end.json == {"reason": "maxMessages"}
            reader.close()
        frames = [await ws.until("message", sub="h") for _ in range(10)]
        assert [f["message"] for f in frames] == [{"i": i} for i in range(10)]
        assert [f["position"] for f in frames] == [e.id for e in events]
        await ws.silent(0.3)
        await ws.ws.close()
        # readers read, they do not take: the queue still holds every message, oldest first
        status, body = await receive(http, node.url, "room", 0)
        assert status == 200 and body["message"] == {"i": 0}
        assert (await health(http, node.url))["status"] == "ok"


async def test_last_event_id_resumes_without_gap_or_duplicate(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream=STREAM_CONFIG)).start()
    async with aiohttp.ClientSession() as http:
        for i in range(6):
            await _send(http, node.url, "feed", i)
        first = await SseStream.open(http, node.url, "feed", fromHistory=True, maxMessages=4)
        events = await first.messages(4)
        assert [e.json["message"]["i"] for e in events] == [0, 1, 2, 3]
        assert (await first.next()).kind == "end"
        first.close()
        # what a reconnecting EventSource does: the same URL plus Last-Event-ID (the header wins)
        again = await SseStream.open(
            http, node.url, "feed", headers={"Last-Event-ID": events[-1].id}, fromHistory=True, timeoutSeconds=2
        )
        await _send(http, node.url, "feed", 6)
        rest = await again.messages(3)
        assert [e.json["message"]["i"] for e in rest] == [4, 5, 6]
        end = await again.next()
        assert end.kind == "end" and end.json == {"reason": "timeout"}  # no gap event, nothing repeated
        again.close()


async def test_position_outside_the_window_gets_a_gap_then_goes_on(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream=STREAM_CONFIG)).start()
    async with aiohttp.ClientSession() as http:
        await _send(http, node.url, "ticker", 0, size=3)
        status, body = await receive(http, node.url, "ticker", 0, fromHistory=True)
        assert status == 200
        old = body["messages"][0]["position"]
        for i in range(1, 10):
            await _send(http, node.url, "ticker", i, size=3)
        # SSE: the gap, as the long-poll reply tells it, then the oldest held onwards
        sub = await SseStream.open(http, node.url, "ticker", fromHistory=True, position=old, maxMessages=3)
        gap = await sub.next()
        assert gap.kind == "gap", gap
        assert gap.json["recovered"] is False and gap.json["gap"] == "window"
        status, poll = await receive(http, node.url, "ticker", 0, fromHistory=True, position=old)
        assert status == 200 and gap.json["position"] == poll["position"] and gap.id == poll["position"]
        events = await sub.messages(3)
        assert [e.json["message"]["i"] for e in events] == [7, 8, 9]
        end = await sub.next()
        assert end.kind == "end" and end.json == {"reason": "maxMessages"}  # the gap is not a message
        sub.close()
        # WebSocket: a gap frame, then the messages
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "t", "streamId": "ticker", "fromHistory": True,
                      "position": old, "credit": 10})
        assert await ws.get() == {"op": "subscribed", "sub": "t"}
        frame = await ws.get()
        assert frame == {"op": "gap", "sub": "t", "recovered": False, "gap": "window", "position": poll["position"]}
        got = [await ws.until("message", sub="t") for _ in range(3)]
        assert [f["message"]["i"] for f in got] == [7, 8, 9]
        await ws.ws.close()


async def test_bad_history_subscribe_requests_are_json_4xx(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    async with aiohttp.ClientSession() as http:
        for params in (
            {"streamId": "s", "fromHistory": "maybe"},
            {"streamId": "s", "fromHistory": "true", "position": "nonsense"},
            {"streamId": "s", "fromHistory": "true", "readFromDB": "true"},
        ):
            async with http.get(node.url + SUBSCRIBE_PATH, params=params) as r:
                assert r.status == 400, params
                body: Any = await r.json()
                assert body["code"] in ("bad_request", "invalid_position"), (params, body)
        # a stream that keeps no history: the event stream ends with the error
        expect(await send(http, node.url, {"streamId": "plain", "message": 1}))
        plain = await SseStream.open(http, node.url, "plain", fromHistory=True)
        end = await plain.next()
        assert end.kind == "end" and end.json["reason"] == "error" and end.json["code"] == "history_not_kept"
        plain.close()
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "x", "streamId": "s", "fromHistory": True, "position": "no"})
        frame = await ws.get()
        assert frame["op"] == "error" and frame["sub"] == "x" and frame["status"] == 400
        await ws.ws.close()
        assert (await health(http, node.url))["status"] == "ok"


async def test_readers_on_a_node_that_does_not_own_the_stream_read_through_the_owner(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"stream": STREAM_CONFIG}).start()
    await c.wait_ring(["n1", "n2"])
    stream = next(s for s in (f"h-{i}" for i in range(200)) if c.owner(s) == "n2")
    async with aiohttp.ClientSession() as http:
        await _send(http, c.url_of("n2"), stream, 0)
        relayed = await SseStream.open(http, c.url_of("n1"), stream, fromHistory=True, maxMessages=12)
        local = await SseStream.open(http, c.url_of("n2"), stream, fromHistory=True, maxMessages=12)
        ws = await connect(http, c.url_of("n1"))
        await ws.put({"op": "subscribe", "sub": "r", "streamId": stream, "fromHistory": True, "credit": 12})
        assert await ws.get() == {"op": "subscribed", "sub": "r"}
        for i in range(1, 12):
            await _send(http, c.url_of("n1" if i % 2 else "n2"), stream, i)
        a = await relayed.messages(12)
        b = await local.messages(12)
        frames = [await ws.until("message", sub="r") for _ in range(12)]
        assert [e.json["message"]["i"] for e in a] == list(range(12))
        assert [e.id for e in a] == [e.id for e in b] == [f["position"] for f in frames]
        assert [f["message"]["i"] for f in frames] == list(range(12))
        relayed.close()
        local.close()
        await ws.ws.close()
