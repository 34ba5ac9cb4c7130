"""Membership rules, in process, on a manual clock: suspect and dead timing,
incarnations, leave, merge rules and members learned second hand.

Heartbeats are fed in as the bytes a peer would post (``handle_gossip``,
``handle_leave``); time moves only when the test moves it.  A liveness
check is what the heartbeat loop runs before every round.
"""

from __future__ import annotations

import logging

import pytest

from ipubsub.cluster.membership import Membership, MemberStatus
from ipubsub.cluster.messages import Gossip, Leave, MemberInfo, decode, encode
from ipubsub.cluster.peers import PeerClient
from ipubsub.cluster.ring import Ring
from ipubsub.config import ClusterConfig
from ipubsub.engine import ManualClock
from ipubsub.errors import BadRequest, WrongCluster

ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
# Strictly more silence than a threshold crosses it.
JUST = 0.001


class View:
    """Node ``a``'s membership with the defaults' timings (suspect after
    1.5 s of silence, dead after 4 s, forgotten 600 s after death)."""

    def __init__(self, **cluster: float) -> None:
        self.clock = ManualClock()
        self.rings: list[Ring] = []
        self.config = ClusterConfig(name="c", **cluster)  # type: ignore[arg-type]
        peers = PeerClient(secret="", connect_timeout=1.0, request_timeout=1.0)  # never started: no call is made
        self.m = Membership(self.config, "a", "127.0.0.1:1", 16, peers, self.rings.append, self.clock)

    def hear(self, name: str, incarnation: int = 1, status: str = "alive", address: str | None = None,
             knows: list[MemberInfo] | None = None, cluster: str = "c") -> Gossip:
        """A heartbeat from ``name`` (listing itself and ``knows``); returns the answer."""
        me = MemberInfo(name, address or f"127.0.0.1:{ord(name)}", incarnation, status)
        answer = self.m.handle_gossip(encode(Gossip(cluster, me, [me, *(knows or [])])))
        return decode(answer, Gossip)

    def leave(self, name: str, incarnation: int = 1) -> None:
        self.m.handle_leave(encode(Leave("c", name, incarnation)))

    def advance(self, seconds: float) -> None:
        """Let time pass, running the liveness check every heartbeat interval,
        as the heartbeat loop does before each round."""
        while seconds > 1e-9:
            step = min(self.config.heartbeat_interval_seconds, seconds)
            self.clock.advance(step)
            seconds -= step
            self.m._detect_failures()

    def status(self, name: str) -> MemberStatus | None:
        return next((m.status for m in self.m.members() if m.name == name), None)

    @property
    def ring(self) -> list[str]:
        return sorted(self.m.ring.members)


def info(name: str, incarnation: int = 1, status: str = "alive") -> MemberInfo:
    return MemberInfo(name, f"127.0.0.1:{ord(name)}", incarnation, status)


def test_a_member_heard_from_joins_the_ring_and_the_answer_carries_our_table() -> None:
    v = View()
    answer = v.hear("b")
    assert v.ring == ["a", "b"] and v.status("b") is ALIVE
    assert answer.cluster == "c" and answer.sender.name == "a"
    assert {m.name for m in answer.members} == {"a", "b"}
    assert len(v.rings) == 1 and sorted(v.rings[-1].members) == ["a", "b"]


def test_silence_makes_a_member_suspect_then_dead_at_the_configured_times() -> None:
    v = View()
    v.hear("b")
    v.advance(1.5)
    assert v.status("b") is ALIVE  # exactly the threshold is not yet too long
    v.advance(JUST)
    assert v.status("b") is SUSPECT and v.ring == ["a", "b"]  # suspect: still owns its streams
    v.hear("c")  # a ring rebuilt meanwhile keeps it too
    assert v.ring == ["a", "b", "c"]
    rings = len(v.rings)
    v.advance(4.0 - 1.5 - JUST)
    assert v.status("b") is SUSPECT
    v.advance(JUST)
    assert v.status("b") is DEAD and v.ring == ["a", "c"]
    assert len(v.rings) == rings + 1  # one ring change: when it died


