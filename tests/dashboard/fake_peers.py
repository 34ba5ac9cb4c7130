"""Many cluster members on loopback without many processes: one aiohttp
app listening on N sockets of 127.0.0.1, each socket one member that answers
heartbeats (gossip) and the dashboard's summary requests like a node would.

Used to put a real ``ipubsub serve`` node in a 100-member cluster on a
2-core machine.  Chosen members can hang (never answer a summary) or fail
(answer 500), and the app records how many summary requests it served at
the same time.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import msgspec
from aiohttp import web

from ipubsub.cluster.messages import Gossip, MemberInfo
from ipubsub.cluster.ring import Ring
from ipubsub.protocol import INTERNAL_DASHBOARD_SUMMARY_PATH, INTERNAL_GOSSIP_PATH

__all__ = ["FakePeers"]


class FakePeers:
    def __init__(self, count: int, cluster: str, *, hang: set[int] = frozenset(), fail: set[int] = frozenset(),
                 extra_members: dict[str, str] | None = None) -> None:
        self.count = count
        self.cluster = cluster
        self.hang = set(hang)
        self.fail = set(fail)
        self._extra = extra_members or {}
        self._sockets: list[socket.socket] = []
        self._runner: web.AppRunner | None = None
        self.by_port: dict[int, tuple[str, str]] = {}
        self._ring_hash = 0
        self.summaries_total = 0
        self.in_flight = 0
        self.max_in_flight = 0

    @property
    def members(self) -> dict[str, str]:
        return {name: address for name, address in self.by_port.values()}

    async def start(self) -> FakePeers:
        app = web.Application()
        app.router.add_post(INTERNAL_GOSSIP_PATH, self._gossip)
        app.router.add_post(INTERNAL_DASHBOARD_SUMMARY_PATH, self._summary)
        # Cancel the handler of a request whose caller gave up, as a node does.
        self._runner = web.AppRunner(app, handle_signals=False, handler_cancellation=True)
        await self._runner.setup()
        for i in range(self.count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))  # kept bound: served by the site below
            sock.listen(128)
            port = sock.getsockname()[1]
            self._sockets.append(sock)
            self.by_port[port] = (f"fake-{i:03d}", f"127.0.0.1:{port}")
            await web.SockSite(self._runner, sock).start()
        self._ring_hash = Ring({**self.members, **self._extra}, 1).fingerprint  # what the real node computes
        return self

    def add_member(self, name: str, address: str) -> None:
        """A member outside the fakes (the real node, once it listens):
        the fakes' ring, whose hash they report, includes it."""
        self._extra[name] = address
        self._ring_hash = Ring({**self.members, **self._extra}, 1).fingerprint

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for sock in self._sockets:
            sock.close()

    def _me(self, request: web.Request) -> tuple[int, str, str]:
        port = request.transport.get_extra_info("sockname")[1]  # type: ignore[union-attr]
        name, address = self.by_port[port]
        return int(name.split("-")[1]), name, address

    async def _gossip(self, request: web.Request) -> web.Response:
        _, name, address = self._me(request)
        me = MemberInfo(name, address, 1, "alive")
        reply = Gossip(cluster=self.cluster, sender=me, members=[me])
        return web.Response(body=msgspec.json.encode(reply), content_type="application/json")

    async def _summary(self, request: web.Request) -> web.Response:
        index, name, address = self._me(request)
        asked = msgspec.json.decode(await request.read())
        self.summaries_total += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if index in self.hang:
                await asyncio.sleep(60)
            if index in self.fail:
                return web.json_response({"error": "boom", "code": "internal_error"}, status=500)
            await asyncio.sleep(0.01)  # a little work, so concurrent requests overlap
            return web.json_response(self.summary(index, name, address, asked.get("points") or 90))
        finally:
            self.in_flight -= 1

    def summary(self, index: int, name: str, address: str, points: int) -> dict[str, Any]:
        rate = float(index % 17)
        series = {"t": [1_000_000 + 2000 * i for i in range(points)],
                  "deliveredPerSecond": [rate] * points, "sentPerSecond": [rate] * points,
                  "forwardedPerSecond": [rate / 2] * points}
        return {
            "node": name, "address": address, "status": "ok", "version": "0.1.0", "uptimeSeconds": 60.0 + index,
            "ringHash": self._ring_hash, "ringVersion": 1, "ringSize": self.count + len(self._extra),
            "totals": {"delivered": 1000 + index, "sent": 1000 + index, "forwarded": 10, "dropped": 0, "errors": 0},
            "latest": {"bufferedMessages": index, "bufferedBytes": 100 * index, "waitingReceivers": 1,
                       "blockedSenders": 0, "streams": 10_000, "deliveredPerSecond": rate, "sentPerSecond": rate,
                       "forwardedPerSecond": rate / 2, "droppedPerSecond": 0.0, "errorsPerSecond": 0.0,
                       "storageWriteMs": 1.5},
            "storage": {"backend": "postgres", "status": "up", "error": None},
            "intervalSeconds": 2.0,
            "series": series,
        }
