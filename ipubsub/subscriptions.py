"""Streaming subscribers (SSE and WebSocket), node side.

A subscriber of an in-memory stream is one more competing receiver: each
:meth:`Subscriber.next` issues one receive through the node (served here,
or relayed to the stream's owner), so it takes a message only when its
connection asked for one.  A message it took but could not write goes back
to the front of the owner's stream (:meth:`Item.give_back`).

A subscriber of a durable stream (``readFromDB``) follows the log: it reads
up to ``stream.read_batch`` stored messages at a time straight from the
shared database while it is behind, and waits for the next one through the
owner (which is woken by the append) when it has caught up.  Each item
carries the resume token after it, valid on every node.

:class:`Subscriptions` counts subscribers (per node, per stream), and ends
them all when the node stops.  Nothing here knows HTTP.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import msgspec

from .calls import Delivery, ReceiveCall, Relayed
from .engine import Message, format_timestamp
from .errors import (
    IPubSubError,
    NodeDraining,
    PersistenceNotConfigured,
    ReceiveTimeout,
    TooManyPolls,
    TooManyStreamPolls,
    error_from_response,
)
from .protocol import ReceiveBatchReply, ReceiveReply
from .storage.tokens import decode_token, encode_token

if TYPE_CHECKING:
    from .node import Node

__all__ = ["Item", "Subscriber", "Subscriptions", "relayed_reply_error"]

log = logging.getLogger("ipubsub.subscriptions")

#: a batch taken for one write holds at most this many payload bytes (its first message whatever its size)
BATCH_BYTES = 64 * 1024

_reply_decoder = msgspec.json.Decoder(ReceiveReply)
_batch_decoder = msgspec.json.Decoder(ReceiveBatchReply)


class Item:
    """One message taken for a subscriber: ``body`` is the JSON a receive
    answers, ``event_id`` the SSE id (messageUuid, or for a durable stream
    the resume token after the message)."""

    __slots__ = ("body", "event_id", "_back")
    #: the SSE event name / WebSocket op of a non-message item (``None``: a message)
    event: str | None = None

    def __init__(self, body: bytes, event_id: str, back: object = None) -> None:
        self.body = body
        self.event_id = event_id
        self._back = back  # what give_back needs: a Message, the owner's name, or None

    def give_back(self, subs: Subscriptions, stream_id: str) -> None:
        """The item could not be written: return its message to the front of
        its stream (here, or on the owner it came from).  A durable item
        needs nothing: the client resumes from the previous token."""
        back, self._back = self._back, None
        if back is None:
            return
        if isinstance(back, Message):
            subs.give_back_here(stream_id, back)
        else:
            subs.give_back_remote(stream_id, self.body, str(back))


class Subscriber:
    """One open subscription (see the module doc).  ``closing`` is set when
    the node stops; the connection then ends its stream cleanly."""

    __slots__ = ("_subs", "_node", "stream_id", "from_db", "_after", "_backlog", "closing", "waiting", "task", "wake")

    def __init__(
        self, subs: Subscriptions, stream_id: str, from_db: bool, after: int | None
    ) -> None:
        self._subs = subs
        self._node = subs.node
        self.stream_id = stream_id
        self.from_db = from_db
        self._after = after
        self._backlog: deque[Item] | None = None  # durable: the rest of the last batch read
        self.closing = False
        self.waiting = False
        self.task: asyncio.Task[Any] | None = None
        self.wake: Callable[[], None] | None = None  # called when closing is set

    async def next(self, timeout: int) -> Item:
        """The next message, waiting up to ``timeout`` seconds (a whole
        number; 0: only one that is there now).  While waiting, :attr:`waiting` is set (the
        node's stop may cancel the wait: a message taken meanwhile goes
        back).

        Raises:
            ReceiveTimeout: nothing arrived in time (time for a heartbeat).
            StreamReleased: the stream moved or the node is stopping.
            StorageUnavailable, OwnerUnavailable, TooManyPolls, ...: as a receive.
        """
        if self._backlog:
            return self._backlog.popleft()
        self.waiting = True
        try:
            if self.from_db:
                return await self._next_stored(timeout)
            return await self._next_memory(timeout)
        finally:
            self.waiting = False

    async def next_batch(self, timeout: int, limit: int) -> list[Item]:
        """Like :meth:`next`, then up to ``limit - 1`` more messages that are
        there now (taken together from this node's engine, at most
        :data:`BATCH_BYTES` of payload, or the rest of a durable batch),
        oldest first: written together, they cost one write.

        Raises: what :meth:`next` raises.
        """
        if limit > 1 and not self.from_db and not self._backlog and self._node.cluster.owns(self.stream_id):
            self.waiting = True
            try:
                result = await self._node.receive(ReceiveCall(self.stream_id, timeout, max_messages=limit))
            finally:
                self.waiting = False
            if isinstance(result, list):
                # keep what fits in one write's budget (at least one); the rest goes back to the front
                keep, size = 0, 0
                while keep < len(result) and (keep == 0 or size + len(result[keep].message.payload) <= BATCH_BYTES):
                    size += len(result[keep].message.payload)
                    keep += 1
                if keep < len(result):
                    self._node.engine.give_back(self.stream_id, [d.message for d in result[keep:]])
                return [Item(_encode_delivery(d), d.message.uuid, d.message) for d in result[:keep]]
            assert isinstance(result, Relayed)  # the owner changed meanwhile: the batch came from it
            return _relayed_batch(self._node, self.stream_id, result)
        items = [await self.next(timeout)]
        backlog = self._backlog
        while backlog and len(items) < limit:
            items.append(backlog.popleft())
        return items

    def give_back(self, item: Item) -> None:
        """``item`` could not be written (see :meth:`Item.give_back`); for a
        durable stream, the unwritten rest of the batch is dropped too (the
        client resumes from the token it has)."""
        item.give_back(self._subs, self.stream_id)
        self._backlog = None

    def give_back_all(self, items: list[Item]) -> None:
        """``items`` (oldest first) could not be written: their in-memory
        messages go back to the front of the stream, in their order."""
        here = [i._back for i in items if isinstance(i._back, Message)]
        if here:
            for item in items:
                if isinstance(item._back, Message):
                    item._back = None
            self._subs.give_back_here_all(self.stream_id, here)
        for item in reversed(items):  # relayed ones (one at most): to the front, last first
            item.give_back(self._subs, self.stream_id)
        self._backlog = None

    @property
    def token(self) -> str | None:
        """Durable: the resume token after the last message handed out."""
        return encode_token(self.stream_id, self._after) if self._after is not None else None

    async def _next_memory(self, timeout: int) -> Item:
        return _memory_item(self._node, self.stream_id, await self._node.receive(ReceiveCall(self.stream_id, timeout)))

    async def _next_stored(self, timeout: int) -> Item:
        node = self._node
        durable = node.durable
        if durable is None:
            raise PersistenceNotConfigured("persistence is not configured on this node", field="readFromDB")
        # Behind: read a batch straight from the shared log (no wait).
        try:
            rows = await durable.read_batch(self.stream_id, self._after, 0, self._subs.read_batch)
        except ReceiveTimeout:
            rows = []
        if rows:
            if self._backlog is None:
                self._backlog = deque()
            for row in rows:
                token = encode_token(self.stream_id, row.position)
                msg = Message(row.uuid, row.payload, row.timestamp_us)
                self._backlog.append(Item(_encode_delivery(Delivery(msg, token)), token))
            self._after = rows[-1].position
            return self._backlog.popleft()
        # Caught up: wait through the owner, whose append wakes it.
        call = ReceiveCall(self.stream_id, timeout, from_db=True, token=self.token)
        result = await node.receive(call)
        resume: str | None
        if isinstance(result, Relayed):
            reply = _relayed(result)
            resume, body = reply.dbResumeToken, result.body
        else:
            assert isinstance(result, Delivery)
            resume, body = result.token, _encode_delivery(result)
        if resume is None:  # pragma: no cover - an owner always answers a token
            raise ReceiveTimeout(self.stream_id, timeout)
        self._after = decode_token(resume, self.stream_id)
        return Item(body, resume)


class Subscriptions:
    """The node's subscribers: limits, and their end at shutdown."""

    def __init__(self, node: Node) -> None:
        self.node = node
        config = node.config.stream
        self.heartbeat_seconds = config.heartbeat_seconds
        self.read_batch = config.read_batch
        self._max = config.max_subscribers
        self._max_per_stream = config.max_subscribers_per_stream
        self._open: set[Subscriber] = set()
        self._per_stream: dict[str, int] = {}
        self._closing = False
        self._returns: set[asyncio.Task[None]] = set()
        self._sessions: set[Callable[[], Awaitable[None]]] = set()
        self.opened_total = 0
        self.given_back_total = 0

    @property
    def count(self) -> int:
        return len(self._open)

    @property
    def closing(self) -> bool:
        return self._closing

    def open(
        self, stream_id: str, *, from_db: bool = False, token: str | None = None, kind: type[Subscriber] = Subscriber
    ) -> Subscriber:
        """Register a subscriber of ``stream_id`` (``token``: resume a
        durable stream after it; ``kind``: a :class:`Subscriber` subclass,
        e.g. a history reader); :meth:`close` it when its connection ends.

        Raises:
            InvalidToken: ``token`` is not a token of this stream.
            PersistenceNotConfigured: ``from_db`` on a node without storage.
            TooManyPolls: the node has ``stream.max_subscribers``.
            NodeDraining: the node is stopping.
            TooManyStreamPolls: the stream has ``stream.max_subscribers_per_stream``.
        """
        if from_db and self.node.durable is None:
            raise PersistenceNotConfigured(
                "persistence is not configured on this node (storage.backend: none)", field="readFromDB"
            )
        after = decode_token(token, stream_id) if from_db and token else None
        if self._closing:
            raise NodeDraining("this node is shutting down; subscribe on another node", retry_after=1)
        if len(self._open) >= self._max:
            self.node.refusals.add("too_many_subscribers")
            raise TooManyPolls(f"this node has {len(self._open)} subscribers (stream.max_subscribers)", retry_after=1)
        on_stream = self._per_stream.get(stream_id, 0)
        if on_stream >= self._max_per_stream:
            self.node.refusals.add("too_many_stream_subscribers")
            raise TooManyStreamPolls(
                f"stream {stream_id[:200]!r} has {on_stream} subscribers (stream.max_subscribers_per_stream)",
                retry_after=1,
                streamId=stream_id,
            )
        sub = kind(self, stream_id, from_db, after)
        sub.task = asyncio.current_task()
        self._open.add(sub)
        self._per_stream[stream_id] = on_stream + 1
        self.opened_total += 1
        return sub

    def close_one(self, sub: Subscriber) -> None:
        """Forget ``sub`` (its connection ended); idempotent."""
        if sub in self._open:
            self._open.discard(sub)
            left = self._per_stream[sub.stream_id] - 1
            if left:
                self._per_stream[sub.stream_id] = left
            else:
                del self._per_stream[sub.stream_id]

    async def close(self, timeout: float) -> None:
        """Node stop: refuse new subscribers, end every open one (a waiting
        receive is cancelled: what it took goes back), and wait up to
        ``timeout`` for their connections to finish, and for messages given
        back to owners."""
        self._closing = True
        for sub in list(self._open):
            sub.closing = True
            if sub.waiting and sub.task is not None and not sub.task.done():
                sub.task.cancel()
            elif sub.wake is not None:
                sub.wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        if self._sessions:
            await asyncio.wait([asyncio.ensure_future(shut()) for shut in list(self._sessions)], timeout=timeout)
        while self._open and loop.time() < deadline:
            await asyncio.sleep(0.02)
        if self._returns:
            await asyncio.wait(set(self._returns), timeout=max(0.1, deadline - loop.time()))

    def add_session(self, shut: Callable[[], Awaitable[None]]) -> None:
        """A connection carrying subscriptions (a WebSocket): ``shut()`` ends
        it when the node stops."""
        self._sessions.add(shut)

    def remove_session(self, shut: Callable[[], Awaitable[None]]) -> None:
        self._sessions.discard(shut)

    # -- giving back ------------------------------------------------------------------

    def give_back_here(self, stream_id: str, msg: Message) -> None:
        """A message this node's engine handed out returns to its front (a
        stream that moved meanwhile: hand-off takes it on)."""
        self.given_back_total += 1
        self.node.engine.give_back(stream_id, [msg])
        self.node.cluster.served_elsewhere_owned(stream_id)

    def give_back_here_all(self, stream_id: str, msgs: list[Message]) -> None:
        """:meth:`give_back_here` of several messages, kept in their order."""
        self.given_back_total += len(msgs)
        self.node.engine.give_back(stream_id, msgs)
        self.node.cluster.served_elsewhere_owned(stream_id)

    def give_back_remote(self, stream_id: str, body: bytes, owner: str) -> None:
        """An answer relayed from ``owner`` (its body) never reached the
        subscriber: its message returns to the front of the owner's stream
        over the peer link; if the owner cannot take it, this node keeps it
        (hand-off moves it on)."""
        self.given_back_total += 1
        self.node.cluster.give_back(owner, stream_id, body)


