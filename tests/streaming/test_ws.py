"""WebSocket streaming against real ``ipubsub serve`` processes: sends and
subscriptions on one socket, credit, durable resume, malformed frames,
shutdown."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp
import pytest

from ipubsub.protocol import WS_PATH
from tests.support.config import node_config
from tests.support.http import expect, receive, send
from tests.support.procs import ProcessPool

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


class Socket:
    """One client WebSocket with bounded reads; frames kept per ``op``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def put(self, frame: Any) -> None:
        await self.ws.send_str(frame if isinstance(frame, str) else json.dumps(frame))

    async def get(self, timeout: float = 10.0) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), timeout)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        assert isinstance(frame, dict)
        return frame

    async def until(self, op: str, timeout: float = 10.0, **match: Any) -> dict[str, Any]:
        """The next frame with ``op`` (and ``match`` fields); others are kept in ``skipped``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.get(max(0.01, deadline - loop.time()))
            if frame.get("op") == op and all(frame.get(k) == v for k, v in match.items()):
                return frame
            self.skipped.append(frame)

    skipped: list[dict[str, Any]]

    async def silent(self, seconds: float) -> None:
        """Assert no frame arrives for ``seconds``."""
        try:
            frame = await self.get(seconds)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {frame}")


async def connect(http: aiohttp.ClientSession, url: str) -> Socket:
    sock = Socket(await http.ws_connect(url + WS_PATH))
    sock.skipped = []
    return sock


async def test_many_subscriptions_on_one_socket_with_credit(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream={"heartbeat_seconds": 1})).start()
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, node.url)
        streams = [f"room-{i}" for i in range(12)]
        for i, stream in enumerate(streams):
            await ws.put({"op": "subscribe", "sub": f"s{i}", "streamId": stream, "credit": 2, "ref": i})
            assert await ws.get() == {"op": "subscribed", "ref": i, "sub": f"s{i}"}
        # sends on the same socket, answered with the ref
        for i, stream in enumerate(streams):
            for n in range(3):
                await ws.put({"op": "send", "ref": f"{i}.{n}", "streamId": stream, "message": {"n": n}})
        got: dict[str, list[int]] = {f"s{i}": [] for i in range(12)}
        sent = 0
        while sent < 36 or sum(map(len, got.values())) < 24:
            frame = await ws.get()
            if frame["op"] == "sent":
                sent += 1
                assert frame["messageUuid"]
            else:
                assert frame["op"] == "message", frame
                got[frame["sub"]].append(frame["message"]["n"])
        assert all(v == [0, 1] for v in got.values()), got  # credit 2 each, in order
        await ws.silent(0.5)
        # credit is what makes a message takeable: the third stays for others
        status, body = await receive(http, node.url, "room-0", 0)
        assert status == 200 and body["message"] == {"n": 2}
        await ws.put({"op": "credit", "sub": "s1", "n": 5})
        frame = await ws.until("message", sub="s1")
        assert frame["message"] == {"n": 2} and "timestamp" in frame and "messageUuid" in frame
        # unsubscribe: later messages stay in the stream
        await ws.put({"op": "unsubscribe", "sub": "s1", "ref": "u"})
        assert await ws.until("unsubscribed") == {"op": "unsubscribed", "ref": "u", "sub": "s1"}
        expect(await send(http, node.url, {"streamId": "room-1", "message": "after"}))
        status, body = await receive(http, node.url, "room-1", 2)
        assert status == 200 and body["message"] == "after"
        await ws.ws.close()


async def test_malformed_frames_answer_errors_and_never_close_other_subscriptions(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "keep", "streamId": "k", "credit": 100})
        assert (await ws.get())["op"] == "subscribed"
        bad: list[tuple[Any, str]] = [
            ("not json", "bad_request"),
            ("[1, 2]", "bad_request"),
            ({"op": "dance"}, "bad_request"),
            ({"op": "subscribe", "streamId": "k"}, "bad_request"),  # no sub
            ({"op": "subscribe", "sub": "keep", "streamId": "k"}, "bad_request"),  # duplicate
            ({"op": "subscribe", "sub": "x", "streamId": ""}, "bad_request"),
            ({"op": "subscribe", "sub": "x", "streamId": "k", "credit": -1}, "bad_request"),
            ({"op": "subscribe", "sub": "x", "streamId": "k", "readFromDB": True}, "persistence_not_configured"),
            ({"op": "credit", "sub": "nope", "n": 1}, "bad_request"),
            ({"op": "credit", "sub": "keep", "n": "many"}, "bad_request"),
            ({"op": "unsubscribe", "sub": "nope"}, "bad_request"),
            ({"op": "send", "streamId": "k"}, "bad_request"),  # no message
            ({"op": "send", "streamId": "k", "message": "x" * (1024 * 1024 + 100)}, "message_too_large"),
        ]
        for frame, code in bad:
            await ws.put(frame)
            answer = await ws.get()
            assert answer["op"] == "error" and answer["code"] == code, (frame, answer)
            assert isinstance(answer["error"], str) and 400 <= answer["status"] < 500
        await ws.ws.send_bytes(b"\x00\x01")
        answer = await ws.get()
        assert answer["op"] == "error" and answer["code"] == "bad_request"
        # the subscription still works
        await ws.put({"op": "send", "ref": 1, "streamId": "k", "message": "still here"})
        assert (await ws.until("message", sub="keep"))["message"] == "still here"
        assert not ws.ws.closed
        await ws.ws.close()


async def test_durable_subscription_resumes_from_a_token(procs: ProcessPool, tmp_path: Any) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "n.db")}})
    node = procs.node(config).start()
    async with aiohttp.ClientSession() as http:
        for i in range(10):
            expect(await send(http, node.url, {"streamId": "log", "message": i, "writeToDB": True}))
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "d", "streamId": "log", "readFromDB": True, "credit": 4})
        assert (await ws.get())["op"] == "subscribed"
        first = [await ws.until("message") for _ in range(4)]
        assert [f["message"] for f in first] == [0, 1, 2, 3]
        await ws.silent(0.3)  # no credit left
        await ws.put({"op": "unsubscribe", "sub": "d"})
        await ws.until("unsubscribed")
        # Resume after the last token on a new subscription: 4.. with no gap, no duplicate.
        await ws.put({"op": "subscribe", "sub": "d2", "streamId": "log", "readFromDB": True, "credit": 100,
                      "dbResumeToken": first[-1]["dbResumeToken"]})
        assert (await ws.get())["op"] == "subscribed"
        rest = [(await ws.until("message"))["message"] for _ in range(6)]
        assert rest == [4, 5, 6, 7, 8, 9]
        expect(await send(http, node.url, {"streamId": "log", "message": "live", "writeToDB": True}))
        assert (await ws.until("message"))["message"] == "live"
        await ws.ws.close()


async def test_closing_the_socket_gives_back_and_shutdown_ends_subscriptions(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream={"heartbeat_seconds": 1})).start()
    async with aiohttp.ClientSession() as http:
        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "a", "streamId": "gone", "credit": 1})
        await ws.until("subscribed")
        await asyncio.sleep(0.2)
        await ws.ws.close()  # a waiting subscription whose socket closes takes nothing
        await asyncio.sleep(0.2)
        expect(await send(http, node.url, {"streamId": "gone", "message": "kept"}))
        status, body = await receive(http, node.url, "gone", 2)
        assert status == 200 and body["message"] == "kept"

        ws = await connect(http, node.url)
        await ws.put({"op": "subscribe", "sub": "waiting", "streamId": "w", "credit": 1})
        await ws.put({"op": "subscribe", "sub": "no-credit", "streamId": "w2", "credit": 0})
        await ws.until("subscribed", sub="waiting")
        await ws.until("subscribed", sub="no-credit")
        node.signal(signal.SIGTERM)
        ends = {(await ws.until("end"))["sub"] for _ in range(2)}
        assert ends == {"waiting", "no-credit"}
        msg = await asyncio.wait_for(ws.ws.receive(), 10)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001  # going away
        assert await node.wait_async(20) == 0
