"""End to end durability: real processes, SIGKILL, restart, replay."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
from typing import Any

import aiohttp
import pytest

from tests.storage.conftest import require
from tests.support.cluster import FAST, ClusterHarness
from tests.support.config import node_config
from tests.support.procs import ProcessPool
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


async def psend(http: aiohttp.ClientSession, url: str, stream: str, message: Any, uuid: str) -> int:
    body = {"streamId": stream, "message": message, "messageUuid": uuid, "writeToDB": True}
    async with http.post(f"{url}/api/v1/streams/send", data=json.dumps(body)) as r:
        await r.read()
        return r.status


async def pread(http: aiohttp.ClientSession, url: str, stream: str, token: str | None, timeout: int = 0) -> tuple[int, dict[str, Any]]:
    params = {"streamId": stream, "readFromDB": "true", "timeoutSeconds": str(timeout)}
    if token:
        params["dbResumeToken"] = token
    async with http.get(f"{url}/api/v1/streams/receive", params=params) as r:
        return r.status, await r.json()


async def test_sqlite_keeps_every_acknowledged_message_across_sigkill(procs: ProcessPool, tmp_path: Any) -> None:
    config = node_config(storage={"backend": "sqlite", "sqlite": {"path": str(tmp_path / "node.db")}})
    node = procs.node(config).start()
    acked: list[str] = []
    stop = asyncio.Event()

    async def writer(http: aiohttp.ClientSession, k: int) -> None:
        n = 0
        while not stop.is_set():
            uuid = f"w{k}-{n}"
            n += 1
            try:
                if await psend(http, node.url, "durable", {"k": k, "n": n}, uuid) == 200:
                    acked.append(uuid)
            except aiohttp.ClientError:
                return

    async with aiohttp.ClientSession() as http:
        writers = [asyncio.create_task(writer(http, k)) for k in range(8)]
        await wait_until(lambda: len(acked) >= 300, 60, "300 acknowledged writes")
        node.kill()  # SIGKILL while writes are in flight
        stop.set()
        await asyncio.wait_for(asyncio.gather(*writers, return_exceptions=True), 10)
        snapshot = list(acked)
        restarted = procs.node(config, name="restarted").start()
        token = None
        seen: list[str] = []
        for _ in range(len(snapshot) + 1000):  # bounded: at most what was acked plus what was in flight
            status, body = await pread(http, restarted.url, "durable", token)
            if status == 424:
                break
            assert status == 200, body
            seen.append(body["messageUuid"])
            token = body["dbResumeToken"]
        else:
            raise AssertionError("the replay never ended")
    assert len(seen) == len(set(seen))
    missing = set(snapshot) - set(seen)
    assert not missing, f"{len(missing)} acknowledged messages lost"


async def _drop(table: str) -> None:
    import asyncpg

    con = await asyncpg.connect(POSTGRES_DSN)
    try:
        await con.execute(f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill")
    finally:
        await con.close()


async def test_postgres_cluster_replay_survives_the_owner_being_killed(procs: ProcessPool) -> None:
    await require("postgres")  # skipped without the server, or failed under CI
    table = f"t_{secrets.token_hex(4)}"
    storage = {"backend": "postgres", "postgres": {"dsn": POSTGRES_DSN, "table": table, "pool_size": 4}}
    c = ClusterHarness(procs, 3, cluster=dict(FAST), extra={"storage": storage}).start()
    try:
        await c.wait_ring(["n1", "n2", "n3"])
        stream = "replayed"
        owner = c.owner(stream)
        others = [u for u in c.urls() if u != c.url_of(owner)]
        writer_url, reader_url = others[0], others[1]
        async with aiohttp.ClientSession() as http:
            for i in range(40):
                assert await psend(http, writer_url, stream, i, f"m{i}") == 200
            seen: list[str] = []
            token = None
            for _ in range(15):
                status, body = await pread(http, reader_url, stream, token)
                assert status == 200, body
                seen.append(body["messageUuid"])
                token = body["dbResumeToken"]
            c.nodes[int(owner[1:]) - 1].kill()  # the stream's owner dies mid-replay
            survivors = c.urls()
            deadline = asyncio.get_running_loop().time() + 30
            while len(seen) < 40:
                assert asyncio.get_running_loop().time() < deadline, seen
                status, body = await pread(http, survivors[len(seen) % 2], stream, token, timeout=1)
                if status == 503:
                    await asyncio.sleep(0.2)  # until the survivors drop the dead owner
                    continue
                assert status == 200, body
                seen.append(body["messageUuid"])
                token = body["dbResumeToken"]
            assert seen == [f"m{i}" for i in range(40)]  # no gap, no duplicate
            # The new owner keeps appending after the old positions.
            assert await psend(http, survivors[0], stream, "after", "after") == 200
            status, body = await pread(http, survivors[1], stream, token, timeout=2)
            assert status == 200 and body["messageUuid"] == "after"
    finally:
        for node in c.nodes:
            node.kill()
        await _drop(table)
