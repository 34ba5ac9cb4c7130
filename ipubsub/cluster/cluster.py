"""The cluster as the node sees it: who owns a stream, forwarding to the
owner with the failure rules, leaving, hand-off, and the internal endpoints.

:class:`Cluster` is the only thing the node and the API touch; its parts
(membership, forwarder, hand-off, peer client) stay behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import msgspec

from ..calls import AckCall, NackCall, ReceiveCall, Relayed, SendCall
from ..config import Config, parse_address
from ..engine import Clock, Engine, Leases, Message
from ..errors import IPubSubError, OwnerUnavailable
from .forwarder import Forwarder, returned_messages
from .handoff import HandoffManager
from .link import Identity, Incoming, LinkBusy, LinkDown, LinkError, LinkLimits, LinkRejected
from .link_calls import Answer, GiveBack, HandoffBatch
from .links import Links
from .membership import Membership, MemberStatus
from .peers import PeerClient
from .ring import Ring

__all__ = ["Cluster", "ClusterSnapshot", "MemberSnapshot"]


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
    link_listen: str
    link_advertise: str
    link: dict[str, int]
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
        # A node that just started may be in a ring with peers before any
        # change is reported to it: count its start as a change, so that
        # positions and receipts on their way to it are waited for.
        self._ring_changed_at = time.monotonic()
        self.peers = PeerClient(
            secret=cluster.secret,
            connect_timeout=cluster.peer_connect_timeout_seconds,
            request_timeout=cluster.peer_request_timeout_seconds,
        )
        self.membership = Membership(
            cluster, self.name, self.address, config.hash_ring.virtual_nodes, self.peers, self._ring_changed, clock
        )
        self._link_config = cluster
        limits = LinkLimits(
            max_in_flight=cluster.link_max_in_flight, connect_timeout=cluster.peer_connect_timeout_seconds
        )
        identity = Identity(cluster.name, self.name, self.membership.incarnation, cluster.secret.encode())
        self.links = Links(identity, limits, self.membership.link_of, self._on_link_call)
        self.link_advertise = ""
        self._tagged_ring: Ring | None = None
        self._ring_tag = ""
        # the owner's side of forwarded public calls (set by the API layer)
        self._serve_forwarded: Callable[[Incoming], Awaitable[None] | None] | None = None
        self.forwarder = Forwarder(self.links, self._requeue_locally)
        self.handoff = HandoffManager(
            self.name,
            cluster.name,
            engine,
            lambda: self.membership.ring,
            self.links,
            self.membership.mark_suspect,
            cluster.handoff_retry_seconds,
        )

    # -- lifecycle ----------------------------------------------------------------

    def set_address(self, address: str) -> None:
        """The address peers reach this node at, once known (a listener on
        port 0 learns it when it binds).  Call before :meth:`start`."""
        self.address = address
        self.membership.set_address(address)

    def serve_forwarded_calls(self, handler: Callable[[Incoming], Awaitable[None] | None]) -> None:
        """Who serves the public calls peers forward here over the link
        (the API layer: it answers them exactly as it answers a client)."""
        self._serve_forwarded = handler

    async def start(self) -> None:
        """Open the link listener, then start heartbeating and hand-off.

        Raises:
            OSError: the link address cannot be bound.
        """
        cfg = self._link_config
        listen = cfg.link_listen or f"{parse_address(self.address, allow_any_port=True)[0]}:0"
        host, port = parse_address(listen, allow_any_port=True)
        bound_host, bound_port = await self.links.start(host, port)
        if cfg.link_advertise:
            self.link_advertise = cfg.link_advertise
        else:
            if bound_host in ("0.0.0.0", "::", ""):
                bound_host = parse_address(self.address, allow_any_port=True)[0]
            self.link_advertise = f"[{bound_host}]:{bound_port}" if ":" in bound_host else f"{bound_host}:{bound_port}"
        self.links.address = f"{host}:{bound_port}"
        self.membership.set_link(self.link_advertise)
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
        await self.links.close(grace=timeout)
        await self.peers.close()

    # -- routing ----------------------------------------------------------------------

    @property
    def ring(self) -> Ring:
        return self.membership.ring

    def ring_tag(self) -> str:
        """The ring's hash as the ring header carries it (see ``RING_HEADER``)."""
        ring = self.membership.ring
        if ring is not self._tagged_ring:
            self._tagged_ring, self._ring_tag = ring, str(ring.fingerprint)
        return self._ring_tag

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

        A send that may have reached the owner is never replayed (in-memory
        sends are not deduplicated): its outcome is unknown, and the answer
        says so (503).

        Raises:
            OwnerUnavailable: the owner is unreachable, busy, or did not
                answer (see the message).
        """
        return await self._forward(
            owner, cmd.stream_id, lambda name: self.forwarder.send(name, cmd, request_id), replay_safe=False
        )

    async def forward_settle(self, call: AckCall | NackCall, owner: str, request_id: str | None) -> list[bool]:
        """Ack or nack in-memory receipts on the stream's owner, which holds
        their leases; one answer per receipt (False: not held there either,
        or the owner is this node after all).  Like a send, a settle that may
        have reached the owner is not replayed.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable,
                or it refused the call.
        """
        relayed = await self._forward(
            owner, call.stream_id, lambda name: self.forwarder.settle(name, call, request_id), replay_safe=False
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
            answers = msgspec.json.decode(relayed.body, type=list[bool])
        except (msgspec.DecodeError, msgspec.ValidationError):
            answers = []
        if len(answers) != len(call.receipts):
            raise OwnerUnavailable(
                f"the owner of stream {call.stream_id!r}, node {owner}, answered an ack it could not decode",
                retry_after=1,
                node=owner,
            )
        return answers

    async def forward_send_batch(self, owner: str, raw_items: list[bytes], request_id: str | None) -> Relayed:
        """Send a sub-batch (the exact request bodies of its items, every one
        owned by ``owner``) through ``owner`` as one ``sendBatch`` call; the
        owner serves them all itself.

        Raises:
            OwnerUnavailable: ``owner`` could not be reached, is busy, or did
                not answer; its ``replay_safe`` is true when the items did
                not reach the owner (a broken link marks it suspect).
        """
        try:
            return await self.forwarder.send_batch(owner, raw_items, request_id)
        except LinkError as exc:
            if isinstance(exc, LinkDown) and not isinstance(exc, LinkRejected):
                self.membership.mark_suspect(owner)
            error = self._unavailable(owner, "streams in this batch", exc)
            # the caller may send these items elsewhere only if they never reached the owner
            error.replay_safe = not exc.may_have_reached and not isinstance(exc, LinkBusy)  # type: ignore[attr-defined]
            raise error from None

    async def forward_receive(self, cmd: ReceiveCall, owner: str, request_id: str | None) -> Relayed | None:
        """Receive through ``owner``; ``None`` means: serve it here.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable.
            StreamReleased: the poll was ended from here (shutdown).
        """
        return await self._forward(
            owner, cmd.stream_id, lambda name: self.forwarder.receive(name, cmd, request_id), replay_safe=True
        )

    def give_back(self, owner: str, stream_id: str, body: bytes) -> None:
        """A forwarded poll's 200 answer (``body``) could not be written to
        the client: give its messages back to ``owner``."""
        self.forwarder.give_back(owner, stream_id, body)

    async def _forward(
        self, owner: str, stream_id: str, call: Callable[[str], Awaitable[Relayed]], *, replay_safe: bool
    ) -> Relayed | None:
        for attempt in (1, 2):
            try:
                return await call(owner)
            except LinkError as exc:
                # Only a link that cannot be opened or that broke is evidence
                # against the owner: a busy link, a refused or a slow call is not.
                if isinstance(exc, LinkDown) and not isinstance(exc, LinkRejected):
                    self.membership.mark_suspect(owner)
                if isinstance(exc, LinkBusy) or (exc.may_have_reached and not replay_safe):
                    raise self._unavailable(owner, f"stream {stream_id!r}", exc) from None
                new_owner = self.owner(stream_id)
                if attempt == 1 and new_owner != owner:
                    if new_owner is None or new_owner == self.name:
                        return None
                    owner = new_owner
                    continue
                raise self._unavailable(owner, f"stream {stream_id!r}", exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _unavailable(owner: str, what: str, exc: LinkError) -> OwnerUnavailable:
        if isinstance(exc, LinkBusy):
            text = f"too many calls in flight to node {owner}, the owner of {what} ({exc.reason}); retry shortly"
        elif exc.may_have_reached:
            text = (
                f"node {owner}, the owner of {what}, did not answer ({exc.reason}); the call may or may "
                "not have taken effect there"
            )
        else:
            text = f"node {owner}, the owner of {what}, is unreachable ({exc.reason}); retry shortly"
        return OwnerUnavailable(text, retry_after=1, node=owner)

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
            link_listen=self.links.address,
            link_advertise=self.link_advertise,
            link=self.links.stats(),
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

    def _on_link_call(self, incoming: Incoming) -> Awaitable[None] | None:
        meta = incoming.meta
        if isinstance(meta, GiveBack):
            self._take_back(incoming, meta)
        elif isinstance(meta, HandoffBatch):
            try:
                count = self.handoff.apply(incoming.payload)
            except IPubSubError as exc:
                incoming.reply(Answer(409 if exc.code == "wrong_cluster" else 400), str(exc).encode())
            else:
                incoming.reply(Answer(200), b'{"ok":true,"messages":%d}' % count)
        elif self._serve_forwarded is not None:
            return self._serve_forwarded(incoming)
        else:
            incoming.abort("this node serves no forwarded calls yet")
        return None

    def _take_back(self, incoming: Incoming, meta: GiveBack) -> None:
        try:
            msgs, receipts = returned_messages(incoming.payload)
        except (msgspec.DecodeError, ValueError) as exc:
            incoming.reply(Answer(400), f"not a receive answer: {exc}".encode())
            return
        if receipts:
            self._give_back_leases(meta.stream_id, receipts)
        elif msgs:
            self._requeue_locally(meta.stream_id, msgs)
        incoming.reply(Answer(200))

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