def test_a_suspect_heard_from_again_is_alive_and_its_silence_starts_over() -> None:
    v = View()
    v.hear("b")
    v.advance(2.0)
    assert v.status("b") is SUSPECT
    v.hear("b")
    assert v.status("b") is ALIVE
    v.advance(1.5)
    assert v.status("b") is ALIVE
    v.advance(2.5 + JUST)
    assert v.status("b") is DEAD


def test_a_call_that_fails_makes_a_member_suspect_at_once_but_keeps_it_in_the_ring() -> None:
    v = View()
    v.hear("b")
    v.m.mark_suspect("b")
    assert v.status("b") is SUSPECT and v.ring == ["a", "b"]
    v.m.mark_suspect("a")  # never itself
    assert v.status("a") is ALIVE


def test_a_dead_member_heard_from_directly_comes_back() -> None:
    v = View()
    v.hear("b")
    v.advance(5)
    assert v.status("b") is DEAD
    v.hear("b")  # it was only cut off (same process, same incarnation)
    assert v.status("b") is ALIVE and v.ring == ["a", "b"]


def test_a_restarted_member_replaces_its_former_self_with_its_new_address() -> None:
    v = View()
    v.hear("b", incarnation=1, address="127.0.0.1:2001")
    v.advance(5)
    assert v.status("b") is DEAD
    v.hear("b", incarnation=2, address="127.0.0.1:2002")
    (b,) = [m for m in v.m.members() if m.name == "b"]
    assert (b.status, b.incarnation, b.address) == (ALIVE, 2, "127.0.0.1:2002")
    assert v.m.ring.address("b") == "127.0.0.1:2002"


def test_a_heartbeat_of_an_older_incarnation_is_ignored() -> None:
    v = View()
    v.hear("b", incarnation=2, address="127.0.0.1:2002")
    v.advance(2.0)
    assert v.status("b") is SUSPECT
    v.hear("b", incarnation=1, address="127.0.0.1:2001")  # a late packet of the old process
    (b,) = [m for m in v.m.members() if m.name == "b"]
    assert (b.status, b.incarnation, b.address) == (SUSPECT, 2, "127.0.0.1:2002")  # not proof of life


def test_a_leave_takes_the_member_out_of_the_ring_at_once() -> None:
    v = View()
    v.hear("b")
    v.hear("c")
    v.leave("b")
    assert v.status("b") is LEFT and v.ring == ["a", "c"]


def test_a_leave_of_an_older_incarnation_does_not_remove_the_new_one() -> None:
    v = View()
    v.hear("b", incarnation=2)
    v.leave("b", incarnation=1)
    assert v.status("b") is ALIVE and v.ring == ["a", "b"]


def test_a_member_that_left_returns_only_as_a_new_incarnation() -> None:
    v = View()
    v.hear("b", incarnation=1)
    v.leave("b", incarnation=1)
    v.hear("b", incarnation=1)  # a heartbeat it sent just before leaving, delivered late
    assert v.status("b") is LEFT and v.ring == ["a"]
    v.hear("b", incarnation=1, status="left")
    assert v.status("b") is LEFT
    v.hear("b", incarnation=2)  # restarted
    assert v.status("b") is ALIVE and v.ring == ["a", "b"]


def test_members_learned_second_hand_join_and_get_a_full_dead_period_to_answer() -> None:
    v = View()
    v.hear("b", knows=[info("c")])
    assert v.ring == ["a", "b", "c"] and v.status("c") is ALIVE
    # Only direct contact proves life: b keeps vouching for c, c never answers us.
    for _ in range(4):
        v.advance(1.0)
        v.hear("b", knows=[info("c")])
    v.advance(JUST)
    assert v.status("b") is ALIVE
    assert v.status("c") is DEAD and v.ring == ["a", "b"]


def test_dead_or_left_members_heard_of_second_hand_are_not_added() -> None:
    v = View()
    v.hear("b", knows=[info("c", status="dead"), info("d", status="left")])
    assert v.status("c") is None and v.status("d") is None
    assert v.ring == ["a", "b"]


