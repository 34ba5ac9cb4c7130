"""A node: wires the engine, the cluster and storage together, decides where
each call is served, and owns the lifecycle (start, drain, stop)."""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import time
from typing import Callable

from aiohttp import web

from . import __version__
from .api.app import build_app, build_runner
from .commands import Delivery, ReceiveCommand, Relayed, SendCommand, SendResult
from .config import Config, parse_address
from .engine import Clock, Engine, Message, SystemClock, new_uuid
from .errors import PersistenceNotConfigured

__all__ = ["Node"]

log = logging.getLogger("ipubsub.node")


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
        self.state = "new"
        self._started_monotonic = time.monotonic()
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self._stopping: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start background components (idle sweeper, storage, membership)."""
        self.engine.start()
        self.state = "running"
        log.info("node %s started (ipubsub %s, pid %d)", self.name, __version__, os.getpid())

    async def serve(self) -> None:
        """Open the HTTP listener on ``node.listen``.

        Raises:
            OSError: the address cannot be bound.
        """
        host, port = parse_address(self.config.node.listen)
        self._runner = build_runner(build_app(self), self.config)
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, host, port, backlog=4096)
        await self._site.start()
        log.info("node %s listening on http://%s:%d", self.name, host, port)

    def http_extensions(self) -> list[Callable[[web.Application], None]]:
        """Extra route groups to mount (cluster internals, metrics)."""
        return []

    async def stop(self) -> None:
        """Shut down in one explicit order; safe to call more than once.

        1. stop accepting connections;  2. leave the cluster ring;
        3. hand buffered messages to their new owners;  4. release waiting
        receivers and blocked senders (they get 424 and retry elsewhere);
        5. let in-flight requests finish within ``node.shutdown_grace_seconds``;
        6. close storage, peer sessions and background tasks.
        """
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop())
        await asyncio.shield(self._stopping)

    async def _stop(self) -> None:
        if self.state == "new":
            self.state = "stopped"
            return
        self.state = "draining"
        log.info("node %s shutting down", self.name)
        if self._site is not None:
            await self._site.stop()  # 1
        released = self.engine.release_waiters("node is shutting down")  # 4
        if released:
            log.info("released %d waiting calls", released)
        if self._runner is not None:
            await self._runner.cleanup()  # 5
        await self.engine.close()  # 6
        self.state = "stopped"
        log.info("node %s stopped", self.name)

    # -- request flow --------------------------------------------------------

    async def send(self, cmd: SendCommand, *, forwarded_by: str | None = None) -> SendResult | Relayed:
        """Accept a message for its stream (memory or durable log).

        Raises:
            SendTimeout, StreamReleased, BufferFull, PersistenceNotConfigured,
            StorageUnavailable, OwnerUnavailable: see :mod:`ipubsub.errors`.
        """
        if cmd.persist:
            raise PersistenceNotConfigured(
                "persistence is not configured on this node (storage.backend: none)",
                field="writeToDB",
            )
        msg = Message(cmd.uuid or new_uuid(), cmd.payload, self.clock.time_us())
        if cmd.blocking_timeout:
            await self.engine.send(cmd.stream_id, msg, cmd.size, cmd.blocking_timeout)
        else:
            self.engine.send_nowait(cmd.stream_id, msg, cmd.size)
        return SendResult(msg.uuid)

    async def receive(self, cmd: ReceiveCommand, *, forwarded_by: str | None = None) -> Delivery | Relayed:
        """Take the next message of a stream, or read the durable log.

        Raises:
            ReceiveTimeout, StreamReleased, InvalidToken,
            PersistenceNotConfigured, StorageUnavailable, OwnerUnavailable.
        """
        if cmd.from_db:
            raise PersistenceNotConfigured(
                "persistence is not configured on this node (storage.backend: none)",
                field="readFromDB",
            )
        return Delivery(await self.engine.receive(cmd.stream_id, cmd.timeout))

    # -- views ---------------------------------------------------------------

    def owner_of(self, stream_id: str) -> tuple[str, str]:
        """Name and address of the node that owns ``stream_id``."""
        return self.name, self.address

    def cluster_view(self) -> dict[str, object]:
        return {
            "self": self.name,
            "cluster": self.config.cluster.name,
            "members": [{"name": self.name, "address": self.address, "status": "alive"}],
            "ringVersion": 1,
        }

    def health(self) -> dict[str, object]:
        """Status and operator counters (``status`` is ``ok`` while serving)."""
        stats = self.engine.stats
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "status": "ok" if self.state == "running" else self.state,
            "node": self.name,
            "version": __version__,
            "uptimeSeconds": round(time.monotonic() - self._started_monotonic, 3),
            "streams": self.engine.stream_count,
            "bufferedMessages": stats.buffered_messages,
            "bufferedBytes": stats.buffered_bytes,
            "waitingReceivers": stats.waiting_receivers,
            "blockedSenders": stats.blocked_senders,
            "droppedMessages": stats.dropped_total,
            "counters": {
                "accepted": stats.accepted_total,
                "delivered": stats.delivered_total,
                "dropped": stats.dropped_total,
                "receiveTimeouts": stats.receive_timeouts_total,
                "sendTimeouts": stats.send_timeouts_total,
                "requeued": stats.requeued_total,
                "released": stats.released_total,
                "evictedStreams": stats.evicted_streams_total,
                "handedIn": stats.handed_in_total,
                "handedOut": stats.handed_out_total,
            },
            "process": {
                "pid": os.getpid(),
                "cpuSeconds": round(usage.ru_utime + usage.ru_stime, 6),
                "maxRssBytes": usage.ru_maxrss * 1024,
            },
        }
