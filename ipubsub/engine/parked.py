"""A receive that waits without a task: :class:`Parked`.

The owner of a stream parks a forwarded poll (from the peer link) instead of
running a coroutine for it.  A parked receive sits in its stream's receiver
queue exactly like the future of an awaiting ``receive`` (same FIFO, same
matching, same counters) and answers through a callback, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .message import Message
from .stream import Released, Stream

if TYPE_CHECKING:
    from .receiving import Receiving

__all__ = ["Deliver", "Parked"]

# Gets the outcome of a parked receive exactly once: the message (a list of
# messages for park_many), None (timed out) or a Released.
Deliver = Callable[[Any], None]

_WAITING, _HANDED, _ENDED = 0, 1, 2


class Parked:
    """A parked receive (:meth:`Engine.park`, :meth:`Engine.park_many`).

    States: *waiting* in the queue → *handed* its first message → *ended*
    (its outcome settled: ``deliver`` is called, from the event loop, one step
    after the receive stopped waiting).  Between handed and answered a batch
    takes the further messages available then; :meth:`end` in that window
    gives the handed message back to the front of the stream.
    """

    __slots__ = ("_receiving", "_stream", "_deliver", "_limit", "_handle", "_result", "_state", "poll_id")

    def __init__(
        self, receiving: Receiving, stream: Stream, deliver: Deliver, limit: int | None, poll_id: str | None
    ) -> None:
        self._receiving = receiving
        self._stream = stream
        self._deliver = deliver
        self._limit = limit  # None: one message, delivered as is; N: a list of up to N
        self._handle: asyncio.TimerHandle | None = None
        self._result: Message | Released | None = None
        self._state = _WAITING
        self.poll_id = poll_id

    def end(self, reason: str) -> bool:
        """The caller went away: stop waiting.  ``deliver`` gets
        ``Released(reason)`` — also if a message was handed to this receive
        but not yet delivered: that message goes back to the front of its
        stream.  Returns False (and changes nothing) once the outcome was
        delivered or decided otherwise (timed out, released)."""
        return self._receiving._end_parked(self, reason)

    # -- the waiter protocol of the stream queue and the matcher ------------------------

    def done(self) -> bool:
        return self._state != _WAITING

    def set_result(self, result: Message | Released | None) -> None:
        """Called once by the matcher: served, timed out or released."""
        self._result = result
        self._state = _HANDED if type(result) is Message else _ENDED
        if self._handle is not None:
            self._handle.cancel()
        asyncio.get_running_loop().call_soon(self._answer)

    # -- internals ------------------------------------------------------------------------

    def _revoke(self, reason: str) -> Message | None:
        """End a receive that was handed a message not yet delivered; return
        that message (for the caller to give back)."""
        if self._state != _HANDED:
            return None
        msg = self._result
        assert type(msg) is Message
        self._result = Released(reason)
        self._state = _ENDED
        return msg

    def _answer(self) -> None:
        result: Any = self._result
        if self._state == _HANDED and self._limit is not None:
            result = self._receiving._fill([result], self._stream, self._limit)
        self._state = _ENDED
        self._receiving._forget_poll(self.poll_id, self)
        self._deliver(result)
