"""A loopback TCP proxy in front of a real server (a database), to stage
outages without touching the server itself.

It listens on port 0 by default (the kernel picks a free port; read
:attr:`TcpProxy.port` after :meth:`start`) and stays bound until
:meth:`stop`, so a test never has to release a port and hope to get it
back.  Three states:

* forwarding (after :meth:`start` or :meth:`heal`);
* **cut** (:meth:`cut`): every open connection is reset and every new one is
  accepted and reset at once, as if the server were down;
* **blackhole** (:meth:`blackhole`): packets are dropped, not refused, as
  on a dead network path: nothing moves in either direction, open
  connections stay open, new ones are accepted and never answered.  Bytes
  already in flight are held, not lost (TCP would retransmit them), so
  :meth:`heal` lets the held connections carry on.
"""

from __future__ import annotations

import asyncio

__all__ = ["TcpProxy"]


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, listen_port: int = 0) -> None:
        self.target = (target_host, target_port)
        self.port = listen_port
        self._server: asyncio.AbstractServer | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._cut = False

    async def start(self) -> None:
        """Listen (again, on the same port) and forward."""
        self._cut = False
        self._flowing.set()
        if self._server is None:
            self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)
            self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Reset every connection, open or new, until :meth:`heal`."""
        self._cut = True
        self._flowing.set()  # held pipes wake up and find their sockets reset
        await self._abort_all()

    def blackhole(self) -> None:
        """Stop moving bytes, in both directions, until :meth:`heal`."""
        self._flowing.clear()

    def heal(self) -> None:
        """Forward again."""
        self._cut = False
        self._flowing.set()

    async def stop(self) -> None:
        """Stop listening and cut every open connection."""
        self._cut = True
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self._flowing.set()
        await self._abort_all()

    async def _abort_all(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            await self._flowing.wait()  # a blackholed connect is never answered
            if self._cut:
                raise OSError("cut")
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except (OSError, asyncio.CancelledError):
            writer.transport.abort()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                await self._flowing.wait()
                data = await src.read(65536)
                if not data:
                    break
                await self._flowing.wait()  # hold what arrived during a blackhole
                if self._cut:
                    break
                dst.write(data)
                await dst.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            dst.transport.abort()
            self._writers.discard(dst)
