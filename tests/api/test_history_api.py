"""Fan-out histories over HTTP (issue 13): ``historySize``/``historyTTLSeconds``
on send, ``receive?fromHistory=true[&position=P][&maxMessages=N]``, recovery
answers (lenient and strict), bad input, the byte budget, /metrics."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.support.http import expect, receive, send
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)


async def hsend(client: TestClient, stream: str, n: Any, size: int = 100, **fields: Any) -> None:
    expect(await send(client, "", {"streamId": stream, "message": n, "historySize": size, **fields}))


async def hread(client: TestClient, stream: str, position: str | None = None, timeout: int = 0, **params: Any) -> Any:
    if position is not None:
        params["position"] = position
    return expect(await receive(client, "", stream, timeout, fromHistory=True, **params))


async def follow(client: TestClient, stream: str, position: str | None, want: int, batch: int) -> list[Any]:
    """Read ``want`` messages by long poll, ``batch`` at a time, checking that
    each answer continues where the last one ended."""
    got: list[Any] = []
    while len(got) < want:
        body = await hread(client, stream, position, 10, maxMessages=batch)
        assert body.get("recovered") is not False, body
        assert 1 <= len(body["messages"]) <= batch
        got += [m["message"] for m in body["messages"]]
        assert body["position"] == body["messages"][-1]["position"]
        position = body["position"]
    return got


async def test_every_reader_gets_every_message_in_order(client: TestClient) -> None:
    await hsend(client, "room", 0, 1000)
    start = (await hread(client, "room"))["position"]
    readers = [asyncio.ensure_future(follow(client, "room", start, 200, [1, 10, 50][i % 3])) for i in range(30)]
    await wait_until(lambda: client.node.engine.history_stats.waiting_readers == 30, what="30 readers waiting")  # type: ignore[attr-defined]
    for i in range(1, 201):
        await hsend(client, "room", i, 1000)
    for got in await asyncio.gather(*readers):
        assert got == list(range(1, 201))


async def test_a_read_answers_messages_with_positions_and_the_next_position(client: TestClient) -> None:
    for i in range(3):
        await hsend(client, "s", {"i": i}, historyTTLSeconds=60, messageUuid=f"m{i}")
    body = await hread(client, "s", maxMessages=10)
    assert [m["messageUuid"] for m in body["messages"]] == ["m0", "m1", "m2"]
    assert [m["message"] for m in body["messages"]] == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert all(set(m) == {"messageUuid", "message", "timestamp", "position"} for m in body["messages"])
    assert len({m["position"] for m in body["messages"]}) == 3
    assert body["position"] == body["messages"][-1]["position"] and "recovered" not in body
    one = await hread(client, "s")  # without maxMessages: one message
    assert [m["messageUuid"] for m in one["messages"]] == ["m0"]


async def test_recovery_inside_the_window_has_no_gap_and_no_duplicate(client: TestClient) -> None:
    for i in range(10):
        await hsend(client, "s", i)
    first = await hread(client, "s", maxMessages=4)
    for i in range(10, 20):
        await hsend(client, "s", i)
    back = await hread(client, "s", first["position"], maxMessages=100)
    assert back["recovered"] is True
    assert [m["message"] for m in back["messages"]] == list(range(4, 20))


async def test_an_empty_long_poll_keeps_the_position(client: TestClient) -> None:
    await hsend(client, "s", 1)
    body = await hread(client, "s")
    again = await hread(client, "s", body["position"], 1)
    assert again == {"messages": [], "position": body["position"], "recovered": True}
    assert await hread(client, "nothing-yet", None, 0) == {"messages": [], "position": None}


async def test_out_of_the_window_is_explicit_lenient_and_strict(client: TestClient) -> None:
    await hsend(client, "s", 0, 3)
    start = (await hread(client, "s"))["position"]
    for i in range(1, 10):
        await hsend(client, "s", i, 3)
    lost = await hread(client, "s", start, 5, maxMessages=10)
    assert lost["recovered"] is False and lost["gap"] == "window" and lost["messages"] == []
    on = await hread(client, "s", lost["position"], maxMessages=10)  # go on, accepting the gap
    assert [m["message"] for m in on["messages"]] == [7, 8, 9]
    status, body = await receive(client, "", "s", 0, fromHistory=True, position=start, strictRecovery=True)
    assert status == 409 and body["code"] == "history_gap" and body["gap"] == "window"
    assert body["position"] == lost["position"]
    other_epoch = "000000000000-5"
    status, body = await receive(client, "", "s", 0, fromHistory=True, position=other_epoch, strictRecovery=True)
    assert status == 409 and body["gap"] == "epoch"


async def test_queue_receivers_and_history_readers_do_not_disturb_each_other(client: TestClient) -> None:
    for i in range(6):
        await hsend(client, "s", i)
    queue = [expect(await receive(client, "", "s"))["message"] for _ in range(3)]
    assert queue == [0, 1, 2]
    history = await hread(client, "s", maxMessages=10)
    assert [m["message"] for m in history["messages"]] == [0, 1, 2, 3, 4, 5]
    assert [expect(await receive(client, "", "s"))["message"] for _ in range(3)] == [3, 4, 5]
    expect(await receive(client, "", "s"), 424)  # the queue is empty; the history is not
    again = await hread(client, "s", maxMessages=10)
    assert len(again["messages"]) == 6


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"position": "garbage"}, "invalid_position"),
        ({"position": "abc-1x"}, "invalid_position"),
        ({"readFromDB": "true"}, "bad_request"),
        ({"strictRecovery": "maybe"}, "bad_request"),
        ({"maxMessages": "0"}, "bad_request"),
    ],
)
async def test_bad_history_reads_are_400(client: TestClient, params: dict[str, str], code: str) -> None:
    status, body = await receive(client, "", "s", 0, fromHistory=True, **params)
    assert status == 400 and body["code"] == code, body


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"historySize": -1}, "historySize"),
        ({"historySize": 100_001}, "historySize"),
        ({"historySize": "ten"}, "historySize"),
        ({"historySize": 5, "historyTTLSeconds": 86_401}, "historyTTLSeconds"),
        ({"historySize": 5, "historyTTLSeconds": -3}, "historyTTLSeconds"),
        ({"historySize": 5, "writeToDB": True}, "historySize"),
    ],
)
async def test_bad_history_sends_are_400(client: TestClient, fields: dict[str, Any], field: str) -> None:
    status, body = await send(client, "", {"streamId": "s", "message": 1, **fields})
    assert status == 400 and body.get("field") == field, body


async def test_a_stream_without_history_answers_409(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "plain", "message": 1}))
    status, body = await receive(client, "", "plain", 0, fromHistory=True)
    assert status == 409 and body["code"] == "history_not_kept"


async def test_histories_count_toward_the_node_budget(make_client: MakeClient) -> None:
    client = await make_client(
        {"limits": {"max_buffered_bytes": 200_000, "max_stream_bytes": 100_000, "max_message_bytes": 64_000}}
    )
    pad = "x" * 20_000
    engine = client.node.engine  # type: ignore[attr-defined]
    statuses = []
    for stream in ["h0"] * 5 + ["h1", "h0", "h1", "h2"]:  # h0 meets its stream bound, then the node budget
        status, _ = await send(
            client, "", {"streamId": stream, "message": {"pad": pad}, "historySize": 1000, "inMemoryStreamSize": 1}
        )
        statuses.append(status)
        assert engine.stats.buffered_bytes + engine.history_stats.bytes <= 200_000
    dropped = engine.history_stats.dropped
    assert dropped["bytes"] > 0 and dropped["budget"] > 0  # h0 shed its own oldest to take more
    assert statuses[-1] == 503  # h2 finds no room: refused, nothing dropped elsewhere
    statuses = [(await send(client, "", {"streamId": f"q{i}", "message": pad}))[0] for i in range(10)]
    assert 503 in statuses  # plain streams find the budget taken by the histories
    assert engine.stats.buffered_bytes + engine.history_stats.bytes <= 200_000


async def test_metrics_show_history_bytes_and_recoveries(client: TestClient) -> None:
    await hsend(client, "s", 1, 2)
    position = (await hread(client, "s"))["position"]
    await hread(client, "s", position)
    for i in range(3):
        await hsend(client, "s", i, 2)
    await hread(client, "s", position)
    text = await (await client.get("/metrics")).text()
    assert "ipubsub_history_bytes " in text and "ipubsub_history_bytes 0.0" not in text
    assert 'ipubsub_history_recoveries_total{result="complete"} 1.0' in text
    assert 'ipubsub_history_recoveries_total{result="incomplete"} 1.0' in text
    assert 'ipubsub_history_dropped_total{reason="size"} 2.0' in text
