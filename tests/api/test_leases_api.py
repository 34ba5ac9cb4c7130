"""At-least-once delivery through the HTTP API of one node: leased
receives with ack and nack, expiry and redelivery with deliveryCount,
dead-lettering, and consumer groups on a durable stream (SQLite)."""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from ipubsub.protocol import ACK_PATH, GROUPS_PATH, NACK_PATH
from tests.conftest import MakeClient
from tests.support.http import ack, call, expect, nack, open_raw, receive, send
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(30)


async def put(client: TestClient, stream: str, *numbers: int, **extra: object) -> None:
    for n in numbers:
        expect(await send(client, "", {"streamId": stream, "message": {"n": n}, "messageUuid": f"m{n}", **extra}))


async def test_a_leased_message_carries_a_receipt_and_is_gone_once_acknowledged(client: TestClient) -> None:
    await put(client, "jobs", 1, 2)
    got = expect(await receive(client, "", "jobs", leaseSeconds=30))
    assert got["messageUuid"] == "m1" and got["message"] == {"n": 1}
    assert got["deliveryCount"] == 1 and isinstance(got["receipt"], str)
    assert "dbResumeToken" not in got
    # invisible to others while leased
    assert expect(await receive(client, "", "jobs"))["messageUuid"] == "m2"
    assert expect(await ack(client, "", "jobs", got["receipt"])) == {"acked": 1}
    body = expect(await ack(client, "", "jobs", got["receipt"]), 410)
    assert body["code"] == "lease_not_found"
    expect(await receive(client, "", "jobs"), 424)


async def test_an_expired_lease_is_delivered_again_first_with_a_higher_delivery_count(client: TestClient) -> None:
    await put(client, "jobs", 1, 2)
    first = expect(await receive(client, "", "jobs", leaseSeconds=0.2))
    again = expect(await receive(client, "", "jobs", timeout=5, leaseSeconds=30))  # m2 was there all along
    assert again["messageUuid"] == "m2"
    redelivered = expect(await receive(client, "", "jobs", timeout=5, leaseSeconds=30))
    assert redelivered["messageUuid"] == "m1" and redelivered["deliveryCount"] == 2
    assert redelivered["receipt"] != first["receipt"]
    expect(await ack(client, "", "jobs", first["receipt"]), 410)  # the stale receipt
    expect(await ack(client, "", "jobs", redelivered["receipt"]))


async def test_a_nack_returns_the_message_now_or_after_its_delay(client: TestClient) -> None:
    await put(client, "jobs", 1)
    got = expect(await receive(client, "", "jobs", leaseSeconds=30))
    assert expect(await nack(client, "", "jobs", got["receipt"])) == {"nacked": 1}
    got = expect(await receive(client, "", "jobs", leaseSeconds=30))
    assert got["messageUuid"] == "m1" and got["deliveryCount"] == 2
    expect(await nack(client, "", "jobs", got["receipt"], delaySeconds=0.3))
    expect(await receive(client, "", "jobs"), 424)
    got = expect(await receive(client, "", "jobs", timeout=5, leaseSeconds=30))
    assert got["deliveryCount"] == 3


async def test_past_max_deliveries_a_message_moves_to_the_dead_letter_stream(client: TestClient) -> None:
    await put(client, "jobs", 1, 2)
    for count in (1, 2):
        got = expect(await receive(client, "", "jobs", leaseSeconds=30, maxDeliveries=2))
        assert (got["messageUuid"], got["deliveryCount"]) == ("m1", count)
        expect(await nack(client, "", "jobs", got["receipt"]))
    dead = expect(await receive(client, "", "jobs.dead", timeout=5))
    assert dead["messageUuid"] == "m1" and dead["message"] == {"n": 1}
    assert expect(await receive(client, "", "jobs"))["messageUuid"] == "m2"


async def test_the_dead_letter_suffix_is_configurable(make_client: MakeClient) -> None:
    client = await make_client({"leases": {"dead_letter_suffix": "-poison", "max_deliveries": 1}})
    await put(client, "jobs", 1)
    got = expect(await receive(client, "", "jobs", leaseSeconds=0.1))
    assert expect(await receive(client, "", "jobs-poison", timeout=5))["messageUuid"] == "m1"
    expect(await ack(client, "", "jobs", got["receipt"]), 410)


async def test_a_batch_of_leased_messages_acked_together(client: TestClient) -> None:
    await put(client, "jobs", 1, 2, 3)
    got = expect(await receive(client, "", "jobs", leaseSeconds=30, maxMessages=10))
    receipts = [m["receipt"] for m in got["messages"]]
    assert [m["messageUuid"] for m in got["messages"]] == ["m1", "m2", "m3"]
    body = expect(await call(client, "POST", ACK_PATH, body={"streamId": "jobs", "receipts": receipts + ["nope"]}))
    assert body == {"acked": 3, "notFound": ["nope"]}


