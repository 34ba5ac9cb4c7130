"""The node-to-node link over real sockets on 127.0.0.1: calls, concurrency,
parked calls, cancellation, deadlines and the handshake."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator

import pytest

from ipubsub.cluster.link import CallAborted, CallRefused, CallTimeout, LinkError, LinkLimits, LinkRejected
from tests.cluster.link_support import Echo, Fail, LinkRig, Park, Work
from tests.support.wait import wait_until


@pytest.fixture
async def rig() -> AsyncIterator[LinkRig]:
    rig = await LinkRig().start()
    yield rig
    await rig.close()


async def test_a_call_carries_its_header_and_raw_payload_both_ways(rig: LinkRig) -> None:
    client = rig.client()
    payload = os.urandom(3 * 1024 * 1024)  # larger than the receive buffer, any bytes
    reply = await client.call(Echo(7), payload, timeout=5)
    assert reply.meta.n == 7
    assert reply.payload == payload
    empty = await client.call(Echo(8))
    assert (empty.meta.n, empty.payload) == (8, b"")
    assert rig.server.connections and next(iter(rig.server.connections)).peer.node == "caller"


async def test_many_concurrent_calls_share_one_connection_and_match_their_answers(rig: LinkRig) -> None:
    client = rig.client()
    replies = await asyncio.gather(*(client.call(Echo(i), str(i).encode(), timeout=10) for i in range(3000)))
    assert [(r.meta.n, r.payload) for r in replies] == [(i, str(i).encode()) for i in range(3000)]
    assert client.connects_total == 1
    assert len(rig.server.connections) == 1
    assert client.in_flight == 0 and rig.server.in_flight == 0


async def test_5000_parked_calls_on_one_connection(rig: LinkRig) -> None:
    client = rig.client()
    calls = [await client.open(Park(i)) for i in range(5000)]
    await wait_until(lambda: len(rig.parked) == 5000, 10, "5,000 parked calls on the server")
    assert len(rig.server.connections) == 1 and client.connects_total == 1
    assert client.in_flight == 5000 and rig.server.in_flight == 5000
    for i in reversed(range(5000)):  # answered in any order
        rig.answer(i, payload=b"m%d" % i)
    replies = await asyncio.wait_for(asyncio.gather(*(c.future for c in calls)), 10)
    assert [(r.meta.n, r.payload) for r in replies] == [(i, b"m%d" % i) for i in range(5000)]
    assert client.in_flight == 0 and rig.server.in_flight == 0


async def test_cancel_reaches_a_parked_call_and_its_answer_still_comes_back(rig: LinkRig) -> None:
    client = rig.client()
    call = await client.open(Park(1))
    await wait_until(lambda: 1 in rig.parked, what="the call parked")
    call.cancel()
    reply = await asyncio.wait_for(call.future, 5)
    assert (reply.meta.n, reply.meta.note) == (1, "released")
    assert rig.cancelled == [1] and rig.server.in_flight == 0


async def test_an_answer_crossing_the_cancel_is_the_answer(rig: LinkRig) -> None:
    client = rig.client()
    call = await client.open(Park(2))
    await wait_until(lambda: 2 in rig.parked, what="the call parked")
    rig.answer(2, b"the message")  # the owner answers ...
    call.cancel()  # ... while the caller gives up: the message is not lost
    reply = await asyncio.wait_for(call.future, 5)
    assert (reply.meta.note, reply.payload) == ("answered", b"the message")
    assert rig.cancelled == []


async def test_a_cancelled_caller_cancels_a_coroutine_handler(rig: LinkRig) -> None:
    client = rig.client()
    task = asyncio.ensure_future(client.call(Work(30)))
    await wait_until(lambda: rig.server.in_flight == 1, what="the call running")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: rig.server.in_flight == 0, what="the handler cancelled")
    assert client.in_flight == 0


async def test_a_coroutine_handler_answers(rig: LinkRig) -> None:
    reply = await rig.client().call(Work(0.01), timeout=5)
    assert reply.meta.note == "worked"


async def test_a_call_past_its_deadline_is_cancelled_at_the_peer(rig: LinkRig) -> None:
    client = rig.client()
    started = time.monotonic()
    reply = await client.call(Park(3), timeout=0.2)
    assert reply.meta.note == "released"  # the owner's answer to the cancel
    assert time.monotonic() - started < 3
    assert rig.cancelled == [3]


async def test_a_call_fails_with_call_timeout_when_the_peer_never_answers(rig: LinkRig) -> None:
    client = rig.client()
    await client.call(Echo(0))
    conn = next(iter(rig.server.connections))
    assert conn.transport is not None
    conn.transport.pause_reading()  # the peer stops reading: no answer, not even to the cancel
    with pytest.raises(CallTimeout) as caught:
        await asyncio.wait_for(client.call(Echo(1), timeout=0.2), 5)
    assert caught.value.may_have_reached
    conn.transport.resume_reading()


async def test_the_peer_refuses_calls_over_its_in_flight_limit() -> None:
    rig = await LinkRig(LinkLimits(max_in_flight=10)).start()
    try:
        client = rig.client(limits=LinkLimits(max_in_flight=100))
        calls = [await client.open(Park(i)) for i in range(12)]
        done = await asyncio.gather(*(asyncio.wait_for(c.future, 0.5) for c in calls[10:]), return_exceptions=True)
        assert all(isinstance(e, CallRefused) and not e.may_have_reached for e in done), done
        assert "limit 10" in str(done[0])
        assert len(rig.parked) == 10 and rig.server.refused_total == 2
    finally:
        await rig.close()


async def test_the_caller_refuses_calls_over_its_in_flight_limit(rig: LinkRig) -> None:
    client = rig.client(limits=LinkLimits(max_in_flight=5))
    for i in range(5):
        await client.open(Park(i))
    with pytest.raises(LinkError) as caught:
        await client.open(Park(5))
    assert not caught.value.may_have_reached and "limit 5" in str(caught.value)


async def test_an_oversized_frame_is_not_sent(rig: LinkRig) -> None:
    client = rig.client(limits=LinkLimits(max_frame_bytes=1024))
    with pytest.raises(LinkError) as caught:
        await client.call(Echo(1), b"x" * 2048)
    assert not caught.value.may_have_reached
    assert (await client.call(Echo(2), b"small")).payload == b"small"


@pytest.mark.parametrize("in_task", [False, True])
async def test_a_handler_failure_aborts_only_that_call(rig: LinkRig, in_task: bool) -> None:
    client = rig.client()
    with pytest.raises(CallAborted) as caught:
        await client.call(Fail(in_task), timeout=5)
    assert caught.value.may_have_reached and "failed" in caught.value.reason
    assert (await client.call(Echo(1))).meta.n == 1
    assert client.connects_total == 1


# -- handshake ------------------------------------------------------------------------


async def test_a_wrong_secret_is_refused_with_a_clear_reason(rig: LinkRig) -> None:
    with pytest.raises(LinkRejected) as caught:
        await rig.client(secret=b"guess").call(Echo(1))
    assert "wrong cluster secret" in str(caught.value) and not caught.value.may_have_reached
    assert rig.applied == [] and rig.server.attempts.failed_total == 1


async def test_another_cluster_is_refused_with_a_clear_reason(rig: LinkRig) -> None:
    with pytest.raises(LinkRejected) as caught:
        await rig.client(cluster="other").call(Echo(1))
    assert "cluster 'test', not 'other'" in str(caught.value)
    assert rig.applied == []


async def test_a_peer_with_another_name_than_expected_is_refused(rig: LinkRig) -> None:
    with pytest.raises(LinkRejected) as caught:
        await rig.client(expect_node="someone-else").call(Echo(1))
    assert "is node 'owner'" in str(caught.value)
    assert rig.applied == []


async def test_a_client_with_the_secret_is_not_fooled_by_a_server_without_it() -> None:
    impostor = await LinkRig(secret=b"other").start()
    try:
        # Same cluster, other secret: the impostor refuses us (it cannot check our
        # proof); had it said welcome, its proof would not match ours either.
        with pytest.raises(LinkRejected):
            await impostor.client(secret=b"real").call(Echo(1))
    finally:
        await impostor.close()


async def test_failed_handshakes_are_throttled_but_members_still_get_in(rig: LinkRig) -> None:
    rig.server.attempts.penalty = 0.3
    for k in range(rig.server.attempts.limit):
        with pytest.raises(LinkRejected):
            await rig.client(f"guess-{k}", secret=b"guess%d" % k).call(Echo(1))
    started = time.monotonic()
    with pytest.raises(LinkRejected):
        await rig.client("guess-again", secret=b"again").call(Echo(1))
    assert time.monotonic() - started >= 0.3  # judged only after the penalty
    assert rig.server.attempts.throttled_total >= 1
    reply = await rig.client("member").call(Echo(2), timeout=5)  # slowed, not locked out
    assert reply.meta.n == 2


async def test_bytes_that_are_not_a_handshake_close_the_connection(rig: LinkRig) -> None:
    host, port = rig.address.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        challenge = await asyncio.wait_for(reader.read(100), 5)
        assert challenge  # the server speaks first
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed
    finally:
        writer.close()
    assert (await rig.client().call(Echo(1))).meta.n == 1


async def test_an_answer_after_the_caller_went_away_reaches_the_orphan_hook(rig: LinkRig) -> None:
    client = rig.client()
    call = await client.open(Park(9))
    orphaned: list[tuple[str, bytes]] = []
    call.orphan = lambda reply: orphaned.append((reply.meta.note, reply.payload))
    waiter = asyncio.ensure_future(call.future)
    await wait_until(lambda: 9 in rig.parked, what="the call parked")
    rig.answer(9, b"handed over")  # the owner hands the poll a message ...
    waiter.cancel()  # ... as the caller goes away: the future is cancelled
    call.cancel()
    await wait_until(lambda: orphaned == [("answered", b"handed over")], what="the late answer")
    assert call.future.cancelled()
