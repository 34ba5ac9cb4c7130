"""Consumer groups and spilled buffers on Cassandra (no multi-row
transactions: every decision is one lightweight transaction, LWT).

Tables in the keyspace, next to ``{table}``:

* ``{table}_groups``: partition per stream, one row per group:
  ``delivered_through`` (raised only with ``IF delivered_through < ?``) and
  ``active_at_us`` (a plain write: it decides nothing);
* ``{table}_pending``: partition per (stream, group), clustered by position:
  consumer, lease end, delivery count, first delivery time, ``acked``.
  Rows live as long as their message (``USING TTL``).  An acknowledged
  entry stays (``acked = true``) until then: it records that the message
  was delivered, so a claimant that read an old ``delivered_through``
  cannot hand it out again;
* ``{table}_spill``: partition per node, clustered by (spill id, sequence).

Who gets a message: a new one goes to the claimant whose
``INSERT ... IF NOT EXISTS`` of its pending row applies; an expired lease to
the claimant whose ``UPDATE ... IF lease_until_us = ? AND deliveries = ?``
applies.  A crash between steps leaves a pending row (redelivered when its
lease ends) or an unraised ``delivered_through`` (the next claim's inserts
do not apply for those and it moves on): never a message lost or leased
twice.  Costs: one LWT per message claimed and per receipt acknowledged; a
claim and the group listing read the group's pending partition, acknowledged
rows included.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .base import Claim, GroupInfo, Leased, LeaseRef, SpilledMessage, SpilledStream, StoredMessage

__all__ = [
    "GROUP_SCHEMA",
    "GROUP_STATEMENTS",
    "CassandraGroups",
    "Rows",
    "claimable",
    "pending_summary",
    "spilled_streams",
]

GROUP_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {ks}.{t}_groups (stream_id text, group_name text, delivered_through bigint,"
    " active_at_us bigint, PRIMARY KEY ((stream_id), group_name))",
    "CREATE TABLE IF NOT EXISTS {ks}.{t}_pending (stream_id text, group_name text, position bigint,"
    " consumer text, lease_until_us bigint, deliveries int, delivered_at_us bigint, acked boolean,"
    " expires_at_us bigint, PRIMARY KEY ((stream_id, group_name), position)) WITH gc_grace_seconds = 10800",
    "CREATE TABLE IF NOT EXISTS {ks}.{t}_spill (node text, spill_id bigint, seq int, stream_id text,"
    " capacity int, message_uuid text, payload blob, timestamp_us bigint,"
    " PRIMARY KEY ((node), spill_id, seq))",
)
GROUP_STATEMENTS = {
    "group_create": "INSERT INTO {ks}.{t}_groups (stream_id, group_name, delivered_through, active_at_us)"
    " VALUES (?, ?, 0, ?) IF NOT EXISTS",
    "group_touch": "UPDATE {ks}.{t}_groups SET active_at_us = ? WHERE stream_id = ? AND group_name = ?",
    "group_get": "SELECT delivered_through FROM {ks}.{t}_groups WHERE stream_id = ? AND group_name = ?",
    "group_advance": "UPDATE {ks}.{t}_groups SET delivered_through = ? WHERE stream_id = ? AND group_name = ?"
    " IF delivered_through < ?",
    "group_list": "SELECT group_name, delivered_through, active_at_us FROM {ks}.{t}_groups WHERE stream_id = ?",
    "group_delete": "DELETE FROM {ks}.{t}_groups WHERE stream_id = ? AND group_name = ? IF EXISTS",
    "group_idle": "SELECT stream_id, group_name FROM {ks}.{t}_groups WHERE active_at_us < ? LIMIT ? ALLOW FILTERING",
    "pending_all": "SELECT position, lease_until_us, deliveries, delivered_at_us, acked, expires_at_us"
    " FROM {ks}.{t}_pending WHERE stream_id = ? AND group_name = ?",
    "pending_at": "SELECT position, deliveries, acked, expires_at_us FROM {ks}.{t}_pending"
    " WHERE stream_id = ? AND group_name = ? AND position IN ?",
    "pending_new": "INSERT INTO {ks}.{t}_pending (stream_id, group_name, position, consumer, lease_until_us,"
    " deliveries, delivered_at_us, acked, expires_at_us) VALUES (?, ?, ?, ?, ?, 1, ?, false, ?)"
    " IF NOT EXISTS USING TTL ?",
    "pending_relet": "UPDATE {ks}.{t}_pending USING TTL ? SET consumer = ?, lease_until_us = ?, deliveries = ?"
    " WHERE stream_id = ? AND group_name = ? AND position = ?"
    " IF lease_until_us = ? AND deliveries = ? AND acked = false",
    "pending_drop": "DELETE FROM {ks}.{t}_pending WHERE stream_id = ? AND group_name = ? AND position = ?"
    " IF lease_until_us = ? AND deliveries = ?",
    # the acknowledged row lives on as the record of delivery, as long as its message
    "pending_ack": "UPDATE {ks}.{t}_pending USING TTL ? SET acked = true"
    " WHERE stream_id = ? AND group_name = ? AND position = ? IF acked = false AND deliveries = ?",
    "pending_nack": "UPDATE {ks}.{t}_pending USING TTL ? SET lease_until_us = ?"
    " WHERE stream_id = ? AND group_name = ? AND position = ? IF acked = false AND deliveries = ?",
    "pending_clear": "DELETE FROM {ks}.{t}_pending WHERE stream_id = ? AND group_name = ?",
    "messages_at": "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {ks}.{t}"
    " WHERE stream_id = ? AND position IN ?",
    "lag": "SELECT COUNT(*) AS n FROM {ks}.{t} WHERE stream_id = ? AND position > ? AND expires_at_us > ?"
    " ALLOW FILTERING",
    "spill_add": "INSERT INTO {ks}.{t}_spill (node, spill_id, seq, stream_id, capacity, message_uuid, payload,"
    " timestamp_us) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "spill_read": "SELECT spill_id, seq, stream_id, capacity, message_uuid, payload, timestamp_us"
    " FROM {ks}.{t}_spill WHERE node = ?",
    "spill_delete": "DELETE FROM {ks}.{t}_spill WHERE node = ? AND spill_id <= ?",
}

class Rows:
    """Every row a statement returned (all pages), as dicts; for an LWT,
    whether it applied (else the row holds the current values)."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.current_rows = rows

    @property
    def was_applied(self) -> bool:
        return bool(self.current_rows and self.current_rows[0].get("[applied]", False))

    def one(self) -> dict[str, Any] | None:
        return self.current_rows[0] if self.current_rows else None


