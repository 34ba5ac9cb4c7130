"""The client's history calls against a node served in process over real
loopback HTTP: send with a history, read_history batches and recovery,
follow() from a saved position, gaps raised or accepted, the blocking twin."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.client import AsyncClient, Client, HistoryMessage, RetryPolicy
from ipubsub.errors import HistoryGap, HistoryNotKept, InvalidPosition
from tests.conftest import MakeClient

pytestmark = pytest.mark.timeout(30)


def url_of(server: TestClient) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def url(make_client: MakeClient) -> str:
    return url_of(await make_client())


@pytest.fixture
async def client(url: str) -> AsyncClient:
    async with AsyncClient(url, retry=RetryPolicy(max_total_seconds=2)) as client:
        yield client  # type: ignore[misc]


async def test_read_history_batches_and_recovers(client: AsyncClient) -> None:
    for i in range(5):
        await client.send("room", {"i": i}, history_size=10, history_ttl=60)
    first = await client.read_history("room", max_messages=3, timeout=0)
    assert [m.message["i"] for m in first.messages] == [0, 1, 2] and first.recovered is None
    assert all(isinstance(m, HistoryMessage) and m.position for m in first.messages)
    rest = await client.read_history("room", first.position, timeout=0)
    assert [m.message["i"] for m in rest.messages] == [3, 4] and rest.recovered is True
    empty = await client.read_history("room", rest.position, timeout=0)
    assert empty.messages == [] and empty.position == rest.position


async def test_many_followers_each_get_every_message(client: AsyncClient) -> None:
    await client.send("feed", 0, history_size=1000)
    start = (await client.read_history("feed", timeout=0)).position

    async def take(n: int) -> list[int]:
        follower = client.follow("feed", start, max_messages=50, timeout=5)
        return [(await follower.__anext__()).message for _ in range(n)]

    readers = [asyncio.ensure_future(take(100)) for _ in range(10)]
    for i in range(1, 101):
        await client.send("feed", i, history_size=1000)
    assert all(got == list(range(1, 101)) for got in await asyncio.gather(*readers))


async def test_follow_raises_or_accepts_a_gap(client: AsyncClient) -> None:
    await client.send("small", 0, history_size=2)
    position = (await client.read_history("small", timeout=0)).position
    for i in range(1, 6):
        await client.send("small", i, history_size=2)
    with pytest.raises(HistoryGap) as caught:
        await client.follow("small", position, timeout=1).__anext__()
    assert caught.value.fields["gap"] == "window"
    with pytest.raises(HistoryGap):
        await client.read_history("small", position, timeout=0, strict=True)
    follower = client.follow("small", position, timeout=1, accept_gaps=True)
    assert [(await follower.__anext__()).message for _ in range(2)] == [4, 5]
    assert follower.gaps == 1 and follower.position is not None


async def test_history_errors_are_typed(client: AsyncClient) -> None:
    await client.send("plain", 1)
    with pytest.raises(HistoryNotKept):
        await client.read_history("plain", timeout=0)
    with pytest.raises(InvalidPosition):
        await client.read_history("plain", "not-a-position!", timeout=0)


async def test_the_blocking_client_follows_too(url: str) -> None:
    def run() -> tuple[list[int], str | None]:
        with Client(url) as client:
            for i in range(3):
                client.send("s", i, history_size=5)
            follower = client.follow("s", max_messages=2, timeout=1)
            got = [next(follower).message for _ in range(3)]
            batch = client.read_history("s", follower.position, timeout=0)
            assert batch.messages == [] and batch.recovered is True
            return got, follower.position

    got, position = await asyncio.get_running_loop().run_in_executor(None, run)
    assert got == [0, 1, 2] and position


async def test_a_follower_whose_history_is_gone_waits_for_the_next_one(client: AsyncClient) -> None:
    """A position whose history no longer exists (the owner restarted and
    the stream has no history yet) is told once; the follower then waits for
    the new history's first message instead of asking again at once."""
    await client.send("elsewhere", 0, history_size=10)
    lost = (await client.read_history("elsewhere", timeout=0)).position
    follower = client.follow("ghost", lost, accept_gaps=True, timeout=5)
    first = asyncio.ensure_future(follower.__anext__())
    await asyncio.sleep(0.5)
    await client.send("ghost", "new", history_size=10)
    assert (await asyncio.wait_for(first, 10)).message == "new"
    assert follower.gaps == 1
