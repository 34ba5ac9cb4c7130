"""A lone node's buffered in-memory messages survive a planned restart
(issue 16): real ``ipubsub serve`` processes, SIGTERM, restart, receive."""

from __future__ import annotations

import json
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.procs import NodeProcess, ProcessPool

from ..storage.conftest import POSTGRES_DSN, drop_tables, require

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# stream -> (messages sent, inMemoryStreamSize); "small" overflows: only its newest 30 stay
STREAMS = {"orders": (120, 1000), "events": (60, 1000), "small": (50, 30)}


def config(backend: str, tmp_path: Path, table: str) -> dict[str, Any]:
    storage: dict[str, Any] = {"backend": backend}
    if backend == "sqlite":
        storage["sqlite"] = {"path": str(tmp_path / "node.db"), "table": table}
    else:
        storage["postgres"] = {"dsn": POSTGRES_DSN, "table": table, "pool_size": 2}
    return {
        "node": {"name": "solo", "listen": "127.0.0.1:0"},
        "cluster": {"name": "test", "seeds": []},
        "storage": storage,
        "log": {"level": "info"},
    }


async def send_all(http: aiohttp.ClientSession, url: str) -> dict[str, list[int]]:
    """Send every stream's messages; what each stream should hold after."""
    for stream, (count, size) in STREAMS.items():
        for n in range(count):
            body = {"streamId": stream, "message": {"n": n}, "inMemoryStreamSize": size}
            async with http.post(f"{url}/api/v1/streams/send", data=json.dumps(body)) as resp:
                assert resp.status == 200, await resp.text()
    return {stream: list(range(max(0, count - size), count)) for stream, (count, size) in STREAMS.items()}


async def receive_all(http: aiohttp.ClientSession, url: str, stream: str) -> list[int]:
    """Receive until the stream is empty (424 at once)."""
    got: list[int] = []
    for _ in range(10_000):
        params = {"streamId": stream, "timeoutSeconds": "0"}
        async with http.get(f"{url}/api/v1/streams/receive", params=params) as resp:
            if resp.status == 424:
                return got
            body = await resp.json()
            assert resp.status == 200, body
            got.append(body["message"]["n"])
    raise AssertionError("the stream never ran dry")


def stop(node: NodeProcess) -> None:
    node.signal(signal.SIGTERM)
    assert node.wait(30) == 0, node.log()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_lone_node_keeps_its_buffers_across_a_planned_restart(
    procs: ProcessPool, tmp_path: Path, backend: str
) -> None:
    if backend == "postgres":
        await require("postgres")
    table = f"t_{secrets.token_hex(5)}"
    cfg = config(backend, tmp_path, table)
    try:
        first = procs.node(cfg, name="first").start()
        async with aiohttp.ClientSession() as http:
            expected = await send_all(http, first.url)
            stop(first)
            sent = sum(len(v) for v in expected.values())
            assert f"spilled {sent} buffered in-memory messages of 3 streams" in first.log()

            second = procs.node(cfg, name="second").start()
            assert f"restored {sent} buffered in-memory messages" in second.log()
            for stream, values in expected.items():
                assert await receive_all(http, second.url, stream) == values, stream
            # the capacity came back too: "small" still keeps only its newest 30
            for n in range(40):
                body = {"streamId": "small", "message": {"n": 1000 + n}}
                async with http.post(f"{second.url}/api/v1/streams/send", data=json.dumps(body)) as resp:
                    assert resp.status == 200
            assert await receive_all(http, second.url, "small") == list(range(1010, 1040))
            stop(second)

            third = procs.node(cfg, name="third").start()  # restored once: nothing comes back twice
            assert "restored" not in third.log()
            for stream in expected:
                assert await receive_all(http, third.url, stream) == []
            stop(third)
    finally:
        if backend == "postgres":
            await drop_tables("postgres", table)

