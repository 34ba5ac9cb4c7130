"""The shutdown sequence of one node (Node.stop), in process.

* /health answers 503 ``draining`` while the node stops, and new calls get
  503 ``node_draining``;
* durable writes queued when the stop begins are written, not dropped;
* a request still running when the grace period ends is cancelled, one
  that ends within it is answered;
* buffered in-memory messages that nothing can keep are logged as lost; with
  a database they are spilled to it instead, and the log says so.

The cluster part (polls forwarded from a stopping node are ended at once)
runs real processes: tests/lifecycle/test_shutdown_cluster.py.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ipubsub.api.app import build_app
from ipubsub.config import Config
from ipubsub.node import Node
from ipubsub.observability.snapshot import NodeState
from tests.storage.conftest import POSTGRES_DSN, drop_tables, require
from tests.support.config import deep_merge
from tests.support.http import expect, health, receive, send
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

LOST = "buffered in-memory messages of {streams} streams are lost at shutdown"


def make_node(config: dict[str, Any]) -> Node:
    return Node(Config.from_mapping(deep_merge({"storage": {"backend": "none"}}, config)))


async def served(node: Node) -> str:
    """Start ``node`` and serve it on 127.0.0.1:0 as ``ipubsub serve`` does
    (its own runner, so its stop closes the listener and waits for
    in-flight requests); return its URL."""
    node.bind()
    await node.start()
    await node.serve()
    return f"http://{node.listen_address}"


async def fill(http: Any, url: str, streams: dict[str, int]) -> None:
    for stream, count in streams.items():
        for n in range(count):
            expect(await send(http, url, {"streamId": stream, "message": n}))


# -- draining and queued durable writes ---------------------------------------------------


@pytest.fixture
async def slow_postgres() -> AsyncIterator[tuple[TcpProxy, str]]:
    """A TCP proxy in front of PostgreSQL (which the test can blackhole) and
    a fresh table name; the table is dropped afterwards."""
    await require("postgres")
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    table = f"t_{secrets.token_hex(5)}"
    try:
        yield proxy, table
    finally:
        await proxy.stop()
        await drop_tables("postgres", table)


@pytest.mark.slow  # PostgreSQL behind a proxy
async def test_a_stopping_node_is_draining_and_writes_every_queued_durable_write(
    aiohttp_client: Any, slow_postgres: tuple[TcpProxy, str]
) -> None:
    proxy, table = slow_postgres
    dsn = POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    storage = {"backend": "postgres", "postgres": {"dsn": dsn, "table": table, "pool_size": 2},
               "operation_timeout_seconds": 20}
    node = make_node({"storage": storage, "node": {"shutdown_grace_seconds": 5}})
    await node.start()
    assert node.durable is not None and await node.durable.wait_up(10)
    client = await aiohttp_client(build_app(node))
    try:
        # The database stops answering: one write is in flight (pool_size 2:
        # one writer), the next 39 queue up behind it.
        proxy.blackhole()
        durable = node.durable

        def write(n: int) -> asyncio.Task[Any]:
            body = {"streamId": "audit", "message": n, "messageUuid": f"w{n}", "writeToDB": True}
            return asyncio.create_task(send(client, "", body))

        writes = [write(0)]
        await wait_until(lambda: ("send", "local", 1) in node.calls.items() and durable.snapshot().pending_writes == 0,
                         what="the first write in flight")
        writes += [write(n) for n in range(1, 40)]
        await wait_until(lambda: durable.snapshot().pending_writes == 39, what="39 writes queued")
        stopping = asyncio.create_task(node.stop())
        await wait_until(lambda: node.state is NodeState.DRAINING, what="the node draining")
        # Meanwhile /health says so with a 503, and new calls are turned away.
        resp = await client.get("/health")
        assert resp.status == 503 and (await resp.json())["status"] == "draining"
        status, body = await send(client, "", {"streamId": "late", "message": 1})
        assert (status, body["code"]) == (503, "node_draining")
        assert not stopping.done() and not any(w.done() for w in writes)  # the stop waits for the writes
        proxy.heal()
        await asyncio.wait_for(stopping, 30)
        answers = [await w for w in writes]
        assert [status for status, _ in answers] == [200] * 40, answers
        assert all(body["dbResumeToken"] for _, body in answers)
        resp = await client.get("/health")
        assert resp.status == 503 and (await resp.json())["status"] == "stopped"
    finally:
        proxy.heal()
        await node.stop()
    # A new node on the same table reads every acknowledged write back, in order.
    again = make_node({"storage": storage})
    await again.start()
    try:
        assert again.durable is not None and await again.durable.wait_up(10)
        replay = await aiohttp_client(build_app(again))
        got, token = [], None
        for _ in range(41):
            params = {"dbResumeToken": token} if token else {}
            status, body = await receive(replay, "", "audit", 0, readFromDB=True, **params)
            if status == 424:
                break
            got.append(expect((status, body))["messageUuid"])
            token = body["dbResumeToken"]
        assert got == [f"w{n}" for n in range(40)]
    finally:
        await again.stop()


# -- the grace period ---------------------------------------------------------------------


async def test_in_flight_requests_get_the_grace_period_then_are_cancelled(tmp_path: Path) -> None:
    grace = 2.0
    node = make_node({"node": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": grace},
                      "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "g.db")}}})
    url = await served(node)
    try:
        assert node.durable is not None and await node.durable.wait_up(10)
        durable = node.durable
        async with aiohttp.ClientSession() as http:
            # Durable long polls are not released by the stop: they are the in-flight requests here.
            short = asyncio.create_task(receive(http, url, "quiet", 1, readFromDB=True))
            long = asyncio.create_task(receive(http, url, "quiet", 60, readFromDB=True))
            await wait_until(lambda: durable.waiting_readers == 2, what="both polls waiting")
            started = time.monotonic()
            await asyncio.wait_for(node.stop(), grace + 10)
            took = time.monotonic() - started
            # The short poll ended within the grace period and was answered ...
            assert expect(await short, 424)["code"] == "receive_timeout"
            # ... the long one was still running when it ended, and was cut.
            with pytest.raises(aiohttp.ClientError):
                await long
            assert grace - 0.2 <= took < grace + 5, took
    finally:
        await node.stop()


async def test_waiting_in_memory_receivers_are_released_at_once_not_after_the_grace(tmp_path: Path) -> None:
    node = make_node({"node": {"listen": "127.0.0.1:0", "shutdown_grace_seconds": 30}})
    url = await served(node)
    try:
        async with aiohttp.ClientSession() as http:
            polls = [asyncio.create_task(receive(http, url, f"w{i}", 60)) for i in range(5)]
            stats = node.engine.stats
            await wait_until(lambda: stats.waiting_receivers == 5, what="five waiting receivers")
            started = time.monotonic()
            await asyncio.wait_for(node.stop(), 20)
            assert time.monotonic() - started < 10  # far less than the 30 s grace: nothing was left running
            for poll in polls:
                assert expect(await poll, 424)["code"] == "stream_released"
    finally:
        await node.stop()


# -- buffered messages nobody can keep ----------------------------------------------------


async def test_a_lone_node_without_storage_logs_the_buffered_messages_it_loses(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    node = make_node({})
    await node.start()
    client = await aiohttp_client(build_app(node))
    await fill(client, "", {"a": 2, "b": 1})
    with caplog.at_level(logging.INFO, logger="ipubsub"):
        await node.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["3 " + LOST.format(streams=2) + " (no other node to hand them to); "
                      "use writeToDB for messages that must survive a restart"]


async def test_a_lone_node_with_storage_spills_its_buffers_and_loses_nothing(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    storage = {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "spill.db")}}
    node = make_node({"storage": storage})
    await node.start()
    assert node.durable is not None and await node.durable.wait_up(10)
    client = await aiohttp_client(build_app(node))
    await fill(client, "", {"a": 2, "b": 1})
    with caplog.at_level(logging.INFO, logger="ipubsub"):
        await node.stop()
    said = [r.getMessage() for r in caplog.records]
    assert "spilled 3 buffered in-memory messages of 2 streams to the database" in said
    assert not [m for m in said if "lost" in m], said
    # ... and the next start has them back, in order.
    again = make_node({"storage": storage})
    await again.start()
    try:
        replay = await aiohttp_client(build_app(again))
        assert [expect(await receive(replay, "", "a"))["message"] for _ in range(2)] == [0, 1]
        assert expect(await receive(replay, "", "b"))["message"] == 0
    finally:
        await again.stop()


async def test_buffers_are_logged_lost_when_the_database_cannot_take_them(
    aiohttp_client: Any, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("")  # a database path that cannot be opened: storage stays down
    node = make_node({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "a-file" / "x.db")}}})
    await node.start()
    client = await aiohttp_client(build_app(node))
    await fill(client, "", {"a": 1})
    assert (await health(client, ""))["storage"]["status"] != "up"
    with caplog.at_level(logging.INFO, logger="ipubsub"):
        await node.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(LOST.format(streams=1) in m and m.startswith("1 ") for m in errors), errors

