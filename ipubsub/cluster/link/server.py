"""The answering end of a link: accepts peers that prove the cluster secret
and dispatches their calls to one handler.

A handler gets an :class:`Incoming` and either answers at once, or parks it
(sets ``on_cancel`` and answers later from a callback: no task), or returns
a coroutine that the link runs as a task tracked with the call.  Every call
gets exactly one answer frame unless the connection is lost first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from .connection import Connection, LinkLimits
from .frames import ABORTED, CALL, CANCEL, CHALLENGE, GOAWAY, HELLO, PING, PONG, REFUSED, REJECT, REPLY, WELCOME
from .handshake import Challenge, FailedAttempts, Hello, Identity, Reason, Welcome, check_hello, new_nonce, server_proof

__all__ = ["Handler", "Incoming", "LinkServer", "Peer"]

log = logging.getLogger("ipubsub.cluster.link")

_decode_hello = msgspec.msgpack.Decoder(Hello).decode


class Peer(msgspec.Struct, frozen=True):
    """A node that proved the secret on a connection."""

    node: str
    incarnation: int
    host: str


class Incoming:
    """One call received from a peer, until it is answered.

    Attributes:
        meta: the decoded request header.  payload: its raw bytes.
        peer: who sent it.  on_cancel: set by a handler that parks the call;
            called (once) when the caller cancels or the link is lost.
    """

    __slots__ = ("id", "meta", "payload", "peer", "on_cancel", "task", "answered", "_conn")

    def __init__(self, call_id: int, meta: Any, payload: bytes, conn: _ServerConnection) -> None:
        self.id = call_id
        self.meta = meta
        self.payload = payload
        self.peer = conn.peer
        self.on_cancel: Callable[[], None] | None = None
        self.task: asyncio.Task[None] | None = None
        self.answered = False
        self._conn = conn

    @property
    def link_open(self) -> bool:
        """Whether an answer can still reach the caller."""
        return not self._conn.closed

    def reply(self, meta: Any, payload: bytes = b"", undo: Callable[[], None] | None = None) -> bool:
        """Answer the call.  ``undo`` runs if the answer cannot be written
        (the link is, or closes before the frame is written): e.g. put a
        message back.  Returns False (after running ``undo``) if the answer
        cannot be sent, or if the call was answered already.
        """
        if self.answered:
            return False
        self.answered = True
        conn = self._conn
        conn.incoming.pop(self.id, None)
        if conn.closed:
            if undo is not None:
                undo()
            return False
        conn.send(REPLY, self.id, meta, payload, item=undo)
        return True

    def abort(self, reason: str) -> None:
        """End the call without an answer: the caller learns that its effect
        is unknown."""
        if not self.answered:
            self.answered = True
            self._conn.incoming.pop(self.id, None)
            self._conn.send(ABORTED, self.id, Reason(reason))

    def _cancel(self) -> None:
        if self.answered:
            return
        if self.task is not None:
            self.task.cancel()
        elif self.on_cancel is not None:
            on_cancel, self.on_cancel = self.on_cancel, None
            on_cancel()
            self.abort("cancelled")  # no-op if on_cancel answered
        else:
            self.abort("cancelled")


Handler = Callable[[Incoming], "Awaitable[None] | None"]


class _ServerConnection(Connection):
    def __init__(self, server: LinkServer) -> None:
        super().__init__(server.limits)
        self.server = server
        self.incoming: dict[int, Incoming] = {}
        self.peer: Peer | None = None
        self.host = "?"
        self._nonce = new_nonce()
        self._judging = False
        self._timer: asyncio.TimerHandle | None = None

    def describe(self) -> str:
        return f"link from {self.peer.node if self.peer else self.host}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peername = transport.get_extra_info("peername")
        self.host = str(peername[0]) if peername else "?"
        server = self.server
        server.connections.add(self)
        if not server.attempts.begin(self.host):
            self._reject("too many handshakes in progress from this host")
            return
        self._judging = True
        self.send(CHALLENGE, 0, Challenge(self._nonce))
        self._timer = self.loop.call_later(self.limits.handshake_timeout, self._handshake_timed_out)

    def pause_writing(self) -> None:
        super().pause_writing()
        # A caller that does not read its answers gets no new calls read.
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        assert self.transport is not None
        if not self.closed:
            self.transport.resume_reading()

    def _on_frame(self, kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
        if self.peer is None:
            if kind == HELLO and self._judging and self._timer is not None:
                self._hello(_decode_hello(meta))
            else:
                self.abort("a call before the handshake")
            return
        if kind == CALL:
            self._call(call_id, meta, payload)
        elif kind == CANCEL:
            incoming = self.incoming.get(call_id)
            if incoming is not None:
                incoming._cancel()
        elif kind == PING:
            self.send(PONG, 0)
        elif kind == PONG:
            pass
        else:
            self.abort(f"unexpected frame kind {kind}")

    def _call(self, call_id: int, meta: memoryview, payload: bytes) -> None:
        server = self.server
        if call_id in self.incoming:
            self.abort(f"call id {call_id} reused while in flight")
            return
        if server.closing:
            self.send(REFUSED, call_id, Reason("the node is shutting down"))
            return
        if len(self.incoming) >= self.limits.max_in_flight:
            server.refused_total += 1
            self.send(REFUSED, call_id, Reason(f"{len(self.incoming)} calls in flight (limit {self.limits.max_in_flight})"))
            return
        try:
            decoded = server.decode_call(meta)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.send(REFUSED, call_id, Reason(f"malformed call: {exc}"))
            return
        incoming = Incoming(call_id, decoded, payload, self)
        self.incoming[call_id] = incoming
        server.calls_total += 1
        try:
            pending = server.handler(incoming)
        except Exception:
            log.exception("link handler failed on a call from %s", self.describe())
            incoming.abort("the peer failed to handle the call")
            return
        if pending is not None:
            incoming.task = self.loop.create_task(_run(incoming, pending))

    # -- handshake -----------------------------------------------------------------

    def _hello(self, hello: Hello) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        delay = self.server.attempts.delay(self.host)
        if delay:
            self._timer = self.loop.call_later(delay, self._judge, hello)
        else:
            self._judge(hello)

    def _judge(self, hello: Hello) -> None:
        self._timer = None
        self._end_handshake()
        server = self.server
        reason = check_hello(server.identity, hello, self._nonce)
        if reason is not None:
            server.attempts.failed(self.host)
            log.warning("refused a link from %s (node %r): %s", self.host, hello.node, reason)
            self._reject(reason)
            return
        self.peer = Peer(hello.node, hello.incarnation, self.host)
        me = server.identity
        self.send(WELCOME, 0, Welcome(me.node, me.incarnation, server_proof(me, hello, self._nonce)))
        self.start_watchdog(ping=False)
        log.info("link from node %s (%s) opened", hello.node, self.host)

    def _handshake_timed_out(self) -> None:
        self._timer = None
        self._end_handshake()
        self.server.attempts.failed(self.host)
        self.abort("no handshake in time")

    def _end_handshake(self) -> None:
        if self._judging:
            self._judging = False
            self.server.attempts.end(self.host)

    def _reject(self, reason: str) -> None:
        self.send(REJECT, 0, Reason(reason))
        self.close()

    def _lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._end_handshake()
        self.server.connections.discard(self)
        for incoming in list(self.incoming.values()):
            incoming._cancel()
        self.incoming.clear()
        if self.peer is not None:
            log.info("link from node %s closed%s", self.peer.node, f" ({exc})" if exc else "")

    def _unwritten(self, items: list[Any]) -> None:
        for undo in items:
            undo()


async def _run(incoming: Incoming, pending: Awaitable[None]) -> None:
    try:
        await pending
    except asyncio.CancelledError:
        incoming.abort("cancelled")
        return  # the call ends here; the link goes on
    except Exception:
        log.exception("link handler failed on a call from node %s", incoming.peer.node if incoming.peer else "?")
        incoming.abort("the peer failed to handle the call")
    finally:
        incoming.task = None
    if not incoming.answered:
        incoming.abort("the peer's handler gave no answer")


class LinkServer:
    """Listens for links from peers.

    Args:
        identity: this node.
        handler: called with every :class:`Incoming` call.
        call_type: the msgspec type of call headers (often a tagged union).
        limits: bounds and timings (the same as the peers' clients).
        ssl: an ``ssl.SSLContext`` to speak TLS (``None``: plain TCP).
    """

    def __init__(
        self,
        identity: Identity,
        handler: Handler,
        call_type: Any,
        *,
        limits: LinkLimits | None = None,
        attempts: FailedAttempts | None = None,
        ssl: Any = None,
    ) -> None:
        self.identity = identity
        self.handler = handler
        self.decode_call = msgspec.msgpack.Decoder(call_type).decode
        self.limits = limits or LinkLimits()
        self.attempts = attempts or FailedAttempts()
        self.connections: set[_ServerConnection] = set()
        self.closing = False
        self.calls_total = 0
        self.refused_total = 0
        self._ssl = ssl
        self._server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` (port 0: any free port); return the
        address actually bound.

        Raises:
            OSError: the address cannot be bound.
        """
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ServerConnection(self), host, port, ssl=self._ssl, backlog=1024
        )
        bound = self._server.sockets[0].getsockname()
        return str(bound[0]), int(bound[1])

    @property
    def in_flight(self) -> int:
        return sum(len(c.incoming) for c in self.connections)

    async def close(self, grace: float = 0.0) -> None:
        """Stop listening; tell every peer to open no new calls here, give
        calls in flight up to ``grace`` seconds, then close every link (their
        remaining calls are cancelled)."""
        self.closing = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if conn.peer is not None:
                conn.send(GOAWAY, 0, Reason("the node is shutting down"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.in_flight and loop.time() < deadline:
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.close()
        while self.connections and loop.time() < deadline + 1.0:
            await asyncio.sleep(0.01)
        for conn in list(self.connections):
            conn.abort("shutting down")
