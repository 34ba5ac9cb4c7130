"""Shutdown in a cluster (real processes): polls that a stopping node
forwarded to their owner are ended at once, not left to its grace period."""

from __future__ import annotations

import asyncio
import signal
import time

import aiohttp
import pytest

from tests.support.cluster import FAST, ClusterHarness
from tests.support.http import expect, health, receive, send
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

GRACE = 20


async def test_polls_forwarded_from_a_stopping_node_are_ended_at_once(procs: ProcessPool) -> None:
    c = ClusterHarness(procs, 2, cluster=dict(FAST), extra={"node": {"shutdown_grace_seconds": GRACE}}).start()
    await c.wait_ring(["n1", "n2"])
    leaving, owner = c.nodes[0], c.nodes[1]
    streams = [s for s in (f"fwd-{i}" for i in range(1000)) if c.owner(s) == "n2"][:3]
    async with aiohttp.ClientSession() as http:

        async def waiting_on_owner(count: int) -> bool:
            return (await health(http, owner.url))["waitingReceivers"] == count

        polls = [asyncio.create_task(receive(http, leaving.url, s, 60)) for s in streams]
        await wait_until(lambda: waiting_on_owner(3), what="three polls forwarded to the owner")
        started = time.monotonic()
        leaving.signal(signal.SIGTERM)
        answers = await asyncio.wait_for(asyncio.gather(*polls), GRACE - 5)
        assert [status for status, _ in answers] == [424] * 3, answers
        assert time.monotonic() - started < GRACE / 2  # ended by the stop, not cut at the end of the grace
        await wait_until(lambda: waiting_on_owner(0), what="the owner's waiters gone")
        assert await leaving.wait_async(GRACE + 10) == 0
        # The ended polls took nothing: what the owner gets next is there to receive.
        expect(await send(http, owner.url, {"streamId": streams[0], "message": "after"}))
        assert expect(await receive(http, owner.url, streams[0], 2))["message"] == "after"
