"""The public HTTP API of one node: every status and every bad input."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import MakeClient
from tests.support.http import expect, open_raw, receive, send
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(30)

SEND = "/api/v1/streams/send"
RECEIVE = "/api/v1/streams/receive"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def waiters(client: TestClient, name: str, count: int) -> None:
    """Wait (bounded) until the node's engine counts ``count`` of ``name``
    (``waiting_receivers`` or ``blocked_senders``)."""
    stats = client.node.engine.stats  # type: ignore[attr-defined]
    await wait_until(lambda: getattr(stats, name) == count, what=f"{name} == {count}", show=lambda: getattr(stats, name))


async def test_root_names_the_service(client: TestClient) -> None:
    resp = await client.get("/")
    body = await resp.json()
    assert resp.status == 200
    assert body["service"] == "iPubSub"
    assert body["version"]


async def test_health_reports_counters(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "h", "message": 1}))
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok"
    assert body["streams"] == 1
    assert body["bufferedMessages"] == 1
    for key in ("waitingReceivers", "blockedSenders", "droppedMessages"):
        assert body[key] == 0


async def test_send_then_receive_round_trips_exactly(client: TestClient) -> None:
    payloads = [42, -7, 1.5, 1e300, 12345678901234567890123, "text", "üñî ✓ 😀", None, True, [], {},
                {"nested": {"list": [1, "2", {"x": None}]}}]
    for i, payload in enumerate(payloads):
        sent = expect(await send(client, "", {"streamId": "rt", "message": payload, "messageUuid": f"id-{i}"}))
        assert sent == {"messageUuid": f"id-{i}"}
    for i, payload in enumerate(payloads):
        got = expect(await receive(client, "", "rt"))
        assert got["messageUuid"] == f"id-{i}"
        assert got["message"] == payload
        assert type(got["message"]) is type(payload)
        assert TIMESTAMP.match(got["timestamp"])


async def test_exact_json_text_of_the_message_is_kept(client: TestClient) -> None:
    expect(await send(client, "", b'{"streamId": "raw", "message": {"a": 42, "b": 1.0, "c": 100000000000000000001}}'))
    resp = await client.get(RECEIVE, params={"streamId": "raw", "timeoutSeconds": "0"})
    text = await resp.text()
    assert '"message":{"a": 42, "b": 1.0, "c": 100000000000000000001}' in text


async def test_server_generates_uuid4_when_absent(client: TestClient) -> None:
    sent = expect(await send(client, "", {"streamId": "g", "message": "x"}))
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", sent["messageUuid"])


async def test_any_string_is_a_valid_message_uuid(client: TestClient) -> None:
    sent = expect(await send(client, "", {"streamId": "g", "message": "x", "messageUuid": "not a uuid ✓"}))
    assert sent["messageUuid"] == "not a uuid ✓"


async def test_unknown_fields_and_parameters_are_ignored(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "u", "message": 1, "somethingElse": [1, 2]}))
    got = expect(await receive(client, "", "u", 0, other="x"))
    assert got["message"] == 1


async def test_receive_times_out_with_424(client: TestClient) -> None:
    body = expect(await receive(client, "", "empty", 1), 424)
    assert "no message" in body["error"]
    assert body["code"] == "receive_timeout"


async def test_receive_without_timeout_uses_the_default(make_client: MakeClient) -> None:
    client = await make_client({"match": {"receive_default_timeout_seconds": 1}})
    loop = asyncio.get_running_loop()
    start = loop.time()
    resp = await client.get(RECEIVE, params={"streamId": "d"})
    assert resp.status == 424
    assert 0.8 <= loop.time() - start < 5


async def test_long_poll_is_woken_by_a_send(client: TestClient) -> None:
    poll = asyncio.create_task(receive(client, "", "wake", 10))
    await waiters(client, "waiting_receivers", 1)  # the poll waits: the send must wake it
    expect(await send(client, "", {"streamId": "wake", "message": "hi"}))
    got = expect(await asyncio.wait_for(poll, 5))
    assert got["message"] == "hi"
    assert client.node.engine.stats.buffered_messages == 0  # type: ignore[attr-defined]  # handed over, never queued


async def test_circular_buffer_drops_oldest(client: TestClient) -> None:
    for i in range(5):
        expect(await send(client, "", {"streamId": "c", "message": i, "inMemoryStreamSize": 3}))
    assert [expect(await receive(client, "", "c"))["message"] for _ in range(3)] == [2, 3, 4]
    health = await (await client.get("/health")).json()
    assert health["droppedMessages"] == 2


async def test_blocking_send_times_out_with_424(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "b", "message": 1, "inMemoryStreamSize": 1}))
    body = expect(await send(client, "", {"streamId": "b", "message": 2, "blockingSendTimeoutSeconds": 1}), 424)
    assert body["code"] == "send_timeout"
    assert expect(await receive(client, "", "b"))["message"] == 1
    expect(await receive(client, "", "b", 0), 424)


async def test_blocking_send_is_admitted_when_room_frees(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "b2", "message": 1, "inMemoryStreamSize": 1}))
    blocked = asyncio.create_task(send(client, "", {"streamId": "b2", "message": 2, "blockingSendTimeoutSeconds": 10}))
    await waiters(client, "blocked_senders", 1)
    assert not blocked.done()
    assert expect(await receive(client, "", "b2"))["message"] == 1
    expect(await asyncio.wait_for(blocked, 5))
    assert expect(await receive(client, "", "b2"))["message"] == 2


async def test_sync_match_answers_once_a_receiver_took_it(client: TestClient) -> None:
    sender = asyncio.create_task(
        send(client, "", {"streamId": "sync", "message": "m", "inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 10})
    )
    await waiters(client, "blocked_senders", 1)
    assert not sender.done()
    got = expect(await receive(client, "", "sync", 5))
    assert got["message"] == "m"
    assert expect(await asyncio.wait_for(sender, 5))["messageUuid"] == got["messageUuid"]


async def test_sync_match_times_out_with_424(client: TestClient) -> None:
    body = expect(await send(
        client, "", {"streamId": "sync2", "message": "m", "inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 1}
    ), 424)
    assert "no receiver" in body["error"]


async def test_disconnected_poller_never_takes_a_message(client: TestClient) -> None:
    _, writer = await open_raw(f"{client.server.host}:{client.server.port}", "GET", f"{RECEIVE}?streamId=dc&timeoutSeconds=30")
    await waiters(client, "waiting_receivers", 1)
    writer.close()
    await writer.wait_closed()
    await waiters(client, "waiting_receivers", 0)
    expect(await send(client, "", {"streamId": "dc", "message": "kept"}))
    assert expect(await receive(client, "", "dc"))["message"] == "kept"


async def test_a_head_receive_takes_nothing(client: TestClient) -> None:
    """A HEAD answer has no body: the message it took goes back (issue 9 item 1)."""
    expect(await send(client, "", {"streamId": "hd", "message": 1, "messageUuid": "h1"}))
    resp = await client.head(RECEIVE, params={"streamId": "hd", "timeoutSeconds": "0"})
    assert resp.status == 200
    assert expect(await receive(client, "", "hd"))["messageUuid"] == "h1"


async def test_a_receive_answer_written_by_the_handler_keeps_the_request_id(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "rid", "message": 1}))
    resp = await client.get(RECEIVE, params={"streamId": "rid", "timeoutSeconds": "0"}, headers={"X-Request-Id": "r-42"})
    assert resp.status == 200
    assert resp.headers["X-Request-Id"] == "r-42"
    assert resp.headers["Content-Type"].startswith("application/json")
    assert (await resp.json())["message"] == 1


async def test_disconnected_blocked_sender_does_not_enqueue(client: TestClient) -> None:
    expect(await send(client, "", {"streamId": "ds", "message": 1, "inMemoryStreamSize": 1}))
    body = json.dumps({"streamId": "ds", "message": 2, "blockingSendTimeoutSeconds": 30}).encode()
    _, writer = await open_raw(f"{client.server.host}:{client.server.port}", "POST", SEND, body)
    await waiters(client, "blocked_senders", 1)
    writer.close()
    await writer.wait_closed()
    await waiters(client, "blocked_senders", 0)
    assert expect(await receive(client, "", "ds"))["message"] == 1
    expect(await receive(client, "", "ds", 0), 424)


BAD_SENDS: list[tuple[Any, str]] = [
    (b"", "empty"),
    (b"not json", "not valid JSON"),
    (b'{"streamId": "s", "message": 1', "not valid JSON"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    ({"message": 1}, "streamId"),
    ({"streamId": "s"}, "message"),
    ({"streamId": "", "message": 1}, "streamId"),
    ({"streamId": "x" * 257, "message": 1}, "streamId"),
    ({"streamId": "é" * 129, "message": 1}, "streamId"),
    ({"streamId": 5, "message": 1}, "streamId"),
    ({"streamId": None, "message": 1}, "streamId"),
    ({"streamId": "a\u0000b", "message": 1}, "streamId"),
    ({"streamId": "s", "message": 1, "messageUuid": "u" * 129}, "messageUuid"),
    ({"streamId": "s", "message": 1, "messageUuid": 7}, "messageUuid"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": -1}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": 1.5}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": "10"}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": True}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "inMemoryStreamSize": 10**7}, "inMemoryStreamSize"),
    ({"streamId": "s", "message": 1, "blockingSendTimeoutSeconds": 10**6}, "blockingSendTimeoutSeconds"),
    ({"streamId": "s", "message": 1, "blockingSendTimeoutSeconds": "1"}, "blockingSendTimeoutSeconds"),
    ({"streamId": "s", "message": 1, "writeToDB": "yes"}, "writeToDB"),
    ({"streamId": "s", "message": 1, "writeToDB": True, "dbTTLSeconds": -1}, "dbTTLSeconds"),
    ({"streamId": "s", "message": 1, "writeToDB": True, "dbTTLSeconds": 10**10}, "dbTTLSeconds"),
    (b'{"streamId": "s", "message": "\xff"}', "UTF-8"),
]


@pytest.mark.parametrize(("body", "mentions"), BAD_SENDS, ids=[str(i) for i in range(len(BAD_SENDS))])
async def test_bad_send_is_a_clear_400(client: TestClient, body: Any, mentions: str) -> None:
    payload = expect(await send(client, "", body), 400)
    assert mentions in payload["error"]
    assert payload["code"] == "bad_request"


BAD_RECEIVES: list[tuple[dict[str, str], str]] = [
    ({}, "streamId"),
    ({"streamId": ""}, "streamId"),
    ({"streamId": "x" * 257}, "streamId"),
    ({"streamId": "s", "timeoutSeconds": "abc"}, "timeoutSeconds"),
    ({"streamId": "s", "timeoutSeconds": "1.5"}, "timeoutSeconds"),
    ({"streamId": "s", "timeoutSeconds": "301"}, "timeoutSeconds"),
    ({"streamId": "s", "timeoutSeconds": "99999999999999999999"}, "timeoutSeconds"),
    ({"streamId": "s", "readFromDB": "maybe"}, "readFromDB"),
]


@pytest.mark.parametrize(("query", "mentions"), BAD_RECEIVES, ids=[str(i) for i in range(len(BAD_RECEIVES))])
async def test_bad_receive_is_a_clear_400(client: TestClient, query: dict[str, str], mentions: str) -> None:
    resp = await client.get(RECEIVE, params=query)
    payload = await resp.json()
    assert resp.status == 400, payload
    assert mentions in payload["error"]


async def test_ipubsub_client_zero_values_mean_what_the_original_means(client: TestClient) -> None:
    """Clients generated from iPubSub's api.yaml send zero values for fields
    they leave unset; each is served with the original's meaning."""
    # an empty messageUuid: the server makes one up
    sent = expect(await send(client, "", {"streamId": "z1", "message": 1, "messageUuid": ""}))
    assert sent["messageUuid"]
    # inMemoryStreamSize 0 without a blocking timeout: the default size (100), circular
    for i in range(101):
        expect(await send(client, "", {"streamId": "z2", "message": i, "inMemoryStreamSize": 0}))
    assert client.node.engine.capacity("z2") == 100  # type: ignore[attr-defined]
    assert expect(await receive(client, "", "z2"))["message"] == 1  # message 0 was dropped: circular
    # a negative blocking timeout is 0: a circular send that never waits
    for i in range(3):
        expect(await send(client, "", {"streamId": "z3", "message": i, "inMemoryStreamSize": 2,
                            "blockingSendTimeoutSeconds": -5}))
    assert [expect(await receive(client, "", "z3"))["message"] for _ in range(2)] == [1, 2]
    # dbTTLSeconds is ignored unless writeToDB
    for ttl in (0, -1, 10**10):
        expect(await send(client, "", {"streamId": "z4", "message": ttl, "writeToDB": False, "dbTTLSeconds": ttl}))
    # dbResumeToken is ignored unless readFromDB; a negative timeout answers at once
    expect(await receive(client, "", "z4", dbResumeToken="not-a-token"))
    expect(await receive(client, "", "z4", timeout=-3))
    assert (expect(await receive(client, "", "z4", readFromDB="FALSE")))["message"] == 10**10
    for flag in ("f", "0", "false"):
        expect(await receive(client, "", "z4", readFromDB=flag), 424)