Run = Callable[[str, Sequence[Any]], Awaitable[Rows]]


def claimable(rows: Sequence[dict[str, Any]], now_us: int, limit: int) -> list[dict[str, Any]]:
    """Pending rows whose lease ended and that are not acknowledged, oldest
    position first, at most ``limit``."""
    expired = [r for r in rows if not r["acked"] and r["lease_until_us"] <= now_us]
    return sorted(expired, key=lambda r: r["position"])[:limit]


def pending_summary(rows: Sequence[dict[str, Any]]) -> tuple[int, int | None, int | None]:
    """Of a group's pending rows: how many are unacknowledged, the oldest
    first-delivery time and the earliest lease end among them."""
    live = [r for r in rows if not r["acked"]]
    if not live:
        return 0, None, None
    return len(live), min(r["delivered_at_us"] for r in live), min(r["lease_until_us"] for r in live)


def spilled_streams(rows: Sequence[dict[str, Any]]) -> list[SpilledStream]:
    """Spill rows (clustering order: spill id, sequence) as streams."""
    out: list[SpilledStream] = []
    for row in rows:
        if not out or out[-1].stream_id != row["stream_id"] or out[-1].spill_id != row["spill_id"]:
            out.append(SpilledStream(row["stream_id"], row["capacity"], [], row["spill_id"]))
        out[-1].messages.append(SpilledMessage(row["message_uuid"], row["payload"] or b"", row["timestamp_us"]))
    return out


