"""SSE subscribe against real ``ipubsub serve`` processes: in-memory and
durable streams, Last-Event-ID resume, flow control, relays, shutdown."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
from typing import Any

import aiohttp
import pytest

from ipubsub.protocol import SUBSCRIBE_PATH
from tests.storage.conftest import require
from tests.streaming.sse import SseStream, parse_events
from tests.support.cluster import FAST, ClusterHarness
from tests.support.config import node_config
from tests.support.http import expect, health, receive, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
STREAM_CONFIG = {"heartbeat_seconds": 1}


async def _waiting(http: aiohttp.ClientSession, url: str, n: int) -> None:
    async def ok() -> bool:
        return (await health(http, url)).get("waitingReceivers") == n

    await wait_until(ok, 10, f"{n} waiting receivers on {url}", interval=0.02)


async def test_in_memory_events_in_order_heartbeats_and_max_messages(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream=STREAM_CONFIG)).start()
    async with aiohttp.ClientSession() as http:
        sub = await SseStream.open(http, node.url, "feed", maxMessages=5)
        assert sub.response.status == 200
        assert sub.response.headers["Content-Type"].startswith("text/event-stream")
        assert sub.response.headers["X-Accel-Buffering"] == "no"
        sent = []
        for i in range(5):
            # a payload with line breaks travels as several data: lines
            body = expect(await send(http, node.url, b'{"streamId":"feed","message":{"i":\n%d}}' % i))
            sent.append(body["messageUuid"])
            if i == 0:
                await asyncio.sleep(1.6)  # idle: a heartbeat comment
        events = await sub.messages(5)
        assert [e.id for e in events] == sent
        assert [e.json["message"] for e in events] == [{"i": i} for i in range(5)]
        assert all(e.json["messageUuid"] == e.id for e in events)
        end = await sub.next()
        assert end.kind == "end" and end.json == {"reason": "maxMessages"}
        assert sub.comments >= 1
        sub.close()
        # timeoutSeconds ends an idle stream, with heartbeats meanwhile
        sub = await SseStream.open(http, node.url, "quiet", timeoutSeconds=2)
        end = await sub.next(timeout=10)
        assert end.kind == "end" and end.json == {"reason": "timeout"} and sub.comments >= 1
        sub.close()


async def test_bad_subscribe_requests_are_json_4xx(procs: ProcessPool) -> None:
    node = procs.node(node_config()).start()
    async with aiohttp.ClientSession() as http:
        for params, status, code in (
            ({}, 400, "bad_request"),
            ({"streamId": "s", "maxMessages": "x"}, 400, "bad_request"),
            ({"streamId": "s", "timeoutSeconds": "-1"}, 400, "bad_request"),
            ({"streamId": "s", "readFromDB": "maybe"}, 400, "bad_request"),
            ({"streamId": "s", "readFromDB": "true"}, 400, "persistence_not_configured"),
        ):
            async with http.get(node.url + SUBSCRIBE_PATH, params=params) as r:
                assert r.status == status, params
                assert (await r.json())["code"] == code, params
        assert (await health(http, node.url))["status"] == "ok"


@pytest.mark.parametrize("queued_first", [False, True], ids=["sent-while-waiting", "queued-before"])
async def test_a_subscriber_that_stops_reading_takes_nothing_more(procs: ProcessPool, queued_first: bool) -> None:
    node = procs.node(node_config(stream=STREAM_CONFIG)).start()
    host, port = node.address.rsplit(":", 1)
    big = "x" * 200_000
    async with aiohttp.ClientSession() as http:
        async def send_all() -> list[str]:
            return [expect(await send(http, node.url, {"streamId": "slow", "message": f"{i}{big}",
                                                       "inMemoryStreamSize": 100}))["messageUuid"] for i in range(30)]

        sent = await send_all() if queued_first else []
        # A subscriber whose socket receive buffer is small, and who never reads.
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.connect((host, int(port)))
        raw.sendall(f"GET {SUBSCRIBE_PATH}?streamId=slow HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        try:
            if not queued_first:
                await _waiting(http, node.url, 1)
                sent = await send_all()
            await asyncio.sleep(1.0)
            # The stalled subscriber took only what its connection could hold
            # before it stopped draining; every other message is still there.
            others = []
            while True:
                status, body = await receive(http, node.url, "slow", 0)
                if status != 200:
                    break
                others.append(body["messageUuid"])
            assert len(others) >= 20, f"the stalled subscriber took {30 - len(others)} of 30"
            # What it took is in its socket: read it all now.
            raw.setblocking(False)
            data = b""
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while loop.time() < deadline:
                try:
                    chunk = raw.recv(1 << 20)
                except BlockingIOError:
                    events, _, _ = parse_events(data.split(b"\r\n\r\n", 1)[-1])
                    if len(events) + len(others) >= 30:
                        break
                    await asyncio.sleep(0.05)
                    continue
                data += chunk
            body = data.split(b"\r\n\r\n", 1)[1]
            # chunked transfer encoding: drop the chunk-size lines
            events, _, _ = parse_events(_unchunk(body))
            taken = [e.id for e in events]
            assert sorted(taken + others) == sorted(sent), "each message exactly once"
            assert taken == [u for u in sent if u in taken]  # in order
        finally:
            raw.close()


def _unchunk(body: bytes) -> bytes:
    out, rest = b"", body
    while rest:
        size_line, _, rest = rest.partition(b"\r\n")
        try:
            size = int(size_line, 16)
        except ValueError:
            break
        if size == 0:
            break
        out += rest[:size]
        rest = rest[size + 2:]
    return out


async def test_durable_last_event_id_resume_on_another_node_no_gap_no_dup(procs: ProcessPool) -> None:
    await require("postgres")
    table = f"t_{secrets.token_hex(4)}"
    storage = {"backend": "postgres", "postgres": {"dsn": POSTGRES_DSN, "table": table, "pool_size": 4}}
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"storage": storage, "stream": {"read_batch": 7}}).start()
    await c.wait_ring(["n1", "n2"])
    a, b = c.urls()
    stream = "resumed"
    async with aiohttp.ClientSession() as http:
        sent: list[str] = []

        async def producer() -> None:
            for i in range(120):
                body = expect(await send(http, a, {"streamId": stream, "message": i, "writeToDB": True,
                                                   "messageUuid": f"m{i}"}))
                sent.append(body["messageUuid"])
                if i % 10 == 0:
                    await asyncio.sleep(0.02)

        task = asyncio.create_task(producer())
        seen: list[str] = []
        first = None
        sub = await SseStream.open(http, a, stream, readFromDB=True)
        for e in await sub.messages(30):
            seen.append(e.json["messageUuid"])
            assert e.id == e.json["dbResumeToken"]
            first = first or e.id
            last = e.id
        sub.response.connection.transport.abort()  # a forced disconnect mid-stream
        sub.close()
        # The browser reconnects to the same URL (here with the first token in
        # it) and sends the last id it saw: the header wins; another node serves.
        sub = await SseStream.open(http, b, stream, headers={"Last-Event-ID": last}, readFromDB=True,
                                   dbResumeToken=first)
        while len(seen) < 120:
            e = await sub.next(timeout=15)
            seen.append(e.json["messageUuid"])
        sub.close()
        await task
        assert seen == sent == [f"m{i}" for i in range(120)]


async def test_relayed_subscriber_that_disconnects_swallows_nothing(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"stream": STREAM_CONFIG}).start()
    await c.wait_ring(["n1", "n2"])
    streams = [s for s in (f"relay-{i}" for i in range(200)) if c.owner(s) == "n2"][:15]
    owner_url, relay_url = c.url_of("n2"), c.url_of("n1")
    host, port = relay_url.removeprefix("http://").rsplit(":", 1)
    async with aiohttp.ClientSession() as http:
        for k, stream in enumerate(streams):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {SUBSCRIBE_PATH}?streamId={stream} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await asyncio.wait_for(reader.readuntil(b"retry:"), 10)
            await _waiting(http, owner_url, 1)  # the relayed receive waits on the owner
            writer.transport.abort()  # the client goes away...
            if k % 3:
                await asyncio.sleep(0.001 * k)
            # ...as a message arrives for the relayed subscriber
            expect(await send(http, owner_url, {"streamId": stream, "message": k}))
            status, body = await receive(http, owner_url, stream, 5)
            assert status == 200 and body["message"] == k, (k, status, body)
            await _waiting(http, owner_url, 0)


async def test_a_relayed_subscriber_gets_messages_from_the_owner(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"stream": STREAM_CONFIG}).start()
    await c.wait_ring(["n1", "n2"])
    stream = next(s for s in (f"r-{i}" for i in range(200)) if c.owner(s) == "n2")
    async with aiohttp.ClientSession() as http:
        sub = await SseStream.open(http, c.url_of("n1"), stream, maxMessages=20)
        for i in range(20):
            expect(await send(http, c.url_of("n2" if i % 2 else "n1"), {"streamId": stream, "message": i}))
        assert [e.json["message"] for e in await sub.messages(20)] == list(range(20))
        assert (await sub.next()).json == {"reason": "maxMessages"}


async def test_node_shutdown_ends_every_stream_cleanly(procs: ProcessPool, tmp_path: Any) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "n.db")}}, stream=STREAM_CONFIG)
    node = procs.node(config).start()
    async with aiohttp.ClientSession() as http:
        memory = await SseStream.open(http, node.url, "m")
        durable = await SseStream.open(http, node.url, "d", readFromDB=True)
        await asyncio.sleep(0.3)
        expect(await send(http, node.url, {"streamId": "d", "message": 1, "writeToDB": True}))
        assert (await durable.next()).json["message"] == 1
        node.signal(signal.SIGTERM)
        for sub in (memory, durable):
            end = await sub.next(timeout=15)
            assert end.kind == "end" and end.json["reason"] == "shutdown", end
            with pytest.raises(EOFError):
                await sub.next(timeout=15)
        assert await node.wait_async(20) == 0


async def test_subscribers_per_stream_limit(procs: ProcessPool) -> None:
    node = procs.node(node_config(stream={"max_subscribers_per_stream": 2})).start()
    async with aiohttp.ClientSession() as http:
        subs = [await SseStream.open(http, node.url, "crowded") for _ in range(2)]
        async with http.get(node.url + SUBSCRIBE_PATH, params={"streamId": "crowded"}) as r:
            assert r.status == 429 and (await r.json())["code"] == "too_many_stream_polls"
        for sub in subs:
            sub.close()
        await asyncio.sleep(0.3)
        async with http.get(node.url + SUBSCRIBE_PATH, params={"streamId": "crowded", "timeoutSeconds": "1"}) as r:
            assert r.status == 200
            assert b'"reason":"timeout"' in await r.read()



async def test_a_stream_handed_off_ends_its_subscribers_who_reconnect_to_the_new_owner(procs: ProcessPool) -> None:
    from ipubsub.cluster.ring import Ring

    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"stream": STREAM_CONFIG})
    c.start([0])
    # a stream that n1 owns alone and n2 will own once it joins
    ring = Ring({"n1": "n1", "n2": "n2"}, 160)
    stream = next(s for s in (f"moving-{i}" for i in range(500)) if ring.owner(s) == "n2")
    n1 = c.nodes[0].url
    async with aiohttp.ClientSession() as http:
        sub = await SseStream.open(http, n1, stream)
        await _waiting(http, n1, 1)
        c.start([1])
        await c.wait_ring(["n1", "n2"])
        assert c.owner(stream) == "n2"
        end = await sub.next(timeout=20)
        assert end.kind == "end" and end.json["reason"] == "released", end
        sub.close()
        # the client reconnects (anywhere): the subscriber now waits on the new owner
        sub = await SseStream.open(http, n1, stream, maxMessages=1)
        await _waiting(http, c.url_of("n2"), 1)
        expect(await send(http, c.url_of("n2"), {"streamId": stream, "message": "after the move"}))
        assert (await sub.next()).json["message"] == "after the move"
