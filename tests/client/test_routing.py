"""Routing and wire parsing without a network: the client's ring agrees
with the servers' Ring, and fallbacks are ordered as documented."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ipubsub.client.routing import DOWN_SECONDS, Router, parse_urls
from ipubsub.client.wire import ClusterView, Member, ReceivedMessage, parse_cluster, parse_received, send_body
from ipubsub.cluster.ring import Ring


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def view(names: list[str], ring: list[str] | None = None, status: str = "alive") -> ClusterView:
    members = tuple(Member(n, f"10.0.0.{i + 1}:8080", status, 1) for i, n in enumerate(names))
    ring_names = tuple(ring if ring is not None else names)
    return ClusterView(names[0], "c", members, 3, 0, ring_names, 160)


def test_parse_urls_accepts_lists_and_comma_separated_strings() -> None:
    assert parse_urls("127.0.0.1:8080, http://h:1/ ,https://x:2") == [
        "http://127.0.0.1:8080", "http://h:1", "https://x:2"
    ]
    assert parse_urls(["http://a:1", "http://a:1"]) == ["http://a:1"]
    for bad in ("", " , ", "ftp://a:1", "http://a:1/api"):
        with pytest.raises(ValueError):
            parse_urls(bad)


def test_owner_is_the_servers_ring_owner() -> None:
    router = Router(["http://seed:1"])
    names = ["n1", "n2", "n3"]
    assert router.apply(view(names))
    ring = Ring({f"n{i + 1}": f"10.0.0.{i + 1}:8080" for i in range(3)}, 160)
    for i in range(300):
        stream = f"stream-{i}"
        assert router.owner(stream) == ring.owner(stream)
        owner = ring.owner(stream)
        assert owner is not None
        assert router.owner_url(stream) == "http://" + ring.address(owner)
        assert router.candidates(stream)[0] == router.owner_url(stream)
    assert not router.apply(view(names))  # same members: no rebuild
    assert router.apply(view(names, ring=["n1", "n3"]))  # n2 left the ring


def test_candidates_list_every_node_with_failed_ones_last_for_a_while() -> None:
    clock = FakeClock()
    router = Router(["http://seed:1"], clock=clock)
    assert router.candidates("s") == ["http://seed:1"]  # before any view
    router.apply(view(["n1", "n2", "n3"]))
    owner = router.owner_url("s")
    assert owner is not None
    first = router.candidates("s")
    assert first[0] == owner and first[-1] == "http://seed:1" and len(first) == 4
    router.mark_down(owner)
    assert router.candidates("s")[-1] == owner
    assert router.pick("s", {router.candidates("s")[0]}) not in (owner, None)
    clock.now += DOWN_SECONDS + 0.1
    assert router.candidates("s")[0] == owner
    router.mark_down(owner)
    router.mark_up(owner)
    assert router.candidates("s")[0] == owner


def test_dead_members_are_not_fallbacks() -> None:
    router = Router(["http://10.0.0.1:8080"])
    router.apply(view(["n1", "n2"], ring=["n1"], status="alive"))
    assert set(router.candidates()) == {"http://10.0.0.1:8080", "http://10.0.0.2:8080"}
    router.apply(ClusterView("n1", "c", (Member("n1", "10.0.0.1:8080", "alive", 1),
                                         Member("n2", "10.0.0.2:8080", "dead", 1)), 4, 0, ("n1",), 160))
    assert router.candidates() == ["http://10.0.0.1:8080"]


def test_wire_parsing_and_encoding() -> None:
    msg = parse_received({"messageUuid": "u", "message": {"a": [1, 2.5, None]},
                          "timestamp": "2026-11-22T10:00:00.123456Z", "dbResumeToken": "t"})
    assert msg == ReceivedMessage("u", {"a": [1, 2.5, None]},
                                  datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC), "t")
    assert msg.to_dict()["timestamp"] == "2026-11-22T10:00:00.123456Z"
    with pytest.raises(ValueError):
        parse_received({"messageUuid": "u"})
    with pytest.raises(ValueError):
        parse_cluster({"self": "n1"})
    with pytest.raises(TypeError):
        send_body("s", object(), "u", size=None, blocking_timeout=None, persist=False, ttl=None)
    body = send_body("s", "m", "u", size=0, blocking_timeout=0.2, persist=True, ttl=5)
    assert body == (b'{"streamId":"s","message":"m","messageUuid":"u","inMemoryStreamSize":0,'
                    b'"blockingSendTimeoutSeconds":1,"writeToDB":true,"dbTTLSeconds":5}')
