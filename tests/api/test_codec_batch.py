"""Decoding batch sends and batch receives (pure functions, no server)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from ipubsub.api.codec import (
    NotInBatch,
    encode_batch_results,
    encode_deliveries,
    parse_receive,
    parse_send_batch,
)
from ipubsub.api.errors import status_of
from ipubsub.calls import Delivery, SendCall, Sent
from ipubsub.config import Config
from ipubsub.engine import Message
from ipubsub.errors import BadRequest, MessageTooLarge

CONFIG = Config.from_mapping({"limits": {"max_batch_messages": 5, "max_message_bytes": 256, "max_batch_bytes": 4096}})


def batch(*items: Any) -> bytes:
    return json.dumps({"messages": list(items)}).encode()


def test_each_item_is_validated_alone_and_keeps_its_place() -> None:
    calls = parse_send_batch(
        batch(
            {"streamId": "a", "message": {"n": 1}, "messageUuid": "u1"},
            {"streamId": "", "message": 2},
            {"streamId": "b", "message": 3, "writeToDB": True, "dbTTLSeconds": 60},
            {"streamId": "c"},
            {"streamId": "d", "message": 5, "blockingSendTimeoutSeconds": 3},
        ),
        CONFIG,
    )
    assert [type(c).__name__ for c in calls] == ["SendCall", "BadRequest", "SendCall", "BadRequest", "NotInBatch"]
    first, _, durable, missing, blocking = calls
    assert isinstance(first, SendCall) and first.payload == b'{"n": 1}' and first.uuid == "u1"
    assert isinstance(durable, SendCall) and durable.persist and durable.ttl_seconds == 60
    assert isinstance(missing, BadRequest) and missing.field == "message"
    assert isinstance(blocking, NotInBatch) and blocking.code == "not_supported_in_batch"


def test_an_item_of_the_wrong_type_or_too_big_fails_alone() -> None:
    calls = parse_send_batch(batch(7, {"streamId": "a", "message": "x" * 300}, {"streamId": "a", "message": 1}), CONFIG)
    assert isinstance(calls[0], BadRequest) and "each item must be a JSON object" in calls[0].message
    assert isinstance(calls[1], MessageTooLarge) and calls[1].limit == 256
    assert isinstance(calls[2], SendCall)


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        (b"", "empty"),
        (b"[]", "JSON object"),
        (b'{"messages": {}}', "messages"),
        (b'{"message": []}', "messages is required"),
        (batch(), "at least one item"),
        (batch(*[{"streamId": "a", "message": i} for i in range(6)]), "limits.max_batch_messages (5)"),
        (b'{"messages": [\xff]}', "UTF-8"),
    ],
)
def test_a_malformed_batch_is_one_400(body: bytes, mentions: str) -> None:
    with pytest.raises(BadRequest) as bad:
        parse_send_batch(body, CONFIG)
    assert mentions in bad.value.message


def test_a_batch_over_the_byte_limit_is_413() -> None:
    with pytest.raises(MessageTooLarge) as big:
        parse_send_batch(batch(*[{"streamId": "a", "message": "x" * 200}] * 5) + b" " * 4096, CONFIG)
    assert big.value.limit == 4096


def test_results_encode_in_order_with_item_statuses() -> None:
    body = encode_batch_results(
        [Sent("u1"), BadRequest("streamId is required", field="streamId"), Sent("u3", "TOKEN")], status_of
    )
    assert json.loads(body) == {
        "results": [
            {"messageUuid": "u1"},
            {"status": 400, "code": "bad_request", "error": "streamId is required", "field": "streamId"},
            {"messageUuid": "u3", "dbResumeToken": "TOKEN"},
        ]
    }


def test_max_messages_is_a_bounded_integer() -> None:
    assert parse_receive({"streamId": "s"}, CONFIG).max_messages is None
    assert parse_receive({"streamId": "s", "maxMessages": "5"}, CONFIG).max_messages == 5
    for bad in ("0", "6", "-1", "1.5", "many", "9" * 40):
        with pytest.raises(BadRequest) as error:
            parse_receive({"streamId": "s", "maxMessages": bad}, CONFIG)
        assert error.value.field == "maxMessages"


def test_a_batch_answer_lists_messages_and_the_last_token() -> None:
    deliveries = [
        Delivery(Message("a", b'{"x": 1}', 1_790_000_000_000_001), "T1"),
        Delivery(Message("b", b"2", 1_790_000_000_000_002), "T2"),
    ]
    answer = msgspec.json.decode(encode_deliveries(deliveries))
    assert [m["messageUuid"] for m in answer["messages"]] == ["a", "b"]
    assert answer["messages"][0]["message"] == {"x": 1} and answer["dbResumeToken"] == "T2"
    memory = msgspec.json.decode(encode_deliveries([Delivery(Message("c", b"3", 1_790_000_000_000_003))]))
    assert "dbResumeToken" not in memory and "dbResumeToken" not in memory["messages"][0]
