"""The lease calls of :class:`~ipubsub.client.aio.AsyncClient`: leased
receives, consumer groups, acknowledgements, and :meth:`LeaseCalls.consume`."""

from __future__ import annotations

import asyncio
from typing import Any

from ..errors import GroupNotFound, LeaseNotFound, ReceiveTimeout, StreamReleased
from .consumer import Consumer
from .iterators import positive
from .transport import ClientTransport
from .wire import (
    ACK_PATH,
    GROUPS_PATH,
    NACK_PATH,
    RECEIVE_PATH,
    GroupInfo,
    LeasedMessage,
    lease_body,
    parse_groups,
    parse_leased,
    receive_query,
    whole_seconds,
)

__all__ = ["LeaseCalls"]


class LeaseCalls(ClientTransport):
    """Leases and consumer groups: a message is leased until acknowledged,
    given back, or its lease ends."""

    async def receive_leased(
        self,
        stream: str,
        *,
        lease: float,
        max_messages: int = 1,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> list[LeasedMessage]:
        """Up to ``max_messages`` in-memory messages of ``stream``, each
        leased for ``lease`` seconds (see :meth:`receive`); waits up to
        ``timeout`` seconds for the first.  Empty if none arrived in time.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`receive`.
        """
        return await self._leased(stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages)

    async def claim(
        self,
        stream: str,
        *,
        group: str,
        consumer: str,
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> list[LeasedMessage]:
        """Up to ``max_messages`` messages of the durable stream for
        ``consumer`` of the consumer group ``group`` (created on first
        use): each message of the log goes to one consumer of the group,
        leased for ``lease`` seconds (server default 30); a lease that ends
        unacknowledged hands the message to the next consumer that asks.
        Waits up to ``timeout`` seconds for the first; empty if none.

        Raises:
            PersistenceNotConfigured: the server has no storage (400).
            BadRequest: an invalid name or parameter (400).
            StorageUnavailable: still 503 when the retries ran out.
            Unreachable: no node could be reached within the retries.
        """
        return await self._leased(
            stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages,
            group=group, consumer=consumer,
        )

    async def ack(self, stream: str, receipt: str) -> bool:
        """Acknowledge the leased delivery named by ``receipt``; False if no
        such lease is held any more (it ended: the message was or will be
        delivered again, or was acknowledged already).

        Raises:
            BadRequest: malformed receipt (400).
            Unavailable, Unreachable: as :meth:`send`.
        """
        return await self._settle_receipt(stream, receipt, "ack", 0.0)

    async def ack_many(self, stream: str, receipts: list[str]) -> list[str]:
        """Acknowledge several leased deliveries of ``stream`` in one call
        (at most the server's ``limits.max_batch_messages``); returns the
        receipts that named no lease held any more.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`ack`.
        """
        if not receipts:
            return []
        if len(receipts) == 1:
            return [] if await self.ack(stream, receipts[0]) else list(receipts)
        answer = await self._call("POST", ACK_PATH, stream=stream, body=lease_body(stream, list(receipts)))
        missing = [str(r) for r in (answer or {}).get("notFound") or []]
        self.stats.leases_lost += len(missing)
        return missing

    async def nack(self, stream: str, receipt: str, delay: float = 0.0) -> bool:
        """Give a leased delivery back, to be delivered again after
        ``delay`` seconds; False as :meth:`ack`.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`ack`.
        """
        return await self._settle_receipt(stream, receipt, "nack", delay)

    async def groups(self, stream: str) -> list[GroupInfo]:
        """The consumer groups of a durable stream with their lag and
        pending messages.

        Raises:
            PersistenceNotConfigured, StorageUnavailable, Unreachable.
        """
        return parse_groups(await self._call("GET", GROUPS_PATH, stream=stream, query={"streamId": stream}))

    async def delete_group(self, stream: str, group: str) -> bool:
        """Remove a consumer group (admin credentials when auth is on);
        False if there was none.

        Raises:
            AdminRequired, PersistenceNotConfigured, StorageUnavailable, Unreachable.
        """
        try:
            await self._call("DELETE", GROUPS_PATH, stream=stream, query={"streamId": stream, "group": group})
        except GroupNotFound:
            return False
        return True

    def consume(
        self,
        stream: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        lease: float | None = None,
        max_messages: int = 1,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> Consumer:
        """At-least-once processing: an async iterator over the messages of
        ``stream`` that acknowledges each one once the body of the loop
        that got it has finished, and never when it raises (then its lease
        ends and the message is delivered again)::

            async for msg in client.consume("orders", group="billing", consumer="w1"):
                await bill(msg.message)        # acked when this returns

        With ``group`` it reads the durable stream as ``consumer`` of that
        consumer group; without, it takes leased in-memory messages.
        ``lease`` defaults to the server's 30 s for a group and must be
        given otherwise; ``max_messages`` per poll (others of a batch stay
        leased to this consumer until yielded).  As ``async with`` it also
        gives back at once what it holds when the block ends (a message
        whose body raised, messages not yet yielded).

        Raises:
            ValueError: ``timeout`` is not positive, or no ``lease`` without ``group``.
        """
        if group is None and lease is None:
            raise ValueError("an in-memory consume needs lease= (seconds)")
        return Consumer(self, stream, group, consumer, lease, max_messages, positive(timeout), max_deliveries)

    # -- internals ------------------------------------------------------------

    async def _leased(
        self,
        stream: str,
        timeout: float,
        *,
        lease: float | None,
        max_deliveries: int | None,
        max_messages: int | None = None,
        group: str | None = None,
        consumer: str | None = None,
    ) -> list[LeasedMessage]:
        deadline = asyncio.get_running_loop().time() + whole_seconds(timeout)
        query = receive_query(
            stream, whole_seconds(timeout), from_db=group is not None, token=None, lease=lease,
            max_deliveries=max_deliveries, group=group, consumer=consumer, max_messages=max_messages,
        )
        try:
            answer = await self._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
        except (ReceiveTimeout, StreamReleased):
            return []
        return parse_leased(answer, stream, group, self._settle_message)

    def _settle_message(self, message: LeasedMessage, action: str, delay: float) -> Any:
        return self._settle_receipt(message.stream, message.receipt, action, delay)

    async def _settle_receipt(self, stream: str, receipt: str, action: str, delay: float) -> bool:
        path = ACK_PATH if action == "ack" else NACK_PATH
        body = lease_body(stream, [receipt], delay if action == "nack" else None)
        try:
            await self._call("POST", path, stream=stream, body=body)
        except LeaseNotFound:
            self.stats.leases_lost += 1
            return False
        return True
