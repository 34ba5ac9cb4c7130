"""The Cassandra backend without a server: its pure helpers, the statements
it prepares, and the decisions its appends and group operations take from
scripted answers (the statements a real cluster would get, with their
parameters counted against the statement's markers).

These run everywhere; the contract suite runs the same backend against a
real server only with ``IPUBSUB_TEST_CASSANDRA`` (it never has on our
machines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from ipubsub.config import CassandraConfig
from ipubsub.storage.base import LeaseRef, NewMessage, SpilledMessage, SpilledStream, StoredMessage
from ipubsub.storage.cassandra import (
    _MAX_TTL_SECONDS,
    _SCHEMA,
    CassandraStore,
    statements,
    stored_messages,
    ttl_seconds,
)
from ipubsub.storage.cassandra_groups import (
    GROUP_SCHEMA,
    GROUP_STATEMENTS,
    CassandraGroups,
    Rows,
    claimable,
    pending_summary,
    spilled_streams,
)

S = 1_000_000
NOW = 1_800_000_000 * S


# -- pure helpers ----------------------------------------------------------------


def test_ttl_is_whole_seconds_rounded_up_within_cassandras_limit() -> None:
    assert ttl_seconds(NOW + 1, NOW) == 1
    assert ttl_seconds(NOW + S, NOW) == 1
    assert ttl_seconds(NOW + S + 1, NOW) == 2
    assert ttl_seconds(NOW - 5 * S, NOW) == 1  # already expired: the shortest TTL, never 0 (= forever)
    assert ttl_seconds(NOW + 100 * 365 * 86400 * S, NOW) == _MAX_TTL_SECONDS


def test_stored_messages_skip_expired_rows_and_read_null_blobs_as_empty() -> None:
    rows = [
        {"position": 1, "message_uuid": "a", "payload": None, "timestamp_us": 5, "expires_at_us": NOW + 1},
        {"position": 2, "message_uuid": "b", "payload": b"x", "timestamp_us": 5, "expires_at_us": NOW},
    ]
    assert stored_messages("s", rows, NOW) == [StoredMessage("s", 1, "a", b"", 5, NOW + 1)]


def test_claimable_takes_ended_unacknowledged_leases_oldest_first() -> None:
    rows = [
        {"position": 9, "lease_until_us": NOW, "acked": False},
        {"position": 3, "lease_until_us": NOW - 1, "acked": False},
        {"position": 1, "lease_until_us": NOW - 1, "acked": True},
        {"position": 2, "lease_until_us": NOW + 1, "acked": False},
        {"position": 7, "lease_until_us": NOW - 9, "acked": False},
    ]
    assert [r["position"] for r in claimable(rows, NOW, 10)] == [3, 7, 9]
    assert [r["position"] for r in claimable(rows, NOW, 2)] == [3, 7]


def test_pending_summary_ignores_acknowledged_rows() -> None:
    assert pending_summary([]) == (0, None, None)
    rows = [
        {"acked": True, "delivered_at_us": 1, "lease_until_us": 1},
        {"acked": False, "delivered_at_us": 30, "lease_until_us": 90},
        {"acked": False, "delivered_at_us": 20, "lease_until_us": 95},
    ]
    assert pending_summary(rows) == (2, 20, 90)


def test_spilled_rows_become_streams_in_spill_order() -> None:
    def row(spill: int, stream: str, uuid: str, capacity: int | None = 5) -> dict[str, Any]:
        return {"spill_id": spill, "stream_id": stream, "capacity": capacity, "message_uuid": uuid,
                "payload": None if uuid == "e" else uuid.encode(), "timestamp_us": 7}

    rows = [row(1, "A", "a0"), row(1, "A", "a1"), row(1, "B", "e", None), row(2, "A", "a2", 9)]
    assert spilled_streams(rows) == [
        SpilledStream("A", 5, [SpilledMessage("a0", b"a0", 7), SpilledMessage("a1", b"a1", 7)], 1),
        SpilledStream("B", None, [SpilledMessage("e", b"", 7)], 1),
        SpilledStream("A", 9, [SpilledMessage("a2", b"a2", 7)], 2),
    ]


def test_rows_tell_whether_a_lightweight_transaction_applied() -> None:
    assert Rows([{"[applied]": True}]).was_applied
    assert not Rows([{"[applied]": False, "deliveries": 3}]).was_applied
    assert not Rows([]).was_applied and Rows([]).one() is None


# -- statements --------------------------------------------------------------------


def test_every_statement_is_complete_once_names_are_filled() -> None:
    names = {"ks": "ks1", "t": "msgs", "rf": 3}
    for cql in (*_SCHEMA, *GROUP_SCHEMA, *statements().values()):
        text = cql.format(**names)
        if "replication" not in text:  # the keyspace's replication map is CQL braces
            assert "{" not in text and "}" not in text, text
        assert "ks1." in text or "KEYSPACE" in text or "system.local" in text, text
    assert "ks1.msgs_pending" in statements()["pending_new"].format(**names)
    # decisions are conditional writes: each names its condition
    for name in ("group_create", "group_advance", "group_delete", "pending_new", "pending_relet",
                 "pending_drop", "pending_ack", "pending_nack", "claim", "counter_create", "counter_cas"):
        assert " IF " in statements()[name], name


def test_group_tables_expire_with_their_messages_and_spills_are_per_node() -> None:
    pending, spill = GROUP_SCHEMA[1], GROUP_SCHEMA[2]
    assert "PRIMARY KEY ((stream_id, group_name), position)" in pending
    assert "PRIMARY KEY ((node), spill_id, seq)" in spill
    assert "USING TTL" in GROUP_STATEMENTS["pending_new"] and "USING TTL" in GROUP_STATEMENTS["pending_ack"]


def test_store_names_are_checked_before_they_reach_cql() -> None:
    from ipubsub.config import ConfigError

    with pytest.raises(ConfigError):
        CassandraStore(CassandraConfig(keyspace="bad-name"))
    with pytest.raises(ConfigError):
        CassandraStore(CassandraConfig(table="x" * 41))


# -- decisions from scripted answers ----------------------------------------------


class Script:
    """Answers statements by name, in order; checks every call's arity."""

    def __init__(self, **answers: list[Rows]) -> None:
        self.answers = answers
        self.calls: list[tuple[str, tuple[Any, ...]]] = []

    async def run(self, name: str, params: Sequence[Any], *_: Any, **__: Any) -> Rows:
        cql = statements()[name]
        assert cql.count("?") == len(params), f"{name}: {len(params)} values for {cql.count('?')} markers"
        self.calls.append((name, tuple(params)))
        queue = self.answers.get(name)
        return queue.pop(0) if queue else Rows([])

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]


