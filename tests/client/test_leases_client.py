"""The client's at-least-once calls against a node served in process over
real loopback HTTP: leased receives with ack()/nack(), consumer groups,
and consume() acknowledging after the loop body and never when it raises."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.client import AsyncClient, Client, LeasedMessage, RetryPolicy
from tests.conftest import MakeClient

pytestmark = pytest.mark.timeout(30)


def url_of(server: TestClient) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def durable_url(make_client: MakeClient, tmp_path: Path) -> str:
    server = await make_client({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "db.sqlite")}}})
    assert await server.node.durable.wait_up(10)  # type: ignore[attr-defined]
    return url_of(server)


@pytest.fixture
async def client(durable_url: str) -> AsyncClient:
    async with AsyncClient(durable_url, retry=RetryPolicy(max_total_seconds=2)) as client:
        yield client  # type: ignore[misc]


async def test_a_leased_receive_acks_and_nacks(client: AsyncClient) -> None:
    await client.send("jobs", {"n": 1}, uuid="m1")
    msg = await client.receive("jobs", timeout=1, lease=30)
    assert isinstance(msg, LeasedMessage)
    assert (msg.uuid, msg.message, msg.delivery_count, msg.stream) == ("m1", {"n": 1}, 1, "jobs")
    assert await client.receive("jobs", timeout=0) is None  # invisible while leased
    assert await msg.nack() is True
    again = await client.receive("jobs", timeout=1, lease=30)
    assert isinstance(again, LeasedMessage) and again.delivery_count == 2
    assert await msg.ack() is False  # the old receipt
    assert await again.ack() is True
    assert client.stats.leases_lost == 1
    assert await client.receive("jobs", timeout=0) is None


async def test_receive_leased_takes_a_batch(client: AsyncClient) -> None:
    for n in range(3):
        await client.send("jobs", n)
    got = await client.receive_leased("jobs", lease=30, max_messages=10, timeout=1)
    assert [m.message for m in got] == [0, 1, 2]
    assert all([await m.ack() for m in got])


async def test_groups_share_a_durable_stream(client: AsyncClient) -> None:
    for n in range(4):
        await client.send("log", n, persist=True)
    a = await client.claim("log", group="g", consumer="a", max_messages=3, timeout=1)
    b = await client.claim("log", group="g", consumer="b", max_messages=3, timeout=1)
    assert [m.message for m in a] == [0, 1, 2] and [m.message for m in b] == [3]
    assert all(m.group == "g" for m in a + b)
    (info,) = await client.groups("log")
    assert (info.group, info.lag, info.pending) == ("g", 0, 4) and info.oldest_pending_age is not None
    for m in a + b:
        assert await m.ack()
    assert (await client.groups("log"))[0].pending == 0
    assert await client.delete_group("log", "g") is True
    assert await client.delete_group("log", "g") is False


async def test_consume_acks_after_the_body_and_not_when_it_raises(client: AsyncClient) -> None:
    for n in range(3):
        await client.send("log", n, persist=True, uuid=f"m{n}")
    seen: list[tuple[object, int]] = []
    consumer = client.consume("log", group="g", consumer="w", lease=0.5, timeout=1)
    with pytest.raises(RuntimeError):
        async for msg in consumer:
            seen.append((msg.message, msg.delivery_count))
            if msg.message == 1:
                raise RuntimeError("the body failed")
    assert consumer.acked == 1  # message 0: its body finished
    # message 2 next, then message 1 again once its lease ended
    async with client.consume("log", group="g", consumer="w", timeout=2) as again:
        async for msg in again:
            seen.append((msg.message, msg.delivery_count))
            if msg.message == 1:
                break  # the body finished: acknowledged on leaving the block
    assert seen == [(0, 1), (1, 1), (2, 1), (1, 2)]
    assert again.acked == 2
    (info,) = await client.groups("log")
    assert (info.pending, info.lag) == (0, 0)


async def test_consume_as_a_context_gives_back_at_once_when_the_body_raises(client: AsyncClient) -> None:
    for n in range(2):
        await client.send("jobs", n)
    with pytest.raises(KeyError):
        async with client.consume("jobs", lease=60, max_messages=2, timeout=1) as consumer:
            async for msg in consumer:
                raise KeyError(msg.message)
    # both messages are back at once (one raised, one not yet yielded), not after 60 s
    got = await client.receive_leased("jobs", lease=30, max_messages=5, timeout=1)
    assert [(m.message, m.delivery_count) for m in got] == [(0, 2), (1, 2)]


async def test_consume_in_memory_needs_a_lease(client: AsyncClient) -> None:
    with pytest.raises(ValueError):
        client.consume("jobs")


async def test_the_blocking_client(durable_url: str) -> None:
    def work() -> list[object]:
        with Client(durable_url) as client:
            client.send("jobs", "a")
            msg = client.receive("jobs", timeout=1, lease=30)
            assert isinstance(msg, LeasedMessage)
            assert msg.nack() is True
            msg = client.receive("jobs", timeout=1, lease=30)
            assert msg is not None and msg.ack() is True
            client.send("log", "b", persist=True)
            out = []
            with client.consume("log", group="g", consumer="c", timeout=1) as consumer:
                for msg in consumer:
                    out.append(msg.message)
                    break
            assert consumer.acked == 1
            assert client.groups("log")[0].pending == 0
            return out

    assert await asyncio.to_thread(work) == ["b"]


async def test_a_message_the_body_settles_itself_is_not_acked_again(client: AsyncClient) -> None:
    for n in range(2):
        await client.send("log", n, persist=True)
    seen = []
    async with client.consume("log", group="g", consumer="w", timeout=1) as consumer:
        async for msg in consumer:
            seen.append((msg.message, msg.delivery_count))
            if msg.message == 0 and msg.delivery_count == 1:
                assert await msg.nack() is True  # try again later
            if len(seen) == 3:
                break
    assert seen == [(0, 1), (0, 2), (1, 1)] or seen == [(0, 1), (1, 1), (0, 2)]
    assert (consumer.acked, consumer.lost) == (2, 0)
    assert client.stats.leases_lost == 0


async def test_ack_many_acknowledges_a_batch_and_names_what_was_not_held(client: AsyncClient) -> None:
    for n in range(3):
        await client.send("jobs", n)
    got = await client.receive_leased("jobs", lease=30, max_messages=3, timeout=1)
    assert await client.ack_many("jobs", [m.receipt for m in got] + ["gone"]) == ["gone"]
    assert await client.ack_many("jobs", []) == []
