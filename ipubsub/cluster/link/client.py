"""The calling end of a link: one connection from this node to one peer,
opened on first use, re-opened after a loss (with backoff after failed
attempts), carrying any number of concurrent calls matched by call id."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import msgspec

from ...config import parse_address
from .connection import Connection, LinkLimits
from .errors import CallAborted, CallRefused, CallTimeout, LinkBusy, LinkDown, LinkError, LinkRejected
from .frames import (
    ABORTED,
    CALL,
    CANCEL,
    CHALLENGE,
    GOAWAY,
    HELLO,
    PING,
    PONG,
    REFUSED,
    REJECT,
    REPLY,
    WELCOME,
    FrameError,
)  # fmt: skip
from .handshake import Challenge, Hello, Identity, Welcome, check_welcome, client_proof, new_nonce

__all__ = ["Call", "LinkClient", "Reply"]

log = logging.getLogger("ipubsub.cluster.link")

M = TypeVar("M")
_MAX_ID = 0xFFFFFFFF
_decode_challenge = msgspec.msgpack.Decoder(Challenge).decode
_decode_welcome = msgspec.msgpack.Decoder(Welcome).decode


class Reply(Generic[M]):
    """A peer's answer: its header (decoded) and its payload bytes."""

    __slots__ = ("meta", "payload")

    def __init__(self, meta: M, payload: bytes) -> None:
        self.meta = meta
        self.payload = payload


class Call(Generic[M]):
    """One call in flight.  ``future`` resolves to a :class:`Reply` or fails
    with a :class:`LinkError`; ``written`` tells whether its frame left this
    node (so whether a lost link may have delivered it)."""

    __slots__ = ("id", "future", "written", "started", "deadline", "cancelled", "orphan", "unclaimed", "_conn")

    def __init__(self, call_id: int, future: asyncio.Future[Reply[M]], conn: _ClientConnection[M],
                 started: float, deadline: float) -> None:  # fmt: skip
        self.id = call_id
        self.future = future
        self.written = False
        self.started = started
        self.deadline = deadline
        self.cancelled = False
        # Gets the answer if it arrives after ``future`` was cancelled (the
        # caller went away): e.g. to give back a message it carried.
        self.orphan: Callable[[Reply[M]], None] | None = None
        # An answer that came after ``future`` was cancelled but before
        # ``orphan`` was set (see :meth:`abandon`).
        self.unclaimed: Reply[M] | None = None
        self._conn = conn

    def abandon(self, orphan: Callable[[Reply[M]], None] | None) -> None:
        """The caller stopped waiting: its answer, if one comes (or came
        already, in the same loop turn as the caller's cancellation), goes
        to ``orphan``; the peer is asked to end the call."""
        future = self.future
        if future.done() and not future.cancelled():
            if orphan is not None and future.exception() is None:
                orphan(future.result())
            return
        if self.unclaimed is not None:
            reply, self.unclaimed = self.unclaimed, None
            if orphan is not None:
                orphan(reply)
            return
        self.orphan = orphan
        self.cancel()

    def cancel(self) -> None:
        """Ask the peer to end this call.  It still answers (early, or with
        an abort), and that answer still resolves ``future`` unless the
        future itself was cancelled; if it does not within ``cancel_grace``,
        the call fails with :class:`CallTimeout`."""
        conn = self._conn
        if not self.cancelled and conn.calls.get(self.id) is self:
            self.cancelled = True
            self.deadline = conn.loop.time() + conn.limits.cancel_grace
            conn.send(CANCEL, self.id)


