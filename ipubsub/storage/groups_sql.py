"""Consumer groups and spilled buffers for the three SQL backends.

Tables (next to ``{table}`` and ``{table}_streams``):

* ``{table}_groups``: one row per (stream, group): ``delivered_through``
  and ``active_at_us``;
* ``{table}_pending``: one row per leased, unacknowledged message:
  (stream, group, position) with consumer, lease end, delivery count and
  first delivery time;
* ``{table}_spill``: buffered in-memory messages of stopped nodes, keyed
  (node, spill id, sequence).

Every group operation runs in one transaction that first upserts the
group's row (taking its row lock until commit: SQLite's ``BEGIN IMMEDIATE``
serializes everything anyway), so claims, acks and nacks of one group from
any number of processes apply one after another, and each sees what the
previous one committed.  A claim is four to six statements whatever its
size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from .base import Claim, GroupInfo, Leased, LeaseRef, SpilledMessage, SpilledStream, StoredMessage

if TYPE_CHECKING:
    from .sql import SqlConnection, SqlStore

__all__ = ["SqlGroups"]


def marks(count: int) -> str:
    """``?, ?, ...`` for an ``IN`` list of ``count`` values."""
    return ", ".join("?" * count)


class SqlGroups:
    """Group and spill operations of one :class:`SqlStore` (its sessions,
    dialect and statement cache).  Statements use ``{g}`` (groups), ``{p}``
    (pending), ``{x}`` (spill) and ``{t}`` (messages)."""

    # Create the group's row or touch it: either way it stays locked until
    # commit.  MySQL overrides (no RETURNING with ON DUPLICATE KEY).
    LOCK: ClassVar[str] = (
        "INSERT INTO {g} (stream_id, group_name, delivered_through, active_at_us) VALUES (?, ?, 0, ?)"
        " ON CONFLICT (stream_id, group_name) DO UPDATE SET active_at_us = excluded.active_at_us"
        " RETURNING delivered_through"
    )
    TOUCH: ClassVar[str] = "UPDATE {g} SET active_at_us = ? WHERE stream_id = ? AND group_name = ?"
    THROUGH: ClassVar[str] = "SELECT delivered_through FROM {g} WHERE stream_id = ? AND group_name = ?"
    EXPIRED: ClassVar[str] = (
        "SELECT p.position, p.deliveries, m.message_uuid, m.payload, m.timestamp_us, m.expires_at_us"
        " FROM {p} p LEFT JOIN {t} m ON m.stream_id = p.stream_id AND m.position = p.position"
        " AND m.expires_at_us > ?"
        " WHERE p.stream_id = ? AND p.group_name = ? AND p.lease_until_us <= ? ORDER BY p.position LIMIT ?"
    )
    RELEASE: ClassVar[str] = (
        "UPDATE {p} SET consumer = ?, lease_until_us = ?, deliveries = deliveries + ?"
        " WHERE stream_id = ? AND group_name = ? AND position IN ({positions})"
    )
    DROP: ClassVar[str] = "DELETE FROM {p} WHERE stream_id = ? AND group_name = ? AND position IN ({positions})"
    NEW: ClassVar[str] = (
        "SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {t}"
        " WHERE stream_id = ? AND position > ? AND expires_at_us > ? ORDER BY position LIMIT ?"
    )
    LEASE: ClassVar[str] = (
        "INSERT INTO {p} (stream_id, group_name, position, consumer, lease_until_us, deliveries, delivered_at_us)"
        " VALUES (?, ?, ?, ?, ?, 1, ?)"
    )
    ADVANCE: ClassVar[str] = "UPDATE {g} SET delivered_through = ? WHERE stream_id = ? AND group_name = ?"
    NEXT_END: ClassVar[str] = "SELECT MIN(lease_until_us) FROM {p} WHERE stream_id = ? AND group_name = ?"
    PENDING: ClassVar[str] = (
        "SELECT position, deliveries FROM {p} WHERE stream_id = ? AND group_name = ? AND position IN ({positions})"
    )
    DELAY: ClassVar[str] = (
        "UPDATE {p} SET lease_until_us = ? WHERE stream_id = ? AND group_name = ? AND position IN ({positions})"
    )
    LIST: ClassVar[str] = (
        "SELECT g.group_name, g.delivered_through, g.active_at_us,"
        " (SELECT COUNT(*) FROM {t} m WHERE m.stream_id = g.stream_id AND m.position > g.delivered_through"
        " AND m.expires_at_us > ?),"
        " (SELECT COUNT(*) FROM {p} p WHERE p.stream_id = g.stream_id AND p.group_name = g.group_name),"
        " (SELECT MIN(p.delivered_at_us) FROM {p} p WHERE p.stream_id = g.stream_id AND p.group_name = g.group_name)"
        " FROM {g} g WHERE g.stream_id = ? ORDER BY g.group_name"
    )
    DELETE_PENDING: ClassVar[str] = "DELETE FROM {p} WHERE stream_id = ? AND group_name = ?"
    DELETE_GROUP: ClassVar[str] = "DELETE FROM {g} WHERE stream_id = ? AND group_name = ?"
    IDLE: ClassVar[str] = "SELECT stream_id, group_name FROM {g} WHERE active_at_us < ? LIMIT ?"
    SPILL: ClassVar[str] = (
        "INSERT INTO {x} (node, spill_id, seq, stream_id, capacity, message_uuid, payload, timestamp_us)"
    )
    SPILL_ROW: ClassVar[str] = "(?, ?, ?, ?, ?, ?, {blob}, ?)"
    SPILLED: ClassVar[str] = (
        "SELECT spill_id, stream_id, capacity, message_uuid, payload, timestamp_us FROM {x}"
        " WHERE node = ? ORDER BY spill_id, seq"
    )
    UNSPILL: ClassVar[str] = "DELETE FROM {x} WHERE node = ? AND spill_id <= ?"

    def __init__(self, store: SqlStore) -> None:
        self._store = store

    # -- groups --------------------------------------------------------------------

    async def claim(
        self, stream_id: str, group: str, consumer: str, limit: int, lease_us: int, now_us: int, max_deliveries: int
    ) -> Claim:
        store = self._store
        lease_end = now_us + lease_us

        async def body(conn: SqlConnection) -> Claim:
            through = await self._lock(conn, stream_id, group, now_us)
            expired = await conn.fetch(store.sql(self.EXPIRED), (now_us, stream_id, group, now_us, limit))
            messages: list[Leased] = []
            dead: list[Leased] = []
            gone: list[int] = []
            for position, deliveries, uuid, payload, timestamp_us, expires_at_us in expired:
                if uuid is None:
                    gone.append(position)
                    continue
                stored = StoredMessage(stream_id, position, store.text(uuid), bytes(payload), timestamp_us, expires_at_us)
                if max_deliveries and deliveries >= max_deliveries:
                    dead.append(Leased(stored, deliveries))
                else:
                    messages.append(Leased(stored, deliveries + 1))
            await self._in(conn, self.DROP, (stream_id, group), gone)
            for leased, added in ((dead, 0), (messages, 1)):
                positions = [m.message.position for m in leased]
                await self._in(conn, self.RELEASE, (consumer, lease_end, added, stream_id, group), positions)
            if len(messages) < limit:
                rows = await conn.fetch(store.sql(self.NEW), (stream_id, through, now_us, limit - len(messages)))
                if rows:
                    fresh = store.stored(stream_id, rows)
                    await conn.executemany(
                        store.sql(self.LEASE),
                        [(stream_id, group, m.position, consumer, lease_end, now_us) for m in fresh],
                    )
                    await conn.execute(store.sql(self.ADVANCE), (fresh[-1].position, stream_id, group))
                    messages.extend(Leased(m, 1) for m in fresh)
            (next_end,) = (await conn.fetch(store.sql(self.NEXT_END), (stream_id, group)))[0]
            return Claim(messages, dead, None if next_end is None else int(next_end))

        return await store.in_transaction("claim", body)

    async def _lock(self, conn: SqlConnection, stream_id: str, group: str, now_us: int) -> int:
        """Create or touch the group's row (locking it); its ``delivered_through``."""
        rows = await conn.fetch(self._store.sql(self.LOCK), (stream_id, group, now_us))
        return int(rows[0][0])

    async def _in(self, conn: SqlConnection, template: str, args: tuple[Any, ...], positions: list[int]) -> int:
        """Run a statement ending in ``position IN (...)``; nothing to do for no positions."""
        if not positions:
            return 0
        return await conn.execute(self._store.sql(template, positions=marks(len(positions))), (*args, *positions))

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int) -> list[bool]:
        async def body(conn: SqlConnection) -> set[int]:
            matched = await self._match(conn, stream_id, group, refs, now_us)
            await self._in(conn, self.DROP, (stream_id, group), sorted({refs[i].position for i in matched}))
            return matched

        matched = await self._store.in_transaction("ack", body)
        return [i in matched for i in range(len(refs))]

    async def nack(
        self, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int, delay_us: int
    ) -> list[bool]:
        async def body(conn: SqlConnection) -> set[int]:
            matched = await self._match(conn, stream_id, group, refs, now_us)
            positions = sorted({refs[i].position for i in matched})
            await self._in(conn, self.DELAY, (now_us + delay_us, stream_id, group), positions)
            return matched

        matched = await self._store.in_transaction("nack", body)
        return [i in matched for i in range(len(refs))]

    async def _match(
        self, conn: SqlConnection, stream_id: str, group: str, refs: Sequence[LeaseRef], now_us: int
    ) -> set[int]:
        """Touch the group (locking it; an unknown group matches nothing) and
        return the indexes of ``refs`` naming a pending entry (first of
        several refs to the same entry only)."""
        if not refs or not await conn.execute(self._store.sql(self.TOUCH), (now_us, stream_id, group)):
            return set()
        positions = sorted({ref.position for ref in refs})
        sql = self._store.sql(self.PENDING, positions=marks(len(positions)))
        pending = {int(row[0]): int(row[1]) for row in await conn.fetch(sql, (stream_id, group, *positions))}
        matched: set[int] = set()
        for index, ref in enumerate(refs):
            deliveries = pending.get(ref.position)
            if deliveries is not None and ref.delivery in (None, deliveries):
                matched.add(index)
                del pending[ref.position]
        return matched

    async def list_groups(self, stream_id: str, now_us: int) -> list[GroupInfo]:
        store = self._store
        async with store.reading("list groups") as conn:
            rows = await conn.fetch(store.sql(self.LIST), (now_us, stream_id))
        return [
            GroupInfo(
                store.text(name), int(through), int(lag), int(pending),
                None if oldest is None else int(oldest), int(active),
            )
            for name, through, active, lag, pending, oldest in rows
        ]

    async def delete_group(self, stream_id: str, group: str) -> bool:
        return await self._store.in_transaction("delete group", lambda conn: self._delete(conn, stream_id, group))

    async def _delete(self, conn: SqlConnection, stream_id: str, group: str) -> bool:
        await conn.execute(self._store.sql(self.DELETE_PENDING), (stream_id, group))
        return bool(await conn.execute(self._store.sql(self.DELETE_GROUP), (stream_id, group)))

    async def delete_idle_groups(self, idle_before_us: int, limit: int) -> int:
        store = self._store

        async def body(conn: SqlConnection) -> int:
            idle = await conn.fetch(store.sql(self.IDLE), (idle_before_us, limit))
            deleted = 0
            for stream_id, group in idle:
                deleted += await self._delete(conn, store.text(stream_id), store.text(group))
            return deleted

        return await store.in_transaction("delete idle groups", body)

    # -- spilled buffers --------------------------------------------------------------

    async def spill(self, node: str, spill_id: int, streams: Sequence[SpilledStream]) -> int:
        store = self._store
        rows: list[tuple[Any, ...]] = []
        for stream in streams:
            for m in stream.messages:
                rows.append((
                    node, spill_id, len(rows), stream.stream_id, stream.capacity,
                    m.uuid, store.blob(m.payload), m.timestamp_us,
                ))
        if not rows:
            return 0
        await store.in_transaction("spill", lambda conn: store.insert_rows(conn, self.SPILL, self.SPILL_ROW, rows))
        return len(rows)

    async def read_spilled(self, node: str) -> list[SpilledStream]:
        store = self._store
        async with store.reading("read spilled") as conn:
            rows = await conn.fetch(store.sql(self.SPILLED), (node,))
        out: list[SpilledStream] = []
        for spill_id, stream_id, capacity, uuid, payload, timestamp_us in rows:
            stream_id = store.text(stream_id)
            if not out or out[-1].stream_id != stream_id or out[-1].spill_id != spill_id:
                out.append(SpilledStream(stream_id, None if capacity is None else int(capacity), [], int(spill_id)))
            out[-1].messages.append(SpilledMessage(store.text(uuid), bytes(payload), int(timestamp_us)))
        return out

    async def delete_spilled(self, node: str, through_spill_id: int) -> int:
        sql = self._store.sql(self.UNSPILL)
        return await self._store.in_transaction("delete spilled", lambda conn: conn.execute(sql, (node, through_spill_id)))
