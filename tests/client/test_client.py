"""The Python client against one real ``ipubsub serve`` node."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest

from ipubsub.client import AsyncClient, Client, RetryPolicy, Unreachable
from ipubsub.errors import BadRequest, BufferFull, InvalidToken, MessageTooLarge, SendTimeout
from tests.support.procs import NodeProcess
from tests.support.wait import wait_until

pytestmark = [pytest.mark.timeout(60), pytest.mark.slow]

VALUES = [
    {"int": 1, "float": 2.5, "str": "é✓", "bool": True, "null": None, "list": [1, "a", [None]], "obj": {"k": {}}},
    42,
    -3.25,
    "plain text",
    True,
    None,
    [1, 2, 3],
    10**18,
]


async def test_send_receive_round_trip_keeps_json_types(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        sent = [await client.send(stream, value) for value in VALUES]
        got = [await client.receive(stream, timeout=1) for _ in VALUES]
    assert [m.message for m in got if m is not None] == VALUES
    for result, message in zip(sent, got):
        assert message is not None
        assert message.uuid == result.uuid and result.token is None and message.token is None
        assert isinstance(message.timestamp, datetime) and message.timestamp.tzinfo == UTC
        assert abs((datetime.now(UTC) - message.timestamp).total_seconds()) < 30
    assert [type(m.message) for m in got if m is not None] == [type(v) for v in VALUES]


async def test_send_keeps_the_callers_uuid(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        assert (await client.send(stream, 1, uuid="my-uuid")).uuid == "my-uuid"
        message = await client.receive(stream, 1)
    assert message is not None and message.uuid == "my-uuid"


async def test_receive_returns_none_when_nothing_arrives_in_time(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        started = time.monotonic()
        assert await client.receive(stream, timeout=1) is None
        assert 0.9 < time.monotonic() - started < 5
        assert client.stats.retries == 0


async def test_server_rejections_are_typed_errors_with_the_server_text(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        with pytest.raises(BadRequest) as bad:
            await client.send("x" * 300, 1)
        assert bad.value.message == "streamId must be 1 to 256 UTF-8 bytes, got 300"
        assert bad.value.field == "streamId" and bad.value.code == "bad_request"

        with pytest.raises(BadRequest, match="limits.max_stream_size"):
            await client.send(stream, 1, size=10**7)

        with pytest.raises(MessageTooLarge) as big:
            await client.send(stream, "x" * (1024 * 1024 + 10))
        assert "exceeds limits.max_message_bytes (1048576 bytes)" in big.value.message
        assert big.value.limit == 1048576

        started = time.monotonic()
        with pytest.raises(SendTimeout) as slow:
            await client.send(stream, 1, size=0, blocking_timeout=1)
        assert 0.9 < time.monotonic() - started < 5
        assert slow.value.message == f"no receiver took the message on stream {stream!r} within 1 s"
        # None of these is retried.
        assert client.stats.retries == 0 and client.stats.requests == 4
    with pytest.raises(TypeError):
        await AsyncClient(node.url).send(stream, object())


async def test_503_is_retried_with_the_same_uuid_until_it_succeeds(tiny_node: NodeProcess, stream: str) -> None:
    filler = "x" * 100  # one such message fills the node's 256-byte budget
    async with AsyncClient(tiny_node.url, retry=RetryPolicy(max_total_seconds=10)) as client:
        await client.send(stream + "-a", filler)
        kept = "kept-" + uuid.uuid4().hex  # as long as a generated uuid: the budget holds one message
        blocked = asyncio.create_task(client.send(stream + "-b", filler, uuid=kept))
        # refused (buffer_full) at least twice, and still retrying
        await wait_until(lambda: client.stats.unavailable >= 2 or blocked.done(), what="two refusals")
        assert not blocked.done(), blocked
        assert (await client.receive(stream + "-a", 1)) is not None  # frees the budget
        result = await asyncio.wait_for(blocked, 10)
        assert result.uuid == kept
        message = await client.receive(stream + "-b", 1)
        assert message is not None and message.uuid == kept


async def test_503_is_raised_with_the_server_text_when_retries_run_out(tiny_node: NodeProcess, stream: str) -> None:
    policy = RetryPolicy(max_attempts=3, max_total_seconds=5)
    async with AsyncClient(tiny_node.url, retry=policy) as client:
        await client.send(stream + "-a", "x" * 100)
        try:
            with pytest.raises(BufferFull) as full:
                await client.send(stream + "-b", "x" * 100)
            assert "in-memory buffers are full" in full.value.message
            assert full.value.retry_after == 1
            assert client.stats.unavailable == 3 and client.stats.retries == 2
        finally:
            await client.receive(stream + "-a", 1)


async def test_unreachable_after_bounded_retries(refused_url: str) -> None:
    policy = RetryPolicy(max_attempts=4, max_total_seconds=2, initial_backoff_seconds=0.05)
    async with AsyncClient(refused_url, retry=policy) as client:
        started = time.monotonic()
        with pytest.raises(Unreachable) as down:
            await client.receive("s", 5)
        assert time.monotonic() - started < 3
        assert client.stats.connection_errors == 4
        assert "could be reached after 4 attempts" in down.value.message
        assert list(down.value.errors) == client.router.seeds


async def test_subscribe_polls_again_after_empty_polls(node: NodeProcess, stream: str) -> None:
    async with AsyncClient(node.url) as client:
        subscription = client.subscribe(stream, timeout=1)
        received: list[object] = []

        async def consume() -> None:
            async for message in subscription:
                received.append(message.message)
                if len(received) == 2:
                    return

        consumer = asyncio.create_task(consume())
        # The third poll went out: two came back empty (424) and were repeated.
        await wait_until(lambda: client.stats.requests >= 3 or consumer.done(), 30, "two empty polls repeated")
        assert not consumer.done() and received == []
        await client.send(stream, "first")
        await client.send(stream, "second")
        await asyncio.wait_for(consumer, 5)
        assert received == ["first", "second"]
        with pytest.raises(ValueError):
            client.subscribe(stream, timeout=0)


async def test_replay_follows_live_and_resumes_from_a_saved_token(persistence: str, stream: str) -> None:
    async with AsyncClient(persistence) as client:
        tokens = [(await client.send(stream, {"n": n}, persist=True)).token for n in range(5)]
        assert all(tokens)
        # The in-memory queue is not involved.
        assert await client.receive(stream, 0.1) is None

        replay = client.replay(stream, timeout=1)
        assert replay.token is None
        seen = [(await replay.__anext__()).message for _ in range(3)]
        assert seen == [{"n": 0}, {"n": 1}, {"n": 2}]
        saved = replay.token
        assert saved == tokens[2]  # the token after message 2 is the one its send returned

        # A new replay from the saved token continues exactly there.
        resumed = client.replay(stream, saved, timeout=1)
        assert [(await resumed.__anext__()).message for _ in range(2)] == [{"n": 3}, {"n": 4}]

        # ...and follows live: it waits across empty polls for the next one.
        polls = client.stats.requests
        waiting = asyncio.create_task(resumed.__anext__())
        # One poll came back empty and the replay polled again.
        await wait_until(lambda: client.stats.requests >= polls + 2 or waiting.done(), 30, "an empty poll repeated")
        assert not waiting.done()
        last = await client.send(stream, {"n": 5}, persist=True)
        message = await asyncio.wait_for(waiting, 5)
        assert message.message == {"n": 5} and resumed.token == last.token == message.token

        # Reading removed nothing; without follow the replay ends.
        everything = [m.message async for m in client.replay(stream, timeout=1, follow=False)]
        assert everything == [{"n": n} for n in range(6)]
        assert (await client.read(stream, tokens[0], 1)).message == {"n": 1}  # type: ignore[union-attr]
        with pytest.raises(InvalidToken):
            await client.read(stream, "not-a-token", 1)


async def test_persisted_send_is_deduplicated_by_uuid_on_retry(persistence: str, stream: str) -> None:
    async with AsyncClient(persistence) as client:
        first = await client.send(stream, "once", persist=True, uuid="same", ttl=60)
        again = await client.send(stream, "once", persist=True, uuid="same", ttl=60)
        assert first == again
        assert [m.uuid async for m in client.replay(stream, timeout=1, follow=False)] == ["same"]


async def test_sync_client_works_where_an_event_loop_already_runs(persistence: str, stream: str) -> None:
    # This coroutine runs on the test's event loop, as a notebook cell runs on
    # Jupyter's: the blocking client must not need that loop.
    with Client(persistence) as client:
        sent = client.send(stream, {"sync": True})
        message = client.receive(stream, 1)
        assert message is not None and message.uuid == sent.uuid and message.message == {"sync": True}
        assert client.receive(stream, 1) is None
        client.send(stream, 1, persist=True)
        client.send(stream, 2, persist=True)
        replay = client.replay(stream, timeout=1)
        assert next(replay).message == 1
        assert [m.message for m in client.replay(stream, replay.token, timeout=1, follow=False)] == [2]
        view = client.cluster()
        assert view.ring_members == ("node-1",) and client.owner_url(stream) == persistence
    with pytest.raises(RuntimeError):
        client.send(stream, 1)


def test_sync_client_in_plain_code_and_its_iterators(node: NodeProcess, stream: str) -> None:
    client = Client([node.url])
    try:
        for n in range(3):
            client.send(stream, n)
        subscription = client.subscribe(stream, timeout=1)
        assert [next(subscription).message for _ in range(3)] == [0, 1, 2]
        with pytest.raises(BadRequest):
            client.send(stream, 1, size=10**7)
    finally:
        client.close()
        client.close()
