"""Forwarding public calls to a stream's owner.

Forwarded calls carry ``X-IPubSub-Forwarded-By``; the receiving node serves
them locally whatever its own view of the ring, so views that briefly
disagree can never make a request loop.

A forwarded long poll also carries a poll id.  If our client disconnects, we
must not simply drop the upstream connection: the owner may already have
handed the poll a message.  Instead we ask the owner to cancel that poll
(it then answers 424 at once), still read its answer, and give back any
message it carried (``/internal/v1/requeue``).  So a dead poller behind a
forwarding node swallows nothing either.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable

import msgspec

from ..calls import ReceiveCall, Relayed, SendCall
from ..engine import Message, new_uuid, parse_timestamp
from ..leasing.receipts import is_group_receipt
from ..tasks import cancel_tasks
from ..protocol import (
    FORWARDED_HEADER,
    INTERNAL_CANCEL_POLL_PATH,
    INTERNAL_REQUEUE_PATH,
    JSON_CONTENT_TYPE,
    POLL_ID_HEADER,
    RECEIVE_PATH,
    REQUEST_ID_HEADER,
    SEND_BATCH_PATH,
    SEND_PATH,
    ReceiveBatchReply,
    ReceiveReply,
)
from .peers import PeerClient, PeerUnreachable
from .messages import CancelPoll, HandedMessage, Requeue, encode

__all__ = ["Forwarder"]

log = logging.getLogger("ipubsub.cluster")

# Extra read time beyond the poll's own timeout before we give up on the owner.
POLL_GRACE_SECONDS = 10.0
# How long a forwarded sub-batch may take (no item of a batch blocks; durable
# items wait for one group commit).
BATCH_READ_TIMEOUT_SECONDS = 30.0


class Forwarder:
    """Replays calls on the owner and tracks forwarded polls.

    Args:
        name: this node's name (sent in the forwarded-by header).
        peers: the pooled peer client.
        requeue_locally: last resort for messages the owner could not take
            back: keep them, in order, in this node's engine (hand-off moves
            them on).
    """

    def __init__(
        self, name: str, peers: PeerClient, requeue_locally: Callable[[str, list[Message]], None]
    ) -> None:
        self._name = name
        self._peers = peers
        self._requeue_locally = requeue_locally
        self._polls: dict[str, str] = {}  # poll id -> owner address
        self._abandoned: set[asyncio.Task[None]] = set()
        self.forwarded_total = 0

    def _headers(self, request_id: str | None) -> dict[str, str]:
        headers = {FORWARDED_HEADER: self._name}
        if request_id:
            headers[REQUEST_ID_HEADER] = request_id
        return headers

    async def send(self, address: str, cmd: SendCall, request_id: str | None = None) -> Relayed:
        """Replay a send on ``address``.

        Raises:
            PeerUnreachable: the owner could not be reached.
        """
        self.forwarded_total += 1
        headers = self._headers(request_id)
        headers["Content-Type"] = JSON_CONTENT_TYPE
        read_timeout = cmd.blocking_timeout + POLL_GRACE_SECONDS
        return await self._peers.forward(
            address, "POST", SEND_PATH, headers=headers, body=cmd.raw, read_timeout=read_timeout
        )

    async def send_batch(self, address: str, raw_items: list[bytes], request_id: str | None = None) -> Relayed:
        """Replay the items of a batch send (their exact bodies) on
        ``address`` as one ``sendBatch`` call, served there whatever its ring
        says.  The answer is the owner's, unchanged: 200 with one result per
        item in this order, or an error for the whole sub-batch.

        Raises:
            PeerUnreachable: the owner could not be reached.
        """
        self.forwarded_total += 1
        headers = self._headers(request_id)
        headers["Content-Type"] = JSON_CONTENT_TYPE
        body = b'{"messages":[' + b",".join(raw_items) + b"]}"
        return await self._peers.forward(
            address, "POST", SEND_BATCH_PATH, headers=headers, body=body, read_timeout=BATCH_READ_TIMEOUT_SECONDS
        )

    async def receive(self, address: str, cmd: ReceiveCall, request_id: str | None = None) -> Relayed:
        """Replay a long poll on ``address``, for as long as the client waits.

        Raises:
            PeerUnreachable: the owner could not be reached.
        """
        self.forwarded_total += 1
        poll_id = new_uuid()
        headers = self._headers(request_id)
        headers[POLL_ID_HEADER] = poll_id
        call = asyncio.ensure_future(
            self._peers.forward(
                address,
                "GET",
                RECEIVE_PATH,
                headers=headers,
                params=cmd.query(),
                read_timeout=cmd.timeout + POLL_GRACE_SECONDS,
            )
        )
        self._polls[poll_id] = address
        try:
            # Shielded: our client going away must not tear the call down.
            return await asyncio.shield(call)
        except asyncio.CancelledError:
            task = asyncio.get_running_loop().create_task(
                self._abandon(address, cmd.stream_id, poll_id, call), name=f"ipubsub-abandon-{poll_id}"
            )
            self._abandoned.add(task)
            task.add_done_callback(self._abandoned.discard)
            raise
        finally:
            self._polls.pop(poll_id, None)

    async def release_polls(self, timeout: float) -> None:
        """Ask owners to end every poll forwarded from here (shutdown): each
        answers at once, with 424 or with the message it had for it."""
        polls = list(self._polls.items())
        if polls:
            await asyncio.gather(
                *(self._cancel(address, poll_id, timeout) for poll_id, address in polls),
                return_exceptions=True,
            )

    async def close(self, timeout: float) -> None:
        """Wait (bounded) for abandoned polls to be settled."""
        if self._abandoned:
            _, pending = await asyncio.wait(set(self._abandoned), timeout=timeout)
            await cancel_tasks(pending)

    async def _cancel(self, address: str, poll_id: str, timeout: float) -> None:
        try:
            await self._peers.call(address, INTERNAL_CANCEL_POLL_PATH, encode(CancelPoll(poll_id)), timeout=timeout)
        except PeerUnreachable:
            pass

    async def _abandon(
        self, address: str, stream_id: str, poll_id: str, call: asyncio.Future[Relayed]
    ) -> None:
        if not call.done():
            await self._cancel(address, poll_id, 2.0)
        try:
            reply = await asyncio.wait_for(call, POLL_GRACE_SECONDS)
        except (asyncio.TimeoutError, PeerUnreachable):
            # The connection is gone: the owner's handler was cancelled and
            # put back whatever it held.
            return
        if reply.status != 200:
            return
        try:
            msgs, receipts = _returned_messages(reply.body)
        except (msgspec.DecodeError, ValueError):
            log.error("could not decode a message returned to a cancelled poll on %s", stream_id)
            return
        if not msgs:
            return
        handed = [HandedMessage(m.uuid, msgspec.Raw(m.payload), m.timestamp_us) for m in msgs]
        back = Requeue(stream_id, handed[0], handed[1:], receipts)
        try:
            status, _ = await self._peers.call(address, INTERNAL_REQUEUE_PATH, encode(back), timeout=5.0)
        except PeerUnreachable:
            status = 0
        if status != 200 and receipts:  # the owner's leases end by themselves and bring them back
            log.warning("owner %s did not take back %d leased message(s); their leases will expire", address, len(msgs))
        elif status != 200:
            log.warning("owner %s did not take back %d message(s) from %s; keeping them here", address, len(msgs), msgs[0].uuid)
            self._requeue_locally(stream_id, msgs)


def _returned_messages(body: bytes) -> tuple[list[Message], list[str]]:
    """The in-memory messages of a poll answer nobody will read (one
    message, or a batch answer's, in order) and, for a leased answer, their
    receipts.  A durable read's or a consumer group's answer has nothing to
    give back: the log keeps its rows, a group's lease expires in the database.

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
