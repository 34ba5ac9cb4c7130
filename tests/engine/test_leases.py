"""In-memory leases (ipubsub.engine.leases): ack, nack, expiry with
redelivery counting, dead letters, give-back without counting, and leases
moving with their stream."""

from __future__ import annotations

import asyncio

import pytest

from ipubsub.engine import Engine, Leases, ManualClock, Message
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(20)


def msg(n: int) -> Message:
    return Message(f"u{n}", b'{"n":%d}' % n, 1000 + n)


class Dead(list):  # type: ignore[type-arg]
    def __call__(self, stream_id: str, message: Message) -> None:
        self.append((stream_id, message.uuid, message.deliveries))


@pytest.fixture
def engine() -> Engine:
    return Engine(clock=ManualClock(), idle_seconds=60)


@pytest.fixture
def dead() -> Dead:
    return Dead()


@pytest.fixture
def leases(engine: Engine, dead: Dead) -> Leases:
    return Leases(engine, dead, max_held=3)


async def take(engine: Engine, stream_id: str = "s") -> Message:
    return await engine.receive(stream_id, 0)


def uuids(engine: Engine, stream_id: str = "s") -> list[str]:
    return [m.uuid for m in engine.buffered(stream_id)]


async def test_a_leased_message_is_invisible_until_acknowledged_then_gone(engine: Engine, leases: Leases) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    lease = leases.grant("s", await take(engine), 30, 0)
    assert lease.delivery == 1
    assert uuids(engine) == ["u2"]
    assert leases.stats.held == 1 and leases.stats.held_bytes == msg(1).size
    assert leases.ack("s", lease.receipt)
    assert not leases.ack("s", lease.receipt)  # once
    assert uuids(engine) == ["u2"] and leases.stats.held == 0 and leases.stats.acked_total == 1


async def test_an_expired_lease_puts_the_message_back_first_with_one_more_delivery(
    engine: Engine, leases: Leases
) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    first = leases.grant("s", await take(engine), 0.05, 0)
    await wait_until(lambda: leases.stats.expired_total == 1, 5, "the lease expiring")
    assert uuids(engine) == ["u1", "u2"]
    again = leases.grant("s", await take(engine), 30, 0)
    assert again.message.uuid == "u1" and again.delivery == 2
    assert again.receipt != first.receipt
    assert not leases.ack("s", first.receipt)  # a stale receipt acknowledges nothing
    assert leases.ack("s", again.receipt)


async def test_an_expired_message_goes_to_a_waiting_receiver(engine: Engine, leases: Leases) -> None:
    engine.send_nowait("s", msg(1), 100)
    leases.grant("s", await take(engine), 0.05, 0)
    got = await engine.receive("s", 5)
    assert got.uuid == "u1" and got.deliveries == 1


async def test_a_nack_returns_the_message_at_once_and_counts_the_delivery(engine: Engine, leases: Leases) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    lease = leases.grant("s", await take(engine), 30, 0)
    assert leases.nack("s", lease.receipt)
    assert not leases.nack("s", lease.receipt)
    assert uuids(engine) == ["u1", "u2"]
    assert leases.grant("s", await take(engine), 30, 0).delivery == 2
    assert leases.stats.nacked_total == 1 and leases.stats.expired_total == 0


async def test_a_delayed_nack_returns_the_message_after_the_delay_and_may_still_be_acked(
    engine: Engine, leases: Leases
) -> None:
    engine.send_nowait("s", msg(1), 100)
    lease = leases.grant("s", await take(engine), 30, 0)
    assert leases.nack("s", lease.receipt, 0.05)
    assert uuids(engine) == []
    await wait_until(lambda: uuids(engine) == ["u1"], 5, "the nacked message coming back")
    other = leases.grant("s", await take(engine), 30, 0)
    assert leases.nack("s", other.receipt, 30)
    assert leases.ack("s", other.receipt)  # during the delay the receipt still holds
    assert leases.stats.held == 0 and uuids(engine) == []


async def test_after_max_deliveries_the_message_goes_to_the_dead_letters(
    engine: Engine, leases: Leases, dead: Dead
) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    for delivery in (1, 2):
        lease = leases.grant("s", await take(engine), 30, 3)
        assert lease.message.uuid == "u1" and lease.delivery == delivery
        leases.nack("s", lease.receipt)
    lease = leases.grant("s", await take(engine), 0.05, 3)
    assert lease.delivery == 3
    await wait_until(lambda: dead, 5, "the third delivery expiring")
    assert dead == [("s", "u1", 3)]
    assert uuids(engine) == ["u2"]
    assert leases.stats.dead_lettered_total == 1 and leases.stats.held == 0