def message(position: int, expires: int = NOW + 3600 * S) -> StoredMessage:
    return StoredMessage("s", position, f"m{position}", b"{}", NOW - S, expires)


def applied(value: bool = True, **row: Any) -> Rows:
    return Rows([{"[applied]": value, **row}])


async def test_a_first_claim_creates_the_group_and_keeps_only_the_inserts_it_won() -> None:
    script = Script(group_create=[applied()], pending_new=[applied(), applied(False), applied()])
    fresh = [message(1), message(2), message(3)]

    async def read(stream: str, after: int, now: int, limit: int) -> list[StoredMessage]:
        assert (stream, after, now, limit) == ("s", 0, NOW, 5)
        return fresh

    groups = CassandraGroups(script.run, read, ttl_seconds)
    claim = await groups.claim("s", "g", "c", 5, 30 * S, NOW, 0)
    assert [(m.message.position, m.delivery) for m in claim.messages] == [(1, 1), (3, 1)]  # 2 went to another
    assert script.names() == ["group_create", "pending_all", "pending_new", "pending_new", "pending_new",
                              "group_advance", "pending_all"]
    assert script.calls[-2][1] == (3, "s", "g", 3)  # delivered_through only rises
    assert script.calls[2][1][-1] == 3600  # the pending row lives as long as its message


