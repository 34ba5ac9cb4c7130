"""Receiving: awaiting receives (one message or a batch), parked receives
(the same without a task, for the peer link), giving messages back, and
cancelling a poll by its id.

Rules shared by every kind of receive:

* Waiting receivers are served first come, first served, awaiting and
  parked ones alike, each message to one of them.
* A batch (``receive_many``, ``park_many``) waits for its first message like
  a single receive, then takes up to ``max_messages - 1`` more of those
  available when it answers (the same loop step for an awaiting receive, the
  next one for a parked receive), in stream order.
* Messages that were handed out but cannot reach their receiver are given
  back (:meth:`Receiving.give_back`): to waiting receivers first, else to the
  front of the stream in their order, never dropped for capacity, and
  ``delivered_total`` is corrected (``requeued_total`` counts them).
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from ..errors import ReceiveTimeout, StreamReleased
from .matching import DEFAULT_STREAM_SIZE, GONE, Matcher
from .message import Message
from .parked import Deliver, Parked
from .stream import Released, Stream

__all__ = ["POLL_CANCELLED", "Receiving"]

POLL_CANCELLED = "poll cancelled by the forwarding node"
_MAX_REMEMBERED_CANCELS = 10000


class Receiving(Matcher):
    """The receiving half of :class:`~ipubsub.engine.Engine`."""

    def _init_polls(self) -> None:
        # Receives that have a poll id (forwarded polls), so that the
        # forwarding node can cancel them; ids cancelled before their poll
        # arrived; and awaiting receives cancelled after they were handed a
        # message that their task has not taken yet (future -> reason).
        self._polls: dict[str, tuple[Stream, asyncio.Future[Message | None] | Parked]] = {}
        self._cancelled_polls: OrderedDict[str, None] = OrderedDict()
        self._revoked: dict[asyncio.Future[Message | None], str] = {}

    # -- awaiting receives -------------------------------------------------------------

    async def receive(self, stream_id: str, timeout: float, poll_id: str | None = None) -> Message:
        """Take the oldest message of the stream, waiting up to ``timeout`` s.

        If the caller is cancelled after a message was handed to it, the
        message goes back to the front of the stream (or to the next waiting
        receiver).  ``poll_id`` names the receive so that :meth:`cancel_poll`
        can end it.

        Raises:
            ReceiveTimeout: nothing arrived in time.
            StreamReleased: the stream moved away, the node is stopping, or
                the poll was cancelled (:meth:`cancel_poll`).
        """
        if poll_id is not None and poll_id in self._cancelled_polls:
            raise StreamReleased(stream_id, POLL_CANCELLED)
        stream = self._streams.get(stream_id)
        if stream is not None:
            msg = self._take(stream)
            if msg is not None:
                return msg
        if timeout <= 0:
            self.stats.receive_timeouts_total += 1
            raise ReceiveTimeout(stream_id, timeout)
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, None)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Message | None] = loop.create_future()
        stream.add_receiver(fut)
        self.stats.waiting_receivers += 1
        handle = loop.call_later(timeout, self._expire_receiver, stream, fut)
        if poll_id is not None:
            self._polls[poll_id] = (stream, fut)
        try:
            result = await fut
        except asyncio.CancelledError:
            # A sender may have handed us a message in the same loop iteration
            # in which our client disconnected: give it back, never lose it
            # (unless cancel_poll already did).
            if fut.done() and not fut.cancelled():
                taken = fut.result()
                if type(taken) is Message and (poll_id is None or self._revoked.pop(fut, None) is None):
                    self.give_back(stream_id, [taken])
            raise
        finally:
            handle.cancel()
            if poll_id is not None:
                self._forget_poll(poll_id, fut)
            if fut.cancelled():
                self._receiver_done(stream, fut, GONE)
                self._settle(stream)
        if type(result) is Message:
            if poll_id is not None and self._revoked:
                reason = self._revoked.pop(fut, None)
                if reason is not None:
                    raise StreamReleased(stream_id, reason)
            return result
        if result is None:
            raise ReceiveTimeout(stream_id, timeout)
        assert isinstance(result, Released)
        raise StreamReleased(stream_id, result.reason)

    async def receive_many(
        self, stream_id: str, timeout: float, max_messages: int, poll_id: str | None = None
    ) -> list[Message]:
        """Like :meth:`receive`, then up to ``max_messages - 1`` more of the
        messages available at that moment: 1 to ``max_messages`` messages,
        oldest first.  Raises what :meth:`receive` raises, and ValueError for
        ``max_messages`` < 1."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        first = await self.receive(stream_id, timeout, poll_id)
        stream = self._streams.get(stream_id)
        return self._fill([first], stream, max_messages) if stream is not None else [first]

    # -- parked receives ---------------------------------------------------------------

    def park(
        self, stream_id: str, timeout: float | None, deliver: Deliver, *, poll_id: str | None = None
    ) -> Parked | None:
        """Take the oldest message of the stream now or once one arrives,
        without a task (``timeout`` ``None``: without a timer either, until
        it is served, released or ended).  ``deliver`` gets the outcome
        exactly once: the
        message, ``None`` if ``timeout`` passed, or a :class:`Released` (the
        stream moved, the node stops, :meth:`Parked.end` or
        :meth:`cancel_poll` with ``poll_id``).

        When the outcome is known at once (a message is ready, ``timeout`` is
        0, or ``poll_id`` was cancelled already) ``deliver`` runs before
        ``park`` returns and ``park`` returns ``None``; otherwise it runs from
        the event loop, never inside an engine call, and ``park`` returns the
        :class:`Parked` receive.  A message given to ``deliver`` is taken: if
        it cannot reach its receiver, give it back (:meth:`give_back`).
        """
        return self._park(stream_id, timeout, deliver, None, poll_id)

    def park_many(
        self, stream_id: str, timeout: float | None, max_messages: int, deliver: Deliver, *, poll_id: str | None = None
    ) -> Parked | None:
        """:meth:`park` for a batch: ``deliver`` gets a list of 1 to
        ``max_messages`` messages (oldest first: the first one to arrive and
        those available when the answer is made), ``None`` or a
        :class:`Released`.  Raises ValueError for ``max_messages`` < 1."""
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        return self._park(stream_id, timeout, deliver, max_messages, poll_id)

    def _park(
        self, stream_id: str, timeout: float | None, deliver: Deliver, limit: int | None, poll_id: str | None
    ) -> Parked | None:
        if poll_id is not None and poll_id in self._cancelled_polls:
            deliver(Released(POLL_CANCELLED))
            return None
        stream = self._streams.get(stream_id)
        if stream is not None:
            msg = self._take(stream)
            if msg is not None:
                deliver(msg if limit is None else self._fill([msg], stream, limit))
                return None
        if timeout is not None and timeout <= 0:
            self.stats.receive_timeouts_total += 1
            deliver(None)
            return None
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, None)
        parked = Parked(self, stream, deliver, limit, poll_id)
        stream.add_receiver(parked)
        self.stats.waiting_receivers += 1
        if timeout is not None:
            parked._handle = asyncio.get_running_loop().call_later(timeout, self._expire_receiver, stream, parked)
        if poll_id is not None:
            self._polls[poll_id] = (stream, parked)
        return parked

    def _end_parked(self, parked: Parked, reason: str) -> bool:
        stream = parked._stream
        if not parked.done():
            self._receiver_done(stream, parked, Released(reason))
            self._settle(stream)
            return True
        msg = parked._revoke(reason)
        if msg is None:
            return False
        self.give_back(stream.id, [msg])
        return True

    # -- giving back and cancelling ----------------------------------------------------

    def give_back(self, stream_id: str, msgs: Sequence[Message], capacity: int | None = None) -> None:
        """Give back messages, in their order, that were handed out but could
        not reach their receiver (an answer that could not be written, a
        batch poll that disconnected, a lease that ended unacknowledged): to
        waiting receivers first, else to the front of the stream — even
        beyond its capacity: an accepted message is never dropped for this.
        Messages given back while others wait at the front are restored in
        the order they were first taken; hand-off batches arriving later go
        behind them.  A stream evicted meanwhile comes back with
        ``capacity`` (default :data:`DEFAULT_STREAM_SIZE`).
        ``delivered_total`` goes down and ``requeued_total`` up by
        ``len(msgs)``."""
        if not msgs:
            return
        stream = self._streams.get(stream_id)
        if capacity is None:
            capacity = DEFAULT_STREAM_SIZE
        if stream is None:
            stream = self._streams[stream_id] = Stream(stream_id, capacity)
        elif stream.capacity is None:
            stream.capacity = capacity
        self._give_back(stream, list(msgs))

    def requeue(self, stream_id: str, msg: Message) -> None:
        """:meth:`give_back` of one message."""
        self.give_back(stream_id, [msg])

    def cancel_poll(self, poll_id: str, reason: str = POLL_CANCELLED) -> bool:
        """End the receive named ``poll_id`` (awaiting or parked): it gets
        :class:`StreamReleased` / ``Released(reason)``.

        Returns True if the receive was still waiting, or had been handed a
        message that its caller has not taken yet (the awaiting task has not
        run, or ``deliver`` was not called yet): that message goes back to the
        front of the stream.  Returns False if its outcome was delivered
        already (the caller owns the messages: it gives them back if it
        cannot use them), or if no such receive exists; then the id is
        remembered, and a receive that arrives later with it is refused.
        """
        entry = self._polls.get(poll_id)
        if entry is not None:
            stream, waiter = entry
            if isinstance(waiter, Parked):
                if waiter.end(reason):
                    return True
            elif not waiter.done():
                self._receiver_done(stream, waiter, Released(reason))
                self._settle(stream)
                return True
            elif not waiter.cancelled() and waiter not in self._revoked:
                taken = waiter.result()
                if isinstance(taken, Message):
                    self._revoked[waiter] = reason
                    self.give_back(stream.id, [taken])
                    return True
        self._cancelled_polls[poll_id] = None
        while len(self._cancelled_polls) > _MAX_REMEMBERED_CANCELS:
            self._cancelled_polls.popitem(last=False)
        return False

    # -- internals ------------------------------------------------------------------------

    def _fill(self, msgs: list[Message], stream: Stream, limit: int) -> list[Message]:
        """Add to ``msgs`` the messages ``stream`` has now, up to ``limit`` in
        all, oldest first.  The first message was handed over earlier; if
        older ones were given back to the front since (a poll that could not
        write its answer), they come before it, as in the stream."""
        if self._streams.get(stream.id) is stream:
            while len(msgs) < limit:
                msg = self._take(stream)
                if msg is None:
                    break
                msgs.append(msg)
            if len(msgs) > 1 and msgs[1].taken < msgs[0].taken:
                msgs.sort(key=_first_taken)
        return msgs

    def _forget_poll(self, poll_id: str | None, waiter: object) -> None:
        if poll_id is not None:
            entry = self._polls.get(poll_id)
            if entry is not None and entry[1] is waiter:
                del self._polls[poll_id]


def _first_taken(msg: Message) -> int:
    return msg.taken
