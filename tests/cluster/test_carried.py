"""What a stream carries on a hand-off besides its buffer (cluster/carried.py):
leases with their receipts, delivery numbers and the rest of their lease,
the history with its epoch and offsets, and the count of ended deliveries of
buffered messages — through the wire encoding, into another engine."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.calls import AckCall, NackCall
from ipubsub.cluster.carried import pack_stream, release_history_readers, restore_stream, unpack_stream
from ipubsub.cluster.messages import Handoff, decode, encode
from ipubsub.config import LeasesConfig
from ipubsub.engine import Engine, HistorySpec, Leases, ManualClock, Message
from ipubsub.engine.history import Position
from ipubsub.errors import StreamReleased
from ipubsub.leasing import AtLeastOnce

pytestmark = pytest.mark.timeout(20)

SPEC = HistorySpec(100, 600)


def node() -> tuple[Engine, Leases]:
    engine = Engine(clock=ManualClock(), idle_seconds=60)
    return engine, Leases(engine, lambda stream_id, msg: None)


def send(engine: Engine, n: int) -> None:
    now = ManualClock().time_us()
    engine.send_nowait("s", Message(f"u{n}", b'{"n":%d}' % n, now + n), 50, SPEC)


def over_the_wire(handed: object) -> Handoff:
    return decode(encode(Handoff("c", "b1", "old", [handed])), Handoff)  # type: ignore[list-item]


async def test_a_stream_moves_with_its_leases_history_and_delivery_counts() -> None:
    old, old_leases = node()
    for n in range(1, 6):
        send(old, n)
    first = old_leases.grant("s", await old.receive("s", 0), 30, 5)
    second = old_leases.grant("s", await old.receive("s", 0), 30, 5)
    assert old_leases.nack("s", second.receipt)  # back in the buffer, one delivery ended
    before = await old.read_history("s", None, 0, 100)
    packed = pack_stream(old, old_leases, "s", "moved")
    assert packed is not None
    assert old.stream_ids() == [] and old_leases.held("s") == 0 and old.history_stats.histories == 0

    new, new_leases = node()
    batch = over_the_wire(packed.handed)
    assert unpack_stream(new, new_leases, batch.streams[0]) == 5  # 4 buffered + 1 leased
    assert [(m.uuid, m.deliveries) for m in new.buffered("s")] == [("u2", 1), ("u3", 0), ("u4", 0), ("u5", 0)]
    assert new_leases.holds("s", first.receipt) and new_leases.ack("s", first.receipt)
    after = await new.read_history("s", Position(before.epoch or "", 2), 0, 100)
    assert after.recovered is True and after.epoch == before.epoch
    assert [e.message.uuid for e in after.entries] == ["u3", "u4", "u5"]
    assert [e.offset for e in after.entries] == [e.offset for e in before.entries[2:]]
    again = new_leases.grant("s", await new.receive("s", 0), 30, 5)
    assert again.delivery == 2  # u2: its first delivery ended by the nack on the old owner


async def test_the_rest_of_a_lease_runs_on_the_new_owner() -> None:
    old, old_leases = node()
    send(old, 1)
    lease = old_leases.grant("s", await old.receive("s", 0), 0.2, 0)
    packed = pack_stream(old, old_leases, "s", "moved")
    assert packed is not None and 0 < packed.handed.leases[0].remainingSeconds <= 0.2
    new, new_leases = node()
    unpack_stream(new, new_leases, over_the_wire(packed.handed).streams[0])
    got = await asyncio.wait_for(new.receive("s", 5), 5)  # the lease ends there: the message comes back
    assert got.uuid == "u1" and got.deliveries == 1 and new_leases.stats.expired_total == 1
    assert not new_leases.holds("s", lease.receipt)


async def test_a_hand_off_that_failed_puts_everything_back() -> None:
    engine, leases = node()
    for n in range(1, 4):
        send(engine, n)
    lease = leases.grant("s", await engine.receive("s", 0), 30, 0)
    top = await engine.read_history("s", None, 0, 10)
    reader = asyncio.ensure_future(engine.read_history("s", Position(top.epoch or "", top.after), 5, 10))
    await asyncio.sleep(0)  # it waits for what comes after the top
    packed = pack_stream(engine, leases, "s", "moved")
    assert packed is not None
    restore_stream(engine, leases, packed.handed)
    release_history_readers(engine, packed, "moved")
    with pytest.raises(StreamReleased):
        await reader  # it reads again, and finds the history where it is now
    assert leases.holds("s", lease.receipt)
    assert [m.uuid for m in engine.buffered("s")] == ["u2", "u3"]
    read = await engine.read_history("s", None, 0, 10)
    assert [e.message.uuid for e in read.entries] == ["u1", "u2", "u3"]


async def test_nothing_to_move_is_none_and_a_receiver_without_leases_gets_the_messages_back() -> None:
    engine, leases = node()
    assert pack_stream(engine, leases, "s", "moved") is None
    send(engine, 1)
    leases.grant("s", await engine.receive("s", 0), 30, 0)
    packed = pack_stream(engine, leases, "s", "moved")
    assert packed is not None
    plain = Engine(clock=ManualClock())
    unpack_stream(plain, None, over_the_wire(packed.handed).streams[0])
    assert [m.uuid for m in plain.buffered("s")] == ["u1"]


async def test_an_ack_during_a_ring_change_waits_for_the_lease_the_hand_off_brings() -> None:
    old, old_leases = node()
    send(old, 1)
    send(old, 2)
    first = old_leases.grant("s", await old.receive("s", 0), 30, 0)
    second = old_leases.grant("s", await old.receive("s", 0), 30, 0)
    packed = pack_stream(old, old_leases, "s", "moved")
    assert packed is not None
    new = Engine(clock=ManualClock(), idle_seconds=60)
    service = AtLeastOnce(new, LeasesConfig(), None, lambda stream_id: None)
    # the ack reaches the new owner before the hand-off batch does
    ack = asyncio.ensure_future(service.ack(AckCall("s", (first.receipt,)), None, handoff_wait=5))
    nack = asyncio.ensure_future(service.nack(NackCall("s", (second.receipt,)), None, handoff_wait=5))
    await asyncio.sleep(0.1)
    assert not ack.done()
    unpack_stream(new, service.leases, over_the_wire(packed.handed).streams[0])
    assert await asyncio.wait_for(ack, 5) == [True]
    assert await asyncio.wait_for(nack, 5) == [True]
    assert [(m.uuid, m.deliveries) for m in new.buffered("s")] == [("u2", 1)]
    # a receipt no hand-off brings is answered once the wait is over; without a wait at once
    assert await service.ack(AckCall("s", ("nothing",)), None, handoff_wait=0.2) == [False]
    assert await asyncio.wait_for(service.ack(AckCall("s", (first.receipt,)), None), 0.1) == [False]
