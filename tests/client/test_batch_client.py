"""The client's batch calls against one real ``ipubsub serve`` node:
send_batch, receive/read with max_messages, batched subscribe and replay."""

from __future__ import annotations

import pytest

from ipubsub.client import AsyncClient, BatchItem, Client, SendResult
from ipubsub.errors import BadRequest, IPubSubError, PersistenceNotConfigured
from tests.support.procs import NodeProcess

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]


async def test_send_batch_gives_one_result_per_item(persistence: str, stream: str) -> None:
    async with AsyncClient(persistence) as client:
        items = [BatchItem(stream, {"n": n}, uuid=f"{stream}-{n}") for n in range(5)]
        items.insert(2, BatchItem("", "no stream"))
        items.append(BatchItem(stream + ".log", {"n": 9}, persist=True, uuid=f"{stream}-log"))
        items.append((stream, "a pair"))  # type: ignore[arg-type]
        results = await client.send_batch(items)
        assert len(results) == len(items)
        assert isinstance(results[2], BadRequest) and results[2].field == "streamId"
        ok = [r for i, r in enumerate(results) if i != 2]
        assert all(isinstance(r, SendResult) for r in ok)
        assert [r.uuid for r in ok[:5]] == [f"{stream}-{n}" for n in range(5)]  # type: ignore[union-attr]
        assert results[6].token is not None  # type: ignore[union-attr]
        got = await client.receive(stream, 1, max_messages=100)
        assert [m.message for m in got] == [{"n": n} for n in range(5)] + ["a pair"]
        assert await client.receive(stream, 0, max_messages=10) == []
        logged = await client.read(stream + ".log", None, 1, max_messages=10)
        assert [m.uuid for m in logged] == [f"{stream}-log"] and logged[0].token == results[6].token  # type: ignore[union-attr]


async def test_send_batch_in_chunks_keeps_the_order(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        requests = client.stats.requests
        results = await client.send_batch([(stream, n) for n in range(95)], chunk=10)
        assert all(isinstance(r, SendResult) for r in results)
        assert client.stats.requests - requests <= 10 + 1  # ten chunks (and maybe a membership refresh)
        got = [m.message async for m in _take(client.subscribe(stream, 1, batch=40), 95)]
        assert got == list(range(95))


async def _take(iterator, n):  # type: ignore[no-untyped-def]
    count = 0
    async for item in iterator:
        yield item
        count += 1
        if count == n:
            return


async def test_replay_reads_in_batches_and_resumes_exactly(persistence: str, stream: str) -> None:
    async with AsyncClient(persistence) as client:
        sent = await client.send_batch([BatchItem(stream, n, persist=True) for n in range(250)])
        tokens = [r.token for r in sent]  # type: ignore[union-attr]
        requests = client.stats.requests
        replay = client.replay(stream, timeout=1, follow=False, batch=100)
        first = [m async for m in _take(replay, 120)]
        assert [m.message for m in first] == list(range(120))
        assert replay.token == tokens[119]
        assert client.stats.requests - requests <= 3
        rest = [m.message async for m in client.replay(stream, replay.token, timeout=1, follow=False, batch=100)]
        assert rest == list(range(120, 250))


async def test_an_item_the_node_cannot_take_fails_alone(tiny_node: NodeProcess, stream: str) -> None:
    """A node without storage and a 256-byte buffer budget."""
    async with AsyncClient(tiny_node.url) as client:
        results = await client.send_batch(
            [BatchItem(stream, 1), BatchItem(stream, 2, persist=True), BatchItem(stream, "x" * 300)]
        )
        assert isinstance(results[0], SendResult)
        assert isinstance(results[1], PersistenceNotConfigured)
        assert isinstance(results[2], IPubSubError) and results[2].code == "message_too_large"
        assert [m.message for m in await client.receive(stream, 1, max_messages=10)] == [1]


def test_the_blocking_client_batches_too(node: NodeProcess, stream: str) -> None:
    with Client(node.url) as client:
        results = client.send_batch([(stream, n) for n in range(7)])
        assert all(isinstance(r, SendResult) for r in results)
        got = client.receive(stream, 1, max_messages=5)
        assert [m.message for m in got] == [0, 1, 2, 3, 4]  # type: ignore[union-attr]
        single = client.receive(stream, 1)
        assert single is not None and single.message == 5  # type: ignore[union-attr]
        assert [m.message for m in client.receive(stream, 1, max_messages=5)] == [6]  # type: ignore[union-attr]
