"""The cluster as the node sees it: who owns a stream, forwarding to the
owner with the failure rules, leaving, hand-off, and the internal endpoints.

:class:`Cluster` is the only thing the node and the API touch; its parts
(membership, forwarder, hand-off, peer client) stay behind it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

import msgspec

from ..calls import AckCall, NackCall, ReceiveCall, Relayed, SendCall
from ..config import Config
from ..engine import Clock, Engine, Leases, Message
from ..errors import OwnerUnavailable
from ..protocol import (
    ACK_PATH,
    FORWARDED_HEADER,
    JSON_CONTENT_TYPE,
    NACK_PATH,
    REQUEST_ID_HEADER,
    AckBody,
    NackBody,
)
from .forwarder import Forwarder
from .handoff import HandoffManager
from .membership import Membership, MemberStatus
from .messages import CancelPoll, CancelPollReply, Requeue, decode, encode
from .peers import PeerClient, PeerUnreachable
from .ring import Ring

__all__ = ["Cluster", "ClusterSnapshot", "MemberSnapshot"]


class SettleReply(msgspec.Struct):
    """The owner's answer to a forwarded ack or nack, as far as it matters
    here: the receipts it held no lease for."""

    notFound: list[str] | None = None

log = logging.getLogger("ipubsub.cluster")

#: how long after a ring change a hand-off may still be on its way here
#: (history reads with a position of an unknown epoch wait instead of being
#: told the history is gone; see :meth:`Cluster.settling`)
HANDOFF_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """One member as this node sees it."""

    name: str
    address: str
    status: MemberStatus
    incarnation: int


@dataclass(frozen=True, slots=True)
class ClusterSnapshot:
    """This node's view of the cluster and its cluster counters, at one instant.

    ``ring_version`` counts this node's ring changes (it differs between
    nodes); ``ring_hash`` is equal on nodes whose rings hold the same members.
    """

    node: str
    cluster: str
    members: tuple[MemberSnapshot, ...]
    ring_members: tuple[str, ...]
    ring_version: int
    ring_hash: int
    virtual_nodes: int
    ring_changes: int
    forwarded: int
    handed_out: int
    handed_in: int
    handoff_batches: int
    handoff_pending: int


class Cluster:
    """Membership, ring, forwarding and hand-off for one node."""

    def __init__(self, config: Config, engine: Engine, clock: Clock | None = None) -> None:
        node, cluster = config.node, config.cluster
        self.name = node.name
        self.address = node.advertise
        self._cluster_name = cluster.name
        self._virtual_nodes = config.hash_ring.virtual_nodes
        self._engine = engine
        self._ring_changed_at = float("-inf")
        self.peers = PeerClient(
            secret=cluster.secret,
            connect_timeout=cluster.peer_connect_timeout_seconds,
            request_timeout=cluster.peer_request_timeout_seconds,
        )
        self.membership = Membership(
            cluster, self.name, self.address, config.hash_ring.virtual_nodes, self.peers, self._ring_changed, clock
        )
        self.forwarder = Forwarder(self.name, self.peers, self._requeue_locally)
        self.handoff = HandoffManager(
            self.name,
            cluster.name,
            engine,
            lambda: self.membership.ring,
            self.peers,
            self.membership.mark_suspect,
            cluster.handoff_retry_seconds,
        )

    # -- lifecycle ----------------------------------------------------------------

    def set_address(self, address: str) -> None:
        """The address peers reach this node at, once known (a listener on
        port 0 learns it when it binds).  Call before :meth:`start`."""
        self.address = address
        self.membership.set_address(address)

    async def start(self) -> None:
        await self.peers.start()
        self.membership.start()
        self.handoff.start()

    async def leave(self, timeout: float) -> None:
        """Announce the leave; from now on this node owns no stream."""
        await self.membership.leave(timeout)

    async def hand_off(self, timeout: float) -> bool:
        """Move every buffered message of streams owned elsewhere to its
        owner; return whether all found a new home within ``timeout``."""
        return await self.handoff.drain(timeout)

    async def release_forwarded_polls(self, timeout: float) -> None:
        """Ask owners to end every poll forwarded from here (shutdown)."""
        await self.forwarder.release_polls(timeout)

    @property
    def handoff_pending(self) -> int:
        """Messages in hand-off batches whose fate is not known yet."""
        return self.handoff.pending

    def settling(self) -> bool:
        """Whether a hand-off may still be on its way to this node: its ring
        changed less than :data:`HANDOFF_GRACE_SECONDS` ago and it has peers."""
        return time.monotonic() - self._ring_changed_at < HANDOFF_GRACE_SECONDS and self.has_peers

    @property
    def has_peers(self) -> bool:
        """Whether any other node is in this node's ring (somewhere to hand off to)."""
        return any(name != self.name for name in self.membership.ring.members)

    async def close(self, timeout: float) -> None:
        await self.forwarder.close(timeout)
        await self.handoff.close()
        await self.membership.close()
        await self.peers.close()

    # -- routing ----------------------------------------------------------------------

    @property
    def ring(self) -> Ring:
        return self.membership.ring

    def owner(self, stream_id: str) -> str | None:
        """Name of the owner of ``stream_id`` in this node's view (``None``
        when the ring is empty, i.e. this node is leaving a cluster of one)."""
        return self.membership.ring.owner(stream_id)

    def owns(self, stream_id: str) -> bool:
        owner = self.membership.ring.owner(stream_id)
        return owner is None or owner == self.name

    def carry_leases(self, leases: Leases) -> None:
        """Hand-off moves ``leases`` (the node's in-memory leases) with their
        streams, receipts unchanged.  Call before :meth:`start`."""
        self.handoff.leases = leases

    def served_elsewhere_owned(self, stream_id: str) -> None:
        """A forwarded call for a stream this node does not own was served
        here: let hand-off move whatever it left behind."""
        if not self.owns(stream_id):
            self.handoff.trigger()

    async def forward_send(self, cmd: SendCall, owner: str, request_id: str | None) -> Relayed | None:
        """Send through ``owner``; ``None`` means: serve it here after all.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable.
        """
        return await self._forward(owner, cmd.stream_id, lambda address: self.forwarder.send(address, cmd, request_id))

    async def forward_send_batch(self, owner: str, raw_items: list[bytes], request_id: str | None) -> Relayed:
        """Send a sub-batch (the exact request bodies of its items, every one
        owned by ``owner``) through ``owner`` as one ``sendBatch`` call; the
        owner serves them all itself.  The caller regroups the items if the
        owner is unreachable (the ring may have changed meanwhile).

        Raises:
            OwnerUnavailable: ``owner`` could not be reached (it is marked suspect).
        """
        try:
            return await self.forwarder.send_batch(self.membership.ring.address(owner), raw_items, request_id)
        except (PeerUnreachable, KeyError) as exc:
            self.membership.mark_suspect(owner)
            raise OwnerUnavailable(
                f"node {owner}, the owner of streams in this batch, is unreachable ({exc}); retry shortly",
                retry_after=1,
                node=owner,
            ) from None

    async def forward_receive(self, cmd: ReceiveCall, owner: str, request_id: str | None) -> Relayed | None:
        """Long-poll through ``owner``; ``None`` means: serve it here.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable.
        """
        return await self._forward(
            owner, cmd.stream_id, lambda address: self.forwarder.receive(address, cmd, request_id)
        )

    async def forward_settle(self, call: AckCall | NackCall, owner: str, request_id: str | None) -> list[bool]:
        """Ack or nack in-memory receipts on the stream's owner, which holds
        their leases; one answer per receipt (False: not held there either,
        or the owner is this node after all).

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable,
                or it refused the call.
        """
        if isinstance(call, AckCall):
            path, body = ACK_PATH, encode(AckBody(call.stream_id, receipts=list(call.receipts)))
        else:
            path = NACK_PATH
            body = encode(NackBody(call.stream_id, receipts=list(call.receipts), delaySeconds=call.delay_seconds))
        headers = {FORWARDED_HEADER: self.name, "Content-Type": JSON_CONTENT_TYPE}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        self.forwarder.forwarded_total += 1
        relayed = await self._forward(
            owner,
            call.stream_id,
            lambda address: self.peers.forward(address, "POST", path, headers=headers, body=body),
        )
        if relayed is None:
            return [False] * len(call.receipts)
        if relayed.status != 200:
            raise OwnerUnavailable(
                f"the owner of stream {call.stream_id!r}, node {owner}, refused to settle its leases "
                f"(HTTP {relayed.status}: {relayed.body[:200]!r}); retry shortly",
                retry_after=1,
                node=owner,
            )
        try:
            missing = set(msgspec.json.decode(relayed.body, type=SettleReply).notFound or ())
        except (msgspec.DecodeError, msgspec.ValidationError):
            raise OwnerUnavailable(
                f"the owner of stream {call.stream_id!r}, node {owner}, answered an ack it could not decode",
                retry_after=1,
                node=owner,
            ) from None
        return [receipt not in missing for receipt in call.receipts]

    async def _forward(self, owner: str, stream_id: str, call: Callable[[str], Any]) -> Relayed | None:
        for attempt in (1, 2):
            try:
                return await call(self.membership.ring.address(owner))
            except (PeerUnreachable, KeyError) as exc:
                self.membership.mark_suspect(owner)
                new_owner = self.owner(stream_id)
                if attempt == 1 and new_owner != owner:
                    if new_owner is None or new_owner == self.name:
                        return None
                    owner = new_owner
                    continue
                raise OwnerUnavailable(
                    f"the owner of stream {stream_id!r}, node {owner}, is unreachable ({exc}); retry shortly",
                    retry_after=1,
                    node=owner,
                ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    # -- views --------------------------------------------------------------------------

    def owner_view(self, stream_id: str) -> tuple[str, str]:
        owner = self.owner(stream_id) or self.name
        ring = self.membership.ring
        return owner, ring.address(owner) if owner in ring else self.address

    def snapshot(self) -> ClusterSnapshot:
        ring = self.membership.ring
        return ClusterSnapshot(
            node=self.name,
            cluster=self._cluster_name,
            members=tuple(
                MemberSnapshot(m.name, m.address, m.status, m.incarnation) for m in self.membership.members()
            ),
            ring_members=tuple(sorted(ring.members)),
            ring_version=ring.version,
            ring_hash=ring.fingerprint,
            virtual_nodes=self._virtual_nodes,
            ring_changes=self.membership.changes_total,
            forwarded=self.forwarder.forwarded_total,
            handed_out=self.handoff.moved_out_total,
            handed_in=self.handoff.moved_in_total,
            handoff_batches=self.handoff.batches_total,
            handoff_pending=self.handoff.pending,
        )

    # -- internal endpoints ------------------------------------------------------------

    def on_gossip(self, body: bytes) -> bytes:
        return self.membership.handle_gossip(body)

    def on_leave(self, body: bytes) -> None:
        self.membership.handle_leave(body)

    def on_handoff(self, body: bytes) -> int:
        return self.handoff.apply(body)

    def on_cancel_poll(self, body: bytes) -> bytes:
        req = decode(body, CancelPoll)
        cancelled = self._engine.cancel_poll(req.pollId, "poll cancelled by the forwarding node")
        return encode(CancelPollReply(cancelled))

    def on_requeue(self, body: bytes) -> None:
        req = decode(body, Requeue)
        if req.receipts:
            self._give_back_leases(req.streamId, req.receipts)
            return
        msgs = [Message(m.uuid, bytes(m.message), m.timestampUs) for m in (req.message, *req.more)]
        self._requeue_locally(req.streamId, msgs)

    def _give_back_leases(self, stream_id: str, receipts: list[str]) -> None:
        """A leased answer forwarded from here never reached its client: end
        its leases without counting a delivery (a lease no longer held ended
        already, and its message came back or was acknowledged then)."""
        leases = self.handoff.leases
        if leases is not None:
            for receipt in receipts:
                leases.give_back(stream_id, receipt)

    # -- internals ------------------------------------------------------------------------

    def _requeue_locally(self, stream_id: str, msgs: list[Message]) -> None:
        self._engine.give_back(stream_id, msgs)
        if not self.owns(stream_id):
            self.handoff.trigger()

    def _ring_changed(self, ring: Ring) -> None:
        self._ring_changed_at = time.monotonic()
        self.handoff.trigger()
