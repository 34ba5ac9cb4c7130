"""A burst of forwarded long polls against real processes (issue 9 item 4,
issue 10): 5,000 polls sent at once to a node that does not own their
streams wait on the owner as parked receives, all on one link connection;
none is refused, and failure detection is not starved: no node is marked
suspect or dead and the ring does not change.  (Before the peer link: 4,999
of 5,000 answered 503 ``owner_unavailable`` and the owner was declared dead.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.support.cluster import ClusterHarness
from tests.support.http import health, open_raw, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

POLLS = 5000
STREAMS = 100
WAIT_SECONDS = 12


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def _status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0


async def test_a_burst_of_5000_forwarded_polls_shares_one_link_and_kills_no_one(
    procs: ProcessPool, http: aiohttp.ClientSession
) -> None:
    c = ClusterHarness(procs, 2).start()  # the default failure-detection timings, as in the fault run
    await c.wait_ring(["n1", "n2"])
    entry, owner = c.url_of("n1"), c.url_of("n2")
    streams = [s for s in (f"burst-{i}" for i in range(10 * STREAMS)) if c.owner(s) == "n2"][:STREAMS]
    assert len(streams) == STREAMS
    before = [(await health(http, u))["cluster"]["ringChanges"] for u in (entry, owner)]

    async def poll(i: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        stream = streams[i % STREAMS]
        return await open_raw(entry, "GET", f"/api/v1/streams/receive?streamId={stream}&timeoutSeconds={WAIT_SECONDS}")

    started = time.monotonic()
    conns = await asyncio.gather(*(poll(i) for i in range(POLLS)))
    try:
        await wait_until(
            lambda: _waiting(http, owner, POLLS), what=f"{POLLS} polls waiting on the owner", timeout=40.0
        )
        link = (await health(http, owner))["cluster"]["link"]
        assert link["connectionsIn"] <= 2 and link["callsIn"] == POLLS, link
        # Every forwarded poll is served: one message per stream reaches one of its polls.
        for stream in streams:
            status, _ = await send(http, entry, {"streamId": stream, "message": stream})
            assert status == 200
        statuses = await asyncio.wait_for(asyncio.gather(*(_status(r) for r, _ in conns)), WAIT_SECONDS + 30)
    finally:
        for _, writer in conns:
            writer.close()
    elapsed = time.monotonic() - started
    counts = {s: statuses.count(s) for s in set(statuses)}
    assert counts == {200: STREAMS, 424: POLLS - STREAMS}, (counts, elapsed)
    after = [(await health(http, u))["cluster"]["ringChanges"] for u in (entry, owner)]
    assert after == before
    for node in c.nodes:
        log = node.log()
        assert "is suspect" not in log and "is dead" not in log, log[-3000:]


async def _waiting(http: aiohttp.ClientSession, url: str, count: int) -> bool:
    return (await health(http, url))["waitingReceivers"] >= count
