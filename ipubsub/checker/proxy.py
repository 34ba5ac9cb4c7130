"""A loopback TCP proxy that can cut or blackhole the path it carries, for
every client or only for some of them.

It knows nothing of what it carries (HTTP, the peer link, a database
protocol).  The checker puts one in front of every address a node is
reached at by its peers, and one between each node and its database, so a
partition is staged without touching the processes themselves.

Three modes per path:

* ``open``: bytes flow both ways;
* ``cut``: open connections are reset, new ones are accepted and reset at
  once, as if the far side were down;
* ``blackhole``: nothing moves in either direction, open connections stay
  open, new ones are accepted and never answered — a dead network path.
  Bytes in flight are held, not lost (TCP would retransmit them), so a heal
  lets held connections carry on.

A proxy may be given an ``identify`` function naming the clients of
connections (the checker finds which node process holds each connecting
socket, see :mod:`ipubsub.checker.sockets`); modes can then be set for some
clients only, which is how a partition between two nodes is made.  Clients
are named only while such a mode is set (it costs a system call or two):
every open connection when it is set, each new one while it lasts.

Built on protocols, not streams: a chunk read from one side is written to
the other in the same callback, so the proxy adds no event-loop turn to a
round trip (a database's many small messages pay it on every one).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterable
from typing import cast

__all__ = ["Mode", "TcpProxy"]

#: names the clients of connections, given their (source port, port reached);
#: a connection whose client is unknown is left out
Identify = Callable[[list[tuple[int, int]]], Awaitable[dict[tuple[int, int], str]]]


class Mode(enum.Enum):
    OPEN = "open"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Side(asyncio.Protocol):
    """One end of a proxied connection: the client's or the target's."""

    def __init__(self, conn: _Connection, on_made: Callable[[], None] | None = None) -> None:
        self.conn = conn
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []  # read from this side, not yet written to the other
        self.paused = False  # the other side cannot take more: stop reading here
        self._on_made = on_made

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio.Transport subclasses
        if self._on_made is not None:
            self._on_made()

    def data_received(self, data: bytes) -> None:
        self.conn.carry(self, data)

    def eof_received(self) -> bool:
        self.conn.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.conn.close()

    def pause_writing(self) -> None:  # the kernel buffer towards this side is full
        self.conn.other(self).set_reading(False, flow=True)

    def resume_writing(self) -> None:
        self.conn.other(self).set_reading(True, flow=True)

    def set_reading(self, on: bool, flow: bool = False) -> None:
        if flow:
            self.paused = not on
        reading = on and not self.paused and self.conn.mode is Mode.OPEN
        if self.transport is not None and not self.transport.is_closing():
            if reading:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()


class _Connection:
    """A client connection and its upstream, with its own mode."""

    def __init__(self, proxy: TcpProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self, lambda: proxy._opened(self))
        self.upstream: _Side | None = None
        self.ready = False  # the upstream connection is open
        self.key = (0, proxy.port)  # (client's port, our port)
        self.source: str | None = None
        self.identified = False
        self.mode = Mode.BLACKHOLE  # until the upstream is open
        self.closed = False

    def other(self, side: _Side) -> _Side:
        if side is self.client:
            assert self.upstream is not None
            return self.upstream
        return self.client

    def carry(self, side: _Side, data: bytes) -> None:
        if self.mode is Mode.OPEN and self.ready and not side.held:
            target = self.other(side).transport
            if target is not None:
                target.write(data)
            return
        side.held.append(data)
        side.set_reading(False)

    def apply(self, mode: Mode) -> None:
        if self.closed:
            return
        if mode is Mode.CUT:
            self.close(abort=True)
            return
        self.mode = mode if self.ready else Mode.BLACKHOLE
        if self.mode is Mode.OPEN:
            for side in (self.client, self.upstream):
                assert side is not None
                held, side.held = side.held, []
                target = self.other(side).transport
                if held and target is not None:
                    target.write(b"".join(held))
        for side in (self.client, self.upstream):
            if side is not None:
                side.set_reading(True)

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy._connections.discard(self)
        for side in (self.client, self.upstream):
            if side is not None and side.transport is not None:
                if abort:
                    side.transport.abort()
                else:
                    side.transport.close()


class TcpProxy:
    """Forwards connections on ``127.0.0.1:port`` to ``target``.

    Listens on port 0 by default (read :attr:`port` after :meth:`start`) and
    keeps that port until :meth:`stop`, also while its target restarts on
    another port (:meth:`retarget`).  Without a target, connections are
    accepted and reset.
    """

    def __init__(
        self, name: str, target: tuple[str, int] | None = None, *, identify: Identify | None = None,
        listen_port: int = 0,
    ) -> None:
        self.name = name
        self.target = target
        self.port = listen_port
        self._identify = identify
        self._server: asyncio.AbstractServer | None = None
        self._default = Mode.OPEN
        self._modes: dict[str, Mode] = {}  # per client, over the default
        self._connections: set[_Connection] = set()
        self._opening: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on the same port again after :meth:`stop`)."""
        if self._server is None:
            loop = asyncio.get_running_loop()
            self._server = await loop.create_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    def retarget(self, target: tuple[str, int] | None) -> None:
        """Send new connections to ``target`` (open ones stay where they are)."""
        self.target = target

    def mode_for(self, source: str | None) -> Mode:
        if source is not None and source in self._modes:
            return self._modes[source]
        return self._default

    async def set_mode(self, mode: Mode, sources: Iterable[str] | None = None) -> None:
        """Put the path of ``sources`` (every client when ``None``) in
        ``mode``; open connections follow at once."""
        if sources is None:
            self._default = mode
            self._modes.clear()
        else:
            for source in sources:
                self._modes[source] = mode
            await self._identify_open()
        self._apply_all()

    def heal(self) -> None:
        """Every path open again."""
        self._default = Mode.OPEN
        self._modes.clear()
        self._apply_all()

    def _apply_all(self) -> None:
        for conn in list(self._connections):
            if conn.ready:
                conn.apply(self.mode_for(conn.source))

    async def _identify_open(self) -> None:
        unknown = [c for c in self._connections if not c.identified]
        if self._identify is None or not unknown:
            return
        names = await self._identify([c.key for c in unknown])
        for conn in unknown:
            conn.source = names.get(conn.key)
            conn.identified = True

    async def stop(self) -> None:
        """Stop listening and reset every open connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        for conn in list(self._connections):
            conn.close(abort=True)

    def _accept(self) -> _Side:
        conn = _Connection(self)
        self._connections.add(conn)
        self.accepted += 1
        return conn.client

    def _opened(self, conn: _Connection) -> None:
        """A client connected (its transport is set): open the upstream."""
        task = asyncio.ensure_future(self._open(conn))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    async def _open(self, conn: _Connection) -> None:
        """Decide the new connection's fate, then open its upstream."""
        transport = conn.client.transport
        assert transport is not None
        peer = transport.get_extra_info("peername")
        conn.key = (int(peer[1]) if peer else 0, self.port)
        try:
            if self._modes:  # some clients' paths differ: find out whose connection this is
                await self._identify_open()
            while self.mode_for(conn.source) is Mode.BLACKHOLE and not conn.closed:
                await asyncio.sleep(0.05)  # a blackholed connect is never answered
            if conn.closed or self.mode_for(conn.source) is Mode.CUT or self.target is None:
                raise ConnectionResetError("cut")
            loop = asyncio.get_running_loop()
            upstream = conn.upstream = _Side(conn)
            await loop.create_connection(lambda: upstream, *self.target)
        except (OSError, asyncio.CancelledError):
            self.refused += 1
            conn.close(abort=True)
            return
        if conn.closed:  # the client left while we connected
            if upstream.transport is not None:
                upstream.transport.abort()
            return
        conn.ready = True
        conn.apply(self.mode_for(conn.source))