async def test_an_ack_for_another_stream_finds_nothing(client: TestClient) -> None:
    await put(client, "jobs", 1)
    got = expect(await receive(client, "", "jobs", leaseSeconds=30))
    expect(await ack(client, "", "other", got["receipt"]), 410)
    expect(await ack(client, "", "jobs", got["receipt"]))


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"leaseSeconds": "0"}, "leaseSeconds"),
        ({"leaseSeconds": "-1"}, "leaseSeconds"),
        ({"leaseSeconds": "nan"}, "leaseSeconds"),
        ({"leaseSeconds": "43201"}, "leaseSeconds"),
        ({"leaseSeconds": "x"}, "leaseSeconds"),
        ({"maxDeliveries": "2"}, "maxDeliveries"),
        ({"leaseSeconds": "5", "maxDeliveries": "-1"}, "maxDeliveries"),
        ({"group": "g"}, "group"),
        ({"consumer": "c"}, "consumer"),
        ({"readFromDB": "true", "leaseSeconds": "5"}, "leaseSeconds"),
    ],
)
async def test_bad_lease_parameters_are_a_400_naming_the_field(
    client: TestClient, query: dict[str, str], field: str
) -> None:
    body = expect(await receive(client, "", "jobs", **query), 400)
    assert body["field"] == field and body["code"] == "bad_request"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (ACK_PATH, {"streamId": "s"}, "receipt"),
        (ACK_PATH, {"streamId": "s", "receipt": "a", "receipts": ["b"]}, "receipt"),
        (ACK_PATH, {"streamId": "s", "receipts": []}, "receipts"),
        (ACK_PATH, {"streamId": "s", "receipt": ""}, "receipt"),
        (ACK_PATH, {"receipt": "a"}, "streamId"),
        (ACK_PATH, {"streamId": "s", "receipt": 5}, "receipt"),
        (NACK_PATH, {"streamId": "s", "receipt": "a", "delaySeconds": -1}, "delaySeconds"),
        (NACK_PATH, {"streamId": "s", "receipt": "a", "delaySeconds": "soon"}, "delaySeconds"),
    ],
)
async def test_bad_ack_bodies_are_a_400_naming_the_field(
    client: TestClient, path: str, body: dict[str, object], field: str
) -> None:
    reply = expect(await call(client, "POST", path, body=body), 400)
    assert reply["field"] == field


async def test_an_ack_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    assert expect(await call(client, "POST", ACK_PATH, body=b"{"), 400)["code"] == "bad_request"


async def test_groups_without_storage_are_a_400(client: TestClient) -> None:
    body = expect(await receive(client, "", "log", readFromDB=True, group="g", consumer="c"), 400)
    assert body["code"] == "persistence_not_configured"
    expect(await call(client, "GET", GROUPS_PATH, params={"streamId": "log"}), 400)


# -- consumer groups on SQLite ------------------------------------------------------------


@pytest.fixture
async def durable(make_client: MakeClient, tmp_path: Path) -> TestClient:
    return await make_client({"storage": {"backend": "sqlite", "sqlite": {"path": str(tmp_path / "db.sqlite")}}})


async def test_a_group_shares_a_durable_stream_and_reports_lag_and_pending(durable: TestClient) -> None:
    await put(durable, "log", 1, 2, 3, writeToDB=True)
    a = expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="a"))
    b = expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="b", maxMessages=5))
    assert a["messageUuid"] == "m1" and a["deliveryCount"] == 1 and a["receipt"].startswith("g.")
    assert [m["messageUuid"] for m in b["messages"]] == ["m2", "m3"]
    groups = expect(await call(durable, "GET", GROUPS_PATH, params={"streamId": "log"}))
    assert groups["streamId"] == "log"
    (g,) = groups["groups"]
    assert (g["group"], g["lag"], g["pending"]) == ("g", 0, 3)
    assert g["oldestPendingAgeSeconds"] >= 0
    # another group reads the whole log independently
    other = expect(await receive(durable, "", "log", readFromDB=True, group="h", consumer="x", maxMessages=9))
    assert len(other["messages"]) == 3
    expect(await ack(durable, "", "log", a["receipt"]))
    expect(await ack(durable, "", "log", a["receipt"]), 410)
    body = expect(await call(durable, "POST", ACK_PATH, body={
        "streamId": "log", "group": "g", "receipts": [m["receipt"] for m in b["messages"]],
    }))
    assert body == {"acked": 2, "notFound": []}
    groups = expect(await call(durable, "GET", GROUPS_PATH, params={"streamId": "log"}))
    assert [(g["group"], g["pending"]) for g in groups["groups"]] == [("g", 0), ("h", 3)]
    expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="a"), 424)


