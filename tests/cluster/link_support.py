"""A real link server and clients on 127.0.0.1 (port 0) for the link tests,
with a small set of test calls: echo, park (answered later or on cancel),
work (a coroutine handler) and big (a large answer)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

import msgspec

from ipubsub.cluster.link import Identity, Incoming, LinkClient, LinkLimits, LinkServer

__all__ = ["Big", "Done", "Echo", "Fail", "LinkRig", "Park", "Work"]

SECRET = b"s3cret"


class Echo(msgspec.Struct, array_like=True, tag=1):
    n: int


class Park(msgspec.Struct, array_like=True, tag=2):
    n: int


class Work(msgspec.Struct, array_like=True, tag=3):
    seconds: float


class Big(msgspec.Struct, array_like=True, tag=4):
    size: int


class Fail(msgspec.Struct, array_like=True, tag=5):
    in_task: bool


class Done(msgspec.Struct, array_like=True):
    n: int
    note: str = ""


class LinkRig:
    """A server whose handler records what it saw, and the clients made for it."""

    def __init__(self, limits: LinkLimits | None = None, cluster: str = "test", secret: bytes = SECRET) -> None:
        self.limits = limits or LinkLimits(ping_interval=0.1, silence_timeout=2.0, cancel_grace=0.5)
        self.identity = Identity(cluster, "owner", 1, secret)
        self.parked: dict[int, Incoming] = {}
        self.cancelled: list[int] = []
        self.undone: list[int] = []
        self.applied: list[int] = []
        self.server = self._server()
        self.address = ""
        self.clients: list[LinkClient[Done]] = []

    def _server(self) -> LinkServer:
        return LinkServer(self.identity, self.handle, Echo | Park | Work | Big | Fail, limits=self.limits)

    async def start(self, port: int = 0) -> LinkRig:
        host, bound = await self.server.start("127.0.0.1", port)
        self.address = f"{host}:{bound}"
        return self

    async def restart(self, incarnation: int) -> None:
        """Stop the server and start a new one (a new incarnation) on the same port."""
        port = int(self.address.rsplit(":", 1)[1])
        await self.server.close()
        self.identity = Identity(self.identity.cluster, self.identity.node, incarnation, self.identity.secret)
        self.server = self._server()
        await self.start(port)

    def client(self, node: str = "caller", *, cluster: str | None = None, secret: bytes = SECRET,
               limits: LinkLimits | None = None, **kwargs: Any) -> LinkClient[Done]:  # fmt: skip
        me = Identity(cluster or self.identity.cluster, node, time.time_ns(), secret)
        client: LinkClient[Done] = LinkClient(self.address, me, Done, limits=limits or self.limits, **kwargs)
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        await self.server.close()

    def handle(self, incoming: Incoming) -> Awaitable[None] | None:
        meta = incoming.meta
        if isinstance(meta, Echo):
            self.applied.append(meta.n)
            incoming.reply(Done(meta.n), incoming.payload)
        elif isinstance(meta, Park):
            self.parked[meta.n] = incoming

            def cancelled() -> None:
                self.parked.pop(meta.n, None)
                self.cancelled.append(meta.n)
                incoming.reply(Done(meta.n, "released"), undo=lambda: self.undone.append(meta.n))

            incoming.on_cancel = cancelled
        elif isinstance(meta, Work):
            return self._work(incoming, meta.seconds)
        elif isinstance(meta, Big):
            incoming.reply(Done(meta.size), b"b" * meta.size)
        elif isinstance(meta, Fail):
            if meta.in_task:
                return self._fail()
            raise RuntimeError("a handler bug (expected by the test)")
        return None

    async def _fail(self) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("a handler bug in a task (expected by the test)")

    async def _work(self, incoming: Incoming, seconds: float) -> None:
        await asyncio.sleep(seconds)
        incoming.reply(Done(0, "worked"))

    def answer(self, n: int, payload: bytes = b"", note: str = "answered") -> bool:
        """Answer a parked call (``undo`` records it if it cannot be written)."""
        incoming = self.parked.pop(n)
        return incoming.reply(Done(n, note), payload, undo=lambda: self.undone.append(n))
