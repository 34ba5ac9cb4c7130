"""Consumer groups of a durable stream in a real cluster on PostgreSQL:
three consumers share the work exactly once when all ack; a consumer killed
mid-work has its message redelivered to the others once the lease ends; the
owner SIGKILLed mid-run leaves the group to the next owner with no
acknowledged message delivered again and no unacknowledged one lost."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from ipubsub.client import AsyncClient, RetryPolicy
from tests.storage.conftest import POSTGRES_DSN, drop_tables, require
from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import call, expect, open_raw, receive, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(150), pytest.mark.slow]

GROUP = "workers"


@pytest.fixture
async def table() -> AsyncIterator[str]:
    await require("postgres")
    name = f"g_{secrets.token_hex(4)}"
    try:
        yield name
    finally:
        await drop_tables("postgres", name)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session


async def cluster(procs: ProcessPool, table: str, n: int) -> ClusterHarness:
    storage = {"backend": "postgres", "postgres": {"dsn": POSTGRES_DSN, "table": table, "pool_size": 4}}
    c = ClusterHarness(procs, n, cluster=dict(FAST), extra={"storage": storage}, name=f"c-{table}").start()
    await c.wait_ring([c.name(i) for i in range(n)])
    return c


async def fill(http: aiohttp.ClientSession, urls: list[str], stream: str, count: int) -> list[str]:
    uuids = [f"m{i:05d}" for i in range(count)]
    for i, uuid in enumerate(uuids):
        body = {"streamId": stream, "message": i, "messageUuid": uuid, "writeToDB": True}
        expect(await send(http, urls[i % len(urls)], body))
    return uuids


async def group_state(http: aiohttp.ClientSession, url: str, stream: str) -> tuple[int, int]:
    body = expect(await call(http, "GET", url + "/api/v1/streams/groups", params={"streamId": stream}))
    found = [(g["lag"], g["pending"]) for g in body["groups"] if g["group"] == GROUP]
    return found[0] if found else (-1, -1)  # (-1, -1): the group does not exist yet


class Ledger:
    """Every delivery and every accepted ack, in the order they happened."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, str, int]] = []  # consumer, uuid, deliveryCount
        self.acked: set[str] = set()
        self.delivered_after_ack: list[str] = []


async def consume(
    urls: str, stream: str, name: str, ledger: Ledger, done: Callable[[], bool], lease: float = 30
) -> None:
    """Claim batches of up to 10 and ack each, until ``done()``."""
    retry = RetryPolicy(max_total_seconds=30)
    async with AsyncClient(urls, retry=retry, request_timeout=5) as client:
        while not done():
            batch = await client.claim(stream, group=GROUP, consumer=name, max_messages=10, lease=lease, timeout=1)
            for msg in batch:
                ledger.delivered.append((name, msg.uuid, msg.delivery_count))
                if msg.uuid in ledger.acked:
                    ledger.delivered_after_ack.append(msg.uuid)
            if batch:
                missing = set(await client.ack_many(stream, [m.receipt for m in batch]))
                ledger.acked.update(m.uuid for m in batch if m.receipt not in missing)


async def test_three_consumers_get_every_message_exactly_once_when_all_ack(
    procs: ProcessPool, http: aiohttp.ClientSession, table: str
) -> None:
    c = await cluster(procs, table, 2)
    uuids = await fill(http, c.urls(), "orders", 600)
    ledger = Ledger()
    urls = c.urls()
    # each consumer talks to another node first (the client routes to the owner)
    consumers = [consume(",".join(urls[i % 2 :] + urls[: i % 2]), "orders", f"c{i}", ledger, lambda: len(ledger.acked) >= 600) for i in range(3)]
    await asyncio.wait_for(asyncio.gather(*consumers), 90)
    counts = Counter(uuid for _, uuid, _ in ledger.delivered)
    assert sorted(counts) == uuids and set(counts.values()) == {1}
    assert {count for _, _, count in ledger.delivered} == {1}
    assert len({name for name, _, _ in ledger.delivered}) == 3  # the work was shared
    assert await group_state(http, urls[1], "orders") == (0, 0)


