"""The MongoDB backend without a server: the documents, filters and options
it builds, checked as values and handed to PyMongo's own cursor (which
validates them without connecting).

These run everywhere; the contract suite runs the same backend against a
real server only with ``IPUBSUB_TEST_MONGODB`` (it never has on our
machines)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pymongo import ASCENDING, AsyncMongoClient

from ipubsub.config import MongodbConfig
from ipubsub.errors import StorageUnavailable
from ipubsub.storage.base import LeaseRef, NewMessage, SpilledMessage, SpilledStream, StoredMessage
from ipubsub.storage.mongodb import (
    _FIELDS,
    MongodbStore,
    _date,
    expired_filter,
    message_doc,
    read_filter,
    read_options,
    stored_message,
)
from ipubsub.storage.mongodb_groups import (
    expired_filter as expired_leases,
)
from ipubsub.storage.mongodb_groups import (
    group_id,
    match_filter,
    pending_doc,
    pending_id,
    spilled_streams,
)

NOW = 1_800_000_000_123_456


def test_dates_keep_millisecond_precision_for_the_ttl_index() -> None:
    assert _date(NOW) == datetime(2027, 1, 15, 8, 0, 0, 123456, tzinfo=UTC)
    assert _date(0) == datetime(1970, 1, 1, tzinfo=UTC)


def test_message_documents_round_trip() -> None:
    msg = NewMessage("s", "u", b"\x00{}", NOW, NOW + 5)
    doc = message_doc(msg, 42)
    assert doc == {
        "stream_id": "s", "position": 42, "message_uuid": "u", "payload": b"\x00{}",
        "timestamp_us": NOW, "expires_at_us": NOW + 5, "expireAt": _date(NOW + 5),
    }
    assert stored_message("s", {**doc, "payload": bytearray(b"\x00{}")}) == StoredMessage("s", 42, "u", b"\x00{}", NOW, NOW + 5)


def test_read_and_expiry_filters() -> None:
    assert read_filter("s", None, NOW) == {"stream_id": "s", "position": {"$gt": 0}, "expires_at_us": {"$gt": NOW}}
    assert read_filter("s", 7, NOW)["position"] == {"$gt": 7}
    assert expired_filter(NOW) == {"expireAt": {"$lte": _date(NOW)}, "expires_at_us": {"$lte": NOW}}
    assert read_options(1000) == {"sort": [("position", ASCENDING)], "limit": 1000, "batch_size": 1000}


async def test_pymongo_accepts_the_batch_read_without_a_server() -> None:
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient("mongodb://127.0.0.1:1", connect=False)
    try:
        cursor = client["db"]["messages"].find(read_filter("s", 3, NOW), _FIELDS, **read_options(250))
        assert cursor._limit == 250 and cursor._batch_size == 250  # one reply holds the whole batch
        assert dict(cursor._ordering or {}) == {"position": 1}
        assert cursor._spec == read_filter("s", 3, NOW)
    finally:
        await client.close()


def test_group_documents_and_filters() -> None:
    assert group_id("s", "g") == {"s": "s", "g": "g"}
    assert pending_id("s", "g", 4) == {"s": "s", "g": "g", "p": 4}
    msg = StoredMessage("s", 4, "u", b"", NOW, NOW + 99)
    assert pending_doc("s", "g", msg, "c", NOW + 30, NOW, _date(NOW + 99)) == {
        "_id": {"s": "s", "g": "g", "p": 4}, "consumer": "c", "lease_until_us": NOW + 30, "deliveries": 1,
        "delivered_at_us": NOW, "acked": False, "expireAt": _date(NOW + 99),
    }
    assert expired_leases("s", "g", NOW) == {
        "_id.s": "s", "_id.g": "g", "acked": False, "lease_until_us": {"$lte": NOW},
    }
    assert match_filter("s", "g", LeaseRef(4)) == {"_id": pending_id("s", "g", 4), "acked": False}
    assert match_filter("s", "g", LeaseRef(4, 2)) == {"_id": pending_id("s", "g", 4), "acked": False, "deliveries": 2}


def test_spilled_documents_become_streams_in_spill_order() -> None:
    def doc(spill: int, seq: int, stream: str, uuid: str, capacity: int | None = 5) -> dict[str, object]:
        return {"_id": {"n": "node", "i": spill, "q": seq}, "stream_id": stream, "capacity": capacity,
                "message_uuid": uuid, "payload": uuid.encode(), "timestamp_us": 7}

    docs = [doc(1, 0, "A", "a0"), doc(1, 1, "B", "b0", None), doc(1, 2, "B", "b1", None), doc(2, 0, "A", "a1", 9)]
    assert spilled_streams(docs) == [
        SpilledStream("A", 5, [SpilledMessage("a0", b"a0", 7)], 1),
        SpilledStream("B", None, [SpilledMessage("b0", b"b0", 7), SpilledMessage("b1", b"b1", 7)], 1),
        SpilledStream("A", 9, [SpilledMessage("a1", b"a1", 7)], 2),
    ]


async def test_a_store_that_is_not_open_says_so_and_hides_the_password() -> None:
    store = MongodbStore(MongodbConfig(url="mongodb://user:s3cret@db.example:27018/x"))
    assert "s3cret" not in store._where and "db.example:27018" in store._where
    for call in (
        lambda: store.read_after("s", None, NOW, 1),
        lambda: store.claim("s", "g", "c", 1, 1, NOW, 0),
        lambda: store.spill("n", 1, []),
    ):
        with pytest.raises(StorageUnavailable, match="not open"):
            await call()
    await store.close()
    await store.close()
