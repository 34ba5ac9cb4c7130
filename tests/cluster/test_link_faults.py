"""The link under faults, over real sockets on 127.0.0.1: connections that
drop mid-call, a peer that restarts, peers that stop reading or go silent."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from ipubsub.cluster.link import CallRefused, LinkBusy, LinkDown, LinkLimits
from tests.cluster.link_support import Big, Echo, LinkRig, Park
from tests.support.wait import wait_until


@pytest.fixture
async def rig() -> AsyncIterator[LinkRig]:
    rig = await LinkRig().start()
    yield rig
    await rig.close()


def server_side(rig: LinkRig):  # type: ignore[no-untyped-def]
    assert len(rig.server.connections) == 1
    return next(iter(rig.server.connections))


async def test_a_dropped_link_fails_calls_in_flight_as_maybe_delivered(rig: LinkRig) -> None:
    client = rig.client()
    calls = [await client.open(Park(i)) for i in range(20)]
    await wait_until(lambda: len(rig.parked) == 20, what="20 parked calls")
    server_side(rig).abort("test: the link drops")
    for call in calls:
        with pytest.raises(LinkDown) as caught:
            await asyncio.wait_for(call.future, 5)
        assert caught.value.may_have_reached  # written: the peer may have acted on it
    # The owner side released every parked call when its link dropped.
    await wait_until(lambda: sorted(rig.cancelled) == list(range(20)), what="parked calls cancelled on the owner")
    assert sorted(rig.undone) == list(range(20))  # their answers could not be written: given back
    assert (await client.call(Echo(1), timeout=5)).meta.n == 1  # a new connection
    assert client.connects_total == 2


async def test_a_call_never_written_before_the_drop_surely_did_not_reach_the_peer(rig: LinkRig) -> None:
    client = rig.client()
    await client.call(Echo(0))
    conn = client._conn
    assert conn is not None and conn.transport is not None
    call = await client.open(Echo(1))  # queued for this tick's write ...
    conn.transport.abort()  # ... and the link drops before it
    with pytest.raises(LinkDown) as caught:
        await asyncio.wait_for(call.future, 5)
    assert not caught.value.may_have_reached
    assert rig.applied == [0]


async def test_an_answer_that_cannot_be_written_is_undone_on_the_owner(rig: LinkRig) -> None:
    client = rig.client()
    call = await client.open(Park(5))
    await wait_until(lambda: 5 in rig.parked, what="the call parked")
    conn = server_side(rig)
    assert rig.answer(5, b"message")  # queued for this tick's write ...
    assert conn.transport is not None
    conn.transport.abort()  # ... and the link drops first
    await wait_until(lambda: rig.undone == [5], what="the answer given back")
    with pytest.raises(LinkDown):
        await asyncio.wait_for(call.future, 5)


async def test_a_restarted_peer_is_reached_again_on_a_new_connection(rig: LinkRig) -> None:
    client = rig.client()
    await client.call(Echo(1))
    parked = await client.open(Park(1))
    await wait_until(lambda: 1 in rig.parked, what="the call parked")
    await rig.restart(incarnation=2)
    with pytest.raises(LinkDown):
        await asyncio.wait_for(parked.future, 5)
    reply = await asyncio.wait_for(client.call(Echo(2)), 5)
    assert reply.meta.n == 2
    assert client._conn is not None and client._conn.peer_incarnation == 2
    assert client.connects_total == 2


async def test_a_peer_that_is_down_fails_calls_fast_and_is_retried_with_backoff(rig: LinkRig) -> None:
    client = rig.client()
    await client.call(Echo(1))
    port = int(rig.address.rsplit(":", 1)[1])
    await rig.server.close()
    errors = []
    for _ in range(3):
        with pytest.raises(LinkDown) as caught:
            await asyncio.wait_for(client.call(Echo(2)), 5)
        errors.append(caught.value)
    assert all(not e.may_have_reached for e in errors)
    assert "next attempt in" in errors[-1].reason  # backing off, not hammering
    await rig.restart(incarnation=3)
    assert int(rig.address.rsplit(":", 1)[1]) == port

    async def reached() -> bool:
        try:
            return (await client.call(Echo(3))).meta.n == 3
        except LinkDown:
            return False

    for _ in range(100):
        if await reached():
            break
        await asyncio.sleep(0.05)
    assert client.connects_total == 2


async def test_the_server_closing_answers_calls_in_flight_and_refuses_new_ones(rig: LinkRig) -> None:
    client = rig.client()
    parked = await client.open(Park(1))
    await wait_until(lambda: 1 in rig.parked, what="the call parked")
    closing = asyncio.ensure_future(rig.server.close(grace=2.0))
    await wait_until(lambda: rig.server.closing, what="closing")
    rig.answer(1, b"last")  # answered within the grace period
    assert (await asyncio.wait_for(parked.future, 5)).payload == b"last"
    await asyncio.wait_for(closing, 5)
    with pytest.raises((LinkDown, CallRefused)) as caught:
        await asyncio.wait_for(client.call(Echo(2)), 5)
    assert not caught.value.may_have_reached


async def test_a_peer_that_stops_reading_makes_calls_refused_not_buffered_without_bound(rig: LinkRig) -> None:
    limit = 4 * 1024 * 1024
    client = rig.client(limits=LinkLimits(max_buffered_bytes=limit, write_high_water=256 * 1024))
    await client.call(Echo(0))
    conn = server_side(rig)
    assert conn.transport is not None
    conn.transport.pause_reading()  # a stuck peer
    chunk = b"p" * (256 * 1024)
    sent = []
    with pytest.raises(LinkBusy) as caught:
        for i in range(1, 1000):  # far more than the kernel buffers and the limit together
            sent.append(await client.open(Echo(i), chunk))
            await asyncio.sleep(0)
            assert client.buffered_bytes <= limit + len(chunk)
    assert not caught.value.may_have_reached and "wait for the peer to read" in str(caught.value)
    assert len(sent) < 999
    conn.transport.resume_reading()  # the peer recovers: everything accepted gets its answer
    replies = await asyncio.wait_for(asyncio.gather(*(c.future for c in sent)), 20)
    assert [r.meta.n for r in replies] == list(range(1, len(sent) + 1))
    assert (await client.call(Echo(-1), chunk)).meta.n == -1


async def test_a_caller_that_does_not_read_its_answers_stops_the_peer_reading_its_calls(rig: LinkRig) -> None:
    client = rig.client(limits=LinkLimits(max_buffered_bytes=1 << 30, max_in_flight=100_000))
    await client.call(Echo(0))
    conn = client._conn
    assert conn is not None and conn.transport is not None
    conn.transport.pause_reading()  # we read no answers
    owner = server_side(rig)
    calls = []
    for _ in range(400):  # 400 answers of 1 MiB each would be 400 MiB on the owner
        calls.append(await client.open(Big(1024 * 1024)))
        await asyncio.sleep(0)
        if owner.writing_paused and len(calls) > 20:
            break
    await wait_until(lambda: owner.writing_paused, what="the owner's writes paused")
    handled = rig.server.calls_total
    for _ in range(50):
        calls.append(await client.open(Echo(1)))
        await asyncio.sleep(0.001)
    # The owner stopped reading calls: the few it still handled were already read.
    assert rig.server.calls_total - handled < 50
    assert owner.buffered_bytes < 64 * 1024 * 1024
    conn.transport.resume_reading()
    await asyncio.wait_for(asyncio.gather(*(c.future for c in calls)), 30)


async def test_a_silent_peer_is_dropped_by_the_keepalive() -> None:
    limits = LinkLimits(ping_interval=0.05, silence_timeout=0.4)
    rig = await LinkRig(limits).start()
    try:
        client = rig.client()
        await client.call(Echo(0))
        parked = await client.open(Park(1))
        await wait_until(lambda: 1 in rig.parked, what="the call parked")
        owner = server_side(rig)
        assert owner.transport is not None
        owner.transport.pause_reading()  # hears no pings: stops answering them
        with pytest.raises(LinkDown) as caught:
            await asyncio.wait_for(parked.future, 5)
        assert caught.value.may_have_reached
    finally:
        await rig.close()


async def test_a_quiet_link_stays_open(rig: LinkRig) -> None:
    limits = LinkLimits(ping_interval=0.05, silence_timeout=0.3)
    client = rig.client(limits=limits)
    rig.server.limits = limits
    await client.call(Echo(0))
    await asyncio.sleep(1.0)  # several silence timeouts with no calls: pings keep it up
    assert (await client.call(Echo(1))).meta.n == 1
    assert client.connects_total == 1


async def test_a_caller_that_drains_its_answers_slowly_keeps_its_link() -> None:
    """The owner stops reading a caller whose answers back up, so it hears
    nothing from it; as long as the caller keeps draining, that silence is
    not taken for death (seen with 8,000 forwarded polls answered at once)."""
    limits = LinkLimits(ping_interval=0.05, silence_timeout=0.6, max_buffered_bytes=1 << 30, max_in_flight=100_000)
    rig = await LinkRig(limits).start()
    try:
        client = rig.client()
        await client.call(Echo(0))
        conn = client._conn
        assert conn is not None and conn.transport is not None
        conn.transport.pause_reading()
        calls = [await client.open(Big(1024 * 1024), timeout=60) for _ in range(60)]
        owner = server_side(rig)
        await wait_until(lambda: owner.writing_paused, what="the owner's writes paused")
        loop = asyncio.get_running_loop()
        end = loop.time() + 2 * limits.silence_timeout
        while loop.time() < end:  # a trickle, for longer than the silence timeout
            conn.transport.resume_reading()
            await asyncio.sleep(0.002)
            conn.transport.pause_reading()
            await asyncio.sleep(0.1)
        assert owner.writing_paused, "drained too fast to show anything"
        conn.transport.resume_reading()
        await asyncio.wait_for(asyncio.gather(*(c.future for c in calls)), 30)
        assert client.connects_total == 1
    finally:
        await rig.close()
