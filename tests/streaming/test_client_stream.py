"""``AsyncClient.stream`` against real nodes: SSE and WebSocket, in-memory
and durable, and a durable stream that resumes by itself across a node
restart (no gap, no duplicate)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ipubsub.client import AsyncClient, RetryPolicy
from tests.support.config import node_config
from tests.support.procs import ProcessPool
from tests.support.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_in_memory_and_durable_streams(procs: ProcessPool, tmp_path: Path, transport: str) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "n.db")}})
    node = procs.node(config).start()
    async with AsyncClient(node.url) as client:
        got: list[object] = []

        async def consume() -> None:
            async for msg in client.stream("live", transport=transport, max_messages=5):  # type: ignore[arg-type]
                got.append(msg.message)

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        for i in range(5):
            await client.send("live", {"i": i})
        await asyncio.wait_for(task, 20)
        assert got == [{"i": i} for i in range(5)]

        tokens = [(await client.send("log", i, persist=True)).token for i in range(6)]
        stream = client.stream("log", durable=True, token=tokens[1], transport=transport, max_messages=4)  # type: ignore[arg-type]
        seen = [(m.message, m.token) async for m in stream]
        assert seen == [(i, tokens[i]) for i in range(2, 6)]
        assert stream.token == tokens[5]


@pytest.mark.parametrize("transport", ["sse", "ws"])
async def test_durable_stream_resumes_by_itself_across_a_restart(procs: ProcessPool, tmp_path: Path,
                                                                 transport: str) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "n.db")}})
    node = procs.node(config).start()
    host, port = node.address.rsplit(":", 1)
    proxy = TcpProxy(host, int(port))  # a stable address across the restart, as a load balancer's
    await proxy.start()
    url = f"http://127.0.0.1:{proxy.port}"
    try:
        async with AsyncClient(url, retry=RetryPolicy(max_total_seconds=60, max_attempts=100)) as client:
            for i in range(20):
                await client.send("feed", i, persist=True)
            stream = client.stream("feed", durable=True, transport=transport, max_messages=40)  # type: ignore[arg-type]
            seen: list[int] = []
            async for msg in stream:
                seen.append(msg.message)  # type: ignore[arg-type]
                if len(seen) == 10:
                    node.signal(signal.SIGTERM)  # the node stops mid-stream...
                    assert await node.wait_async(30) == 0
                    node.start()  # ...and comes back on another port, behind the same address
                    h, p = node.address.rsplit(":", 1)
                    proxy.target = (h, int(p))
                    async with AsyncClient(node.url) as writer:
                        for i in range(20, 40):
                            await writer.send("feed", i, persist=True)
            assert seen == list(range(40)), "no gap, no duplicate"
            assert stream.reconnects >= 1
    finally:
        await proxy.stop()
