"""Forwarding public calls to a stream's owner over the peer link.

The owner serves a call that arrives on a link whatever its own view of the
ring (only authenticated peers can send one), so views that briefly
disagree can never make a call loop.

A forwarded long poll is one call on the link: a parked receive on the owner
and one table entry on each side, no request and no connection of its own.
If our client goes away, the call is cancelled on the owner (a waiting poll
ends at once) and an answer that still carries messages — the owner handed
them over just before the cancel arrived — is given back to the owner
(:class:`~ipubsub.cluster.link_calls.GiveBack`), or kept here if the owner
cannot take it.  So a dead poller behind a forwarding node swallows nothing.
A leased answer gives back its leases (they end without counting a
delivery); durable, group and history reads give nothing back: the log, the
group's claim or the history still has what they read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import msgspec

from ..calls import AckCall, NackCall, ReceiveCall, Relayed, SendCall
from ..engine import Message, parse_timestamp
from ..errors import StreamReleased
from ..leasing.receipts import is_group_receipt
from ..protocol import ReceiveBatchReply, ReceiveReply
from ..tasks import cancel_tasks
from .link import Call, CallAborted, LinkError, Reply
from .link_calls import Answer, ForwardAck, ForwardNack, ForwardReceive, ForwardSend, ForwardSendBatch, GiveBack
from .links import Links

__all__ = ["Forwarder", "gives_back", "is_take", "returned_messages"]

log = logging.getLogger("ipubsub.cluster")

#: how long past its own timeout a forwarded call may take before the
#: entry node stops waiting (a durable call is bounded on the owner first)
CALL_GRACE_SECONDS = 30.0
#: how long a forwarded sub-batch may take
BATCH_TIMEOUT_SECONDS = 30.0
GIVE_BACK_TIMEOUT_SECONDS = 5.0


def is_take(cmd: ReceiveCall) -> bool:
    """Whether ``cmd`` takes in-memory messages for good (a plain receive or
    a ``maxMessages`` batch): what the owner parks without a task."""
    return not (cmd.from_db or cmd.from_history or cmd.group is not None or cmd.lease_seconds is not None)


def gives_back(cmd: ReceiveCall) -> bool:
    """Whether an answer to ``cmd`` that reached nobody must be given back:
    in-memory takes (their messages) and leased receives (their leases end
    without counting a delivery); a durable, group or history read left what
    it read where it was."""
    return not (cmd.from_db or cmd.from_history or cmd.group is not None)


def returned_messages(body: bytes) -> tuple[list[Message], list[str]]:
    """The in-memory messages of a receive answer nobody will read (one
    message, or a ``maxMessages`` batch, in order) and, for a leased answer,
    their receipts.  A durable read's or a consumer group's answer has
    nothing to give back: the log keeps its rows, a group's lease expires in
    the database.

    Raises:
        msgspec.DecodeError, ValueError: not a receive answer.
    """
    try:
        replies = [msgspec.json.decode(body, type=ReceiveReply)]
    except msgspec.ValidationError:  # not one message: a batch answer
        replies = msgspec.json.decode(body, type=ReceiveBatchReply).messages
    if any(r.dbResumeToken is not None or is_group_receipt(r.receipt or "") for r in replies):
        return [], []
    msgs = [Message(r.messageUuid, bytes(r.message), parse_timestamp(r.timestamp)) for r in replies]
    return msgs, [r.receipt for r in replies if r.receipt is not None]


def _relayed(reply: Reply[Answer], owner: str) -> Relayed:
    return Relayed(reply.meta.status, reply.payload, reply.meta.retry_after, owner)


class Forwarder:
    """Replays calls on their owner over the link and tracks forwarded polls.

    Args:
        links: this node's links.
        requeue_locally: last resort for messages the owner could not take
            back: keep them, in order, in this node's engine (hand-off moves
            them on).
    """

    def __init__(self, links: Links, requeue_locally: Callable[[str, list[Message]], None]) -> None:
        self._links = links
        self._requeue_locally = requeue_locally
        self._polls: set[Call[Answer]] = set()
        self._giving_back: set[asyncio.Task[None]] = set()
        self.forwarded_total = 0

    @property
    def waiting_polls(self) -> int:
        """Forwarded polls from here waiting for their owner's answer."""
        return len(self._polls)

    async def send(self, owner: str, cmd: SendCall, request_id: str | None = None) -> Relayed:
        """Replay a send on ``owner``; its answer, unchanged.

        Raises:
            LinkError: no answer (``may_have_reached`` tells whether the owner
                may have accepted the message).
        """
        self.forwarded_total += 1
        timeout = cmd.blocking_timeout + CALL_GRACE_SECONDS
        return _relayed(await self._links.call(owner, ForwardSend.of(cmd, request_id), cmd.payload, timeout), owner)

    async def send_batch(self, owner: str, raw_items: list[bytes], request_id: str | None = None) -> Relayed:
        """Replay the items of a batch send (their exact bodies) on ``owner``
        as one ``sendBatch`` call, served there whatever its ring says.

        Raises:
            LinkError: no answer.
        """
        self.forwarded_total += 1
        body = b'{"messages":[' + b",".join(raw_items) + b"]}"
        return _relayed(await self._links.call(owner, ForwardSendBatch(request_id), body, BATCH_TIMEOUT_SECONDS), owner)

    async def settle(self, owner: str, call: AckCall | NackCall, request_id: str | None = None) -> Relayed:
        """Ack or nack receipts of in-memory leases ``owner`` holds; its
        answer: a JSON list of booleans, one per receipt, or an error.

        Raises:
            LinkError: no answer.
        """
        self.forwarded_total += 1
        meta = ForwardAck(call, request_id) if isinstance(call, AckCall) else ForwardNack(call, request_id)
        return _relayed(await self._links.call(owner, meta, b"", CALL_GRACE_SECONDS), owner)

    async def receive(self, owner: str, cmd: ReceiveCall, request_id: str | None = None) -> Relayed:
        """Replay a receive on ``owner``, for as long as the client waits.

        Raises:
            LinkError: no answer (the owner gave back what it had for us).
            StreamReleased: the poll was ended from here (shutdown).
        """
        self.forwarded_total += 1
        call = await self._links.open(owner, ForwardReceive(cmd, request_id), b"", cmd.timeout + CALL_GRACE_SECONDS)
        self._polls.add(call)
        try:
            return _relayed(await call.future, owner)
        except asyncio.CancelledError:
            # Our client went away: end the poll; what it was handed comes back.
            stream_id = cmd.stream_id
            call.abandon((lambda reply: self._orphaned(owner, stream_id, reply)) if gives_back(cmd) else None)
            raise
        except CallAborted:
            if call.cancelled:
                raise StreamReleased(cmd.stream_id, "the node is shutting down") from None
            raise
        finally:
            self._polls.discard(call)

    def give_back(self, owner: str, stream_id: str, body: bytes) -> None:
        """Give the messages of a 200 receive answer from ``owner`` back to
        it (its client never got them); kept here if it cannot take them."""
        task = asyncio.get_running_loop().create_task(
            self._give_back(owner, stream_id, body), name=f"ipubsub-give-back-{stream_id}"
        )
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    async def release_polls(self, timeout: float) -> None:
        """End every poll forwarded from here (shutdown): owners answer each
        at once, with 424 or with the message they had for it."""
        polls = list(self._polls)
        for call in polls:
            call.cancel()
        if polls:
            await asyncio.wait([c.future for c in polls], timeout=timeout)

    async def close(self, timeout: float) -> None:
        """Wait (bounded) for messages on their way back to their owner."""
        if self._giving_back:
            _, pending = await asyncio.wait(set(self._giving_back), timeout=timeout)
            await cancel_tasks(pending)

    def _orphaned(self, owner: str, stream_id: str, reply: Reply[Answer]) -> None:
        if reply.meta.status == 200:
            self.give_back(owner, stream_id, reply.payload)

    async def _give_back(self, owner: str, stream_id: str, body: bytes) -> None:
        try:
            reply = await self._links.call(owner, GiveBack(stream_id), body, GIVE_BACK_TIMEOUT_SECONDS)
            if reply.meta.status == 200:
                return
            why = f"status {reply.meta.status}"
        except LinkError as exc:
            if exc.may_have_reached:
                # It may have taken them: keeping a copy here could deliver twice.
                log.error("giving back an answer on %s to %s: %s; its messages may be lost", stream_id, owner, exc)
                return
            why = str(exc)
        try:
            msgs, receipts = returned_messages(body)
        except (msgspec.DecodeError, ValueError):
            log.error("could not decode an answer to give back on %s", stream_id)
            return
        if receipts:  # the owner's leases end by themselves and bring the messages back
            log.warning("owner %s did not take back %d leased message(s) (%s); their leases will expire", owner, len(msgs), why)
        elif msgs:
            log.warning("owner %s did not take back %d message(s) of %s (%s); keeping them here", owner, len(msgs), stream_id, why)
            self._requeue_locally(stream_id, msgs)
