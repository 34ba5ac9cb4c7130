"""A node: wires the engine, the cluster and storage together and owns the
lifecycle (start, drain, stop).  Where and how each call is served (the
request flow) is :mod:`ipubsub.node_calls`."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import resource
import socket
import time
from typing import TYPE_CHECKING

from aiohttp import web

from . import __version__
from .auth.exposure import log_exposure
from .auth.refusals import Refusals, RefusalsCollector
from .cluster.cluster import Cluster
from .config import Config, parse_address
from .dashboard import Dashboard
from .engine import Clock, Engine, SystemClock
from .leasing import AtLeastOnce
from .limits import NodeLimits
from .node_batches import Batches
from .node_calls import NodeCalls
from .observability.counters import CallCounts
from .observability.history_metrics import HistoryCollector
from .observability.metrics import NodeMetrics, RequestMetrics
from .observability.snapshot import NodeSnapshot, NodeState, ProcessSnapshot
from .spill import restore_buffers, spill_buffers
from .storage import create_store
from .storage.durable import DurableLog, StorageStatus
from .subscriptions import Subscriptions
from .tls import TlsContexts

if TYPE_CHECKING:
    from .api.listener import ConnectionGate

__all__ = ["Node"]

log = logging.getLogger("ipubsub.node")

# How long start() waits for the database before serving without it.
STORAGE_STARTUP_WAIT_SECONDS = 2.0


class Node(NodeCalls):
    """One ipubsub node.

    The calls it serves (send, receive, ack/nack, history, give-back, ...)
    are its base :class:`~ipubsub.node_calls.NodeCalls`; this class wires
    the components and owns the lifecycle.

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

    # -- lifecycle helpers ---------------------------------------------------

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
