"""Consumer groups as a node serves them, on top of the durable log's group
operations (:meth:`ipubsub.storage.durable.DurableLog.claim` and after).

A group receive claims messages for one consumer; messages past their last
allowed delivery come back from the claim as *dead*: they are appended to
the dead-letter stream (durably, with their own uuid, so a retry stores
them once) and then acknowledged, before the claim goes on waiting for
messages to hand out.  Everything a group knows is in the database, so any
node (normally the stream's owner) serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from ..calls import AckCall, Delivery, NackCall, ReceiveCall
from ..engine import Message
from ..errors import GroupNotFound, ReceiveTimeout
from ..storage.base import GroupInfo, Leased, LeaseRef, StoredMessage
from ..storage.durable import MAX_READ_BATCH, DurableLog
from .receipts import group_receipt, parse_group_receipt

__all__ = ["BuryDead", "ConsumerGroups"]

# bury(stream_id, dead): store the dead messages of stream_id in its
# dead-letter stream, durably, each with its own uuid (raises StorageUnavailable).
BuryDead = Callable[[str, list[StoredMessage]], Awaitable[None]]


class ConsumerGroups:
    """Group receives, acks, nacks, listing and deletion.

    Args:
        durable: the node's durable log.
        bury: stores dead messages in the dead-letter stream (see :data:`BuryDead`).
    """

    def __init__(self, durable: DurableLog, bury: BuryDead) -> None:
        self._durable = durable
        self._bury = bury
        self.dead_lettered_total = 0

    async def receive(self, call: ReceiveCall) -> list[Delivery]:
        """Claim 1 to ``max_messages`` (at most :data:`MAX_READ_BATCH`)
        messages of ``call.stream_id`` for ``call.consumer`` of
        ``call.group``, leased for ``call.lease_seconds``, waiting up to
        ``call.timeout`` seconds for one.  The group is created by its first
        receive.

        Raises:
            ReceiveTimeout: nothing to hand out in time.
            StorageUnavailable: the database is down, failed or too slow.
        """
        assert call.group is not None and call.consumer is not None and call.lease_seconds is not None
        stream_id, group = call.stream_id, call.group
        limit = min(call.max_messages or 1, MAX_READ_BATCH)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + call.timeout
        while True:
            remaining = max(0.0, deadline - loop.time())
            try:
                claim = await self._durable.claim(
                    stream_id, group, call.consumer, limit, call.lease_seconds, remaining, call.max_deliveries
                )
            except ReceiveTimeout:
                raise ReceiveTimeout(stream_id, call.timeout) from None
            if claim.dead:
                await self._move_dead(stream_id, group, claim.dead)
            if claim.messages:
                return [self._delivery(stream_id, group, leased) for leased in claim.messages]
            if loop.time() >= deadline:
                raise ReceiveTimeout(stream_id, call.timeout)

    async def ack(self, call: AckCall) -> list[bool]:
        """Acknowledge group receipts of one stream; one answer per receipt
        (True: it was pending with that delivery and is acknowledged now).

        Raises:
            InvalidToken: a receipt is malformed or of another stream or group.
            StorageUnavailable: the database is down, failed or too slow.
        """
        return await self._each_group(call.stream_id, call.receipts, call.group, self._durable.ack)

    async def nack(self, call: NackCall) -> list[bool]:
        """Give group deliveries back after ``call.delay_seconds``; answers as :meth:`ack`.

        Raises:
            InvalidToken, StorageUnavailable: as :meth:`ack`.
        """
        delay = call.delay_seconds

        async def nack(stream_id: str, group: str, refs: Sequence[LeaseRef]) -> list[bool]:
            return await self._durable.nack(stream_id, group, refs, delay)

        return await self._each_group(call.stream_id, call.receipts, call.group, nack)

    async def groups(self, stream_id: str) -> list[GroupInfo]:
        """The stream's groups with lag, pending count and oldest pending entry.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        return await self._durable.groups(stream_id)

    async def delete_group(self, stream_id: str, group: str) -> None:
        """Remove a group and its pending entries.

        Raises:
            GroupNotFound: the stream has no such group.
            StorageUnavailable: the database is down, failed or too slow.
        """
        if not await self._durable.delete_group(stream_id, group):
            raise GroupNotFound(f"stream {stream_id!r} has no consumer group {group!r}", streamId=stream_id, group=group)

    # -- internals ------------------------------------------------------------------------

    @staticmethod
    def _delivery(stream_id: str, group: str, leased: Leased) -> Delivery:
        row = leased.message
        return Delivery(
            Message(row.uuid, row.payload, row.timestamp_us),
            receipt=group_receipt(stream_id, group, row.position, leased.delivery),
            delivery_count=leased.delivery,
        )

    async def _move_dead(self, stream_id: str, group: str, dead: list[Leased]) -> None:
        """Dead-letter, then acknowledge: a crash in between leaves the
        entries pending; the next claim returns them dead again and the
        append stores each once (same uuid)."""
        await self._bury(stream_id, [leased.message for leased in dead])
        refs = [LeaseRef(leased.message.position, leased.delivery) for leased in dead]
        await self._durable.ack(stream_id, group, refs)
        self.dead_lettered_total += len(dead)

    @staticmethod
    async def _each_group(
        stream_id: str,
        receipts: Sequence[str],
        named: str | None,
        apply: Callable[[str, str, Sequence[LeaseRef]], Awaitable[list[bool]]],
    ) -> list[bool]:
        by_group: dict[str, list[tuple[int, LeaseRef]]] = {}
        for index, receipt in enumerate(receipts):
            parsed = parse_group_receipt(receipt, stream_id, named)
            by_group.setdefault(parsed.group, []).append((index, LeaseRef(parsed.position, parsed.delivery)))
        answers = [False] * len(receipts)
        for group, items in by_group.items():
            for (index, _), ok in zip(items, await apply(stream_id, group, [ref for _, ref in items])):
                answers[index] = ok
        return answers
