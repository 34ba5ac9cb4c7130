"""A node: wires the engine, the cluster and storage together, decides where
each call is served, and owns the lifecycle (start, drain, stop)."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import resource
import socket
import time
from typing import TYPE_CHECKING, Sequence

from aiohttp import web

from . import __version__
from .auth.exposure import log_exposure
from .auth.refusals import Refusals, RefusalsCollector
from .calls import AckCall, Delivery, NackCall, ReceiveCall, Relayed, SendCall, Sent
from .cluster.cluster import Cluster
from .cluster.forwarder import gives_back
from .config import Config, parse_address
from .dashboard import Dashboard
from .engine import Clock, Deliver, Engine, HistoryRead, Message, Parked, SystemClock, new_uuid, parse_position
from .errors import HistoryGap, IPubSubError, NodeDraining, PersistenceNotConfigured
from .leasing import AtLeastOnce, Settle
from .limits import NodeLimits
from .node_batches import BatchResult, Batches, read_log_batch, receive_memory_batch
from .tls import TlsContexts
from .observability.counters import CallCounts
from .observability.history_metrics import HistoryCollector
from .observability.logs import REQUEST_ID
from .observability.metrics import NodeMetrics, RequestMetrics
from .observability.snapshot import NodeSnapshot, NodeState, ProcessSnapshot
from .storage import NewMessage, create_store
from .spill import restore_buffers, spill_buffers
from .storage.base import GroupInfo
from .storage.durable import DurableLog, StorageStatus
from .storage.tokens import decode_token, encode_token
from .subscriptions import Subscriptions

if TYPE_CHECKING:
    from .api.listener import ConnectionGate

__all__ = ["Node"]

log = logging.getLogger("ipubsub.node")

# How long start() waits for the database before serving without it.
STORAGE_STARTUP_WAIT_SECONDS = 2.0
# How long an ack or nack of a lease not held here waits during a ring change
# (Cluster.settling) for the hand-off that may be bringing it.
LEASE_HANDOFF_WAIT_SECONDS = 2.0


class Node:
    """One ipubsub node.

    ``start()`` starts the background components, ``serve()`` opens the HTTP
    listener, ``stop()`` runs the shutdown sequence.  Tests may skip
    ``serve()`` and mount :func:`ipubsub.api.app.build_app` on a test server.
    """

    def __init__(self, config: Config, *, clock: Clock | None = None) -> None:
        self.config = config
        self.name = config.node.name
        self.address = config.node.advertise
        self.clock = clock or SystemClock()
        self.engine = Engine(
            clock=self.clock,
            idle_seconds=config.match.stream_idle_seconds,
            max_stream_bytes=config.limits.max_stream_bytes,
            max_buffered_bytes=config.limits.max_buffered_bytes,
        )
        self.cluster = Cluster(config, self.engine, self.clock)
        self.tls = TlsContexts(config)
        self.cluster.peers.use_tls(self.tls.peer_client)
        self.cluster.links.use_tls(self.tls.link_server, self.tls.peer_client)
        store = create_store(config.storage)
        self.durable = DurableLog(store, config.storage, self.clock) if store is not None else None
        # leases, consumer groups and dead letters (at-least-once delivery)
        self.at_least_once = AtLeastOnce(self.engine, config.leases, self.durable, self.cluster.served_elsewhere_owned)
        self.cluster.carry_leases(self.at_least_once.leases)  # leased messages move with their streams
        self.request_metrics = RequestMetrics()
        self.calls = CallCounts()
        self.metrics = NodeMetrics(self.snapshot, self.request_metrics)
        # what the node refused to protect itself (auth, limits, timeouts): ipubsub_refused_total
        self.refusals = Refusals()
        self.gate: ConnectionGate | None = None  # the public listener's, once serving
        self.limits = NodeLimits(config.limits, self.engine, self.refusals)
        self.metrics.registry.register(HistoryCollector(self.engine.history_stats))
        self.metrics.registry.register(
            RefusalsCollector(self.refusals, lambda: self.gate.open_connections if self.gate is not None else 0)
        )
        self.dashboard = Dashboard(self)
        self.batches = Batches(self)
        self.subscriptions = Subscriptions(self)  # SSE and WebSocket subscribers
        self.state = NodeState.NEW
        self._started_monotonic = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._site: web.BaseSite | None = None
        self._socket: socket.socket | None = None
        self._stopping: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    def bind(self) -> str:
        """Bind the HTTP listening socket on ``node.listen`` (not accepting
        yet: :meth:`serve` does); return the ``host:port`` it got.  With port
        0 the system picks a free port, which the node then advertises to
        its peers.  Call before :meth:`start` so that the first heartbeat
        already carries the real address.

        Raises:
            OSError: the address cannot be bound.
        """
        if self._socket is None:
            host, port = parse_address(self.config.node.listen, allow_any_port=True)
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
            except OSError:
                sock.close()
                raise
            sock.setblocking(False)
            self._socket = sock
            bound = f"[{host}]:{sock.getsockname()[1]}" if family == socket.AF_INET6 else f"{host}:{sock.getsockname()[1]}"
            if port == 0 and self.config.node.advertise == self.config.node.listen:
                self.address = bound
                self.cluster.set_address(bound)
        return self.listen_address

    @property
    def listen_address(self) -> str:
        """``host:port`` of the bound listener (the configured one before :meth:`bind`)."""
        if self._socket is None:
            return self.config.node.listen
        host, port = self._socket.getsockname()[:2]
        return f"[{host}]:{port}" if self._socket.family == socket.AF_INET6 else f"{host}:{port}"

    async def start(self) -> None:
        """Start background components (idle sweeper, storage, membership)."""
        self.engine.start()
        if self.durable is not None:
            await self.durable.start()
            self._warn_if_local_storage_in_cluster()
            # A reachable database is normally open before we serve; one that
            # is down does not stop the node (persisted calls answer 503).
            if not await self.durable.wait_up(STORAGE_STARTUP_WAIT_SECONDS):
                log.warning("starting without storage: %s", self.durable.last_error or "still connecting")
            else:
                await restore_buffers(self.engine, self.durable, self.name)  # before serving anything
        from .api.forwarded import ForwardedCalls  # the API layer answers forwarded calls

        self.cluster.serve_forwarded_calls(ForwardedCalls(self).handle)
        await self.cluster.start()
        self.dashboard.start()
        self.state = NodeState.RUNNING
        log.info("node %s started (ipubsub %s, pid %d)", self.name, __version__, os.getpid())

    async def serve(self) -> None:
        """Accept HTTP connections on the socket of :meth:`bind` (bound now
        if it was not).

        Raises:
            OSError: the address cannot be bound.
        """
        from .api.app import build_app, build_runner
        from .api.listener import ConnectionGate, GatedSite

        sock = self._socket
        if sock is None:
            self.bind()
            sock = self._socket
            assert sock is not None
        http = self.config.http
        self.gate = ConnectionGate(
            max_connections=self.config.limits.max_connections,
            header_timeout=http.header_timeout_seconds,
            refusals=self.refusals,
        )
        self._runner = build_runner(build_app(self), self.config)
        await self._runner.setup()
        self._site = GatedSite(self._runner, sock, self.gate, ssl_context=self.tls.http_server, backlog=4096)
        await self._site.start()
        scheme = "https" if self.tls.http_server is not None else "http"
        log.info("node %s listening on %s://%s", self.name, scheme, self.listen_address)
        log_exposure(self.config, parse_address(self.listen_address, allow_any_port=True)[0], log)

    def reload_tls(self) -> bool:
        """Re-read the TLS certificates (SIGHUP): new handshakes get the new
        ones, open connections keep theirs.  False if a file failed (its
        context keeps the old certificate; the error is logged)."""
        errors = self.tls.reload()
        for line in errors:
            log.error("TLS reload: %s", line)
        if self.tls.enabled and not errors:
            log.info("TLS certificates reloaded")
        return not errors

    async def stop(self) -> None:
        """Shut down in one explicit order; safe to call more than once.

        1. report ``draining`` in /health;  2. leave the ring (peers stop
        forwarding here at once);  3. stop accepting connections;  4. hand
        buffered messages to their new owners;  5. release waiting receivers
        and blocked senders (424: they retry and land on the new owner) and
        end polls forwarded from here;  6. let in-flight requests finish
        within ``node.shutdown_grace_seconds``;  7. hand off anything that
        arrived meanwhile, or, with no peer to hand off to, spill the buffers
        to the durable backend (restored by the next start, see
        :mod:`ipubsub.spill`);  8. close storage, peer sessions, background tasks.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self.state is NodeState.NEW:
            self.state = NodeState.STOPPED
            return
        grace = self.config.node.shutdown_grace_seconds
        self.state = NodeState.DRAINING  # 1
        log.info("node %s shutting down", self.name)
        await self.cluster.leave(timeout=min(2.0, grace))  # 2
        if self._site is not None:
            await self._site.stop()  # 3
        await self.subscriptions.close(timeout=min(2.0, grace))  # streams end: clients reconnect elsewhere
        has_peers = self.cluster.has_peers
        if not has_peers:
            self.at_least_once.leases.return_all()  # nobody to take the leases: back into the buffers
        if has_peers and not await self.cluster.hand_off(timeout=grace / 2):  # 4
            log.warning("some buffered messages could not be handed off yet")
        released = self.engine.release_waiters("node is shutting down")  # 5
        await self.cluster.release_forwarded_polls(timeout=1.0)
        if released:
            log.info("released %d waiting calls", released)
        if self._runner is not None:
            await self._runner.cleanup()  # 6
        if self._socket is not None:
            self._socket.close()
        if has_peers:  # 7 (leases move with their streams, receipts unchanged)
            await self.cluster.hand_off(timeout=1.0)
        else:
            self.at_least_once.leases.return_all()
        if not has_peers and self.durable is not None and self.durable.status is StorageStatus.UP:
            await spill_buffers(self.engine, self.durable, self.name)  # 7: nobody to hand off to
        self._report_lost_buffers()
        await self.dashboard.close()  # 8
        if self.durable is not None:
            await self.durable.close()
        await self.cluster.close(timeout=1.0)
        self.at_least_once.leases.close()
        await self.engine.close()
        self.state = NodeState.STOPPED
        log.info("node %s stopped", self.name)

    # -- request flow --------------------------------------------------------

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
                return await read_log_batch(self, cmd, after)
            row = await self.durable.read(stream_id, after, cmd.timeout)
            return Delivery(Message(row.uuid, row.payload, row.timestamp_us), encode_token(stream_id, row.position))
        if forwarded_by is not None:
            self.cluster.served_elsewhere_owned(stream_id)
        if cmd.timeout:
            self.limits.check_poll(stream_id)
        if cmd.lease_seconds is not None:
            return await self.at_least_once.receive(cmd)
        if cmd.max_messages is not None:
            return await receive_memory_batch(self, cmd, poll_id)
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

    def _warn_if_local_storage_in_cluster(self) -> None:
        others = [s for s in self.config.cluster.seeds if s != self.address]
        if self.config.storage.backend == "sqlite" and others:
            log.warning(
                "!!! storage.backend is sqlite but this node has cluster seeds %s: SQLite is local "
                "to each node, so replay only sees what THIS node stored and a stream's log splits "
                "when its owner changes. Use postgres, mysql, cassandra or mongodb for a cluster. !!!",
                ", ".join(others),
            )

    def _report_lost_buffers(self) -> None:
        """Shutdown: log what stays in memory (nowhere to hand it to, or the
        hand-off did not finish) and is lost with this process."""
        # leased messages still held here: the hand-off did not take them either
        buffered = self.engine.stats.buffered_messages + self.cluster.handoff_pending + self.at_least_once.leases.stats.held
        if not buffered:
            return
        streams = sum(1 for stream_id in self.engine.stream_ids() if self.engine.buffered(stream_id))
        where = "no other node to hand them to" if not self.cluster.has_peers else "the hand-off did not finish"
        log.error(
            "%d buffered in-memory messages of %d streams are lost at shutdown (%s); "
            "use writeToDB for messages that must survive a restart",
            buffered, streams, where,
        )

    # -- views ---------------------------------------------------------------

    def owner_of(self, stream_id: str) -> tuple[str, str]:
        """Name and address of the node that owns ``stream_id``."""
        return self.cluster.owner_view(stream_id)

    def snapshot(self) -> NodeSnapshot:
        """This node's state and counters now (read by /health, /api/v1/cluster
        and /metrics)."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return NodeSnapshot(
            node=self.name,
            version=__version__,
            state=self.state,
            uptime_seconds=time.monotonic() - self._started_monotonic,
            streams=self.engine.stream_count,
            engine=copy.copy(self.engine.stats),
            cluster=self.cluster.snapshot(),
            storage=self.durable.snapshot() if self.durable is not None else None,
            calls=tuple(self.calls.items()),
            process=ProcessSnapshot(os.getpid(), usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024),
        )
