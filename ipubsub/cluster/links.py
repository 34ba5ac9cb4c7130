"""This node's ends of the peer links: the listener peers call in on, and
one :class:`~ipubsub.cluster.link.LinkClient` per peer it calls, found by
member name through the membership (which gossips every member's link
address)."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Any

from .link import Call, Identity, Incoming, LinkClient, LinkDown, LinkLimits, LinkServer, Reply
from .link_calls import Answer, LinkCall

__all__ = ["Links"]


class Links:
    """The link listener and the clients to peers.

    Args:
        identity: this node (cluster, name, incarnation, secret).
        limits: bounds and timings of every link.
        link_of: a member's link address by name (``None``: not known yet).
        handler: gets every call peers make here.
    """

    def __init__(
        self,
        identity: Identity,
        limits: LinkLimits,
        link_of: Callable[[str], str | None],
        handler: Callable[[Incoming], Any],
    ) -> None:
        self.identity = identity
        self.limits = limits
        self._link_of = link_of
        self._server_ssl: ssl.SSLContext | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self.server = LinkServer(identity, handler, LinkCall, limits=limits)
        self._clients: dict[str, LinkClient[Answer]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self.address = ""

    def use_tls(self, server: ssl.SSLContext | None, client: ssl.SSLContext | None) -> None:
        """Speak TLS on links (before :meth:`start`): the listener with
        ``server``, calls to peers with ``client`` (both or neither)."""
        self._server_ssl, self._client_ssl = (server, client) if server is not None and client is not None else (None, None)
        self.server = LinkServer(self.identity, self.server.handler, LinkCall, limits=self.limits, ssl=self._server_ssl)

    @property
    def tls(self) -> bool:
        return self._server_ssl is not None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen for peers; return the bound host and port.

        Raises:
            OSError: the address cannot be bound.
        """
        return await self.server.start(host, port)

    def client(self, name: str) -> LinkClient[Answer]:
        """The link to member ``name`` (opened on first call).

        Raises:
            LinkDown: its link address is not known (the call was not sent).
        """
        address = self._link_of(name)
        if address is None:
            raise LinkDown(name, f"the link address of node {name} is not known yet", may_have_reached=False)
        client = self._clients.get(name)
        if client is None or client.address != address:
            if client is not None:
                self._retire(client)
            client = LinkClient(
                address, self.identity, Answer, limits=self.limits, expect_node=name, ssl=self._client_ssl
            )
            self._clients[name] = client
        return client

    async def call(self, name: str, meta: LinkCall, payload: bytes, timeout: float) -> Reply[Answer]:
        """Call member ``name`` and wait for its answer.

        Raises:
            LinkError: no answer; its ``may_have_reached`` tells whether the
                call may have had an effect there.
        """
        return await self.client(name).call(meta, payload, timeout)

    async def open(self, name: str, meta: LinkCall, payload: bytes, timeout: float) -> Call[Answer]:
        """Start a call on member ``name`` (await ``call.future``).

        Raises:
            LinkError: not sent (see :meth:`LinkClient.open`).
        """
        return await self.client(name).open(meta, payload, timeout)

    def stats(self) -> dict[str, int]:
        clients = list(self._clients.values())
        return {
            "out_connected": sum(1 for c in clients if c.connected),
            "out_calls": sum(c.in_flight for c in clients),
            "out_connects": sum(c.connects_total for c in clients),
            "in_connections": sum(1 for c in self.server.connections if c.peer is not None),
            "in_calls": self.server.in_flight,
            "in_refused": self.server.refused_total,
        }

    def _retire(self, client: LinkClient[Answer]) -> None:
        task = asyncio.get_running_loop().create_task(client.close(), name=f"ipubsub-link-close-{client.address}")
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def close(self, grace: float) -> None:
        """Stop listening (peers' calls get ``grace`` seconds) and close the
        links to peers (their calls in flight fail with LinkDown)."""
        await self.server.close(grace)
        for client in list(self._clients.values()):
            await client.close()
        self._clients.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