class _ClientConnection(Connection, Generic[M]):
    def __init__(self, link: LinkClient[M]) -> None:
        super().__init__(link.limits)
        self.link = link
        self.calls: dict[int, Call[M]] = {}
        self.ready: asyncio.Future[None] = self.loop.create_future()
        self.draining = False
        self.authenticated = False
        self.peer_node = ""
        self.peer_incarnation = 0
        self._nonce = new_nonce()
        self._server_nonce = b""
        self._next_id = 0

    def describe(self) -> str:
        return f"link to {self.link.address}"

    @property
    def usable(self) -> bool:
        return self.authenticated and not self.closed and not self.draining

    def start(self, meta: Any, payload: bytes, timeout: float) -> Call[M]:
        limits = self.limits
        if len(self.calls) >= limits.max_in_flight:
            raise LinkBusy(self.link.address, f"{len(self.calls)} calls in flight (limit {limits.max_in_flight})")
        # Bytes pile up in the transport only while it has paused us.
        if self.writing_paused or len(payload) > limits.max_buffered_bytes // 4:
            buffered = self.buffered_bytes
            if buffered + len(payload) > limits.max_buffered_bytes:
                raise LinkBusy(
                    self.link.address,
                    f"{buffered} bytes wait for the peer to read them (limit {limits.max_buffered_bytes})",
                )
        call_id = self._next_id
        while True:
            call_id = call_id + 1 if call_id < _MAX_ID else 1
            if call_id not in self.calls:
                break
        self._next_id = call_id
        now = self.loop.time()
        call: Call[M] = Call(call_id, self.loop.create_future(), self, now, now + timeout)
        try:
            self.send(CALL, call_id, meta, payload, item=call)
        except FrameError as exc:
            raise LinkError(self.link.address, str(exc), may_have_reached=False) from None
        self.calls[call_id] = call
        return call

    def _tick(self, now: float) -> None:
        expired = [call for call in self.calls.values() if call.deadline <= now]
        for call in expired:
            if not call.cancelled:
                call.cancel()
            else:
                del self.calls[call.id]
                if not call.future.done():
                    call.future.set_exception(CallTimeout(self.link.address, now - call.started))

    # -- frames ----------------------------------------------------------------------

    def _on_frame(self, kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
        if kind == REPLY:
            call = self.calls.pop(call_id, None)
            if call is not None:
                if not call.future.done():
                    call.future.set_result(Reply(self.link.decode_reply(meta), payload))
                elif call.orphan is not None:
                    call.orphan(Reply(self.link.decode_reply(meta), payload))
                elif not call.cancelled:
                    call.unclaimed = Reply(self.link.decode_reply(meta), payload)
        elif kind == REFUSED or kind == ABORTED:
            call = self.calls.pop(call_id, None)
            if call is not None and not call.future.done():
                reason = self.reason_of(meta)
                exc = CallRefused(self.link.address, reason) if kind == REFUSED else CallAborted(self.link.address, reason)
                call.future.set_exception(exc)
        elif kind == PONG:
            pass
        elif kind == PING:
            self.send(PONG, 0)
        elif kind == CHALLENGE and not self._server_nonce:
            challenge = _decode_challenge(meta)
            self._server_nonce = challenge.nonce
            me = self.link.identity
            proof = client_proof(me, challenge.nonce, self._nonce)
            self.send(HELLO, 0, Hello(me.cluster, me.node, me.incarnation, self._nonce, proof))
        elif kind == WELCOME:
            self._welcome(_decode_welcome(meta))
        elif kind == REJECT:
            self._fail_handshake(LinkRejected(self.link.address, "refused by the peer: " + self.reason_of(meta)))
        elif kind == GOAWAY:
            self.draining = True
            self.link.retire(self)
        else:
            self.abort(f"unexpected frame kind {kind}")

    def _welcome(self, welcome: Welcome) -> None:
        link = self.link
        if not check_welcome(link.identity, welcome, self._server_nonce, self._nonce):
            self._fail_handshake(LinkRejected(link.address, "the peer did not prove the cluster secret"))
        elif link.expect_node is not None and welcome.node != link.expect_node:
            self._fail_handshake(
                LinkRejected(link.address, f"the peer is node {welcome.node!r}, not {link.expect_node!r}")
            )
        elif not self.ready.done():
            self.peer_node, self.peer_incarnation = welcome.node, welcome.incarnation
            self.authenticated = True
            self.ready.set_result(None)
            self.start_watchdog(ping=True)

    def _fail_handshake(self, exc: LinkError) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
        self.close()

    def _lost(self, exc: Exception | None) -> None:
        address = self.link.address
        if not self.ready.done():
            self.ready.set_exception(LinkDown(address, f"closed during the handshake ({exc})", may_have_reached=False))
        calls, self.calls = self.calls, {}
        why = f"connection lost ({exc})" if exc else "connection closed"
        for call in calls.values():
            if not call.future.done():
                call.future.set_exception(LinkDown(address, why, may_have_reached=call.written))
        self.link.retire(self)

    def _written(self, items: list[Any]) -> None:
        for call in items:
            call.written = True


def _consume(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


class LinkClient(Generic[M]):
    """Calls from this node to the peer at ``address`` (``host:port`` of its
    link listener).

    Args:
        address: where the peer's link listens.
        identity: this node (cluster, name, incarnation, secret).
        reply_type: the msgspec type of reply headers (often a tagged union).
        limits: bounds and timings.
        expect_node: refuse a peer that turns out to have another name.
        ssl: an ``ssl.SSLContext`` to speak TLS (``None``: plain TCP).
    """

    def __init__(
        self,
        address: str,
        identity: Identity,
        reply_type: Any,
        *,
        limits: LinkLimits | None = None,
        expect_node: str | None = None,
        ssl: Any = None,
    ) -> None:
        self.address = address
        self.identity = identity
        self.limits = limits or LinkLimits()
        self.expect_node = expect_node
        self.decode_reply = msgspec.msgpack.Decoder(reply_type).decode
        self._ssl = ssl
        self._conn: _ClientConnection[M] | None = None
        self._draining: set[_ClientConnection[M]] = set()
        self._dialing: asyncio.Task[_ClientConnection[M]] | None = None
        self._retry_at = 0.0
        self._backoff = 0.0
        self._last_error: LinkError | None = None
        self._closed = False
        self.connects_total = 0

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.usable

    @property
    def last_received(self) -> float | None:
        """Loop time of the last frame from the peer on an open connection."""
        conn = self._conn
        return conn.last_received if conn is not None and not conn.closed else None

    @property
    def in_flight(self) -> int:
        return sum(len(c.calls) for c in self._connections())

    @property
    def buffered_bytes(self) -> int:
        return sum(c.buffered_bytes for c in self._connections())

    def _connections(self) -> list[_ClientConnection[M]]:
        return [*([self._conn] if self._conn is not None else []), *self._draining]

    async def open(self, meta: Any, payload: bytes = b"", timeout: float = 60.0) -> Call[M]:
        """Send a call and return it at once (await ``call.future``).  After
        ``timeout`` seconds without an answer the peer is asked to cancel it
        (see :meth:`Call.cancel`).

        Raises:
            LinkBusy: too many calls in flight or bytes buffered (not sent).
            LinkDown, LinkRejected: the link cannot be opened (not sent).
            LinkError: the frame is over ``max_frame_bytes`` (not sent).
        """
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connect()
        return conn.start(meta, payload, timeout)

    async def call(self, meta: Any, payload: bytes = b"", timeout: float = 60.0) -> Reply[M]:
        """Send a call and wait for its answer.  If the caller is cancelled,
        the peer is asked to cancel the call and its answer is dropped.

        Raises:
            LinkError: see its subclasses; each says whether the call may
                have reached the peer.
        """
        conn = self._conn
        if conn is None or not conn.usable:
            conn = await self._connect()
        call = conn.start(meta, payload, timeout)
        try:
            return await call.future
        except asyncio.CancelledError:
            call.cancel()
            raise

    async def close(self) -> None:
        """Close the link; calls in flight fail with :class:`LinkDown`."""
        self._closed = True
        dialing, self._dialing = self._dialing, None
        if dialing is not None:
            dialing.cancel()
            await asyncio.gather(dialing, return_exceptions=True)
        for conn in self._connections():
            conn.close()
        self._conn = None
        self._draining.clear()

    def retire(self, conn: _ClientConnection[M]) -> None:
        """``conn`` takes no new calls (lost, or the peer said goodbye)."""
        if self._conn is conn:
            self._conn = None
        if conn.closed:
            self._draining.discard(conn)
        elif conn.calls:
            self._draining.add(conn)
        else:
            conn.close()

    async def _connect(self) -> _ClientConnection[M]:
        if self._closed:
            raise LinkDown(self.address, "the link is closed", may_have_reached=False)
        loop = asyncio.get_running_loop()
        if self._dialing is None:
            wait = self._retry_at - loop.time()
            if wait > 0:
                assert self._last_error is not None
                raise LinkDown(
                    self.address,
                    f"{self._last_error.reason}; next attempt in {wait:.2f}s",
                    may_have_reached=False,
                )
            self._dialing = loop.create_task(self._dial(), name=f"ipubsub-link-dial-{self.address}")
            # Every waiter may be cancelled before the dial ends: its outcome
            # is then only kept for the next call (backoff), never reported.
            self._dialing.add_done_callback(_consume)
        return await asyncio.shield(self._dialing)

    async def _dial(self) -> _ClientConnection[M]:
        loop = asyncio.get_running_loop()
        try:
            conn = await self._open_connection(loop)
        except LinkError as exc:
            self._backoff = min(max(self._backoff * 2, self.limits.backoff_initial), self.limits.backoff_max)
            self._retry_at = loop.time() + self._backoff
            self._last_error = exc
            if not isinstance(exc, LinkRejected) or self.connects_total == 0:
                log.warning("%s (retrying in %.2fs)", exc, self._backoff)
            raise
        finally:
            self._dialing = None
        self._backoff = 0.0
        self._retry_at = 0.0
        self.connects_total += 1
        if self._conn is not None:
            self.retire(self._conn)
        self._conn = conn
        return conn

    async def _open_connection(self, loop: asyncio.AbstractEventLoop) -> _ClientConnection[M]:
        host, port = parse_address(self.address)
        try:
            async with asyncio.timeout(self.limits.connect_timeout):
                _, conn = await loop.create_connection(lambda: _ClientConnection(self), host, port, ssl=self._ssl)
        except (OSError, TimeoutError) as exc:
            raise LinkDown(self.address, f"cannot connect: {exc or type(exc).__name__}", may_have_reached=False) from None
        try:
            async with asyncio.timeout(self.limits.handshake_timeout):
                await conn.ready
        except TimeoutError:
            conn.abort("handshake timed out")
            raise LinkDown(self.address, "handshake timed out", may_have_reached=False) from None
        except BaseException:
            conn.close()
            raise
        return conn
