"""The cluster as the node sees it: who owns a stream, forwarding to the
owner with the failure rules, leaving, hand-off, and the internal endpoints."""

from __future__ import annotations

import logging
from typing import Any, Callable

from ..commands import ReceiveCommand, Relayed, SendCommand
from ..config import Config
from ..engine import Engine, Message
from ..errors import OwnerUnavailable
from .forwarder import Forwarder
from .handoff import HandoffManager
from .membership import Membership
from .peers import PeerClient, PeerUnreachable
from .ring import Ring
from .wire import CancelPoll, CancelPollReply, Requeue, decode, encode

__all__ = ["Cluster"]

log = logging.getLogger("ipubsub.cluster")

_PUBLIC_STATUS = {"alive": "alive", "suspect": "suspect", "dead": "dead", "left": "dead"}


class Cluster:
    """Membership, ring, forwarding and hand-off for one node."""

    def __init__(self, config: Config, engine: Engine) -> None:
        node, cluster = config.node, config.cluster
        self.name = node.name
        self.address = node.advertise
        self._cluster_name = cluster.name
        self._virtual_nodes = config.hash_ring.virtual_nodes
        self._engine = engine
        self.peers = PeerClient(
            secret=cluster.secret,
            connect_timeout=cluster.peer_connect_timeout_seconds,
            request_timeout=cluster.peer_request_timeout_seconds,
        )
        self.membership = Membership(
            cluster, self.name, self.address, config.hash_ring.virtual_nodes, self.peers, self._ring_changed
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

    async def start(self) -> None:
        await self.peers.start()
        self.membership.start()
        self.handoff.start()

    async def leave(self, timeout: float) -> None:
        """Announce the leave; from now on this node owns no stream."""
        await self.membership.leave(timeout)

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

    def served_elsewhere_owned(self, stream_id: str) -> None:
        """A forwarded call for a stream this node does not own was served
        here: let hand-off move whatever it left behind."""
        if not self.owns(stream_id):
            self.handoff.trigger()

    async def forward_send(self, cmd: SendCommand, owner: str, request_id: str | None) -> Relayed | None:
        """Send through ``owner``; ``None`` means: serve it here after all.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable.
        """
        return await self._forward(owner, cmd.stream_id, lambda address: self.forwarder.send(address, cmd, request_id))

    async def forward_receive(self, cmd: ReceiveCommand, owner: str, request_id: str | None) -> Relayed | None:
        """Long-poll through ``owner``; ``None`` means: serve it here.

        Raises:
            OwnerUnavailable: the owner (and any new owner) is unreachable.
        """
        return await self._forward(
            owner, cmd.stream_id, lambda address: self.forwarder.receive(address, cmd, request_id)
        )

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

    def view(self) -> dict[str, object]:
        ring = self.membership.ring
        return {
            "self": self.name,
            "cluster": self._cluster_name,
            "members": [
                {"name": m.name, "address": m.address, "status": _PUBLIC_STATUS[m.status], "incarnation": m.incarnation}
                for m in self.membership.members()
            ],
            "ringVersion": ring.version,
            "ringHash": ring.fingerprint,
            "ringMembers": sorted(ring.members),
            "virtualNodes": self._virtual_nodes,
        }

    def stats(self) -> dict[str, int]:
        members = self.membership.members()
        return {
            "members": len(members),
            "alive": sum(1 for m in members if m.status == "alive"),
            "ringSize": len(self.membership.ring),
            "ringVersion": self.membership.ring.version,
            "ringChanges": self.membership.changes_total,
            "forwarded": self.forwarder.forwarded_total,
            "handedOutMessages": self.handoff.moved_out_total,
            "handedInMessages": self.handoff.moved_in_total,
            "handoffPending": self.handoff.pending,
        }

    # -- internal endpoints ------------------------------------------------------------

    def on_gossip(self, body: bytes) -> bytes:
        return self.membership.handle_gossip(body)

    def on_leave(self, body: bytes) -> None:
        self.membership.handle_leave(body)

    def on_handoff(self, body: bytes) -> int:
        return self.handoff.apply(body)

    def on_cancel_poll(self, body: bytes) -> bytes:
        req = decode(body, CancelPoll)
        assert isinstance(req, CancelPoll)
        cancelled = self._engine.cancel_poll(req.pollId, "poll cancelled by the forwarding node")
        return encode(CancelPollReply(cancelled))

    def on_requeue(self, body: bytes) -> None:
        req = decode(body, Requeue)
        assert isinstance(req, Requeue)
        m = req.message
        self._requeue_locally(req.streamId, Message(m.uuid, bytes(m.message), m.timestampUs))

    # -- internals ------------------------------------------------------------------------

    def _requeue_locally(self, stream_id: str, msg: Message) -> None:
        self._engine.requeue(stream_id, msg)
        if not self.owns(stream_id):
            self.handoff.trigger()

    def _ring_changed(self, ring: Ring) -> None:
        self.handoff.trigger()
