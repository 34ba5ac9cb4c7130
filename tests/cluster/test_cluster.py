"""Real multi-process clusters on 127.0.0.1: ownership, forwarding,
membership, failures and lossless hand-off.  No mocks of the network."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time

import aiohttp
import pytest

from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import health, http_json, open_raw, receive, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

RNG = random.Random(18)  # which node a call goes to: varied, but the same every run


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def three(procs: ProcessPool, **kw: object) -> ClusterHarness:
    c = ClusterHarness(procs, 3, cluster=dict(FAST), **kw).start()  # type: ignore[arg-type]
    await c.wait_ring(["n1", "n2", "n3"])
    return c


async def test_three_nodes_converge_within_5s_with_default_timings(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 3).start()  # the bound runs from when all three serve: start-up not included
    await c.wait_ring(["n1", "n2", "n3"], timeout=5)


async def test_every_node_agrees_on_one_owner_per_stream(procs: ProcessPool) -> None:
    c = await three(procs)
    owners: dict[str, str] = {}
    for i in range(150):
        answers = {c.owner(f"stream-{i}", url) for url in c.urls()}
        assert len(answers) == 1, answers
        owners[f"stream-{i}"] = answers.pop()
    assert set(owners.values()) == {"n1", "n2", "n3"}
    view = http_json(c.urls()[0] + "/api/v1/cluster")[1]
    assert {m["name"]: m["status"] for m in view["members"]} == {"n1": "alive", "n2": "alive", "n3": "alive"}
    assert view["self"] == "n1"
    assert isinstance(view["ringVersion"], int)
    _status, body = http_json(c.urls()[1] + "/api/v1/streams/owner?streamId=stream-1")
    assert body["address"] == c.url_of(body["node"]).removeprefix("http://")


async def test_send_on_any_node_receive_on_any_other(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    urls = c.urls()
    for i in range(30):
        stream = f"any-{i}"
        a, b = RNG.sample(urls, 2)
        status, sent = await send(http, a, {"streamId": stream, "message": {"i": i}})
        assert status == 200
        status, got = await receive(http, b, stream, 1)
        assert status == 200, got
        assert got["message"] == {"i": i}
        assert got["messageUuid"] == sent["messageUuid"]
    totals = [await health(http, u) for u in urls]
    assert sum([h["cluster"]["forwarded"] for h in totals]) > 0


async def test_statuses_pass_through_forwarding(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    stream = "statuses"
    owner = c.owner(stream)
    other = next(u for u in c.urls() if u != c.url_of(owner))
    status, body = await receive(http, other, stream, 1)
    assert status == 424 and body["code"] == "receive_timeout"
    await send(http, other, {"streamId": stream, "message": 1, "inMemoryStreamSize": 1})
    status, body = await send(http, other, {"streamId": stream, "message": 2, "blockingSendTimeoutSeconds": 1})
    assert status == 424 and body["code"] == "send_timeout"
    status, body = await send(http, other, {"streamId": stream, "message": 1, "inMemoryStreamSize": -1})
    assert status == 400
    async with http.post(f"{other}/api/v1/streams/send", data=json.dumps({"streamId": stream, "message": "x" * 1_100_000})) as r:
        assert r.status == 413


async def test_sync_match_across_nodes(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    stream = "sync-across"
    owner = c.owner(stream)
    others = [u for u in c.urls() if u != c.url_of(owner)]
    sender = asyncio.create_task(
        send(http, others[0], {"streamId": stream, "message": "hello", "inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 10})
    )
    owner_url = c.url_of(owner)
    await wait_until(lambda: _health_is(http, owner_url, "blockedSenders", 1), what="the sender waiting on the owner")
    assert not sender.done()
    status, got = await receive(http, others[1], stream, 5)
    assert status == 200 and got["message"] == "hello"
    status, sent = await asyncio.wait_for(sender, 10)
    assert status == 200 and sent["messageUuid"] == got["messageUuid"]


async def _open_poll(url: str, stream: str, timeout: int = 30) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await open_raw(url, "GET", f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds={timeout}")


async def _health_is(http: aiohttp.ClientSession, url: str, key: str, value: int) -> bool:
    return (await health(http, url))[key] == value


async def _wait_waiting(http: aiohttp.ClientSession, url: str, count: int) -> None:
    await wait_until(lambda: _health_is(http, url, "waitingReceivers", count), what=f"{count} waiting receivers on {url}")


async def test_forwarded_poller_disconnect_swallows_nothing(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    stream = "dead-poller"
    owner_url = c.url_of(c.owner(stream))
    via = next(u for u in c.urls() if u != owner_url)
    # 1. The poller goes away before any message: the owner forgets its waiter.
    _, writer = await _open_poll(via, stream)
    await _wait_waiting(http, owner_url, 1)
    writer.close()
    await _wait_waiting(http, owner_url, 0)
    await send(http, via, {"streamId": stream, "message": "first"})
    status, got = await receive(http, owner_url, stream, 2)
    assert status == 200 and got["message"] == "first"
    # 2. The poller goes away just before its message arrives: while the
    #    owner may still hand the message to the forwarded poll, the
    #    forwarding node gives it back.  (Once an answer was written to the
    #    client's socket it counts as delivered: no server can tell more.)
    for i in range(10):
        _, writer = await _open_poll(via, stream)
        await _wait_waiting(http, owner_url, 1)
        writer.transport.abort()
        status, _ = await send(http, owner_url, {"streamId": stream, "message": i})
        assert status == 200
        status, got = await receive(http, owner_url, stream, 5)
        assert status == 200 and got["message"] == i, (i, got)
        await _wait_waiting(http, owner_url, 0)


async def test_sigkill_one_of_three_and_keep_serving_every_stream(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = ClusterHarness(procs, 3).start()  # default failure-detection timings
    await c.wait_ring(["n1", "n2", "n3"], timeout=5)
    streams = [f"k-{i}" for i in range(60)]
    assert "n3" in {c.owner(s) for s in streams}
    c.nodes[2].kill()
    killed_at = time.monotonic()
    survivors = c.urls()
    # Right after the kill (n3 is still in the ring: it is dead only after
    # 4 s of silence), calls for its streams get a clean 503 naming it.
    victim = next(s for s in streams if c.owner(s, survivors[0]) == "n3")
    status, body = await send(http, survivors[0], {"streamId": victim, "message": 1})
    assert status == 503, body
    assert body["code"] == "owner_unavailable" and "n3" in body["error"] and "unreachable" in body["error"]
    await c.wait_ring(["n1", "n2"], survivors, timeout=10)
    assert time.monotonic() - killed_at < 10
    for i, stream in enumerate(streams):
        status, _ = await send(http, survivors[i % 2], {"streamId": stream, "message": i, "messageUuid": f"m{i}"})
        assert status == 200
    for i, stream in enumerate(streams):
        status, got = await receive(http, survivors[(i + 1) % 2], stream, 2)
        assert status == 200 and got["messageUuid"] == f"m{i}"


async def test_owner_unreachable_is_a_503_with_retry_after(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = ClusterHarness(procs, 2, cluster={"dead_after_seconds": 30, "suspect_after_seconds": 20}).start()
    await c.wait_ring(["n1", "n2"])
    stream = next(f"u-{i}" for i in range(1000) if c.owner(f"u-{i}") == "n2")
    c.nodes[1].kill()
    async with http.post(f"{c.urls()[0]}/api/v1/streams/send", data=json.dumps({"streamId": stream, "message": 1})) as r:
        assert r.status == 503
        assert r.headers["Retry-After"] == "1"
        body = await r.json()
    assert "n2" in body["error"]
    view = http_json(c.urls()[0] + "/api/v1/cluster")[1]
    assert {m["name"]: m["status"] for m in view["members"]}["n2"] == "suspect"


async def test_killed_node_restarts_and_rejoins_within_10s(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 3).start()
    await c.wait_ring(["n1", "n2", "n3"], timeout=5)
    c.nodes[1].kill()
    await c.wait_ring(["n1", "n3"], c.urls(), timeout=10)
    c.restart(1)  # a new incarnation on a new port; the bound runs from when it serves
    await c.wait_ring(["n1", "n2", "n3"], timeout=10)


async def _fill(http: aiohttp.ClientSession, urls: list[str], streams: list[str], per_stream: int) -> None:
    for s_i, stream in enumerate(streams):
        for k in range(per_stream):
            status, _ = await send(http, urls[(s_i + k) % len(urls)], {"streamId": stream, "message": k, "messageUuid": f"{stream}/{k}"})
            assert status == 200


async def _drain_all(http: aiohttp.ClientSession, urls: list[str], streams: list[str], per_stream: int) -> None:
    for s_i, stream in enumerate(streams):
        got = []
        for _ in range(per_stream):
            status, body = await receive(http, urls[s_i % len(urls)], stream, 2)
            assert status == 200, (stream, got, body)
            got.append(body["messageUuid"])
        assert got == [f"{stream}/{k}" for k in range(per_stream)], stream
        status, _ = await receive(http, urls[s_i % len(urls)], stream, 0)
        assert status == 424


async def test_graceful_leave_hands_off_every_buffered_message(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    streams = [f"leave-{i}" for i in range(80)]
    await _fill(http, c.urls(), streams, 5)
    leaving = c.nodes[0]
    owned_by_leaver = [s for s in streams if c.owner(s) == "n1"]
    assert owned_by_leaver
    # A receiver waiting on the leaving node is answered 424 and re-polls elsewhere.
    idle_stream = next(f"idle-{i}" for i in range(1000) if c.owner(f"idle-{i}") == "n1")
    poll = asyncio.create_task(receive(http, leaving.url, idle_stream, 30))
    await _wait_waiting(http, leaving.url, 1)
    started = time.monotonic()
    leaving.signal(signal.SIGTERM)
    status, _body = await asyncio.wait_for(poll, 10)
    assert status == 424
    assert await leaving.wait_async(10) == 0
    assert time.monotonic() - started < 10
    survivors = c.urls()
    await c.wait_ring(["n2", "n3"], survivors, timeout=5)
    await _drain_all(http, survivors, streams, 5)
    handed_in = sum([(await health(http, u))["cluster"]["handedInMessages"] for u in survivors])
    assert handed_in >= 5 * len(owned_by_leaver)


async def test_join_hands_over_buffered_messages_in_order(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    streams = [f"join-{i}" for i in range(90)]
    await _fill(http, c.urls(), streams, 4)
    new = c.add_node()
    c.start([new])
    await c.wait_ring(["n1", "n2", "n3"])
    moved = [s for s in streams if c.owner(s) == "n3"]
    assert moved
    # Messages sent after the change go behind the handed-over ones.
    for stream in moved[:10]:
        status, _ = await send(http, c.urls()[0], {"streamId": stream, "message": "late", "messageUuid": f"{stream}/late"})
        assert status == 200
    for s_i, stream in enumerate(streams):
        url = c.urls()[s_i % 3]
        got = []
        expected = [f"{stream}/{k}" for k in range(4)] + ([f"{stream}/late"] if stream in moved[:10] else [])
        for _ in expected:
            status, body = await receive(http, url, stream, 3)
            assert status == 200, (stream, got, body)
            got.append(body["messageUuid"])
        assert got == expected, stream
    assert (await health(http, c.nodes[new].url))["cluster"]["handedInMessages"] >= 4 * len(moved)


async def test_concurrent_load_across_nodes_without_errors_or_loops(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = await three(procs)
    urls = c.urls()
    streams = [f"load-{i}" for i in range(24)]
    sent: dict[str, list[str]] = {s: [] for s in streams}
    got: dict[str, list[str]] = {s: [] for s in streams}
    errors: list[object] = []
    calls = [0]  # every call a client made (a forwarded call is forwarded at most once)
    stop = asyncio.Event()

    async def producer(stream: str) -> None:
        n = 0
        while not stop.is_set():
            uuid = f"{stream}#{n}"
            calls[0] += 1
            status, body = await send(http, RNG.choice(urls), {"streamId": stream, "message": n, "messageUuid": uuid, "inMemoryStreamSize": 10_000})
            if status == 200:
                sent[stream].append(uuid)
            else:
                errors.append(body)
            n += 1

    producers_done = asyncio.Event()

    async def consumer(stream: str) -> None:
        idle_after_done = 0
        while idle_after_done < 2:
            calls[0] += 1
            status, body = await receive(http, RNG.choice(urls), stream, 1)
            if status == 200:
                got[stream].append(body["messageUuid"])
            elif status != 424:
                errors.append(body)
            elif producers_done.is_set():
                idle_after_done += 1

    producers = [asyncio.create_task(producer(s)) for s in streams]
    consumers = [asyncio.create_task(consumer(s)) for s in streams]
    await wait_until(lambda: sum(len(v) for v in sent.values()) >= 300, 60, "300 messages sent",
                     interval=0.1, show=lambda: errors[:3])
    stop.set()
    await asyncio.wait_for(asyncio.gather(*producers), 30)
    producers_done.set()
    await asyncio.wait_for(asyncio.gather(*consumers), 30)
    assert not errors, errors[:5]
    for stream in streams:
        assert got[stream] == sent[stream], stream
    # No loops: a forwarded call is never forwarded again, so the forwarded
    # calls are at most the client calls.
    forwarded = sum([(await health(http, u))["cluster"]["forwarded"] for u in urls])
    assert 0 < forwarded <= calls[0]


async def test_node_of_another_cluster_is_refused(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    stranger = ClusterHarness(procs, 1, cluster=dict(FAST), name="other", seeds=c.seeds)
    stranger.nodes[0].config["node"]["name"] = "intruder"
    stranger.start()
    # Both members refused the intruder's heartbeat (it logs each refusal once) ...
    await wait_until(lambda: stranger.nodes[0].log().count("refused our heartbeat") == 2,
                     what="both members refusing the intruder", show=stranger.nodes[0].log)
    # ... and neither took it in, though it kept heartbeating meanwhile.
    for url in c.urls():
        view = http_json(url + "/api/v1/cluster")[1]
        assert {m["name"] for m in view["members"]} == {"n1", "n2"}


async def test_internal_endpoints_require_the_secret(procs: ProcessPool, http: aiohttp.ClientSession) -> None:
    c = ClusterHarness(procs, 2, cluster={**FAST, "secret": "s3cret"}).start()
    await c.wait_ring(["n1", "n2"])
    async with http.post(f"{c.urls()[0]}/internal/v1/gossip", data=b"{}") as r:
        assert r.status == 401
        assert "secret" in (await r.json())["error"]
    async with http.post(f"{c.urls()[0]}/internal/v1/leave", data=b"{}", headers={"X-IPubSub-Secret": "wrong"}) as r:
        assert r.status == 401
    # The public API needs no secret, and forwarding works.
    stream = next(f"sec-{i}" for i in range(1000) if c.owner(f"sec-{i}") == "n2")
    status, _ = await send(http, c.urls()[0], {"streamId": stream, "message": 1})
    assert status == 200
    status, got = await receive(http, c.urls()[0], stream, 1)
    assert status == 200 and got["message"] == 1
