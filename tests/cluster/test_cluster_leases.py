"""In-memory leases and fan-out histories in a real multi-process cluster:
an ack or nack reaches the lease wherever the client sends it, and planned
ring changes (a graceful leave, a join) move leased messages with their
receipts, delivery counts and the rest of their lease, and histories with
their epoch and offsets."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import ack, call, expect, health, nack, open_raw, receive, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.fixture
async def http() -> aiohttp.ClientSession:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


def owned_by(c: ClusterHarness, node: str, prefix: str, count: int = 1) -> list[str]:
    """``count`` stream ids that ``node`` owns now."""
    found = [s for s in (f"{prefix}-{i}" for i in range(2000)) if c.owner(s) == node][:count]
    assert len(found) == count, f"only {len(found)} streams of {node}"
    return found


async def put(http: aiohttp.ClientSession, url: str, stream: str, *uuids: str, **extra: Any) -> None:
    for uuid in uuids:
        expect(await send(http, url, {"streamId": stream, "message": {"m": uuid}, "messageUuid": uuid, **extra}))


async def leased(http: aiohttp.ClientSession, url: str, stream: str, seconds: float = 60, timeout: float = 0) -> Any:
    return expect(await receive(http, url, stream, timeout, leaseSeconds=seconds))


async def test_ack_and_nack_reach_the_lease_through_a_node_that_did_not_deliver(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    n1, n2 = c.url_of("n1"), c.url_of("n2")
    (stream,) = owned_by(c, "n1", "jobs")
    await put(http, n2, stream, "a", "b", "c")
    a = await leased(http, n1, stream)  # delivered by the owner
    b = await leased(http, n2, stream)  # delivered through n2 (the lease is held on n1)
    assert (a["messageUuid"], b["messageUuid"]) == ("a", "b")
    assert expect(await ack(http, n2, stream, a["receipt"])) == {"acked": 1}
    assert expect(await nack(http, n2, stream, b["receipt"])) == {"nacked": 1}
    again = await leased(http, n2, stream)
    assert (again["messageUuid"], again["deliveryCount"]) == ("b", 2)
    cee = await leased(http, n1, stream)
    # a batch through the non-owner: held ones acked, the stale one named
    body = {"streamId": stream, "receipts": [again["receipt"], cee["receipt"], a["receipt"]]}
    assert expect(await call(http, "POST", n2 + "/api/v1/streams/ack", body=body)) == {
        "acked": 2,
        "notFound": [a["receipt"]],
    }
    assert expect(await ack(http, n2, stream, a["receipt"]), 410)["code"] == "lease_not_found"
    expect(await receive(http, n2, stream), 424)  # acknowledged: never delivered again


async def test_a_graceful_leave_moves_leases_that_are_acked_afterwards_through_any_node(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 3, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2", "n3"])
    n2, n3 = c.url_of("n2"), c.url_of("n3")
    (stream,) = owned_by(c, "n1", "work")
    await put(http, n2, stream, "a", "b", "c", "d")
    a = await leased(http, c.url_of("n1"), stream)
    b = await leased(http, n2, stream)
    short = await leased(http, n3, stream, seconds=4)  # expires on the new owner
    leaving = c.nodes[0]
    leaving.signal(signal.SIGTERM)
    assert await leaving.wait_async(15) == 0
    await c.wait_ring(["n2", "n3"], [n2, n3], timeout=10)
    new_owner = c.owner(stream, n2)
    handed = (await health(http, c.url_of(new_owner)))["cluster"]["handedInMessages"]
    assert handed >= 4, handed  # d buffered, a, b and c leased
    assert expect(await ack(http, n3, stream, a["receipt"])) == {"acked": 1}
    assert expect(await nack(http, n2, stream, b["receipt"])) == {"nacked": 1}
    got = [await leased(http, n3, stream, timeout=10) for _ in range(3)]
    # b (nacked) comes back first; c once its lease ran out on the new owner; both counted
    assert (got[0]["messageUuid"], got[0]["deliveryCount"]) == ("b", 2)
    assert sorted((g["messageUuid"], g["deliveryCount"]) for g in got[1:]) == [("c", 2), ("d", 1)]
    assert short["messageUuid"] == "c"
    for g in got:
        assert expect(await ack(http, n2, stream, g["receipt"])) == {"acked": 1}
    expect(await receive(http, n3, stream, 1), 424)  # a was acknowledged: not delivered again


async def test_a_join_moves_leases_to_the_new_owner_with_their_receipts(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    n1 = c.url_of("n1")
    streams = [f"join-{i}" for i in range(60)]
    receipts: dict[str, str] = {}
    for stream in streams:
        await put(http, n1, stream, f"{stream}/a", f"{stream}/b")
        receipts[stream] = (await leased(http, n1, stream))["receipt"]
    c.start([c.add_node()])
    await c.wait_ring(["n1", "n2", "n3"])
    moved = [s for s in streams if c.owner(s) == "n3"]
    assert moved
    for i, stream in enumerate(streams):
        url = c.urls()[i % 3]
        expect(await ack(http, url, stream, receipts[stream]))
        got = await leased(http, url, stream, timeout=5)
        assert (got["messageUuid"], got["deliveryCount"]) == (f"{stream}/b", 1), stream
        expect(await ack(http, url, stream, got["receipt"]))
        expect(await receive(http, url, stream), 424)
    assert (await health(http, c.url_of("n3")))["cluster"]["handedInMessages"] >= 2 * len(moved)


async def read(http: aiohttp.ClientSession, url: str, stream: str, position: str | None, timeout: float = 0) -> Any:
    params: dict[str, Any] = {"fromHistory": True, "maxMessages": 100}
    if position is not None:
        params["position"] = position
    return expect(await receive(http, url, stream, timeout, **params))


async def test_history_positions_stay_valid_after_a_graceful_leave_and_a_join(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    streams = [f"room-{i}" for i in range(40)]
    marks: dict[str, str] = {}
    for stream in streams:
        for i in range(6):
            expect(await send(http, c.urls()[i % 2], {"streamId": stream, "message": i, "historySize": 100}))
        first = await read(http, c.urls()[0], stream, None)
        assert [m["message"] for m in first["messages"]] == list(range(6))
        marks[stream] = first["messages"][2]["position"]
    # a join: streams the new node takes over keep their positions
    c.start([c.add_node()])
    await c.wait_ring(["n1", "n2", "n3"])
    joined = [s for s in streams if c.owner(s) == "n3"]
    assert joined
    for i, stream in enumerate(streams):
        back = await read(http, c.urls()[i % 3], stream, marks[stream], timeout=5)
        assert back["recovered"] is True, (stream, back)
        assert [m["message"] for m in back["messages"]] == [3, 4, 5], stream
    # a graceful leave: the leaver's streams keep their positions on the survivors
    left = [s for s in streams if c.owner(s) == "n1"]
    assert left
    c.nodes[0].signal(signal.SIGTERM)
    assert await c.nodes[0].wait_async(15) == 0
    survivors = [c.url_of("n2"), c.url_of("n3")]
    await c.wait_ring(["n2", "n3"], survivors, timeout=10)
    for i, stream in enumerate(streams):
        expect(await send(http, survivors[i % 2], {"streamId": stream, "message": 6, "historySize": 100}))
        back = await read(http, survivors[(i + 1) % 2], stream, marks[stream], timeout=5)
        assert back["recovered"] is True, (stream, back)
        assert [m["message"] for m in back["messages"]] == [3, 4, 5, 6], stream


async def test_a_history_position_after_an_owner_restart_is_told_not_recovered(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 1).start()
    url = c.urls()[0]
    for i in range(3):
        expect(await send(http, url, {"streamId": "room", "message": i, "historySize": 10}))
    before = await read(http, url, "room", None)
    mark = before["messages"][1]["position"]
    url = c.restart(0).url  # the history dies with the process: a new epoch
    for i in range(3, 5):
        expect(await send(http, url, {"streamId": "room", "message": i, "historySize": 10}))
    lost = await read(http, url, "room", mark)
    assert lost["recovered"] is False and lost["gap"] == "epoch" and lost["messages"] == []
    status, body = await receive(http, url, "room", 0, fromHistory=True, position=mark, strictRecovery=True)
    assert status == 409 and body["code"] == "history_gap" and body["position"] == lost["position"]
    on = await read(http, url, "room", lost["position"])  # go on, accepting the gap
    assert [m["message"] for m in on["messages"]] == [3, 4]


async def test_a_forwarded_leased_poll_whose_client_left_gives_its_lease_back_without_a_copy(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    owner, via = c.url_of("n1"), c.url_of("n2")
    (stream,) = owned_by(c, "n1", "gone")
    path = f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds=30&leaseSeconds=2"
    for i in range(5):
        _, writer = await open_raw(via, "GET", path)
        await wait_until(lambda: waiting(http, owner, 1), 10, "the forwarded poll waits on the owner")
        writer.transport.abort()  # the client leaves just as its message arrives
        await put(http, owner, stream, f"m{i}")
        got = await leased(http, owner, stream, timeout=5)
        assert (got["messageUuid"], got["deliveryCount"]) == (f"m{i}", 1), got
        expect(await ack(http, owner, stream, got["receipt"]))
        await wait_until(lambda: waiting(http, owner, 0), 10, "the owner forgot the poll")
    await asyncio.sleep(3)  # every 2 s lease of an abandoned poll has ended by now
    expect(await receive(http, owner, stream, 1), 424)  # no second copy of any message


async def waiting(http: aiohttp.ClientSession, url: str, count: int) -> bool:
    return (await health(http, url))["waitingReceivers"] == count
