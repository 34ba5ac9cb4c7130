"""A node's request flow: where each call is served (here or on the
stream's owner) and how -- send, receive, give-back, ack/nack, consumer
groups and history reads.

:class:`NodeCalls` is a part of :class:`~ipubsub.node.Node` (its base class),
which wires the components these methods use and owns the lifecycle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from .calls import AckCall, Delivery, NackCall, ReceiveCall, Relayed, SendCall, Sent
from .cluster.forwarder import gives_back
from .engine import Deliver, HistoryRead, Message, Parked, new_uuid, parse_position
from .errors import HistoryGap, IPubSubError, NodeDraining, PersistenceNotConfigured
from .leasing import Settle
from .node_batches import BatchResult, read_log_batch, receive_memory_batch
from .observability.logs import REQUEST_ID
from .observability.snapshot import NodeState
from .storage import NewMessage
from .storage.base import GroupInfo
from .storage.tokens import decode_token, encode_token

if TYPE_CHECKING:
    from .cluster.cluster import Cluster
    from .engine import Clock, Engine
    from .leasing import AtLeastOnce
    from .limits import NodeLimits
    from .node import Node
    from .node_batches import Batches
    from .observability.counters import CallCounts
    from .storage.durable import DurableLog

__all__ = ["LEASE_HANDOFF_WAIT_SECONDS", "NodeCalls"]

log = logging.getLogger("ipubsub.node")  # the node's logger: these are its lines

# How long an ack or nack of a lease not held here waits during a ring change
# (Cluster.settling) for the hand-off that may be bringing it.
LEASE_HANDOFF_WAIT_SECONDS = 2.0


class NodeCalls:
    """The calls a node serves (the API layer calls these on the
    :class:`~ipubsub.node.Node`); the attributes below are set by ``Node``."""

    name: str
    clock: Clock
    engine: Engine
    cluster: Cluster
    durable: DurableLog | None
    at_least_once: AtLeastOnce
    limits: NodeLimits
    calls: CallCounts
    batches: Batches
    state: NodeState

    async def send(
        self, cmd: SendCall, *, forwarded_by: str | None = None, request_id: str | None = None
    ) -> Sent | Relayed:
        """Accept a message for its stream, here or through its owner.

        A call forwarded by another node (``forwarded_by``) is always served
        here, so that nodes whose views of the ring differ cannot loop.

        Raises:
            SendTimeout, StreamReleased, BufferFull, PersistenceNotConfigured,
            StorageUnavailable, OwnerUnavailable: see :mod:`ipubsub.errors`.
        """
        stream_id = cmd.stream_id
        if cmd.persist and self.durable is None:
            raise self._no_persistence("writeToDB")
        owner = self._remote_owner(stream_id, forwarded_by, "send")
        if owner is not None:
            relayed = await self.cluster.forward_send(cmd, owner, self._trace(request_id, "send", stream_id, owner))
            if relayed is not None:
                return relayed
        if cmd.persist:
            return await self._persist(cmd)
        if not cmd.blocking_timeout:
            return self._send_now(cmd, forwarded_by is not None)
        msg = self._accepting(cmd)
        await self.engine.send(stream_id, msg, cmd.size, cmd.blocking_timeout, cmd.history)
        if forwarded_by is not None:
            self.cluster.served_elsewhere_owned(stream_id)
        return Sent(msg.uuid)

    def send_forwarded_now(self, cmd: SendCall) -> Sent | None:
        """Serve a send forwarded by a peer at once, without a task, if it
        never waits (in memory, not blocking); ``None``: it needs
        :meth:`send`.

        Raises:
            SendTimeout, BufferFull, NodeDraining, TooManyStreams: see :meth:`send`.
        """
        if cmd.persist or cmd.blocking_timeout:
            return None
        self.calls.add("send", "for_peer")
        return self._send_now(cmd, True)

    def _accepting(self, cmd: SendCall) -> Message:
        if self.state is not NodeState.RUNNING and not len(self.cluster.ring):
            raise NodeDraining("this node is shutting down; retry on another node", retry_after=1)
        self.limits.check_stream(cmd.stream_id)
        return Message(cmd.uuid or new_uuid(), cmd.payload, self.clock.time_us())

    def _send_now(self, cmd: SendCall, forwarded: bool) -> Sent:
        msg = self._accepting(cmd)
        self.engine.send_nowait(cmd.stream_id, msg, cmd.size, cmd.history)
        if forwarded:
            self.cluster.served_elsewhere_owned(cmd.stream_id)
        return Sent(msg.uuid)

    async def send_batch(
        self, items: list[SendCall | IPubSubError], *, forwarded_by: str | None = None, request_id: str | None = None
    ) -> list[BatchResult]:
        """Accept a batch of sends, each item where its stream is owned; one
        result per item in request order (see :mod:`ipubsub.node_batches`).
        Never raises for an item: its result is its error."""
        return await self.batches.send_batch(items, forwarded_by=forwarded_by, request_id=request_id)

    async def receive(
        self,
        cmd: ReceiveCall,
        *,
        forwarded_by: str | None = None,
        poll_id: str | None = None,
        request_id: str | None = None,
    ) -> Delivery | list[Delivery] | Relayed:
        """Take the next message of a stream (here or through its owner), or
        read the durable log.  A leased receive (``lease_seconds``) or a
        consumer group's (``group``) answers a list of leased deliveries, a
        batch receive (``max_messages``) a list of 1 to that many.

        Raises:
            ReceiveTimeout, StreamReleased, InvalidToken,
            PersistenceNotConfigured, StorageUnavailable, OwnerUnavailable.
        """
        stream_id = cmd.stream_id
        after = None
        if cmd.from_db:
            if self.durable is None:
                raise self._no_persistence("readFromDB")
            if cmd.token is not None:
                after = decode_token(cmd.token, stream_id)
        owner = self._remote_owner(stream_id, forwarded_by, "receive")
        if owner is not None:
            relayed = await self.cluster.forward_receive(
                cmd, owner, self._trace(request_id, "receive", stream_id, owner)
            )
            if relayed is not None:
                return relayed
        if cmd.group is not None:
            return await self.at_least_once.group_receive(cmd)
        if cmd.from_db:
            assert self.durable is not None
            if cmd.max_messages is not None:
                return await read_log_batch(cast("Node", self), cmd, after)
            row = await self.durable.read(stream_id, after, cmd.timeout)
            return Delivery(Message(row.uuid, row.payload, row.timestamp_us), encode_token(stream_id, row.position))
        if forwarded_by is not None:
            self.cluster.served_elsewhere_owned(stream_id)
        if cmd.timeout:
            self.limits.check_poll(stream_id)
        if cmd.lease_seconds is not None:
            return await self.at_least_once.receive(cmd)
        if cmd.max_messages is not None:
            return await receive_memory_batch(cast("Node", self), cmd, poll_id)
        return Delivery(await self.engine.receive(stream_id, cmd.timeout, poll_id))

    def give_back(self, cmd: ReceiveCall, deliveries: Sequence[Delivery]) -> None:
        """The answer to ``cmd`` carrying ``deliveries`` never reached its
        receiver: in-memory messages go back to the front of their stream (or
        to the next waiting receiver) in their order; leased ones end their
        lease without counting a delivery, back at the front too.  Durable
        reads need nothing: the log keeps the rows, and a consumer group's
        claim expires with its lease."""
        if cmd.from_db or cmd.group is not None:
            return
        stream_id = cmd.stream_id
        if cmd.lease_seconds is not None:
            for delivery in deliveries:
                if delivery.receipt is not None:
                    self.at_least_once.give_back(stream_id, delivery.receipt)
            return
        self.engine.give_back(stream_id, [delivery.message for delivery in deliveries])

    def park_forwarded_receive(self, cmd: ReceiveCall, deliver: Deliver) -> Parked | None:
        """Serve an in-memory take forwarded by a peer (a plain receive, or
        a batch with ``maxMessages``) without a task: ``deliver`` gets the
        message (a list for a batch), ``None`` on timeout, or a
        :class:`~ipubsub.engine.Released` — see :meth:`Engine.park`.

        Raises:
            TooManyPolls, TooManyStreamPolls, TooManyStreams: limits.
        """
        stream_id = cmd.stream_id
        self.calls.add("receive", "for_peer")
        self.cluster.served_elsewhere_owned(stream_id)
        if cmd.timeout:
            self.limits.check_poll(stream_id)
        if cmd.max_messages is None:
            return self.engine.park(stream_id, cmd.timeout, deliver)
        return self.engine.park_many(stream_id, cmd.timeout, cmd.max_messages, deliver)

    def give_back_forwarded(self, cmd: ReceiveCall, answer: Relayed) -> None:
        """A forwarded receive's answer could not be written to its client:
        the messages it carried go back to the owner that handed them out
        (in-memory takes only; a durable, leased or history read left
        them where they were)."""
        if answer.status == 200 and answer.owner and gives_back(cmd):
            self.cluster.give_back(answer.owner, cmd.stream_id, answer.body)

    async def ack(
        self, call: AckCall, *, forwarded_by: str | None = None, request_id: str | None = None
    ) -> list[bool]:
        """Acknowledge leased deliveries by receipt, through any node: an
        in-memory lease held here is settled here, one held elsewhere on the
        stream's owner; group receipts in the database.  One answer per
        receipt.

        Raises:
            InvalidToken, PersistenceNotConfigured, StorageUnavailable, OwnerUnavailable.
        """
        owner = self._lease_owner(call, forwarded_by, request_id)
        return await self.at_least_once.ack(call, owner, self._handoff_wait(owner))

    async def nack(
        self, call: NackCall, *, forwarded_by: str | None = None, request_id: str | None = None
    ) -> list[bool]:
        """Give leased deliveries back (see :meth:`ack`).

        Raises:
            InvalidToken, PersistenceNotConfigured, StorageUnavailable, OwnerUnavailable.
        """
        owner = self._lease_owner(call, forwarded_by, request_id)
        return await self.at_least_once.nack(call, owner, self._handoff_wait(owner))

    def _handoff_wait(self, owner: Settle | None) -> float:
        """How long an ack served here waits for leases a hand-off may be
        bringing: :data:`LEASE_HANDOFF_WAIT_SECONDS` during a ring change."""
        return LEASE_HANDOFF_WAIT_SECONDS if owner is None and self.cluster.settling() else 0.0

    def _lease_owner(
        self, call: AckCall | NackCall, forwarded_by: str | None, request_id: str | None
    ) -> Settle | None:
        """Where receipts of leases not held here are settled: on the
        stream's owner, unless that is this node or a peer forwarded the call."""
        owner = None if forwarded_by is not None else self.cluster.owner(call.stream_id)
        if owner is None or owner == self.name:
            return None

        async def settle(sub: AckCall | NackCall) -> list[bool]:
            trace = self._trace(request_id, "ack" if isinstance(sub, AckCall) else "nack", sub.stream_id, owner)
            return await self.cluster.forward_settle(sub, owner, trace)

        return settle

    async def groups(self, stream_id: str) -> list[GroupInfo]:
        """The consumer groups of a durable stream (read from the database,
        which every node shares).

        Raises:
            PersistenceNotConfigured, StorageUnavailable.
        """
        return await self.at_least_once.list_groups(stream_id)

    async def delete_group(self, stream_id: str, group: str) -> None:
        """Remove a consumer group and its pending entries.

        Raises:
            GroupNotFound, PersistenceNotConfigured, StorageUnavailable.
        """
        await self.at_least_once.delete_group(stream_id, group)

    async def read_history(
        self, cmd: ReceiveCall, *, forwarded_by: str | None = None, request_id: str | None = None
    ) -> HistoryRead | Relayed:
        """Read the stream's fan-out history after ``cmd.position`` (here or
        through its owner): up to ``cmd.max_messages`` (default 1) messages,
        waiting up to ``cmd.timeout`` seconds for the first.

        Raises:
            HistoryNotKept: the stream keeps no history.
            HistoryGap: ``cmd.strict`` and the position cannot be recovered.
            StreamReleased, OwnerUnavailable, TooManyPolls, TooManyStreamPolls.
        """
        stream_id = cmd.stream_id
        owner = self._remote_owner(stream_id, forwarded_by, "receive")
        if owner is not None:
            relayed = await self.cluster.forward_receive(
                cmd, owner, self._trace(request_id, "receive", stream_id, owner)
            )
            if relayed is not None:
                return relayed
        if cmd.timeout:
            self.limits.check_poll(stream_id)
        position = parse_position(cmd.position) if cmd.position is not None else None
        read = await self.engine.read_history(
            stream_id, position, cmd.timeout, cmd.max_messages or 1, wait_unknown=self.cluster.settling()
        )
        if read.recovered is False and cmd.strict:
            raise HistoryGap(stream_id, read.gap or "epoch", read.position)
        return read

    async def _persist(self, cmd: SendCall) -> Sent:
        assert self.durable is not None
        now = self.clock.time_us()
        stored = NewMessage(
            cmd.stream_id, cmd.uuid or new_uuid(), cmd.payload, now, now + cmd.ttl_seconds * 1_000_000
        )
        result = await self.durable.append(stored)
        return Sent(stored.uuid, encode_token(cmd.stream_id, result.position))

    def _remote_owner(self, stream_id: str, forwarded_by: str | None, kind: str) -> str | None:
        """The owner to forward to, or ``None`` to serve here (we own the
        stream, or a peer forwarded the call: never forward twice)."""
        if forwarded_by is not None:
            self.calls.add(kind, "for_peer")
            return None
        owner = self.cluster.owner(stream_id)
        if owner is None or owner == self.name:
            self.calls.add(kind, "local")
            return None
        self.calls.add(kind, "forwarded")
        return owner

    @staticmethod
    def _trace(request_id: str | None, kind: str, stream_id: str, owner: str) -> str:
        """The id that follows this call to the owner (made up if the client
        sent none), also tagged on this node's log lines."""
        if request_id is None:
            request_id = new_uuid()
            REQUEST_ID.set(request_id)
        log.debug("forwarding %s on stream %r to owner %s", kind, stream_id, owner)
        return request_id

    @staticmethod
    def _no_persistence(field: str) -> PersistenceNotConfigured:
        return PersistenceNotConfigured(
            "persistence is not configured on this node (storage.backend: none)", field=field
        )