class CassandraGroups:
    """Group and spill operations over the store's prepared statements.

    Args:
        run: executes a prepared statement by name, every page (the store's bridge).
        read: the store's unguarded ``read_after``.
        ttl: seconds a row for a message expiring at a time should live.
    """

    def __init__(self, run: Run, read: Callable[..., Awaitable[list[StoredMessage]]], ttl: Callable[[int, int], int]):
        self._run = run
        self._read = read
        self._ttl = ttl

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        key = (stream_id, group)
        lease_end = now_us + lease_us
        created = await self._run("group_create", (*key, now_us))
        current = created.one()
        through = 0 if created.was_applied or current is None else int(current["delivered_through"])
        if not created.was_applied:
            await self._run("group_touch", (now_us, *key))
        rows = list((await self._run("pending_all", key)).current_rows)
        expired = claimable(rows, now_us, limit)
        alive = await self._at(stream_id, [r["position"] for r in expired], now_us)
        messages: list[Leased] = []
        dead: list[Leased] = []
        for row in expired:
            same = (row["lease_until_us"], row["deliveries"])
            message = alive.get(row["position"])
            if message is None:
                await self._run("pending_drop", (*key, row["position"], *same))
                continue
            is_dead = bool(max_deliveries) and row["deliveries"] >= max_deliveries
            delivery = row["deliveries"] if is_dead else row["deliveries"] + 1
            ttl = self._ttl(message.expires_at_us, now_us)
            won = await self._run("pending_relet", (ttl, consumer, lease_end, delivery, *key, row["position"], *same))
            if won.was_applied:
                (dead if is_dead else messages).append(Leased(message, delivery))
        if len(messages) < limit:
            fresh = await self._read(stream_id, through, now_us, limit - len(messages))
            for m in fresh:
                ttl = self._ttl(m.expires_at_us, now_us)
                params = (*key, m.position, consumer, lease_end, now_us, m.expires_at_us, ttl)
                if (await self._run("pending_new", params)).was_applied:
                    messages.append(Leased(m, 1))
            if fresh:
                await self._run("group_advance", (fresh[-1].position, *key, fresh[-1].position))
        _, _, next_end = pending_summary((await self._run("pending_all", key)).current_rows)
        return Claim(messages, dead, next_end)

    async def _at(self, stream_id: str, positions: list[int], now_us: int) -> dict[int, StoredMessage]:
        if not positions:
            return {}
        rows = (await self._run("messages_at", (stream_id, positions))).current_rows
        return {
            r["position"]: StoredMessage(
                stream_id, r["position"], r["message_uuid"], r["payload"] or b"", r["timestamp_us"], r["expires_at_us"]
            )
            for r in rows
            if r["expires_at_us"] > now_us
        }

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        return await self._settle(stream_id, group, refs, now_us, "pending_ack", ())

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        return await self._settle(stream_id, group, refs, now_us, "pending_nack", (now_us + delay_us,))

    async def _settle(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, name: str, values: tuple[Any, ...]
    ) -> list[bool]:
        """Read the named entries (delivery count, expiry for the TTL), then
        change each with an LWT that applies only if it is still that
        unacknowledged delivery."""
        key = (stream_id, group)
        if not refs or not (await self._run("group_get", key)).current_rows:
            return [False] * len(refs)
        await self._run("group_touch", (now_us, *key))
        positions = sorted({ref.position for ref in refs})
        rows = {r["position"]: r for r in (await self._run("pending_at", (*key, positions))).current_rows}
        out = []
        for ref in refs:
            row = rows.get(ref.position)
            if row is None or row["acked"] or ref.delivery not in (None, row["deliveries"]):
                out.append(False)
                continue
            del rows[ref.position]  # one answer per entry
            ttl = self._ttl(row["expires_at_us"], now_us)
            result = await self._run(name, (ttl, *values, *key, ref.position, row["deliveries"]))
            out.append(bool(result.was_applied))
        return out

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        out = []
        for row in sorted((await self._run("group_list", (stream_id,))).current_rows, key=lambda r: r["group_name"]):
            group, through = row["group_name"], int(row["delivered_through"])
            counted = (await self._run("lag", (stream_id, through, now_us))).one()
            lag = 0 if counted is None else counted["n"]
            pending, oldest, _ = pending_summary((await self._run("pending_all", (stream_id, group))).current_rows)
            out.append(GroupInfo(group, through, int(lag), pending, oldest, int(row["active_at_us"])))
        return out

    async def delete_group(self, stream_id: str, group: str) -> bool:
        await self._run("pending_clear", (stream_id, group))
        return bool((await self._run("group_delete", (stream_id, group))).was_applied)

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        idle = (await self._run("group_idle", (idle_before_us, limit))).current_rows
        deleted = 0
        for row in idle:
            deleted += await self.delete_group(row["stream_id"], row["group_name"])
        return deleted

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        seq = 0
        for stream in streams:
            for m in stream.messages:
                params = (node, spill_id, seq, stream.stream_id, stream.capacity, m.uuid, m.payload, m.timestamp_us)
                await self._run("spill_add", params)
                seq += 1
        return seq

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        return spilled_streams((await self._run("spill_read", (node,))).current_rows)

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        rows = (await self._run("spill_read", (node,))).current_rows
        count = sum(1 for r in rows if r["spill_id"] <= through_spill_id)
        if count:
            await self._run("spill_delete", (node, through_spill_id))
        return count
