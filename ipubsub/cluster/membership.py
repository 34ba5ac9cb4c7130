"""Cluster membership over HTTP heartbeats between the nodes' own servers.

Every ``heartbeat_interval_seconds`` a node sends its member table to every
known member and to every seed address not yet known (full mesh: fine for
the 3 to 50 nodes this is built for).  The answer carries the peer's table,
so a node joining through one seed learns everybody at the first exchange.

Liveness is judged only from direct contact: a member not heard from (in
either direction) for ``suspect_after_seconds`` is *suspect* (still in the
ring), and after ``dead_after_seconds`` *dead* (out of the ring).  A graceful
leave is announced and spreads by gossip, so the ring changes at once.  Each
process start has a new, larger *incarnation*, so a restarted node replaces
its dead or left former self as soon as anyone hears from it.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ClusterConfig
from ..engine import Clock, SystemClock
from ..errors import WrongCluster
from ..protocol import INTERNAL_GOSSIP_PATH, INTERNAL_LEAVE_PATH
from ..tasks import cancel_tasks
from .messages import Gossip, Leave, MemberInfo, decode, encode
from .peers import PeerClient, PeerUnreachable
from .ring import Ring

__all__ = ["MemberState", "MemberStatus", "Membership"]

log = logging.getLogger("ipubsub.cluster")


class MemberStatus(enum.StrEnum):
    """A member's status in this node's view (``left``: announced its leave)."""

    ALIVE = "alive"
    SUSPECT = "suspect"
    DEAD = "dead"
    LEFT = "left"


ALIVE, SUSPECT, DEAD, LEFT = MemberStatus.ALIVE, MemberStatus.SUSPECT, MemberStatus.DEAD, MemberStatus.LEFT
IN_RING = (ALIVE, SUSPECT)


@dataclass(slots=True)
class MemberState:
    """What this node knows of one member (times on the injected monotonic clock)."""

    name: str
    address: str
    incarnation: int
    status: MemberStatus
    last_heard: float
    changed_at: float
    link: str = ""  # where its peer link listens ("" until heard)


class Membership:
    """This node's view of the cluster; publishes a new :class:`Ring` on change.

    Args:
        config: the ``cluster`` section.
        name / address: this node's name and advertised address.
        virtual_nodes: ring points per node.
        peers: the peer HTTP client.
        on_ring_change: called with the new ring after every change.
        clock: monotonic time for failure detection, wall time for the
            incarnation (injectable for tests).
    """

    def __init__(
        self,
        config: ClusterConfig,
        name: str,
        address: str,
        virtual_nodes: int,
        peers: PeerClient,
        on_ring_change: Callable[[Ring], None],
        clock: Clock | None = None,
    ) -> None:
        self._config = config
        self.name = name
        self.address = address
        self._vnodes = virtual_nodes
        self._peers = peers
        self._on_ring_change = on_ring_change
        self._clock = clock or SystemClock()
        self.incarnation = self._clock.time_us()
        now = self._clock.monotonic()
        self._members: dict[str, MemberState] = {
            name: MemberState(name, address, self.incarnation, ALIVE, now, now)
        }
        self._leaving = False
        self._version = 1
        self.ring = Ring({name: address}, virtual_nodes, self._version)
        self._in_flight: set[str] = set()
        self._calls: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self._warned: set[str] = set()
        self.changes_total = 0

    # -- lifecycle ------------------------------------------------------------

    def set_address(self, address: str) -> None:
        """This node's advertised address (before :meth:`start`)."""
        self.address = address
        me = self._members[self.name]
        me.address = address
        self.ring = Ring({self.name: address}, self._vnodes, self._version)

    def set_link(self, link: str) -> None:
        """Where this node's peer link listens (before :meth:`start`)."""
        self._members[self.name].link = link

    def link_of(self, name: str) -> str | None:
        """Where member ``name``'s peer link listens, if known."""
        member = self._members.get(name)
        return member.link or None if member is not None else None

    def start(self) -> None:
        """Start heartbeating (the first round goes out at once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name="ipubsub-membership-heartbeat"
            )

    async def close(self) -> None:
        """Stop heartbeating and abandon calls in flight."""
        task, self._task = self._task, None
        await cancel_tasks([task, *self._calls])

    async def leave(self, timeout: float) -> None:
        """Leave the ring: peers drop this node at once and stop forwarding
        to it.  Waits up to ``timeout`` for their acknowledgements."""
        self._leaving = True
        self._members[self.name].status = LEFT
        self._rebuild_ring()
        payload = encode(Leave(self._config.name, self.name, self.incarnation))
        peers = [m for m in self._members.values() if m.name != self.name and m.status in IN_RING]
        if not peers:
            return
        results = await asyncio.gather(
            *(self._peers.call(m.address, INTERNAL_LEAVE_PATH, payload, timeout=timeout) for m in peers),
            return_exceptions=True,
        )
        acked = sum(1 for r in results if isinstance(r, tuple) and r[0] == 200)
        log.info("left the ring: %d of %d peers acknowledged", acked, len(peers))

    # -- views -----------------------------------------------------------------

    def members(self) -> list[MemberState]:
        return sorted(self._members.values(), key=lambda m: m.name)

    def mark_suspect(self, name: str) -> None:
        """A call to ``name`` failed at the connection level."""
        member = self._members.get(name)
        if member is not None and member.name != self.name and member.status == ALIVE:
            member.status = SUSPECT
            member.changed_at = self._clock.monotonic()
            log.warning("member %s (%s) is suspect: a call to it failed", name, member.address)

    # -- incoming messages -----------------------------------------------------

    def handle_gossip(self, body: bytes) -> bytes:
        """Merge a peer's heartbeat; answer with this node's table.

        Raises:
            BadRequest: malformed payload.  WrongCluster: another cluster.
        """
        gossip = decode(body, Gossip)
        self._check_cluster(gossip.cluster)
        self._merge(gossip)
        return encode(self._snapshot())

    def handle_leave(self, body: bytes) -> None:
        """A peer announces that it leaves the cluster.

        Raises:
            BadRequest, WrongCluster.
        """
        leave = decode(body, Leave)
        self._check_cluster(leave.cluster)
        member = self._members.get(leave.name)
        if member is not None and member.incarnation <= leave.incarnation and member.name != self.name:
            self._set(member, LEFT, leave.incarnation)
            log.info("member %s left the cluster", leave.name)
            self._rebuild_ring()

    # -- internals --------------------------------------------------------------

    def _check_cluster(self, cluster: str) -> None:
        if cluster != self._config.name:
            raise WrongCluster(
                f"this node belongs to cluster {self._config.name!r}, not {cluster!r}",
                cluster=self._config.name,
            )

    def _snapshot(self) -> Gossip:
        me = self._members[self.name]
        return Gossip(
            cluster=self._config.name,
            sender=MemberInfo(self.name, self.address, self.incarnation, me.status, me.link),
            members=[
                MemberInfo(m.name, m.address, m.incarnation, m.status, m.link) for m in self._members.values()
            ],
        )

    def _merge(self, gossip: Gossip) -> None:
        now = self._clock.monotonic()
        changed = False
        sender = gossip.sender
        if sender.name == self.name and sender.incarnation != self.incarnation:
            if "name" not in self._warned:
                self._warned.add("name")
                log.error("another node at %s uses this node's name %r", sender.address, self.name)
            return
        if sender.name != self.name:
            member = self._members.get(sender.name)
            status = LEFT if sender.status == LEFT else ALIVE
            if member is None:
                self._members[sender.name] = MemberState(
                    sender.name, sender.address, sender.incarnation, status, now, now, sender.link
                )
                changed = True
                log.info("member %s (%s) joined", sender.name, sender.address)
            elif sender.incarnation > member.incarnation or (
                sender.incarnation == member.incarnation and member.status != LEFT  # a leave is final
            ):
                member.last_heard = now
                member.address = sender.address
                member.link = sender.link
                if member.status != status or sender.incarnation > member.incarnation:
                    changed |= self._set(member, status, sender.incarnation)
        for info in gossip.members:
            if info.name in (self.name, sender.name):
                continue
            member = self._members.get(info.name)
            if member is not None and info.link and not member.link and info.incarnation == member.incarnation:
                member.link = info.link  # heard of its link before hearing from it
            if member is None:
                if info.status in IN_RING:
                    # Heard of, not from: give it a full dead period to answer us.
                    self._members[info.name] = MemberState(
                        info.name, info.address, info.incarnation, ALIVE, now, now, info.link
                    )
                    changed = True
                    log.info("member %s (%s) learned from %s", info.name, info.address, sender.name)
            elif info.incarnation > member.incarnation and info.status in IN_RING and member.status not in IN_RING:
                member.address = info.address
                member.link = info.link
                member.last_heard = now
                changed |= self._set(member, ALIVE, info.incarnation)
            elif info.status == LEFT and info.incarnation >= member.incarnation and member.status != LEFT:
                changed |= self._set(member, LEFT, info.incarnation)
        if changed:
            self._rebuild_ring()

    def _set(self, member: MemberState, status: MemberStatus, incarnation: int) -> bool:
        """Update a member; the caller rebuilds the ring if anything changed."""
        changed = member.status != status or member.incarnation != incarnation
        member.incarnation = incarnation
        if member.status != status:
            member.status = status
            member.changed_at = self._clock.monotonic()
        return changed

    def _rebuild_ring(self) -> None:
        members = {
            m.name: m.address
            for m in self._members.values()
            if m.status in IN_RING and not (m.name == self.name and self._leaving)
        }
        ring = Ring(members, self._vnodes, self._version)
        if ring.same_members(self.ring):
            return
        self._version += 1
        self.changes_total += 1
        ring.version = self._version
        self.ring = ring
        log.info("ring v%d: %s", self._version, ", ".join(sorted(members)) or "(empty)")
        self._on_ring_change(ring)

    def _detect_failures(self) -> None:
        now = self._clock.monotonic()
        cfg = self._config
        changed = False
        for member in list(self._members.values()):
            if member.name == self.name:
                continue
            silent = now - member.last_heard
            if member.status == ALIVE and silent > cfg.suspect_after_seconds:
                member.status = SUSPECT
                member.changed_at = now
                log.warning("member %s is suspect (silent %.1fs)", member.name, silent)
            elif member.status == SUSPECT and silent > cfg.dead_after_seconds:
                member.status = DEAD
                member.changed_at = now
                changed = True
                log.warning("member %s is dead (silent %.1fs)", member.name, silent)
            elif member.status in (DEAD, LEFT) and now - member.changed_at > cfg.forget_dead_after_seconds:
                del self._members[member.name]
        if changed:
            self._rebuild_ring()

    async def _heartbeat_loop(self) -> None:
        interval = self._config.heartbeat_interval_seconds
        due = self._clock.monotonic()
        while True:
            try:
                # Silence counts only while this node was listening: a round
                # that starts late (this event loop was busy, e.g. with a
                # burst of calls) is not held against the peers, whose
                # answers may be waiting unread in our sockets.
                late = self._clock.monotonic() - due
                if late > interval:
                    self._excuse(late)
                self._detect_failures()
                if not self._leaving:
                    self._send_round()
            except Exception:
                log.exception("heartbeat round failed")
            due = self._clock.monotonic() + interval
            await asyncio.sleep(interval)

    def _excuse(self, seconds: float) -> None:
        for member in self._members.values():
            if member.name != self.name:
                member.last_heard += seconds


    def _send_round(self) -> None:
        targets = {m.address for m in self._members.values() if m.name != self.name}
        targets.update(s for s in self._config.seeds if s != self.address)
        payload = encode(self._snapshot())
        for address in targets:
            if address in self._in_flight:
                continue
            self._in_flight.add(address)
            task = asyncio.get_running_loop().create_task(
                self._exchange(address, payload), name=f"ipubsub-gossip-{address}"
            )
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _exchange(self, address: str, payload: bytes) -> None:
        try:
            status, body = await self._peers.call(
                address, INTERNAL_GOSSIP_PATH, payload, timeout=max(1.0, self._config.suspect_after_seconds)
            )
        except PeerUnreachable:
            return
        finally:
            self._in_flight.discard(address)
        if status == 200:
            try:
                reply = decode(body, Gossip)
            except Exception:
                return
            if reply.cluster == self._config.name and not self._leaving:
                self._merge(reply)
        elif address not in self._warned:
            self._warned.add(address)
            log.warning("peer %s refused our heartbeat (HTTP %d): %s", address, status, body[:200])
