"""writeToDB / readFromDB through the HTTP API of one node: tokens, TTL,
idempotency, long polls woken by writes, and a database that goes away."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.api.app import build_app
from ipubsub.config import Config
from ipubsub.engine import ManualClock
from ipubsub.node import Node
from tests.conftest import deep_merge
from tests.storage.conftest import require
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"
POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
async def persisted(aiohttp_client: Any, tmp_path: Path) -> AsyncIterator[Any]:
    """A node on SQLite with a manual clock; yields (client, clock)."""
    clock = ManualClock(wall_us=1_790_000_000_000_000)
    config = Config.from_mapping(
        {"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "db.sqlite")}}}
    )
    node = Node(config, clock=clock)
    await node.start()
    assert node.durable is not None and await node.durable.wait_up(10)
    client = await aiohttp_client(build_app(node))
    client.node = node
    yield client, clock
    await node.stop()


async def psend(client: TestClient, stream: str, message: Any, status: int = 200, **extra: Any) -> dict[str, Any]:
    resp = await client.post(SEND, data=json.dumps({"streamId": stream, "message": message, "writeToDB": True, **extra}))
    body = await resp.json()
    assert resp.status == status, body
    return body  # type: ignore[no-any-return]


async def pread(client: TestClient, stream: str, token: str | None = None, timeout: int = 0, status: int = 200) -> dict[str, Any]:
    params = {"streamId": stream, "readFromDB": "true", "timeoutSeconds": str(timeout)}
    if token is not None:
        params["dbResumeToken"] = token
    resp = await client.get(RECEIVE, params=params)
    body = await resp.json()
    assert resp.status == status, body
    return body  # type: ignore[no-any-return]


async def replay(client: TestClient, stream: str, count: int) -> tuple[list[str], str | None]:
    """Follow the stream's tokens from the start for ``count`` messages:
    their uuids and the token after the last one."""
    token = None
    uuids = []
    for _ in range(count):
        body = await pread(client, stream, token)
        uuids.append(body["messageUuid"])
        token = body["dbResumeToken"]
    return uuids, token


async def test_persisted_send_answers_with_a_token(persisted: Any) -> None:
    client, _ = persisted
    body = await psend(client, "s", {"a": 1}, messageUuid="m1")
    assert body["messageUuid"] == "m1"
    assert body["dbResumeToken"]


async def test_replay_follows_tokens_in_order_and_every_reader_sees_everything(persisted: Any) -> None:
    client, _ = persisted
    sent = [(await psend(client, "log", i))["messageUuid"] for i in range(10)]
    for _reader in range(3):  # reading never removes anything
        got, token = await replay(client, "log", 10)
        assert got == sent
        await pread(client, "log", token, status=424)


async def test_send_token_resumes_after_that_message(persisted: Any) -> None:
    client, _ = persisted
    first = await psend(client, "t", "one")
    await psend(client, "t", "two")
    assert (await pread(client, "t", first["dbResumeToken"]))["message"] == "two"


async def test_persisted_and_in_memory_streams_are_separate(persisted: Any) -> None:
    client, _ = persisted
    await psend(client, "both", "durable")
    resp = await client.post(SEND, data=json.dumps({"streamId": "both", "message": "memory"}))
    assert resp.status == 200
    got = await (await client.get(RECEIVE, params={"streamId": "both", "timeoutSeconds": "0"})).json()
    assert got["message"] == "memory"
    assert "dbResumeToken" not in got
    assert (await pread(client, "both"))["message"] == "durable"


async def test_duplicate_uuid_is_stored_once_and_returns_the_original_token(persisted: Any) -> None:
    client, _ = persisted
    first = await psend(client, "dup", "a", messageUuid="same")
    again = await psend(client, "dup", "different payload", messageUuid="same")
    assert again == first
    body = await pread(client, "dup")
    assert body["message"] == "a"
    await pread(client, "dup", body["dbResumeToken"], status=424)


async def test_expired_messages_are_never_returned(persisted: Any) -> None:
    client, clock = persisted
    await psend(client, "ttl", "short", dbTTLSeconds=5)
    await psend(client, "ttl", "long", dbTTLSeconds=100)
    assert (await pread(client, "ttl"))["message"] == "short"
    clock.advance(6)
    assert (await pread(client, "ttl"))["message"] == "long"  # before any deletion ran
    deleted = await client.node.durable.store.delete_expired(clock.time_us(), 100)
    assert deleted == 1
    clock.advance(100)
    await pread(client, "ttl", status=424)


async def test_a_waiting_reader_is_woken_by_the_write_not_by_polling(persisted: Any) -> None:
    client, _ = persisted
    log = client.node.durable
    poll = asyncio.create_task(pread(client, "wake", timeout=20))
    await wait_until(lambda: log.waiting_readers == 1 and log.reads_total == 1,  # registered, first read done
                     5, "the reader waiting")
    reads_before = log.reads_total
    await asyncio.sleep(0.5)
    assert log.reads_total == reads_before  # nobody polls the database while waiting
    loop = asyncio.get_running_loop()
    started = loop.time()
    await psend(client, "wake", "now")
    body = await asyncio.wait_for(poll, 5)
    assert body["message"] == "now"
    assert loop.time() - started < 1


async def test_reader_times_out_with_424(persisted: Any) -> None:
    client, _ = persisted
    body = await pread(client, "quiet", timeout=1, status=424)
    assert body["code"] == "receive_timeout"


@pytest.mark.parametrize(
    "token",
    ["garbage", "AAAA", "AegWZcl4lM6RAAAAAAAAAAEVZwIX", "!!!!", "x" * 100],
)
async def test_bad_tokens_are_400(persisted: Any, token: str) -> None:
    client, _ = persisted
    await psend(client, "tok", 1)
    body = await pread(client, "tok", token, status=400)
    assert body["code"] == "invalid_token"
    assert "dbResumeToken" in body["error"]


async def test_token_of_another_stream_is_400(persisted: Any) -> None:
    client, _ = persisted
    token = (await psend(client, "one", 1))["dbResumeToken"]
    body = await pread(client, "two", token, status=400)
    assert "another stream" in body["error"]


async def test_concurrent_writers_are_grouped_and_all_acknowledged(persisted: Any) -> None:
    client, _ = persisted
    results = await asyncio.gather(*(psend(client, "many", i, messageUuid=f"u{i}") for i in range(64)))
    assert len({r["dbResumeToken"] for r in results}) == 64
    log = client.node.durable
    assert log.batches_total < log.writes_total  # group commit happened
    seen, _ = await replay(client, "many", 64)
    assert sorted(seen) == sorted(f"u{i}" for i in range(64))


async def wait_storage(client: TestClient, status: str, timeout: float = 15.0) -> None:
    """Wait until /health reports the storage ``status``."""
    async def reached() -> bool:
        return bool((await (await client.get("/health")).json())["storage"]["status"] == status)

    await wait_until(reached, timeout, f"storage {status}", interval=0.05)


async def replay_all(client: TestClient, stream: str) -> tuple[list[Any], str | None]:
    """Every message of the durable stream, oldest first, and the last token."""
    token = None
    out = []
    for _ in range(10_000):
        params = {"streamId": stream, "readFromDB": "true", "timeoutSeconds": "0"}
        if token is not None:
            params["dbResumeToken"] = token
        resp = await client.get(RECEIVE, params=params)
        if resp.status == 424:
            return out, token
        body = await resp.json()
        assert resp.status == 200, body
        out.append(body["message"])
        token = body["dbResumeToken"]
    raise AssertionError("the stream never ran dry")


@pytest.mark.slow  # PostgreSQL behind a proxy
async def test_database_outage_gives_503_memory_keeps_working_and_node_reconnects(aiohttp_client: Any) -> None:
    await require("postgres")
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    await proxy.cut()  # the database is down when the node starts
    port = proxy.port
    table = f"t_{secrets.token_hex(4)}"
    dsn = POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    config = Config.from_mapping(deep_merge(
        {"storage": {"backend": "postgres", "postgres": {"dsn": dsn, "table": table, "pool_size": 2},
                     "reconnect_max_seconds": 0.5, "operation_timeout_seconds": 2}}, {}))
    node = Node(config)
    await node.start()  # the database is down: the node starts anyway
    client = await aiohttp_client(build_app(node))
    try:
        body = await psend(client, "db", 1, status=503)
        assert body["code"] == "storage_unavailable"
        assert "postgres" in body["error"]
        resp = await client.post(SEND, data=json.dumps({"streamId": "mem", "message": 1}))
        assert resp.status == 200
        health = await (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["storage"]["status"] in ("connecting", "down")
        proxy.heal()
        assert await node.durable.wait_up(15)
        await psend(client, "db", 1)
        await proxy.cut()  # the database goes away while the node runs
        body = await psend(client, "db", 2, status=503)
        assert body["code"] == "storage_unavailable"
        assert (await (await client.get("/health")).json())["storage"]["status"] == "down"
        proxy.heal()
        await wait_storage(client, "up")
        await psend(client, "db", 3)

        proxy.blackhole()  # packets dropped, not refused: answered within the 2 s deadline
        loop = asyncio.get_running_loop()
        started = loop.time()
        body = await psend(client, "db", 4, status=503)
        assert body["code"] == "storage_unavailable"
        assert loop.time() - started < 3
        assert (await (await client.get("/health")).json())["storage"]["status"] == "down"
        proxy.heal()
        await wait_storage(client, "up")
        await psend(client, "db", 5)

        got, _ = await replay_all(client, "db")
        # 4 timed out in flight: it may have committed when the path healed
        assert got in ([1, 3, 5], [1, 3, 4, 5])
    finally:
        await node.stop()
        await proxy.stop()
        import asyncpg

        con = await asyncpg.connect(POSTGRES_DSN)
        await con.execute(f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill")
        await con.close()


async def test_sqlite_in_a_multi_node_config_warns_loudly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config.from_mapping({
        "node": {"name": "a", "listen": "127.0.0.1:1", "advertise": "127.0.0.1:1"},
        "cluster": {"seeds": ["127.0.0.1:1", "127.0.0.1:2"]},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "w.db")}},
    })
    node = Node(config)
    with caplog.at_level("WARNING", logger="ipubsub.node"):
        await node.start()
    await node.stop()
    warning = [r.getMessage() for r in caplog.records if "sqlite" in r.getMessage()]
    assert warning and "replay only sees what THIS node stored" in warning[0]
    assert "127.0.0.1:2" in warning[0]


async def test_sqlite_on_a_single_node_does_not_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    config = Config.from_mapping({
        "node": {"listen": "127.0.0.1:1"},
        "cluster": {"seeds": ["127.0.0.1:1"]},
        "storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "w.db")}},
    })
    node = Node(config)
    with caplog.at_level("WARNING", logger="ipubsub.node"):
        await node.start()
    await node.stop()
    assert not [r for r in caplog.records if "sqlite" in r.getMessage()]
