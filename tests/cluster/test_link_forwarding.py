"""Forwarding over the peer link, in process: two real nodes in this event
loop (HTTP listeners and link listeners on 127.0.0.1, port 0), real clients.
Each test stages a failure of the link itself and checks the outcome rules
(issue 10) and the forwarding items of issue 9."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import aiohttp
import pytest

from ipubsub.cluster.link import Identity, Incoming, LinkClient, LinkRejected
from ipubsub.cluster.link_calls import Answer, ForwardReceive, ForwardSend
from ipubsub.config import Config
from ipubsub.node import Node
from tests.support.cluster import FAST
from tests.support.config import node_config
from tests.support.http import receive, send
from tests.support.wait import wait_until

pytestmark = pytest.mark.timeout(60)

SECRET = "link-s3cret"


class Pair:
    """Two served nodes that see each other in their rings."""

    def __init__(self, first: Node, second: Node) -> None:
        self.nodes = (first, second)

    def url(self, node: Node) -> str:
        return f"http://{node.listen_address}"

    def stream_owned_by(self, owner: Node, prefix: str = "s") -> str:
        return next(f"{prefix}{i}" for i in range(10_000) if owner.cluster.owner(f"{prefix}{i}") == owner.name)

    @property
    def entry(self) -> Node:
        return self.nodes[0]

    @property
    def owner(self) -> Node:
        return self.nodes[1]


async def _serve(name: str, seeds: list[str], **cluster: Any) -> Node:
    config = node_config(name, cluster={"name": "linked", "secret": SECRET, "seeds": seeds, **FAST, **cluster})
    node = Node(Config.from_mapping(config))
    node.bind()
    await node.start()
    await node.serve()
    return node


@pytest.fixture
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    extra = getattr(request, "param", {})
    first = await _serve("n1", [], **extra)
    second = await _serve("n2", [first.listen_address], **extra)
    try:
        await wait_until(
            lambda: all(len(n.cluster.ring) == 2 for n in (first, second)), what="both nodes in both rings"
        )
        yield Pair(first, second)
    finally:
        await asyncio.gather(first.stop(), second.stop())


def _owner_incoming(pair: Pair) -> list[Incoming]:
    conns = [c for c in pair.owner.cluster.links.server.connections if c.peer is not None]
    return [i for c in conns for i in c.incoming.values()]


def _drop_links(pair: Pair) -> None:
    """Reset every link connection into the owner (as a network fault would)."""
    for conn in list(pair.owner.cluster.links.server.connections):
        assert conn.transport is not None
        conn.transport.abort()


async def test_forwarded_calls_travel_on_one_link_connection(pair: Pair) -> None:
    stream = pair.stream_owned_by(pair.owner)
    async with aiohttp.ClientSession() as http:
        polls = [
            asyncio.ensure_future(receive(http, pair.url(pair.entry), stream, 10)) for _ in range(50)
        ]
        await wait_until(lambda: pair.owner.engine.stats.waiting_receivers == 50, what="50 parked polls on the owner")
        # one link connection, 50 calls on it, no HTTP request on the owner
        assert len([c for c in pair.owner.cluster.links.server.connections if c.peer is not None]) == 1
        assert len(_owner_incoming(pair)) == 50
        for i in range(50):
            status, _ = await send(http, pair.url(pair.entry), {"streamId": stream, "message": i})
            assert status == 200
        got = sorted(reply[1]["message"] for reply in await asyncio.gather(*polls))
    assert got == list(range(50))
    assert pair.owner.engine.stats.waiting_receivers == 0
    assert pair.entry.cluster.forwarder.waiting_polls == 0


async def test_a_send_whose_link_drops_after_the_owner_applied_it_is_not_replayed(pair: Pair) -> None:
    """Issue 9 item 3: the owner applies the send, then the link drops
    before its answer is written.  The entry node must not send it again
    (here, at a new owner, or by a transparent retry): 503 saying the outcome
    is unknown, and exactly one copy on the owner."""
    stream = pair.stream_owned_by(pair.owner)
    serve = pair.owner.cluster._serve_forwarded
    assert serve is not None

    def drop_after_applying(incoming: Incoming) -> Awaitable[None] | None:
        pending = serve(incoming)
        if not isinstance(incoming.meta, ForwardSend):
            return pending
        if pending is None:  # applied and answered at once: the answer waits for this tick's write
            _drop_links(pair)
            return None

        async def then_drop() -> None:
            await pending  # applied and answered: the answer waits for this tick's write
            _drop_links(pair)

        return then_drop()

    pair.owner.cluster.serve_forwarded_calls(drop_after_applying)
    async with aiohttp.ClientSession() as http:
        status, body = await send(http, pair.url(pair.entry), {"streamId": stream, "message": "once"})
        assert status == 503, body
        assert body["code"] == "owner_unavailable" and "may or may not" in body["error"], body
        pair.owner.cluster.serve_forwarded_calls(serve)
        assert len(pair.owner.engine.buffered(stream)) == 1
        assert not pair.entry.engine.buffered(stream)
        status, got = await receive(http, pair.url(pair.owner), stream, 1)
        assert status == 200 and got["message"] == "once"
        status, _ = await receive(http, pair.url(pair.owner), stream, 0)
        assert status == 424  # no second copy anywhere


async def test_a_poll_whose_link_drops_loses_nothing(pair: Pair) -> None:
    """A waiting forwarded poll whose link drops is answered 503 at once;
    the owner forgets its parked receive, so the next message goes to the
    next receiver, and the link reopens for the next call."""
    stream = pair.stream_owned_by(pair.owner)
    async with aiohttp.ClientSession() as http:
        poll = asyncio.ensure_future(receive(http, pair.url(pair.entry), stream, 20))
        await wait_until(lambda: pair.owner.engine.stats.waiting_receivers == 1, what="the parked poll")
        started = time.monotonic()
        _drop_links(pair)
        status, body = await asyncio.wait_for(poll, 5)
        assert status == 503 and body["code"] == "owner_unavailable", body
        assert time.monotonic() - started < 2
        await wait_until(lambda: pair.owner.engine.stats.waiting_receivers == 0, what="the owner forgetting it")
        status, _ = await send(http, pair.url(pair.entry), {"streamId": stream, "message": "next"})
        assert status == 200
        status, got = await receive(http, pair.url(pair.entry), stream, 5)
        assert status == 200 and got["message"] == "next"


async def test_an_answer_the_link_could_not_carry_goes_back_to_the_stream(pair: Pair) -> None:
    """The owner handed a message to a forwarded poll and the link dropped
    before the answer was written: the answer's undo puts it back."""
    stream = pair.stream_owned_by(pair.owner)
    async with aiohttp.ClientSession() as http:
        poll = asyncio.ensure_future(receive(http, pair.url(pair.entry), stream, 20))
        await wait_until(lambda: pair.owner.engine.stats.waiting_receivers == 1, what="the parked poll")
        # The message is handed to the parked poll now; its answer is written
        # on a later loop turn: drop the link in between.
        pair.owner.engine.send_nowait(stream, _message("crossed"), 100)
        _drop_links(pair)
        status, _ = await asyncio.wait_for(poll, 5)
        assert status == 503
        status, got = await receive(http, pair.url(pair.owner), stream, 2)
        assert status == 200 and got["message"] == "crossed"


