"""At-least-once delivery served on a stream's owner: leased receives of
in-memory streams, consumer-group receives of durable streams, acks and
nacks of either, and where dead messages go.

The node decides where a call is served (here, or forwarded to the owner);
everything here runs on the node that serves it.

* A leased in-memory receive takes its messages from the engine like any
  receive, then leases each (:class:`~ipubsub.engine.Leases`): the answer
  carries a receipt and the delivery's number.  If the answer cannot be
  written, :meth:`AtLeastOnce.give_back` returns the message without
  counting a delivery.
* A dead in-memory message (past ``maxDeliveries``) is sent to
  ``<streamId>.dead`` (``leases.dead_letter_suffix``), a plain in-memory
  stream of the default size, with its uuid, payload and timestamp; when
  another node owns that stream the hand-off moves it there.
* A dead group message is appended durably to ``<streamId>.dead`` (its own
  uuid and expiry), then acknowledged (:mod:`.groups`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import msgspec

from ..calls import AckCall, Delivery, NackCall, ReceiveCall
from ..config import LeasesConfig
from ..engine import DEFAULT_STREAM_SIZE, Engine, Leases, Message
from ..errors import IPubSubError, PersistenceNotConfigured, TooManyLeases
from ..storage.base import GroupInfo, NewMessage, StoredMessage
from ..storage.durable import DurableLog
from .groups import ConsumerGroups
from .receipts import is_group_receipt

__all__ = ["AtLeastOnce", "Settle"]

#: settles (acks or nacks) receipts on the stream's owner, one answer per receipt
Settle = Callable[[AckCall | NackCall], Awaitable[list[bool]]]

log = logging.getLogger("ipubsub.leasing")


class AtLeastOnce:
    """Leases, consumer groups and dead letters of one node.

    Args:
        engine: the node's in-memory streams.
        config: the ``leases`` section.
        durable: the node's durable log (``None``: no consumer groups).
        served_elsewhere_owned: told the id of a stream this node put a
            message into without owning it (the hand-off then moves it).
    """

    def __init__(
        self,
        engine: Engine,
        config: LeasesConfig,
        durable: DurableLog | None,
        served_elsewhere_owned: Callable[[str], None],
    ) -> None:
        self._engine = engine
        self._config = config
        self._durable = durable
        self._served_elsewhere_owned = served_elsewhere_owned
        self.leases = Leases(engine, self._dead_in_memory, config.max_leased_messages)
        self.groups = ConsumerGroups(durable, self._bury) if durable is not None else None
        self.dead_dropped_total = 0

    def dead_letter_stream(self, stream_id: str) -> str:
        """Where ``stream_id``'s dead messages go."""
        return stream_id + self._config.dead_letter_suffix

    # -- in-memory leases ----------------------------------------------------------------

    def check_room(self, count: int = 1) -> None:
        """Raises TooManyLeases if ``count`` more leases would exceed
        ``leases.max_leased_messages``."""
        if not self.leases.has_room(count):
            raise TooManyLeases(
                f"this node holds {self.leases.stats.held} leased messages (leases.max_leased_messages); "
                "ack or nack some, or retry later",
                retry_after=1,
            )

    async def receive(self, call: ReceiveCall) -> list[Delivery]:
        """Take 1 to ``max_messages`` messages of an in-memory stream,
        waiting up to ``call.timeout`` s for the first, each leased for
        ``call.lease_seconds``.

        Raises:
            TooManyLeases: the node holds its maximum of leases.
            ReceiveTimeout, StreamReleased: as :meth:`Engine.receive`.
        """
        assert call.lease_seconds is not None
        self.check_room()
        if call.max_messages is None:
            msgs = [await self._engine.receive(call.stream_id, call.timeout)]
        else:
            msgs = await self._engine.receive_many(call.stream_id, call.timeout, call.max_messages)
        return self.lease(call.stream_id, msgs, call.lease_seconds, call.max_deliveries)

    def lease(self, stream_id: str, msgs: Sequence[Message], seconds: float, max_deliveries: int) -> list[Delivery]:
        """Lease messages just taken from ``stream_id`` for their receiver."""
        grant = self.leases.grant
        out = []
        for msg in msgs:
            lease = grant(stream_id, msg, seconds, max_deliveries)
            out.append(Delivery(msg, receipt=lease.receipt, delivery_count=lease.delivery))
        return out

    def give_back(self, stream_id: str, receipt: str) -> bool:
        """A leased delivery's answer never reached its receiver: end the
        lease without counting it, the message back at the front."""
        return self.leases.give_back(stream_id, receipt)

    # -- ack and nack (either kind) --------------------------------------------------------

    async def ack(self, call: AckCall, owner: Settle | None = None, handoff_wait: float = 0.0) -> list[bool]:
        """Acknowledge leased deliveries of one stream by receipt; one
        answer per receipt (False: no such lease is held now).  In-memory
        receipts of leases not held here go to ``owner`` (the stream's owner
        when it is another node), which answers for them.  Without an
        owner, ``handoff_wait`` > 0 (a ring change is under way) waits that
        long for leases not held here yet: a hand-off may be bringing them.

        Raises:
            InvalidToken: a group receipt is malformed or not this stream's.
            PersistenceNotConfigured: a group receipt on a node without storage.
            StorageUnavailable: the database is down, failed or too slow.
            OwnerUnavailable: ``owner`` could not be reached.
        """
        return await self._settle(call, owner, handoff_wait)

    async def nack(self, call: NackCall, owner: Settle | None = None, handoff_wait: float = 0.0) -> list[bool]:
        """Give leased deliveries back, to be delivered again after
        ``call.delay_seconds``; answers, ``owner`` and ``handoff_wait`` as :meth:`ack`.

        Raises:
            InvalidToken, PersistenceNotConfigured, StorageUnavailable,
            OwnerUnavailable: as :meth:`ack`.
        """
        return await self._settle(call, owner, handoff_wait)

    async def _settle(self, call: AckCall | NackCall, owner: Settle | None, handoff_wait: float) -> list[bool]:
        memory, grouped = self._split(call.receipts, call.group)
        answers = [False] * len(call.receipts)
        remote: list[int] = []
        leases = self.leases
        if owner is None and handoff_wait > 0 and memory:
            await leases.wait_held(call.stream_id, [call.receipts[i] for i in memory], handoff_wait)
        for index in memory:
            receipt = call.receipts[index]
            if owner is not None and not leases.holds(call.stream_id, receipt):
                remote.append(index)
            elif isinstance(call, AckCall):
                answers[index] = leases.ack(call.stream_id, receipt)
            else:
                answers[index] = leases.nack(call.stream_id, receipt, call.delay_seconds)
        if remote:
            assert owner is not None
            sub = msgspec.structs.replace(call, receipts=tuple(call.receipts[i] for i in remote), single=False)
            for index, ok in zip(remote, await owner(sub)):
                answers[index] = ok
        if grouped:
            sub = msgspec.structs.replace(call, receipts=tuple(call.receipts[i] for i in grouped), single=False)
            groups = self._groups()
            settled = await (groups.ack(sub) if isinstance(sub, AckCall) else groups.nack(sub))
            for index, ok in zip(grouped, settled):
                answers[index] = ok
        return answers

    # -- consumer groups -----------------------------------------------------------------

    async def group_receive(self, call: ReceiveCall) -> list[Delivery]:
        """A consumer group's receive (see :meth:`ConsumerGroups.receive`).

        Raises:
            PersistenceNotConfigured, ReceiveTimeout, StorageUnavailable.
        """
        return await self._groups().receive(call)

    async def list_groups(self, stream_id: str) -> list[GroupInfo]:
        """The stream's groups (see :meth:`ConsumerGroups.groups`).

        Raises:
            PersistenceNotConfigured, StorageUnavailable.
        """
        return await self._groups().groups(stream_id)

    async def delete_group(self, stream_id: str, group: str) -> None:
        """Remove a group (see :meth:`ConsumerGroups.delete_group`).

        Raises:
            GroupNotFound, PersistenceNotConfigured, StorageUnavailable.
        """
        await self._groups().delete_group(stream_id, group)

    def _groups(self) -> ConsumerGroups:
        if self.groups is None:
            raise PersistenceNotConfigured(
                "consumer groups need a durable backend (storage.backend is none)", field="group"
            )
        return self.groups

    @staticmethod
    def _split(receipts: Sequence[str], group: str | None) -> tuple[list[int], list[int]]:
        """Indexes of in-memory receipts and of group receipts (all of them
        when the call names a group)."""
        memory: list[int] = []
        grouped: list[int] = []
        for index, receipt in enumerate(receipts):
            (grouped if group is not None or is_group_receipt(receipt) else memory).append(index)
        return memory, grouped

    # -- dead letters ----------------------------------------------------------------------

    def _dead_in_memory(self, stream_id: str, msg: Message) -> None:
        dead_id = self.dead_letter_stream(stream_id)
        try:
            self._engine.send_nowait(dead_id, Message(msg.uuid, msg.payload, msg.timestamp_us), DEFAULT_STREAM_SIZE)
        except IPubSubError as exc:
            self.dead_dropped_total += 1
            log.warning("dead message %s of stream %r dropped: %s", msg.uuid, stream_id, exc.message)
            return
        self._served_elsewhere_owned(dead_id)

    async def _bury(self, stream_id: str, rows: list[StoredMessage]) -> None:
        assert self._durable is not None
        dead_id = self.dead_letter_stream(stream_id)
        await self._durable.append_batch(
            [NewMessage(dead_id, row.uuid, row.payload, row.timestamp_us, row.expires_at_us) for row in rows]
        )
