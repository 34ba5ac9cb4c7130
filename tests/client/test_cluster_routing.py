"""Owner-aware routing against real 3-node clusters: direct calls to owners,
failover when a node is SIGKILLed, and membership refresh when one joins."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from ipubsub.client import AsyncClient, RetryPolicy
from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import health, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


async def forwarded(urls: list[str]) -> dict[str, int]:
    """Each node's count of calls it forwarded to an owner."""
    async with aiohttp.ClientSession() as http:
        return {url: (await health(http, url))["cluster"]["forwarded"] for url in urls}


async def _waiting(http: aiohttp.ClientSession, url: str) -> bool:
    return (await health(http, url))["waitingReceivers"] == 1


async def test_client_calls_owners_directly_no_forwarding_hop(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 3, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2", "n3"])
    streams = [f"direct-{i}" for i in range(45)]
    # Only one seed: the client learns the others from it.
    async with AsyncClient(c.urls()[0]) as client:
        for stream in streams:
            await client.send(stream, {"s": stream})
        for stream in streams:
            message = await client.receive(stream, 2)
            assert message is not None and message.message == {"s": stream}
        assert client.router.ring_members == ["n1", "n2", "n3"]
        owners = {stream: client.router.owner(stream) for stream in streams}
    assert set(owners.values()) == {"n1", "n2", "n3"}
    assert all(c.owner(stream) == owner for stream, owner in list(owners.items())[:15])
    assert await forwarded(c.urls()) == {url: 0 for url in c.urls()}

    # The same send through a node that does not own the stream is forwarded.
    stream = next(s for s, owner in owners.items() if owner != "n1")
    async with aiohttp.ClientSession() as http:
        assert (await send(http, c.urls()[0], {"streamId": stream, "message": 1}))[0] == 200
    assert (await forwarded(c.urls()))[c.urls()[0]] == 1


async def test_client_keeps_working_on_every_stream_when_a_node_is_killed(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 3, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2", "n3"])
    streams = [f"failover-{i}" for i in range(30)]
    policy = RetryPolicy(max_total_seconds=20)
    async with AsyncClient(c.urls(), retry=policy, refresh_interval=1) as client:
        for stream in streams:
            await client.send(stream, "before")
            assert (await client.receive(stream, 2)) is not None
        victim = client.router.owner(streams[0])
        assert victim is not None
        # A long poll waiting on the victim when it dies moves to the survivors.
        pending = asyncio.create_task(client.receive(streams[0], 15))
        victim_url = c.url_of(victim)
        async with aiohttp.ClientSession() as http:
            await wait_until(lambda: _waiting(http, victim_url), what="the poll waiting on the victim")
        c.nodes[int(victim[1:]) - 1].kill()  # SIGKILL: no leave, no hand-off

        started = time.monotonic()
        for stream in streams:
            await client.send(stream, {"after": stream})
        message = await asyncio.wait_for(pending, 15)
        assert message is not None and message.message == {"after": streams[0]}
        for stream in streams[1:]:
            message = await client.receive(stream, 5)
            assert message is not None and message.message == {"after": stream}, stream
        elapsed = time.monotonic() - started
        assert elapsed < 25, elapsed

        # The client retried (connection refused, then 503 while the ring
        # converged) and now routes around the dead node.
        assert client.stats.connection_errors >= 1
        survivors = sorted({"n1", "n2", "n3"} - {victim})
        await c.wait_ring(survivors)
        await client.refresh()
        assert client.router.ring_members == survivors
        assert all(client.router.owner(stream) in survivors for stream in streams)


async def test_client_learns_a_joining_node_and_routes_to_it(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST)).start()
    await c.wait_ring(["n1", "n2"])
    async with AsyncClient(c.urls()[0], refresh_interval=0.3) as client:
        await client.send("warm-up", 0)
        assert client.router.ring_members == ["n1", "n2"]
        index = c.add_node()
        c.start([index])
        await c.wait_ring(["n1", "n2", "n3"])
        # The periodic refresh (every 0.3 s, in the background of calls)
        # picks the new member up without any error.
        async def learned() -> bool:
            await client.send("warm-up", 0)
            return client.router.ring_members == ["n1", "n2", "n3"]

        await wait_until(learned, 5, "the client learning n3", interval=0.1, show=lambda: client.router.ring_members)
        before = await forwarded(c.urls())
        streams = [f"joined-{i}" for i in range(60)]
        to_new = [s for s in streams if client.router.owner(s) == "n3"]
        assert to_new and client.owner_url(to_new[0]) == c.nodes[index].url
        for stream in streams:
            await client.send(stream, stream)
        for stream in streams:
            message = await client.receive(stream, 2)
            assert message is not None and message.message == stream
    assert await forwarded(c.urls()) == before
    async with aiohttp.ClientSession() as http:
        counters = (await health(http, c.nodes[index].url))["counters"]
    assert counters["accepted"] >= len(to_new)