async def test_a_consumer_killed_mid_work_has_its_message_redelivered_to_the_others(
    procs: ProcessPool, http: aiohttp.ClientSession, table: str
) -> None:
    c = await cluster(procs, table, 2)
    urls = c.urls()
    uuids = await fill(http, urls, "jobs", 40)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    victim = subprocess.Popen(
        [sys.executable, "-m", "ipubsub", "consume", "jobs", "--group", GROUP, "--consumer", "victim",
         "--lease", "3", "--exec", "cat; sleep 60", "--url", urls[1]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True,
    )
    try:
        # the victim is working on its first message (the oldest): it holds one lease
        async def working() -> bool:
            assert victim.poll() is None, "the victim exited"
            return (await group_state(http, urls[0], "jobs"))[1] == 1

        await wait_until(working, 20, "the victim holds a lease")
    finally:
        os.killpg(victim.pid, signal.SIGKILL)  # the consumer and its command, mid-work
        victim.wait(5)
    ledger = Ledger()
    await asyncio.wait_for(
        asyncio.gather(*(consume(",".join(urls), "jobs", f"w{i}", ledger, lambda: len(ledger.acked) >= 40)
                         for i in range(2))),
        60,
    )
    assert sorted(uuid for _, uuid, _ in ledger.delivered) == uuids  # each once to the survivors
    again = [(uuid, count) for _, uuid, count in ledger.delivered if count > 1]
    assert again == [("m00000", 2)]  # the victim's message, after its lease ended
    assert await group_state(http, urls[0], "jobs") == (0, 0)


async def test_the_owner_sigkilled_mid_run_leaves_the_group_to_the_next_owner(
    procs: ProcessPool, http: aiohttp.ClientSession, table: str
) -> None:
    c = await cluster(procs, table, 3)
    stream = next(s for s in (f"billing-{i}" for i in range(500)) if c.owner(s) == "n1")
    uuids = await fill(http, c.urls(), stream, 1500)
    ledger = Ledger()
    urls = ",".join(c.urls())
    finished = asyncio.Event()
    consumers = asyncio.gather(*(consume(urls, stream, f"c{i}", ledger, finished.is_set, lease=3) for i in range(3)))
    await wait_until(lambda: len(ledger.acked) >= 300, 30, "300 acknowledged before the kill")
    c.nodes[0].kill()  # SIGKILL the owner mid-run
    survivors = [c.url_of("n2"), c.url_of("n3")]
    # done when the database says so: nothing left to deliver, nothing pending
    async def drained() -> bool:
        return await group_state(http, survivors[0], stream) == (0, 0)

    await wait_until(drained, 100, "the group drained", interval=0.5)
    finished.set()
    await asyncio.wait_for(consumers, 30)
    assert set(uuid for _, uuid, _ in ledger.delivered) == set(uuids)  # none lost
    assert ledger.delivered_after_ack == []  # nothing acknowledged came again
    assert len(ledger.acked) > 1400  # acks lost with the owner leave the rest
    assert c.owner(stream, survivors[0]) != "n1"
    # a message delivered again is one whose earlier lease ended unacknowledged: each delivery numbered anew
    for uuid, seen in Counter(uuid for _, uuid, _ in ledger.delivered).items():
        counts = [count for _, u, count in ledger.delivered if u == uuid]
        assert len(set(counts)) == seen, (uuid, counts)


async def test_a_forwarded_durable_poll_whose_client_left_puts_nothing_into_memory(
    procs: ProcessPool, http: aiohttp.ClientSession, table: str
) -> None:
    c = await cluster(procs, table, 2)
    owner, via = c.url_of("n1"), c.url_of("n2")
    stream = next(s for s in (f"log-{i}" for i in range(500)) if c.owner(s) == "n1")
    for query in ("readFromDB=true", f"readFromDB=true&group={GROUP}&consumer=c"):
        _, writer = await open_raw(via, "GET", f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds=20&{query}")
        await asyncio.sleep(0.5)  # the forwarded read waits on the owner
        writer.transport.abort()
        expect(await send(http, owner, {"streamId": stream, "message": query, "writeToDB": True}))
        await asyncio.sleep(1)  # the forwarding node has the owner's answer that nobody reads
        # the durable row stays in the log; nothing appears in the in-memory queue of the stream
        expect(await receive(http, owner, stream, 1), 424)
