"""Batches across a real 3-node cluster on PostgreSQL: one sendBatch call
with items for every owner (memory and durable), batch polls through a
node that does not own the stream, and their disconnects."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.storage.conftest import require
from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import expect, health, open_raw, receive, send_batch
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


@pytest.fixture
async def cluster(procs: ProcessPool) -> AsyncIterator[ClusterHarness]:
    await require("postgres")  # skipped without the server, or failed under CI
    table = f"t_{secrets.token_hex(4)}"
    storage = {"backend": "postgres", "postgres": {"dsn": POSTGRES_DSN, "table": table, "pool_size": 4}}
    c = ClusterHarness(procs, 3, cluster=dict(FAST), extra={"storage": storage}).start()
    try:
        await c.wait_ring(["n1", "n2", "n3"])
        yield c
    finally:
        for node in c.nodes:
            node.kill()
        import asyncpg

        con = await asyncpg.connect(POSTGRES_DSN)
        try:
            await con.execute(f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill")
        finally:
            await con.close()


async def test_one_call_with_items_for_every_owner(cluster: ClusterHarness, http: aiohttp.ClientSession) -> None:
    c = cluster
    streams = [f"mixed-{i}" for i in range(12)]
    owners = {s: c.owner(s) for s in streams}
    assert set(owners.values()) == {"n1", "n2", "n3"}
    durable = set(streams[::2])
    items: list[dict[str, Any]] = []
    for n in range(10):  # interleaved: every stream's items are spread over the whole batch
        for s in streams:
            items.append({"streamId": s, "message": {"s": s, "n": n}, "messageUuid": f"{s}/{n}", "writeToDB": s in durable})
    items.insert(7, {"streamId": "", "message": "bad"})
    items.insert(30, {"streamId": "mixed-1", "message": "blocking", "blockingSendTimeoutSeconds": 2})
    entry = c.urls()[0]
    before = sum([(await health(http, u))["cluster"]["forwarded"] for u in c.urls()])
    results = expect(await send_batch(http, entry, items))["results"]
    assert len(results) == len(items)
    for item, result in zip(items, results):
        if item["streamId"] == "":
            assert result["status"] == 400 and result["field"] == "streamId"
        elif "blockingSendTimeoutSeconds" in item:
            assert result["code"] == "not_supported_in_batch"
        else:
            assert result["messageUuid"] == item["messageUuid"], result
            assert ("dbResumeToken" in result) == item["writeToDB"]
    after = sum([(await health(http, u))["cluster"]["forwarded"] for u in c.urls()])
    assert after - before == 2  # one sub-batch to each of the two other owners
    urls = c.urls()
    for k, s in enumerate(streams):
        reader = urls[k % 3]
        if s in durable:
            body = expect(await receive(http, reader, s, 0, readFromDB=True, maxMessages=100))
        else:
            body = expect(await receive(http, reader, s, 0, maxMessages=100))
        assert [m["message"]["n"] for m in body["messages"]] == list(range(10)), s
        assert [m["messageUuid"] for m in body["messages"]] == [f"{s}/{n}" for n in range(10)]
    # the same batch again: durable items are stored once (same tokens), memory ones again
    again = expect(await send_batch(http, urls[1], items))["results"]
    for item, first, second in zip(items, results, again):
        if item.get("writeToDB"):
            assert second == first


async def test_a_forwarded_batch_poll_that_disconnects_gives_every_message_back(
    cluster: ClusterHarness, http: aiohttp.ClientSession
) -> None:
    c = cluster
    stream = "dead-batch-poller"
    owner_url = c.url_of(c.owner(stream))
    via = next(u for u in c.urls() if u != owner_url)
    path = f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds=30&maxMessages=50"
    for round_ in range(8):
        _, writer = await open_raw(via, "GET", path)
        await wait_until(
            lambda: _waiting(http, owner_url, 1), what="the forwarded batch poll waits on the owner"
        )
        writer.transport.abort()  # gone just before the batch arrives: the owner may already hand it the batch
        values = [round_ * 100 + i for i in range(20)]
        expect(await send_batch(http, owner_url, [{"streamId": stream, "message": v} for v in values]))
        await wait_until(lambda: _waiting(http, owner_url, 0), what="no poll left on the owner")
        got: list[int] = []
        while len(got) < len(values):
            body = expect(await receive(http, owner_url, stream, 5, maxMessages=100))
            got += [m["message"] for m in body["messages"]]
        assert got == values, round_
        await asyncio.sleep(0)


async def _waiting(http: aiohttp.ClientSession, url: str, count: int) -> bool:
    return (await health(http, url))["waitingReceivers"] == count


async def test_items_of_an_unreachable_owner_fail_alone(cluster: ClusterHarness, http: aiohttp.ClientSession) -> None:
    c = cluster
    streams = [f"dead-owner-{i}" for i in range(12)]
    owners = {s: c.owner(s) for s in streams}
    victim = next(n for n in ("n1", "n2", "n3") if n in owners.values() and n != "n1")
    c.nodes[int(victim[1:]) - 1].kill()
    entry = c.url_of("n1")
    items = [{"streamId": s, "message": k} for k in range(3) for s in streams]
    results = expect(await send_batch(http, entry, items))["results"]
    for item, result in zip(items, results):
        if owners[item["streamId"]] == victim:
            # the ring may already have dropped the dead node: then its streams have a new owner
            assert "messageUuid" in result or (result["status"] == 503 and result["code"] == "owner_unavailable"), result
        else:
            assert "messageUuid" in result, result
    # once the ring drops the dead node, every item of a batch is served (its streams have a new owner)
    await c.wait_ring([n for n in ("n1", "n2", "n3") if n != victim], urls=[entry], timeout=30)
    again = expect(await send_batch(http, entry, items))["results"]
    assert all("messageUuid" in r for r in again), again
    # nothing accepted was lost or doubled, and each stream kept its order
    for s in streams:
        first = [r["messageUuid"] for item, r in zip(items, results) if item["streamId"] == s and "messageUuid" in r]
        second = [r["messageUuid"] for item, r in zip(items, again) if item["streamId"] == s]
        got = [m["messageUuid"] for m in expect(await receive(http, entry, s, 1, maxMessages=100))["messages"]]
        assert got == first + second, (s, got)  # the victim died before the first batch: it accepted nothing