async def test_an_unwritten_answer_gives_the_message_back_without_counting(engine: Engine, leases: Leases) -> None:
    engine.send_nowait("s", msg(1), 100)
    engine.send_nowait("s", msg(2), 100)
    lease = leases.grant("s", await take(engine), 30, 1)
    assert leases.give_back("s", lease.receipt)
    assert not leases.ack("s", lease.receipt)
    assert uuids(engine) == ["u1", "u2"]
    again = leases.grant("s", await take(engine), 30, 1)
    assert again.delivery == 1  # the lost answer was not a delivery
    assert leases.stats.given_back_total == 1


async def test_a_receipt_belongs_to_its_stream(engine: Engine, leases: Leases) -> None:
    engine.send_nowait("s", msg(1), 100)
    lease = leases.grant("s", await take(engine), 30, 0)
    assert not leases.ack("other", lease.receipt)
    assert not leases.nack("other", lease.receipt)
    assert not leases.ack("s", "no-such-receipt")
    assert leases.ack("s", lease.receipt)


async def test_returned_messages_keep_the_order_they_were_first_taken_in(engine: Engine, leases: Leases) -> None:
    for n in range(1, 5):
        engine.send_nowait("s", msg(n), 100)
    held = [leases.grant("s", await take(engine), 30, 0) for _ in range(3)]
    leases.nack("s", held[2].receipt)
    leases.nack("s", held[0].receipt)
    leases.give_back("s", held[1].receipt)
    assert uuids(engine) == ["u1", "u2", "u3", "u4"]


async def test_a_stream_evicted_while_its_messages_are_leased_comes_back_with_its_size(dead: Dead) -> None:
    clock = ManualClock()
    engine = Engine(clock=clock, idle_seconds=1)
    leases = Leases(engine, dead)
    engine.send_nowait("s", msg(1), 7)
    lease = leases.grant("s", await take(engine), 30, 0)
    for _ in range(3):
        clock.advance(1)
        engine.sweep()
    assert "s" not in engine
    leases.nack("s", lease.receipt)
    assert engine.capacity("s") == 7 and uuids(engine) == ["u1"]


async def test_room_is_bounded_by_max_held(engine: Engine, leases: Leases) -> None:
    for n in range(3):
        engine.send_nowait("s", msg(n), 100)
        leases.grant("s", await take(engine), 30, 0)
    assert not leases.has_room()
    assert leases.has_room(0)


async def test_leases_move_with_their_stream_and_keep_their_receipts(dead: Dead) -> None:
    old, new = Engine(clock=ManualClock()), Engine(clock=ManualClock())
    old_leases, new_leases = Leases(old, dead), Leases(new, dead)
    for n in range(1, 4):
        old.send_nowait("s", msg(n), 9)
    first = old_leases.grant("s", await take(old), 30, 5)
    second = old_leases.grant("s", await take(old), 0.05, 5)
    moved = old_leases.detach("s")
    assert [h.receipt for h in moved] == [first.receipt, second.receipt]
    assert old_leases.stats.held == 0 and old_leases.stream_ids() == []
    assert 29 < moved[0].remaining_seconds <= 30
    capacity, buffered = old.detach("s", "moved") or (None, [])
    new.attach("s", capacity, buffered)
    assert new_leases.attach("s", moved, capacity) == 2
    assert new_leases.attach("s", moved, capacity) == 0  # a resent batch applies once
    assert new_leases.ack("s", first.receipt)
    await wait_until(lambda: new_leases.stats.expired_total == 1, 5, "the moved lease expiring on its new owner")
    assert uuids(new) == ["u2", "u3"]
    assert new.buffered("s")[0].deliveries == 1
    await asyncio.sleep(0.1)
    assert old_leases.stats.expired_total == 0  # its timer went with it


async def test_return_all_gives_every_leased_message_back_in_order(engine: Engine, leases: Leases) -> None:
    for n in range(1, 4):
        engine.send_nowait("s", msg(n), 100)
    engine.send_nowait("t", msg(9), 100)
    leases.grant("s", await take(engine), 30, 0)
    leases.grant("s", await take(engine), 30, 0)
    leases.grant("t", await take(engine, "t"), 30, 0)
    assert leases.return_all() == 3
    assert uuids(engine) == ["u1", "u2", "u3"] and uuids(engine, "t") == ["u9"]
    assert leases.stats.held == 0