async def test_a_group_redelivers_an_expired_lease_and_dead_letters_after_max_deliveries(durable: TestClient) -> None:
    await put(durable, "log", 1, writeToDB=True)
    params = {"readFromDB": True, "group": "g", "consumer": "a", "maxDeliveries": 2}
    first = expect(await receive(durable, "", "log", leaseSeconds=0.2, **params))
    second = expect(await receive(durable, "", "log", timeout=5, leaseSeconds=0.2, **params))
    assert (second["messageUuid"], second["deliveryCount"]) == ("m1", 2)
    expect(await ack(durable, "", "log", first["receipt"]), 410)  # stale
    # the third claim finds it dead: moved to log.dead, acknowledged, nothing else to hand out
    expect(await receive(durable, "", "log", timeout=1, leaseSeconds=30, **params), 424)
    dead = expect(await receive(durable, "", "log.dead", readFromDB=True))
    assert dead["messageUuid"] == "m1" and dead["message"] == {"n": 1}
    groups = expect(await call(durable, "GET", GROUPS_PATH, params={"streamId": "log"}))
    assert groups["groups"][0]["pending"] == 0


async def test_a_group_nack_with_the_group_named_and_a_group_receipt_checked(durable: TestClient) -> None:
    await put(durable, "log", 1, writeToDB=True)
    got = expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="a"))
    body = expect(await nack(durable, "", "log", got["receipt"], group="other"), 400)
    assert body["field"] == "receipt"
    expect(await nack(durable, "", "log", got["receipt"], group="g"))
    again = expect(await receive(durable, "", "log", timeout=5, readFromDB=True, group="g", consumer="b"))
    assert again["messageUuid"] == "m1" and again["deliveryCount"] == 2


@pytest.mark.parametrize("receipt", ["g.Zw.broken", "g..x", "g.!!.x", "g.Zw"])
async def test_a_malformed_group_receipt_is_a_400(durable: TestClient, receipt: str) -> None:
    body = expect(await ack(durable, "", "log", receipt), 400)
    assert (body["code"], body["field"]) == ("invalid_token", "receipt")


async def test_deleting_a_group(durable: TestClient) -> None:
    await put(durable, "log", 1, writeToDB=True)
    expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="a"))
    params = {"streamId": "log", "group": "g"}
    assert expect(await call(durable, "DELETE", GROUPS_PATH, params=params))["deleted"] is True
    assert expect(await call(durable, "DELETE", GROUPS_PATH, params=params), 404)["code"] == "group_not_found"
    assert expect(await call(durable, "GET", GROUPS_PATH, params={"streamId": "log"})) == {
        "streamId": "log", "groups": [],
    }
    expect(await call(durable, "DELETE", GROUPS_PATH, params={"streamId": "log"}), 400)
    # created again on first use: from the oldest message
    assert expect(await receive(durable, "", "log", readFromDB=True, group="g", consumer="a"))["deliveryCount"] == 1


async def test_a_poller_gone_while_waiting_takes_nothing_and_counts_no_delivery(client: TestClient) -> None:
    address = f"{client.server.host}:{client.server.port}"
    _, writer = await open_raw(address, "GET", "/api/v1/streams/receive?streamId=jobs&timeoutSeconds=30&leaseSeconds=60")
    node = client.node  # type: ignore[attr-defined]
    await wait_until(lambda: node.engine.stats.waiting_receivers == 1, what="the poll waits")
    writer.close()
    await wait_until(lambda: node.engine.stats.waiting_receivers == 0, what="the poll is gone")
    await put(client, "jobs", 1)
    got = expect(await receive(client, "", "jobs", leaseSeconds=60))
    assert (got["messageUuid"], got["deliveryCount"]) == ("m1", 1)


async def test_a_leased_answer_that_cannot_be_written_gives_its_messages_back_uncounted(client: TestClient) -> None:
    big = "x" * 600_000
    for n in range(20):  # 12 MB: more than the socket buffers take, so the answer's write waits
        expect(await send(client, "", {"streamId": "jobs", "message": big, "messageUuid": f"m{n}"}))
    node = client.node  # type: ignore[attr-defined]
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.server.host, client.server.port))
    query = "streamId=jobs&timeoutSeconds=0&leaseSeconds=60&maxMessages=100"
    sock.send(f"GET /api/v1/streams/receive?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    leases = node.at_least_once.leases
    await wait_until(lambda: leases.stats.held == 20, what="20 messages leased")
    await asyncio.sleep(0.2)  # the answer is being written; the client reads nothing
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # reset: the rest of the answer cannot be written
    await wait_until(lambda: leases.stats.held == 0, 10, "the leases given back")
    assert leases.stats.given_back_total == 20 and leases.stats.expired_total == 0
    got = expect(await receive(client, "", "jobs", leaseSeconds=60, maxMessages=100))
    assert [(m["messageUuid"], m["deliveryCount"]) for m in got["messages"]] == [(f"m{n}", 1) for n in range(20)]