@pytest.mark.parametrize("pair", [{"link_max_in_flight": 5}], indirect=True)
async def test_calls_over_the_link_limit_are_refused_at_once_with_a_clear_503(pair: Pair) -> None:
    stream = pair.stream_owned_by(pair.owner)
    async with aiohttp.ClientSession() as http:
        polls = [asyncio.ensure_future(receive(http, pair.url(pair.entry), stream, 10)) for _ in range(5)]
        await wait_until(lambda: pair.owner.engine.stats.waiting_receivers == 5, what="5 parked polls")
        started = time.monotonic()
        status, body = await receive(http, pair.url(pair.entry), stream, 10)
        assert status == 503 and "too many calls in flight" in body["error"], body
        assert time.monotonic() - started < 1
        status, body = await send(http, pair.url(pair.entry), {"streamId": stream, "message": 1})
        assert status == 503, body
        # a busy link is not evidence of death
        assert all(m.status.value == "alive" for m in pair.entry.cluster.membership.members())
        status, _ = await send(http, pair.url(pair.owner), {"streamId": stream, "message": 2})
        assert status == 200
        done, _ = await asyncio.wait(polls, timeout=5, return_when=asyncio.FIRST_COMPLETED)
        assert [t.result()[1]["message"] for t in done] == [2]
        for t in polls:
            t.cancel()
        await asyncio.gather(*polls, return_exceptions=True)


