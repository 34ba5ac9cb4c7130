"""Consumer groups and spilled buffers on MongoDB (no multi-document
transactions: every step is one conditional single-document write).

Collections next to ``{collection}``:

* ``{collection}_groups``: ``_id = {s: stream, g: group}``,
  ``delivered_through`` (only ever raised, with ``$max``), ``active_at_us``;
* ``{collection}_pending``: ``_id = {s, g, p: position}``, consumer, lease
  end, delivery count, first delivery time and ``acked``.  An acknowledged
  entry is kept (``acked: true``) until its message expires (TTL index on
  ``expireAt``): it is the record that the message was delivered, so a
  claimant that read an old ``delivered_through`` cannot hand it out again;
* ``{collection}_spill``: spilled buffers, ``_id = {n: node, i: spill id,
  q: sequence}``.

Who gets a message: a new one goes to the claimant whose insert of its
pending document wins (the ``_id`` is unique); an expired lease goes to the
claimant whose ``find_one_and_update`` still matches the lease end and
delivery count it read.  A crash between steps leaves a pending document
(redelivered when its lease ends) or an unraised ``delivered_through``
(the next claim finds the inserted documents and skips them): never a
message lost or leased twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .base import Claim, GroupInfo, Leased, LeaseRef, SpilledMessage, SpilledStream, StoredMessage

__all__ = [
    "expired_filter",
    "group_id",
    "match_filter",
    "pending_doc",
    "pending_id",
    "spilled_streams",
]


def group_id(stream_id: str, group: str) -> dict[str, str]:
    return {"s": stream_id, "g": group}


def pending_id(stream_id: str, group: str, position: int) -> dict[str, Any]:
    return {"s": stream_id, "g": group, "p": position}


def pending_doc(
    stream_id: str, group: str, message: StoredMessage, consumer: str, lease_end_us: int, now_us: int, expire_at: Any
) -> dict[str, Any]:
    """A new pending entry (first delivery) for ``message``."""
    return {
        "_id": pending_id(stream_id, group, message.position),
        "consumer": consumer,
        "lease_until_us": lease_end_us,
        "deliveries": 1,
        "delivered_at_us": now_us,
        "acked": False,
        "expireAt": expire_at,
    }


def expired_filter(stream_id: str, group: str, now_us: int) -> dict[str, Any]:
    """Unacknowledged entries of the group whose lease ended."""
    return {"_id.s": stream_id, "_id.g": group, "acked": False, "lease_until_us": {"$lte": now_us}}


def match_filter(stream_id: str, group: str, ref: LeaseRef) -> dict[str, Any]:
    """The pending entry a receipt names, if still unacknowledged (and of
    that delivery, when the receipt says)."""
    query: dict[str, Any] = {"_id": pending_id(stream_id, group, ref.position), "acked": False}
    if ref.delivery is not None:
        query["deliveries"] = ref.delivery
    return query


def spilled_streams(docs: Sequence[dict[str, Any]]) -> list[SpilledStream]:
    """Spill documents (sorted by spill id and sequence) as streams."""
    out: list[SpilledStream] = []
    for doc in docs:
        if not out or out[-1].stream_id != doc["stream_id"] or out[-1].spill_id != doc["_id"]["i"]:
            out.append(SpilledStream(doc["stream_id"], doc["capacity"], [], doc["_id"]["i"]))
        out[-1].messages.append(SpilledMessage(doc["message_uuid"], bytes(doc["payload"]), doc["timestamp_us"]))
    return out


class MongoGroups:
    """Group and spill operations over the store's collections.

    Args:
        messages, groups, pending, spill: the collections.
        read: the store's ``read_after``; ``date``: microseconds to a
            ``datetime`` (for TTL fields); ``stored``: a message document
            as a :class:`StoredMessage`.
    """

    def __init__(
        self, messages: Any, groups: Any, pending: Any, spill: Any, read: Any, date: Any, stored: Any
    ) -> None:
        self._stored = stored
        self._messages = messages
        self._groups = groups
        self._pending = pending
        self._spill = spill
        self._read = read
        self._date = date

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        from pymongo import ASCENDING, ReturnDocument
        from pymongo.errors import BulkWriteError, DuplicateKeyError

        lease_end = now_us + lease_us
        try:
            row = await self._groups.find_one_and_update(
                {"_id": group_id(stream_id, group)},
                {"$set": {"active_at_us": now_us}, "$setOnInsert": {"delivered_through": 0}},
                upsert=True, return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:  # two first claims raced: the group exists now
            row = await self._groups.find_one({"_id": group_id(stream_id, group)})
        through = int(row["delivered_through"])
        messages: list[Leased] = []
        dead: list[Leased] = []
        cursor = self._pending.find(expired_filter(stream_id, group, now_us), sort=[("_id.p", ASCENDING)], limit=limit)
        expired = await cursor.to_list(None)
        alive = await self._by_position(stream_id, [doc["_id"]["p"] for doc in expired], now_us)
        for doc in expired:
            same = {"_id": doc["_id"], "acked": False, "lease_until_us": doc["lease_until_us"],
                    "deliveries": doc["deliveries"]}
            message = alive.get(doc["_id"]["p"])
            if message is None:
                await self._pending.delete_one(same)
                continue
            is_dead = bool(max_deliveries) and doc["deliveries"] >= max_deliveries
            won = await self._pending.find_one_and_update(
                same, {"$set": {"consumer": consumer, "lease_until_us": lease_end},
                       "$inc": {"deliveries": 0 if is_dead else 1}},
                return_document=ReturnDocument.AFTER,
            )
            if won is not None:
                (dead if is_dead else messages).append(Leased(message, int(won["deliveries"])))
        if len(messages) < limit:
            fresh = await self._read(stream_id, through, now_us, limit - len(messages))
            docs = [pending_doc(stream_id, group, m, consumer, lease_end, now_us, self._date(m.expires_at_us))
                    for m in fresh]
            taken: set[int] = set()
            if docs:
                try:
                    await self._pending.insert_many(docs, ordered=False)
                except BulkWriteError as exc:
                    if exc.details.get("writeConcernErrors"):
                        raise
                    taken = {docs[e["index"]]["_id"]["p"] for e in exc.details.get("writeErrors", [])}
                    if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])):
                        raise
                await self._groups.update_one(
                    {"_id": group_id(stream_id, group)}, {"$max": {"delivered_through": fresh[-1].position}}
                )
            messages.extend(Leased(m, 1) for m in fresh if m.position not in taken)
        first = await self._pending.find_one(
            {"_id.s": stream_id, "_id.g": group, "acked": False}, sort=[("lease_until_us", ASCENDING)]
        )
        return Claim(messages, dead, None if first is None else int(first["lease_until_us"]))

    async def _by_position(self, stream_id: str, positions: list[int], now_us: int) -> dict[int, StoredMessage]:
        if not positions:
            return {}
        query = {"stream_id": stream_id, "position": {"$in": positions}, "expires_at_us": {"$gt": now_us}}
        docs = await self._messages.find(query, {"_id": 0, "expireAt": 0}).to_list(None)
        return {d["position"]: self._stored(stream_id, d) for d in docs}

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        return await self._settle(stream_id, group, refs, now_us, {"$set": {"acked": True}})

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        return await self._settle(stream_id, group, refs, now_us, {"$set": {"lease_until_us": now_us + delay_us}})

    async def _settle(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, change: dict[str, Any]
    ) -> list[bool]:
        touched = await self._groups.update_one({"_id": group_id(stream_id, group)}, {"$set": {"active_at_us": now_us}})
        if not touched.matched_count:
            return [False] * len(refs)
        out = []
        seen: set[int] = set()
        for ref in refs:
            if ref.position in seen:  # one answer per entry, as in SQL
                out.append(False)
                continue
            result = await self._pending.update_one(match_filter(stream_id, group, ref), change)
            if result.modified_count:
                seen.add(ref.position)
            out.append(bool(result.modified_count))
        return out

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        from pymongo import ASCENDING

        out = []
        async for row in self._groups.find({"_id.s": stream_id}, sort=[("_id.g", ASCENDING)]):
            group = row["_id"]["g"]
            through = int(row["delivered_through"])
            lag = await self._messages.count_documents(
                {"stream_id": stream_id, "position": {"$gt": through}, "expires_at_us": {"$gt": now_us}}
            )
            unacked = {"_id.s": stream_id, "_id.g": group, "acked": False}
            pending = await self._pending.count_documents(unacked)
            oldest = await self._pending.find_one(unacked, sort=[("delivered_at_us", ASCENDING)])
            out.append(GroupInfo(
                group, through, lag, pending, None if oldest is None else int(oldest["delivered_at_us"]),
                int(row["active_at_us"]),
            ))
        return out

    async def delete_group(self, stream_id: str, group: str) -> bool:
        await self._pending.delete_many({"_id.s": stream_id, "_id.g": group})
        return bool((await self._groups.delete_one({"_id": group_id(stream_id, group)})).deleted_count)

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        deleted = 0
        async for row in self._groups.find({"active_at_us": {"$lt": idle_before_us}}, limit=limit):
            deleted += await self.delete_group(row["_id"]["s"], row["_id"]["g"])
        return deleted

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        docs: list[dict[str, Any]] = []
        for stream in streams:
            for m in stream.messages:
                docs.append({
                    "_id": {"n": node, "i": spill_id, "q": len(docs)}, "stream_id": stream.stream_id,
                    "capacity": stream.capacity, "message_uuid": m.uuid, "payload": m.payload,
                    "timestamp_us": m.timestamp_us,
                })
        if docs:
            await self._spill.insert_many(docs, ordered=True)
        return len(docs)

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        from pymongo import ASCENDING

        cursor = self._spill.find({"_id.n": node}, sort=[("_id.i", ASCENDING), ("_id.q", ASCENDING)])
        return spilled_streams(await cursor.to_list(None))

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        result = await self._spill.delete_many({"_id.n": node, "_id.i": {"$lte": through_spill_id}})
        return int(result.deleted_count)
