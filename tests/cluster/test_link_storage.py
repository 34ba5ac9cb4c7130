"""Issue 9 item 7, forwarding part: a forwarded durable call that hangs on
the owner's database (a blackholed path: packets dropped, not refused) is
answered ``storage_unavailable`` by the owner within its own deadline, and
passed through unchanged; the entry node does not blame the owner (it stays
alive in every view).  Before the peer link the entry node gave up first and
answered ``owner_unavailable``, marking a healthy owner suspect."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import aiohttp
import pytest

from ipubsub.config import Config
from ipubsub.node import Node
from tests.storage.conftest import POSTGRES_DSN, require
from tests.support.cluster import FAST
from tests.support.config import node_config
from tests.support.http import send
from tests.support.tcp_proxy import TcpProxy
from tests.support.wait import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


async def _serve(name: str, seeds: list[str], dsn: str, table: str) -> Node:
    storage = {"backend": "postgres", "postgres": {"dsn": dsn, "table": table, "pool_size": 2},
               "reconnect_max_seconds": 0.5, "operation_timeout_seconds": 2}  # fmt: skip
    config = node_config(name, cluster={"name": "stored", "seeds": seeds, **FAST}, storage=storage)
    node = Node(Config.from_mapping(config))
    node.bind()
    await node.start()
    await node.serve()
    return node


@pytest.fixture
async def table() -> AsyncIterator[str]:
    await require("postgres")
    name = f"t_{secrets.token_hex(4)}"
    yield name
    import asyncpg

    con = await asyncpg.connect(POSTGRES_DSN)
    await con.execute(f"DROP TABLE IF EXISTS {name}, {name}_streams, {name}_groups, {name}_pending, {name}_spill")
    await con.close()


async def test_a_forwarded_durable_send_on_a_blackholed_database_is_storage_unavailable(table: str) -> None:
    proxy = TcpProxy("127.0.0.1", 5432)
    await proxy.start()
    dsn = POSTGRES_DSN.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    entry = await _serve("n1", [], POSTGRES_DSN, table)
    owner = await _serve("n2", [entry.listen_address], dsn, table)
    try:
        await wait_until(lambda: all(len(n.cluster.ring) == 2 for n in (entry, owner)), what="both rings")
        assert owner.durable is not None and await owner.durable.wait_up(15)
        stream = next(f"d{i}" for i in range(10_000) if owner.cluster.owner(f"d{i}") == "n2")
        url = f"http://{entry.listen_address}"
        async with aiohttp.ClientSession() as http:
            status, body = await send(http, url, {"streamId": stream, "message": 1, "writeToDB": True})
            assert status == 200, body
            proxy.blackhole()
            loop = asyncio.get_running_loop()
            started = loop.time()
            status, body = await send(http, url, {"streamId": stream, "message": 2, "writeToDB": True})
            assert status == 503 and body["code"] == "storage_unavailable", body
            assert loop.time() - started < 10
            # the owner was not blamed for its database
            assert all(m.status.value == "alive" for m in entry.cluster.membership.members())
            # and while its database is down it keeps serving memory
            status, _ = await send(http, url, {"streamId": stream, "message": 3})
            assert status == 200
    finally:
        proxy.heal()
        await asyncio.gather(entry.stop(), owner.stop())
        await proxy.stop()
