"""Batches over HTTP on one in-process node: sendBatch (per-item results and
errors, memory and durable items, limits) and receive with maxMessages
(memory and durable, the single shape kept without it, disconnects)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.support.http import expect, open_raw, receive, send, send_batch
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

RECEIVE = "/api/v1/streams/receive"


def sqlite(tmp_path: Path) -> dict[str, object]:
    return {"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "db.sqlite")}}}


async def test_each_item_gets_its_own_result_in_request_order(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_message_bytes": 256}})
    items = [
        {"streamId": "a", "message": {"n": 1}, "messageUuid": "u1"},
        {"streamId": "", "message": 2},
        {"streamId": "a", "message": {"n": 3}},
        {"streamId": "b", "message": 4, "blockingSendTimeoutSeconds": 3},
        {"streamId": "b", "message": "x" * 300},
        {"streamId": "c", "message": 6, "writeToDB": True},
        {"streamId": "a", "message": {"n": 7}, "inMemoryStreamSize": 2},
        {"streamId": "a", "message": {"n": 8}, "inMemoryStreamSize": 2},
    ]
    results = expect(await send_batch(client, "", items))["results"]
    assert len(results) == len(items)
    assert results[0] == {"messageUuid": "u1"}
    assert results[1]["status"] == 400 and results[1]["code"] == "bad_request" and results[1]["field"] == "streamId"
    assert set(results[2]) == {"messageUuid"}
    assert results[3]["status"] == 400 and results[3]["code"] == "not_supported_in_batch"
    assert results[4]["status"] == 413 and results[4]["code"] == "message_too_large"
    assert results[5]["status"] == 400 and results[5]["code"] == "persistence_not_configured"
    assert set(results[6]) == {"messageUuid"}  # a stream made with the default size (100) keeps it
    got = expect(await receive(client, "", "a", 0, maxMessages=10))["messages"]
    assert [m["message"] for m in got] == [{"n": 1}, {"n": 3}, {"n": 7}, {"n": 8}]
    assert got[0]["messageUuid"] == "u1" and got[1]["messageUuid"] == results[2]["messageUuid"]
    expect(await receive(client, "", "b", 0), 424)


async def test_a_full_stream_drops_its_oldest_as_single_sends_do(client: TestClient) -> None:
    items = [{"streamId": "small", "message": i, "inMemoryStreamSize": 2} for i in range(4)]
    results = expect(await send_batch(client, "", items))["results"]
    assert all(set(r) == {"messageUuid"} for r in results)
    got = expect(await receive(client, "", "small", 0, maxMessages=5))["messages"]
    assert [m["message"] for m in got] == [2, 3]
    assert client.node.engine.stats.dropped_total == 2  # type: ignore[attr-defined]


async def test_memory_and_durable_items_of_one_batch(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(sqlite(tmp_path))
    items = []
    for i in range(30):
        stream = ("log-a", "log-b", "mem")[i % 3]
        items.append({"streamId": stream, "message": i, "messageUuid": f"m{i}", "writeToDB": stream != "mem"})
    results = expect(await send_batch(client, "", items))["results"]
    assert [r["messageUuid"] for r in results] == [f"m{i}" for i in range(30)]
    assert all(("dbResumeToken" in r) == (i % 3 != 2) for i, r in enumerate(results))
    assert client.node.durable.batches_total == 1  # type: ignore[attr-defined]  # one group commit
    mem = expect(await receive(client, "", "mem", 0, maxMessages=100))["messages"]
    assert [m["message"] for m in mem] == list(range(2, 30, 3))
    for offset, stream in ((0, "log-a"), (1, "log-b")):
        page = expect(await receive(client, "", stream, 0, readFromDB=True, maxMessages=4))
        assert [m["message"] for m in page["messages"]] == [offset + 3 * k for k in range(4)]
        assert page["dbResumeToken"] == page["messages"][-1]["dbResumeToken"]
        rest = expect(
            await receive(client, "", stream, 0, readFromDB=True, dbResumeToken=page["dbResumeToken"], maxMessages=100)
        )
        assert [m["message"] for m in rest["messages"]] == [offset + 3 * k for k in range(4, 10)]
        # the token of an item's send answer resumes right after it
        token = results[offset + 3 * 8]["dbResumeToken"]
        tail = expect(await receive(client, "", stream, 0, readFromDB=True, dbResumeToken=token, maxMessages=10))
        assert [m["message"] for m in tail["messages"]] == [offset + 27]


async def test_a_retried_batch_is_stored_once_with_the_same_tokens(make_client: MakeClient, tmp_path: Path) -> None:
    client = await make_client(sqlite(tmp_path))
    items = [{"streamId": "idem", "message": i, "messageUuid": f"k{i}", "writeToDB": True} for i in range(20)]
    first = expect(await send_batch(client, "", items))["results"]
    again = expect(await send_batch(client, "", items))["results"]
    assert again == first
    page = expect(await receive(client, "", "idem", 0, readFromDB=True, maxMessages=100))
    assert [m["messageUuid"] for m in page["messages"]] == [f"k{i}" for i in range(20)]


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"messages": []}', 400, "at least one item"),
        (json.dumps({"messages": [{"streamId": "s", "message": i} for i in range(6)]}), 400, "max_batch_messages (5)"),
        (b'{"messages": {"streamId": "s"}}', 400, "messages"),
        (b'{"items": []}', 400, "messages"),
        (b"[1, 2]", 400, "JSON object"),
        (b"not json", 400, "not valid JSON"),
        (json.dumps({"messages": [{"streamId": "s", "message": "x" * 900}] * 5}), 413, "4096"),
    ],
)
async def test_a_malformed_batch_is_refused_as_a_whole(
    make_client: MakeClient, body: bytes | str, status: int, words: str
) -> None:
    client = await make_client({"limits": {"max_batch_messages": 5, "max_message_bytes": 1024, "max_batch_bytes": 4096}})
    reply = expect(await send_batch(client, "", body), status)
    assert words in reply["error"]
    assert client.node.engine.stream_count == 0  # type: ignore[attr-defined]
    expect(await send(client, "", {"streamId": "s", "message": 1}))  # the node stays healthy


async def test_a_batch_may_be_larger_than_one_message(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_message_bytes": 1024, "max_batch_bytes": 65536}})
    items = [{"streamId": "big", "message": "y" * 900} for _ in range(40)]  # about 38 KB
    results = expect(await send_batch(client, "", items))["results"]
    assert all("messageUuid" in r for r in results)
    expect(await send(client, "", {"streamId": "big", "message": "y" * 2000}), 413)


async def test_receive_without_max_messages_keeps_the_single_shape(client: TestClient) -> None:
    expect(await send_batch(client, "", [{"streamId": "one", "message": i} for i in range(3)]))
    single = expect(await receive(client, "", "one", 0))
    assert set(single) == {"messageUuid", "message", "timestamp"} and single["message"] == 0
    batch = expect(await receive(client, "", "one", 0, maxMessages=1))
    assert list(batch) == ["messages"] and [m["message"] for m in batch["messages"]] == [1]
    expect(await receive(client, "", "one", 0, maxMessages=0), 400)
    expect(await receive(client, "", "one", 0, maxMessages=1001), 400)


async def test_a_waiting_batch_poll_answers_with_what_arrived_together(client: TestClient) -> None:
    poll = asyncio.ensure_future(receive(client, "", "w", 10, maxMessages=50))
    await wait_until(lambda: client.node.engine.stats.waiting_receivers == 1, what="a waiting poll")  # type: ignore[attr-defined]
    expect(await send_batch(client, "", [{"streamId": "w", "message": i} for i in range(20)]))
    got = expect(await poll)["messages"]
    assert [m["message"] for m in got] == list(range(20))


async def test_batch_pollers_that_disconnect_swallow_nothing(client: TestClient) -> None:
    """Batch polls whose clients go away while a batch of messages arrives:
    every message is either in an answer the node wrote (an answer written is
    delivered; one that could not be written gives its messages back, see
    docs/design.md) or still in the stream, exactly once, and the stream
    keeps the order it was sent in."""
    node = client.node  # type: ignore[attr-defined]
    address = f"{client.server.host}:{client.server.port}"
    stats = node.engine.stats
    answered: dict[str, dict[int, list[int]]] = {}
    real_receive = node.receive
    real_give_back = node.give_back

    async def recording_receive(cmd, **kwargs):  # type: ignore[no-untyped-def]
        result = await real_receive(cmd, **kwargs)  # the handler answers with this unless it was cancelled
        answered.setdefault(cmd.stream_id, {})[id(result)] = [int(d.message.payload) for d in result]
        return result

    def recording_give_back(cmd, deliveries):  # type: ignore[no-untyped-def]
        del answered[cmd.stream_id][id(deliveries)]  # the answer was not written
        real_give_back(cmd, deliveries)

    node.receive = recording_receive
    node.give_back = recording_give_back
    requeued = 0
    for round_ in range(24):
        stream = f"race-{round_}"
        writers = []
        for _ in range(5):
            _, writer = await open_raw(address, "GET", f"{RECEIVE}?streamId={stream}&timeoutSeconds=30&maxMessages=7")
            writers.append(writer)
        await wait_until(lambda: stats.waiting_receivers == 5, what="5 waiting batch polls", show=lambda: stats.waiting_receivers)
        sent = list(range(20))
        # the messages and the disconnects arrive within the same few loop turns
        batch = asyncio.ensure_future(send_batch(client, "", [{"streamId": stream, "message": v} for v in sent]))
        for _ in range(round_ % 6):
            await asyncio.sleep(0)
        for writer in writers:
            writer.close()
        expect(await batch)
        for writer in writers:
            await writer.wait_closed()
        await wait_until(lambda: stats.waiting_receivers == 0, what="polls gone")
        node.receive = real_receive
        left = [m["message"] for m in expect(await receive(client, "", stream, 0, maxMessages=100))["messages"]] \
            if node.engine.buffered(stream) else []
        node.receive = recording_receive
        assert left == sorted(left), "the stream's order was broken"
        answers = list(answered.get(stream, {}).values())
        for answer in answers:
            assert answer == sorted(answer)
        assert sorted(left + [v for answer in answers for v in answer]) == sent, "swallowed or delivered twice"
        requeued = stats.requeued_total
    node.receive = real_receive
    assert requeued > 0, "no poll was cancelled holding messages: the race was never run"
