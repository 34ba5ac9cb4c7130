"""MongoDB backend (PyMongo's native asyncio client, ``AsyncMongoClient``).

Collections in ``{database}``: ``{collection}`` (one document per message,
unique indexes on ``(stream_id, position)`` and ``(stream_id, message_uuid)``,
and a TTL index on ``expireAt`` with ``expireAfterSeconds=0`` so the server
drops expired messages by itself, about once a minute) and
``{collection}_streams`` (one counter document per stream, ``_id`` = stream id).
Writes use ``w="majority", j=True``.

An append, per stream: look up which uuids are already stored, reserve
``n`` positions with ``find_one_and_update($inc, upsert=True)`` on the
counter, then ``insert_many(ordered=True)`` so rows land in position order.
If a concurrent writer on another node inserted one of the uuids in between,
the unique index rejects that document: it is reported as a duplicate of the
stored one and its reserved position stays unused (a gap, never a reuse).

Ordering guarantee, weaker than the SQL backends (no multi-document
transaction): positions are reserved before the documents are inserted, so
while a writer on ANOTHER node is between the two steps, a reader may see a
later position of the stream before an earlier one and, resuming after it,
skip the earlier message.  Within one node this cannot happen: this store
serializes its appends (an :class:`asyncio.Lock`), and the cluster routes a
stream's writes to its owner node.  Reads filter on ``expires_at_us``
because the TTL monitor lags; ``delete_expired`` also deletes (bounded).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

try:
    from pymongo import ASCENDING, DESCENDING, AsyncMongoClient, ReturnDocument
    from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError("the mongodb backend needs pymongo: pip install 'ipubsub[mongodb]'") from exc

from ..config import MongodbConfig
from ..errors import StorageUnavailable
from .base import (
    AppendResult,
    Claim,
    GroupInfo,
    LeaseRef,
    MessageStore,
    NewMessage,
    SpilledStream,
    StoredMessage,
)
from .common import BatchPlan, guard, url_location, url_password
from .mongodb_groups import MongoGroups

__all__ = ["MongodbStore"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_DUPLICATE_KEY = 11000
_FIELDS = {"_id": 0, "position": 1, "message_uuid": 1, "payload": 1, "timestamp_us": 1, "expires_at_us": 1}


def _date(time_us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=time_us)


def read_filter(stream_id: str, after: int | None, now_us: int) -> dict[str, Any]:
    """Alive messages of the stream after position ``after`` (``None``: all)."""
    return {"stream_id": stream_id, "position": {"$gt": 0 if after is None else after}, "expires_at_us": {"$gt": now_us}}


def expired_filter(now_us: int) -> dict[str, Any]:
    """Messages expired at ``now_us``: ``expireAt`` (the TTL index) narrows,
    ``expires_at_us`` decides at microsecond precision."""
    return {"expireAt": {"$lte": _date(now_us)}, "expires_at_us": {"$lte": now_us}}


def message_doc(msg: NewMessage, position: int) -> dict[str, Any]:
    """The document of a message stored at ``position``."""
    return {
        "stream_id": msg.stream_id, "position": position, "message_uuid": msg.uuid, "payload": msg.payload,
        "timestamp_us": msg.timestamp_us, "expires_at_us": msg.expires_at_us, "expireAt": _date(msg.expires_at_us),
    }


def stored_message(stream_id: str, doc: dict[str, Any]) -> StoredMessage:
    return StoredMessage(
        stream_id, doc["position"], doc["message_uuid"], bytes(doc["payload"]), doc["timestamp_us"], doc["expires_at_us"]
    )


def read_options(limit: int) -> dict[str, Any]:
    """``find`` options of a batch read: oldest first, ``limit`` documents,
    all in the first reply (one round trip; the server's default first batch
    holds only 101)."""
    return {"sort": [("position", ASCENDING)], "limit": limit, "batch_size": limit}


class MongodbStore(MessageStore):
    """Message log in MongoDB collections (see the module notes on ordering).

    Args:
        config: ``storage.mongodb`` (``url``, ``database``, ``collection``).
        operation_timeout_seconds: bound on every call (also the driver's
            server selection and ``timeoutMS``).
    """

    name = "mongodb"

    def __init__(self, config: MongodbConfig, *, operation_timeout_seconds: float = 5.0) -> None:
        self._config = config
        self._timeout = operation_timeout_seconds
        self._where = f"mongodb at {url_location(config.url, 27017)}"
        self._secret = url_password(config.url)
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._messages: Any = None
        self._streams: Any = None
        self._groups: MongoGroups | None = None
        self._lock = asyncio.Lock()

    def _guard(self, action: str) -> Any:
        return guard(self._where, action, self._timeout, (PyMongoError,), self._secret)

    def _require(self) -> None:
        if self._messages is None:
            raise StorageUnavailable(f"{self._where} is not open")

    async def open(self) -> None:
        """Create the client and the indexes if missing (idempotent)."""
        async with self._guard("open"):
            if self._client is None:
                millis = int(self._timeout * 1000)
                self._client = AsyncMongoClient(
                    self._config.url,
                    serverSelectionTimeoutMS=millis,
                    connectTimeoutMS=millis,
                    timeoutMS=millis,
                )
            database = self._client[self._config.database]
            durable = WriteConcern(w="majority", j=True)
            messages = database.get_collection(self._config.collection, write_concern=durable)
            streams = database.get_collection(f"{self._config.collection}_streams", write_concern=durable)
            await messages.create_index(
                [("stream_id", ASCENDING), ("position", ASCENDING)], unique=True, name="stream_position"
            )
            await messages.create_index(
                [("stream_id", ASCENDING), ("message_uuid", ASCENDING)], unique=True, name="stream_uuid"
            )
            await messages.create_index("expireAt", expireAfterSeconds=0, name="expire_at")
            self._groups = await self._open_groups(database, durable, messages)
            self._messages, self._streams = messages, streams

    async def _open_groups(self, database: Any, durable: WriteConcern, messages: Any) -> MongoGroups:
        """The group and spill collections, with their indexes."""
        name = self._config.collection
        groups = database.get_collection(f"{name}_groups", write_concern=durable)
        pending = database.get_collection(f"{name}_pending", write_concern=durable)
        spill = database.get_collection(f"{name}_spill", write_concern=durable)
        await groups.create_index([("_id.s", ASCENDING), ("_id.g", ASCENDING)], name="stream_group")
        await groups.create_index("active_at_us", name="active_at")
        await pending.create_index(
            [("_id.s", ASCENDING), ("_id.g", ASCENDING), ("acked", ASCENDING), ("lease_until_us", ASCENDING)],
            name="group_lease",
        )
        await pending.create_index("expireAt", expireAfterSeconds=0, name="expire_at")
        await spill.create_index([("_id.n", ASCENDING), ("_id.i", ASCENDING), ("_id.q", ASCENDING)], name="node_spill")
        return MongoGroups(messages, groups, pending, spill, self._read_after, _date, stored_message)

    async def close(self) -> None:
        """Close the client; safe to call twice and after a failed open."""
        client, self._client, self._messages, self._streams = self._client, None, None, None
        self._groups = None
        if client is not None:
            await client.close()

    async def append(self, batch: Sequence[NewMessage]) -> list[AppendResult]:
        """Store a batch; see the module notes for the ordering guarantee."""
        self._require()
        if not batch:
            return []
        async with self._guard("append"), self._lock:
            plan = BatchPlan(batch)
            for stream in plan.streams():
                uuids = [batch[i].uuid for i in plan.pending(stream)]
                new = plan.skip_found(stream, await self._find(stream, uuids))
                if not new:
                    continue
                await self._insert(plan, new, await self._reserve(stream, len(new)))
            return plan.results()

    async def _reserve(self, stream: str, count: int) -> int:
        """Take ``count`` fresh positions of the stream; return the first."""
        for attempt in (1, 2):
            try:
                counter = await self._streams.find_one_and_update(
                    {"_id": stream},
                    {"$inc": {"last_position": count}},
                    upsert=True,
                    return_document=ReturnDocument.AFTER,
                )
                return int(counter["last_position"]) - count + 1
            except DuplicateKeyError:  # two first upserts raced; the retry updates
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def _find(self, stream: str, uuids: list[str]) -> dict[str, tuple[int, int]]:
        """Stored uuids among ``uuids``: uuid to (position, timestamp)."""
        cursor = self._messages.find(
            {"stream_id": stream, "message_uuid": {"$in": uuids}},
            {"_id": 0, "message_uuid": 1, "position": 1, "timestamp_us": 1},
        )
        return {doc["message_uuid"]: (doc["position"], doc["timestamp_us"]) async for doc in cursor}

    async def _insert(self, plan: BatchPlan, new: list[int], first: int) -> None:
        """Insert in position order; a uuid taken meanwhile becomes a duplicate."""
        docs = [message_doc(plan.batch[index], first + offset) for offset, index in enumerate(new)]
        start = 0
        while start < len(docs):
            try:
                await self._messages.insert_many(docs[start:], ordered=True)
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors") or []
                if exc.details.get("writeConcernErrors") or not errors or errors[0]["code"] != _DUPLICATE_KEY:
                    raise
                # ordered: everything before the failed document was stored
                failed = start + errors[0]["index"]
                for n in range(start, failed):
                    plan.stored(new[n], docs[n]["position"])
                msg = plan.batch[new[failed]]
                stored = (await self._find(msg.stream_id, [msg.uuid])).get(msg.uuid)
                if stored is None:  # the position, not the uuid, collided: counter lost?
                    raise
                plan.found(new[failed], *stored)
                start = failed + 1
            else:
                for n in range(start, len(docs)):
                    plan.stored(new[n], docs[n]["position"])
                return

    async def read_after(
        self, stream_id: str, after: int | None, now_us: int, limit: int
    ) -> list[StoredMessage]:
        """Alive messages after ``after``, oldest first."""
        self._require()
        async with self._guard("read"):
            return await self._read_after(stream_id, after, now_us, limit)

    async def _read_after(self, stream_id: str, after: int | None, now_us: int, limit: int) -> list[StoredMessage]:
        docs = await self._messages.find(read_filter(stream_id, after, now_us), _FIELDS, **read_options(limit)).to_list(None)
        return [stored_message(stream_id, doc) for doc in docs]

    async def read_latest(self, stream_id: str, now_us: int, limit: int) -> list[StoredMessage]:
        """The newest alive messages, oldest of them first."""
        self._require()
        query = {"stream_id": stream_id, "expires_at_us": {"$gt": now_us}}
        async with self._guard("read"):
            cursor = self._messages.find(query, _FIELDS).sort("position", DESCENDING).limit(limit)
            docs = await cursor.to_list(None)
        return [stored_message(stream_id, doc) for doc in reversed(docs)]

    async def delete_expired(self, now_us: int, limit: int) -> int:
        """Delete at most ``limit`` expired messages now (the TTL monitor also
        deletes them, later); return how many."""
        self._require()
        query = expired_filter(now_us)
        async with self._guard("delete expired"):
            ids = [doc["_id"] async for doc in self._messages.find(query, {"_id": 1}).limit(limit)]
            if not ids:
                return 0
            result = await self._messages.delete_many({"_id": {"$in": ids}})
        return int(result.deleted_count)

    async def ping(self) -> None:
        """Run the server's ``ping`` command."""
        self._require()
        async with self._guard("ping"):
            assert self._client is not None
            await self._client.admin.command("ping")

    # -- consumer groups and spilled buffers (see :mod:`.mongodb_groups`) -------------

    def _with_groups(self) -> MongoGroups:
        self._require()
        assert self._groups is not None
        return self._groups

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        groups = self._with_groups()
        async with self._guard("claim"):
            return await groups.claim(stream_id, group, consumer, limit, lease_us, now_us, max_deliveries)

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        groups = self._with_groups()
        async with self._guard("ack"):
            return await groups.ack(stream_id, group, refs, now_us)

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        groups = self._with_groups()
        async with self._guard("nack"):
            return await groups.nack(stream_id, group, refs, now_us, delay_us)

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        groups = self._with_groups()
        async with self._guard("list groups"):
            return await groups.list_groups(stream_id, now_us)

    async def delete_group(self, stream_id: str, group: str) -> bool:
        groups = self._with_groups()
        async with self._guard("delete group"):
            return await groups.delete_group(stream_id, group)

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        groups = self._with_groups()
        async with self._guard("delete idle groups"):
            return await groups.delete_idle_groups(idle_before_us, limit)

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        groups = self._with_groups()
        async with self._guard("spill"):
            return await groups.spill(node, spill_id, streams)

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        groups = self._with_groups()
        async with self._guard("read spilled"):
            return await groups.read_spilled(node)

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        groups = self._with_groups()
        async with self._guard("delete spilled"):
            return await groups.delete_spilled(node, through_spill_id)

