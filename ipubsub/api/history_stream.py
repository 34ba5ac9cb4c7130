"""Streaming readers of a fan-out history (``fromHistory=true`` on SSE
subscribe and on a WebSocket subscribe frame).

A history subscriber reads, it does not take: each batch is one
:meth:`ipubsub.node.Node.read_history` after the subscriber's position
(served here or by the stream's owner over the peer link), waiting up to
the heartbeat for more when it has caught up.  Every item's event id is
the message's ``position``, so a reconnecting EventSource (``Last-Event-ID``)
resumes exactly after the last event it got.  A position that cannot be
continued (it left the window, or the history was recreated) gives one
:class:`GapItem` carrying the read's ``recovered``/``gap``/``position``;
reading goes on from that position (the oldest available).  An item that
could not be written moves the position back: nothing goes back to a queue.
"""

from __future__ import annotations

import msgspec

from ..calls import ReceiveCall, Relayed
from ..engine import HistoryRead, format_position
from ..errors import ReceiveTimeout
from ..protocol import HistoryMessage, HistoryReply
from ..subscriptions import Item, Subscriber, Subscriptions, relayed_reply_error
from .history_codec import entry_json

__all__ = ["GapItem", "HistorySubscriber"]

_reply_decoder = msgspec.json.Decoder(HistoryReply)
_message_decoder = msgspec.json.Decoder(HistoryMessage)
_encode = msgspec.json.Encoder().encode


class GapItem(Item):
    """The position asked for cannot be continued without a gap: ``body``
    is ``{"recovered": false, "gap": ..., "position": ...}`` (as a history
    read answers it), ``event_id`` the position reading goes on after."""

    __slots__ = ()
    event = "gap"


class HistorySubscriber(Subscriber):
    """One subscriber reading a stream's history (see the module doc).
    ``position``: read after it (``None``: from the oldest held)."""

    __slots__ = ("position", "_batch", "_batch_start")

    def __init__(self, subs: Subscriptions, stream_id: str, from_db: bool, after: int | None) -> None:
        super().__init__(subs, stream_id, from_db, after)
        self.position: str | None = None
        self._batch: list[Item] = []
        self._batch_start: str | None = None

    async def next(self, timeout: int) -> Item:
        """The next message (or gap) of the history; see :meth:`next_batch`."""
        return (await self.next_batch(timeout, 1))[0]

    async def next_batch(self, timeout: int, limit: int) -> list[Item]:
        """Up to ``limit`` messages after :attr:`position`, oldest first,
        waiting up to ``timeout`` seconds for the first; or one
        :class:`GapItem` when the position cannot be continued.

        Raises:
            ReceiveTimeout: nothing new in time (time for a heartbeat).
            HistoryNotKept: the stream keeps no history.
            StreamReleased, OwnerUnavailable, TooManyPolls, ...: as a history read.
        """
        cmd = ReceiveCall(
            self.stream_id, timeout, max_messages=max(1, limit), from_history=True, position=self.position
        )
        self.waiting = True
        try:
            read = await self._node.read_history(cmd)
        finally:
            self.waiting = False
        if isinstance(read, Relayed):
            items, position, recovered, gap = _relayed_items(read)
        else:
            items, position, recovered, gap = _local_items(read)
        if recovered is False:
            body = _encode({"recovered": False, "gap": gap, "position": position})
            self.position = position
            return [GapItem(body, position or "")]
        if not items:
            raise ReceiveTimeout(self.stream_id, timeout)
        self._batch_start, self._batch = self.position, items
        self.position = items[-1].event_id
        return items

    def give_back(self, item: Item) -> None:
        """``item`` was not written: read it again next time."""
        self.give_back_all([item])

    def give_back_all(self, items: list[Item]) -> None:
        """``items`` (the tail of the last batch) were not written: the
        position moves back to just before the first of them."""
        if not items or isinstance(items[0], GapItem):
            return
        index = len(self._batch) - len(items)
        if 0 <= index < len(self._batch):
            self.position = self._batch_start if index == 0 else self._batch[index - 1].event_id


def _local_items(read: HistoryRead) -> tuple[list[Item], str | None, bool | None, str | None]:
    epoch = read.epoch
    items: list[Item] = []
    if epoch is not None:
        items = [Item(entry_json(e, epoch), format_position(epoch, e.offset)) for e in read.entries]
    return items, read.position, read.recovered, read.gap


def _relayed_items(read: Relayed) -> tuple[list[Item], str | None, bool | None, str | None]:
    if read.status != 200:
        raise relayed_reply_error(read)
    reply = _reply_decoder.decode(read.body)
    items: list[Item] = []
    for raw in reply.messages:
        body = bytes(raw)
        items.append(Item(body, _message_decoder.decode(body).position))
    return items, reply.position, reply.recovered, reply.gap