async def test_only_a_peer_that_proves_the_secret_can_forward(pair: Pair) -> None:
    """Issue 9 item 7: ``X-IPubSub-Forwarded-By`` from a client is ignored
    (the call is forwarded to the owner as any other), and a link opened
    without the secret, or for another cluster, is refused."""
    stream = pair.stream_owned_by(pair.owner)
    async with aiohttp.ClientSession() as http:
        async with http.post(
            pair.url(pair.entry) + "/api/v1/streams/send",
            json={"streamId": stream, "message": "forged"},
            headers={"X-IPubSub-Forwarded-By": "n2"},
        ) as resp:
            assert resp.status == 200
            assert resp.headers["X-IPubSub-Ring"] == str(pair.entry.cluster.ring.fingerprint)
        assert not pair.entry.engine.buffered(stream)
        assert len(pair.owner.engine.buffered(stream)) == 1
    link = pair.owner.cluster.link_advertise
    for cluster, secret, why in (("linked", b"guess", "wrong cluster secret"), ("other", SECRET.encode(), "cluster")):
        client: LinkClient[Answer] = LinkClient(link, Identity(cluster, "intruder", 1, secret), Answer)
        try:
            with pytest.raises(LinkRejected, match=why):
                await client.call(ForwardReceive(_receive_call(stream)), b"", 1.0)
        finally:
            await client.close()
    assert pair.owner.engine.stats.waiting_receivers == 0


def _message(payload: str) -> Any:
    from ipubsub.engine import Message

    return Message(f"m-{payload}", f'"{payload}"'.encode(), 1)


def _receive_call(stream: str) -> Any:
    from ipubsub.calls import ReceiveCall

    return ReceiveCall(stream, 1)


async def test_the_client_refreshes_its_members_when_the_ring_header_changes(pair: Pair) -> None:
    """Every answer carries ``X-IPubSub-Ring``; the Python client refreshes
    its member list as soon as it differs from the ring it knows, not at its
    next periodic refresh."""
    from ipubsub.client import AsyncClient

    async with AsyncClient([pair.url(pair.entry)], refresh_interval=60.0) as client:
        await client.send("ring-watch", 1)
        assert client.router.view is not None and len(client.router.view.ring_members) == 2
        third = await _serve("n3", [pair.entry.listen_address])
        try:
            await wait_until(lambda: len(pair.entry.cluster.ring) == 3, what="n3 in n1's ring")

            async def refreshed() -> bool:
                await client.send("ring-watch", 2)
                view = client.router.view
                return view is not None and len(view.ring_members) == 3

            await wait_until(refreshed, what="the client seeing n3", timeout=10.0)
            assert client.stats.ring_changes_seen >= 1
        finally:
            await third.stop()


async def test_forwarding_reaches_a_restarted_owner_on_its_new_link(pair: Pair) -> None:
    """The owner stops and starts again (a new incarnation on new ports):
    the entry node learns the new link address from membership and forwards
    there; nothing is sent to the old address."""
    stream = pair.stream_owned_by(pair.owner)
    old_link = pair.owner.cluster.link_advertise
    await pair.owner.stop()
    await wait_until(lambda: len(pair.entry.cluster.ring) == 1, what="n2 gone from n1's ring")
    again = await _serve("n2", [pair.entry.listen_address])
    try:
        await wait_until(lambda: len(pair.entry.cluster.ring) == 2, what="n2 back in n1's ring")
        assert again.cluster.link_advertise != old_link
        async with aiohttp.ClientSession() as http:
            status, _ = await send(http, pair.url(pair.entry), {"streamId": stream, "message": "again"})
            assert status == 200
            assert len(again.engine.buffered(stream)) == 1
            status, got = await receive(http, pair.url(pair.entry), stream, 2)
            assert status == 200 and got["message"] == "again"
    finally:
        await again.stop()