def test_second_hand_news_of_a_leave_is_believed_news_of_a_death_is_not() -> None:
    v = View()
    v.hear("b")
    v.hear("c")
    v.hear("d")
    v.hear("b", knows=[info("c", status="left"), info("d", status="dead")])
    assert v.status("c") is LEFT  # a leave is announced by the member itself: safe to spread
    assert v.status("d") is ALIVE  # death is judged here, from our own silence
    assert v.ring == ["a", "b", "d"]


def test_a_second_hand_restart_revives_a_dead_member_but_not_an_older_incarnation() -> None:
    v = View()
    v.hear("b")
    v.hear("c", incarnation=5)
    v.advance(3.0)
    v.hear("b")
    v.advance(1.5)
    v.hear("b")
    assert v.status("c") is DEAD
    v.hear("b", knows=[info("c", incarnation=5)])  # the same process, second hand: still dead to us
    assert v.status("c") is DEAD
    v.hear("b", knows=[info("c", incarnation=6)])  # b heard from its new incarnation
    assert v.status("c") is ALIVE and v.ring == ["a", "b", "c"]


def test_second_hand_news_never_changes_what_we_know_of_ourselves() -> None:
    v = View()
    v.hear("b", knows=[MemberInfo("a", "127.0.0.1:9", 99, "dead"),
                       MemberInfo("a", "127.0.0.1:9", v.m.incarnation + 1, "left")])
    (a,) = [m for m in v.m.members() if m.name == "a"]
    assert (a.status, a.address, a.incarnation) == (ALIVE, "127.0.0.1:1", v.m.incarnation)
    assert v.ring == ["a", "b"]


def test_another_node_using_our_name_is_ignored_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    v = View()
    with caplog.at_level(logging.ERROR, logger="ipubsub.cluster"):
        for _ in range(3):
            v.hear("a", incarnation=v.m.incarnation + 1, address="127.0.0.1:9", knows=[info("z")])
    assert v.ring == ["a"] and v.status("z") is None
    assert [r.getMessage() for r in caplog.records] == ["another node at 127.0.0.1:9 uses this node's name 'a'"]


def test_heartbeats_of_another_cluster_and_malformed_ones_are_refused() -> None:
    v = View()
    with pytest.raises(WrongCluster, match="cluster 'c', not 'other'"):
        v.hear("b", cluster="other")
    with pytest.raises(WrongCluster):
        v.m.handle_leave(encode(Leave("other", "b", 1)))
    with pytest.raises(BadRequest, match="malformed Gossip"):
        v.m.handle_gossip(b'{"cluster": "c"}')
    assert v.ring == ["a"] and v.status("b") is None


def test_dead_and_left_members_are_forgotten_after_the_configured_time() -> None:
    v = View(forget_dead_after_seconds=60)
    v.hear("b")
    v.hear("c")
    v.leave("c")
    v.advance(5)
    assert v.status("b") is DEAD and v.status("c") is LEFT
    v.advance(60)
    assert v.status("b") is None and v.status("c") is None
    assert [m.name for m in v.m.members()] == ["a"]


def test_every_ring_change_has_a_new_version_and_reaches_the_callback() -> None:
    v = View()
    v.hear("b")
    v.hear("c")
    v.hear("b")  # nothing new: no new ring
    v.advance(1.5 + JUST)
    v.hear("b")  # suspect, then alive again: the same members, no new ring
    v.hear("c")
    v.leave("c")
    assert [sorted(r.members) for r in v.rings] == [["a", "b"], ["a", "b", "c"], ["a", "b"]]
    versions = [r.version for r in v.rings]
    assert versions == sorted(set(versions)) and v.m.ring is v.rings[-1]


async def test_leaving_takes_this_node_out_of_its_own_ring_and_announces_it() -> None:
    v = View()
    await v.m.leave(timeout=0.1)  # no peer: nobody to tell
    assert v.ring == []
    answer = v.hear("b")
    assert answer.sender.status == "left"  # peers learn it from our answers too
