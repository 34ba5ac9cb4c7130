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
are named only while such a mode is set (it costs a look at ``/proc``):
every open connection when it is set, each new one while it lasts.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Awaitable, Callable, Iterable

__all__ = ["Mode", "TcpProxy"]

#: names the clients of connections, given their (source port, port reached);
#: a connection whose client is unknown is left out
Identify = Callable[[list[tuple[int, int]]], Awaitable[dict[tuple[int, int], str]]]


class Mode(enum.Enum):
    OPEN = "open"
    CUT = "cut"
    BLACKHOLE = "blackhole"


class _Connection:
    """One client connection and its upstream, with its own valve."""

    __slots__ = ("key", "source", "identified", "flowing", "cut", "writers")

    def __init__(self, key: tuple[int, int]) -> None:
        self.key = key  # (client's port, our port)
        self.source: str | None = None
        self.identified = False
        self.flowing = asyncio.Event()
        self.cut = False
        self.writers: list[asyncio.StreamWriter] = []

    def apply(self, mode: Mode) -> None:
        if mode is Mode.CUT:
            self.cut = True
            self.flowing.set()  # held pipes wake up and find their sockets reset
            for writer in self.writers:
                writer.transport.abort()
        elif mode is Mode.BLACKHOLE:
            self.flowing.clear()
        else:
            self.flowing.set()


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
        self._pipes: set[asyncio.Task[None]] = set()
        self.accepted = 0
        self.refused = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen (on the same port again after :meth:`stop`)."""
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
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
        for conn in list(self._connections):
            conn.apply(Mode.CUT)
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        conn = _Connection((int(peer[1]) if peer else 0, self.port))
        conn.writers.append(writer)
        self._connections.add(conn)
        self.accepted += 1
        try:
            if self._modes:  # some clients' paths differ: find out whose connection this is
                await self._identify_open()
            conn.apply(self.mode_for(conn.source))
            await conn.flowing.wait()  # a blackholed connect is never answered
            if conn.cut or self.target is None:
                raise ConnectionResetError("cut")
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):  # cancelled: the proxy stops
            self.refused += 1
            writer.transport.abort()
            self._connections.discard(conn)
            return
        conn.writers.append(up_writer)
        if conn.cut:  # cut while connecting
            up_writer.transport.abort()
            writer.transport.abort()
            self._connections.discard(conn)
            return
        done = 0

        def finished(task: asyncio.Task[None]) -> None:
            nonlocal done
            self._pipes.discard(task)
            done += 1
            if done == 2:
                self._connections.discard(conn)

        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(conn, src, dst))
            self._pipes.add(task)
            task.add_done_callback(finished)

    @staticmethod
    async def _pipe(conn: _Connection, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await conn.flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                await conn.flowing.wait()  # hold what arrived during a blackhole
                if conn.cut:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()