async def test_expired_leases_are_relet_dead_or_dropped_by_conditional_writes() -> None:
    pending = [
        {"position": 3, "lease_until_us": NOW - 1, "deliveries": 1, "acked": False, "delivered_at_us": 1},
        {"position": 4, "lease_until_us": NOW - 1, "deliveries": 2, "acked": False, "delivered_at_us": 1},
        {"position": 5, "lease_until_us": NOW - 1, "deliveries": 1, "acked": False, "delivered_at_us": 1},
        {"position": 6, "lease_until_us": NOW - 1, "deliveries": 1, "acked": False, "delivered_at_us": 1},
        {"position": 8, "lease_until_us": NOW + 9, "deliveries": 1, "acked": False, "delivered_at_us": 1},
    ]
    alive = [message(3), message(4), message(6)]  # 5 expired
    script = Script(
        group_create=[applied(False, delivered_through=8)],
        pending_all=[Rows(pending)],
        messages_at=[Rows([{"position": m.position, "message_uuid": m.uuid, "payload": m.payload,
                            "timestamp_us": m.timestamp_us, "expires_at_us": m.expires_at_us} for m in alive])],
        pending_relet=[applied(), applied(), applied(False)],  # 6: another claimant was first
    )

    async def read(stream: str, after: int, now: int, limit: int) -> list[StoredMessage]:
        assert after == 8
        return []

    claim = await CassandraGroups(script.run, read, ttl_seconds).claim("s", "g", "c", 4, 30 * S, NOW, 2)
    assert [(m.message.position, m.delivery) for m in claim.messages] == [(3, 2)]
    assert [(m.message.position, m.delivery) for m in claim.dead] == [(4, 2)]
    assert script.names() == ["group_create", "group_touch", "pending_all", "messages_at", "pending_relet",
                              "pending_relet", "pending_drop", "pending_relet", "pending_all"]
    assert [c[1] for c in script.calls if c[0] == "pending_drop"] == [("s", "g", 5, NOW - 1, 1)]
    relets = [c[1] for c in script.calls if c[0] == "pending_relet"]
    assert relets[0][1:4] == ("c", NOW + 30 * S, 2) and relets[0][-2:] == (NOW - 1, 1)
    assert relets[1][3] == 2  # a dead entry's delivery count does not grow


async def test_ack_checks_the_receipt_before_its_conditional_write() -> None:
    async def read(*_: Any) -> list[StoredMessage]:
        raise AssertionError("an ack reads no messages")

    unknown = Script(group_get=[Rows([])])
    assert await CassandraGroups(unknown.run, read, ttl_seconds).ack("s", "g", [LeaseRef(3)], NOW) == [False]
    assert unknown.names() == ["group_get"]

    rows = [{"position": 3, "deliveries": 2, "acked": False, "expires_at_us": NOW + 10 * S},
            {"position": 4, "deliveries": 1, "acked": True, "expires_at_us": NOW + 10 * S}]
    script = Script(group_get=[Rows([{"delivered_through": 9}])], pending_at=[Rows(rows)], pending_ack=[applied()])
    refs = [LeaseRef(3, 1), LeaseRef(3, 2), LeaseRef(3), LeaseRef(4), LeaseRef(7)]
    assert await CassandraGroups(script.run, read, ttl_seconds).ack("s", "g", refs, NOW) == [
        False, True, False, False, False,
    ]
    assert [c for c in script.calls if c[0] == "pending_ack"] == [("pending_ack", (10, "s", "g", 3, 2))]


async def test_spill_writes_every_message_and_delete_counts_what_it_removes() -> None:
    async def read(*_: Any) -> list[StoredMessage]:
        return []

    script = Script(spill_read=[Rows([{"spill_id": 1}, {"spill_id": 1}, {"spill_id": 2}]), Rows([])])
    groups = CassandraGroups(script.run, read, ttl_seconds)
    streams = [SpilledStream("A", 3, [SpilledMessage("a", b"1", 5), SpilledMessage("b", b"2", 5)]),
               SpilledStream("B", None, [SpilledMessage("c", b"3", 5)])]
    assert await groups.spill("n", 7, streams) == 3
    assert [c[1][:3] for c in script.calls] == [("n", 7, 0), ("n", 7, 1), ("n", 7, 2)]
    assert await groups.delete_spilled("n", 1) == 2
    assert await groups.delete_spilled("n", 1) == 0
    assert script.names()[-3:] == ["spill_read", "spill_delete", "spill_read"]


async def test_append_reserves_positions_claims_uuids_and_repairs_a_half_written_duplicate() -> None:
    store = CassandraStore(CassandraConfig())
    script = Script(
        counter_create=[applied(False, last_position=10)],  # the stream exists: compare-and-set from 10
        counter_cas=[applied()],
        claim=[applied(), applied(False, position=4, timestamp_us=1, expires_at_us=NOW + 60 * S)],
        exists=[Rows([])],  # the claim's message was never written: repair it
    )
    store._run = script.run  # type: ignore[method-assign]
    batch = [NewMessage("s", "new", b"n", NOW, NOW + 60 * S), NewMessage("s", "dup", b"d", NOW, NOW + 60 * S)]
    first, second = await store.append(batch)
    assert (first.position, first.duplicate) == (11, False)
    assert (second.position, second.timestamp_us, second.duplicate) == (4, 1, True)
    assert script.names() == ["counter_create", "counter_cas", "claim", "claim", "insert", "exists", "insert"]
    assert script.calls[1][1] == (12, "s", 10)
    assert [c[1][1] for c in script.calls if c[0] == "insert"] == [11, 4]  # positions written in order