async def test_body_over_the_limit_is_413(make_client: MakeClient) -> None:
    client = await make_client({"limits": {"max_message_bytes": 1024}})
    body = json.dumps({"streamId": "big", "message": "x" * 2000})
    resp = await client.post(SEND, data=body)
    payload = await resp.json()
    assert resp.status == 413
    assert "1024" in payload["error"]
    ok = await client.post(SEND, data=json.dumps({"streamId": "big", "message": "x" * 900}))
    assert ok.status == 200


async def test_default_limit_accepts_a_message_just_under_one_mib(client: TestClient) -> None:
    blob = "y" * (1024 * 1024 - 100)
    expect(await send(client, "", {"streamId": "mib", "message": blob}))
    assert expect(await receive(client, "", "mib"))["message"] == blob
    resp = await client.post(SEND, data=json.dumps({"streamId": "mib", "message": "y" * (1024 * 1024)}))
    assert resp.status == 413


async def test_persistence_without_storage_is_a_400(client: TestClient) -> None:
    body = expect(await send(client, "", {"streamId": "p", "message": 1, "writeToDB": True}), 400)
    assert "not configured" in body["error"]
    resp = await client.get(RECEIVE, params={"streamId": "p", "readFromDB": "true", "timeoutSeconds": "0"})
    assert resp.status == 400
    assert "not configured" in (await resp.json())["error"]


async def test_unknown_route_and_wrong_method_are_json(client: TestClient) -> None:
    resp = await client.get("/api/v1/nope")
    assert resp.status == 404
    assert "error" in await resp.json()
    resp = await client.get(SEND)
    assert resp.status == 405
    body = await resp.json()
    assert "POST" in body["error"]


async def test_node_stays_healthy_after_bad_input(client: TestClient) -> None:
    for body, _ in BAD_SENDS:
        await client.post(SEND, data=body if isinstance(body, bytes) else json.dumps(body))
    resp = await client.get("/health")
    assert resp.status == 200
    expect(await send(client, "", {"streamId": "fine", "message": 1}))
    assert expect(await receive(client, "", "fine"))["message"] == 1


async def test_owner_and_cluster_views_of_a_single_node(client: TestClient) -> None:
    owner = await (await client.get("/api/v1/streams/owner", params={"streamId": "x"})).json()
    assert owner["node"] == "node-1"
    view = await (await client.get("/api/v1/cluster")).json()
    assert view["self"] == "node-1"
    assert [m["status"] for m in view["members"]] == ["alive"]