def _memory_item(node: Node, stream_id: str, result: object) -> Item:
    """The item of an in-memory receive's answer (here, or relayed by the owner)."""
    if isinstance(result, Relayed):
        reply = _relayed(result)
        return Item(result.body, reply.messageUuid, result.owner or node.owner_of(stream_id)[0])
    if isinstance(result, list):  # pragma: no cover - a batch answered for a single receive
        raise AssertionError("a single receive answered a batch")
    assert isinstance(result, Delivery)
    return Item(_encode_delivery(result), result.message.uuid, result.message)


def _relayed_batch(node: Node, stream_id: str, result: Relayed) -> list[Item]:
    """The items of a batch an owner answered (each to go back to it alone)."""
    if result.status != 200:
        _relayed(result)  # raises the error it stands for
    owner = result.owner or node.owner_of(stream_id)[0]
    items = []
    for reply in _batch_decoder.decode(result.body).messages:
        body = msgspec.json.encode(reply)
        items.append(Item(body, reply.messageUuid, owner))
    return items


def relayed_reply_error(reply: Relayed) -> IPubSubError:
    """The error an owner's non-200 answer stands for (ReceiveTimeout, ...)."""
    try:
        body = msgspec.json.decode(reply.body)
    except msgspec.DecodeError:
        body = None
    retry = int(reply.retry_after) if reply.retry_after and reply.retry_after.isdigit() else None
    return error_from_response(reply.status, body, retry_after=retry)


def _relayed(reply: Relayed) -> ReceiveReply:
    """The message of an owner's 200 answer.

    Raises:
        the error an owner's non-200 answer stands for (ReceiveTimeout, ...).
    """
    if reply.status != 200:
        raise relayed_reply_error(reply)
    return _reply_decoder.decode(reply.body)


def _encode_delivery(delivery: Delivery) -> bytes:
    msg = delivery.message
    return msgspec.json.encode(
        ReceiveReply(msg.uuid, msgspec.Raw(msg.payload), format_timestamp(msg.timestamp_us), delivery.token)
    )
