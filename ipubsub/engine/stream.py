"""One in-memory stream: its bounded buffer and its queues of waiters.

The buffer is ``None`` while empty, a small list while short and a deque once
long, so a million idle streams cost little memory while long streams keep
O(1) operations at both ends.  Waiter queues hold futures and are cleaned
lazily: a waiter that times out or is cancelled stays in its deque, already
done, and is skipped when reached; ``live_*`` counts the ones still pending.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

from .message import Message

if TYPE_CHECKING:
    from .history import History

__all__ = ["Receiver", "Released", "Stream"]

_LIST_MAX = 32  # beyond this many buffered messages, switch the buffer to a deque


class Receiver(Protocol):
    """A waiting receiver in a stream's queue: the future of an awaiting
    receive, or a :class:`~ipubsub.engine.parked.Parked` receive."""

    def done(self) -> bool: ...

    def set_result(self, result: Any, /) -> None: ...


class Released:
    """Result given to a waiter that the engine lets go (stream moved, shutdown)."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _taken(msg: Message) -> int:
    return msg.taken


class Stream:
    """State of one stream. Mutated only by :class:`~ipubsub.engine.Engine`."""

    __slots__ = (
        "id",
        "capacity",
        "buffer",
        "nbytes",
        "front",
        "returned",
        "receivers",
        "live_receivers",
        "senders",
        "live_senders",
        "idle_since",
        "idle_gen",
        "history",
        "history_open",
    )

    def __init__(self, stream_id: str, capacity: int | None) -> None:
        self.id = stream_id
        # None until the first send configures it (a receiver may arrive first).
        self.capacity = capacity
        self.buffer: list[Message] | deque[Message] | None = None
        self.nbytes = 0
        # The head of the buffer holds, in this order: ``returned`` messages
        # given back by receivers that could not take them (in the order they
        # were first taken), then messages handed over by a previous owner;
        # ``front`` counts both.  Messages accepted here come after them, so a
        # later hand-off batch is inserted at ``front``.
        self.front = 0
        self.returned = 0
        # Waiter queues: None, a short list, or a deque (like the buffer).
        self.receivers: deque[Receiver] | None = None
        self.live_receivers = 0
        self.senders: deque[tuple[asyncio.Future[bool | None], Message]] | None = None
        self.live_senders = 0
        self.idle_since = 0.0
        self.idle_gen = -1
        # Its fan-out history (engine/history.py), if its first send asked for
        # one, or a pending one holding history readers that came first.
        self.history: History | None = None
        # Created by a hand-off or a restore, whose queue comes without its
        # history settings: the first send here fixes them (see attach).
        self.history_open = False

    # -- buffer ---------------------------------------------------------------

    def __len__(self) -> int:
        buf = self.buffer
        return 0 if buf is None else len(buf)

    def push_back(self, msg: Message) -> None:
        buf = self.buffer
        if buf is None:
            self.buffer = [msg]
        else:
            buf.append(msg)
            if type(buf) is list and len(buf) > _LIST_MAX:
                self.buffer = deque(buf)
        self.nbytes += msg.size

    def put_back(self, msgs: list[Message]) -> None:
        """Insert given-back ``msgs`` (in the order they were first taken) at
        the head, merged with the messages given back before by that order
        (never-taken ones, e.g. decoded from a peer's requeue, go first)."""
        n = self.returned
        if n:
            buf = self.buffer
            assert buf is not None
            if isinstance(buf, deque):
                head = [buf.popleft() for _ in range(n)]
            else:
                head = buf[:n]
                del buf[:n]
            msgs = sorted(msgs + head, key=_taken)
            self.nbytes -= sum(m.size for m in head)
            if not buf:
                self.buffer = None
        added = len(msgs) - n
        self.insert_at(0, msgs)
        self.returned += added
        self.front += added

    def insert_at(self, index: int, msgs: Iterable[Message]) -> int:
        """Insert ``msgs`` in order starting at position ``index``; return how many."""
        items = list(msgs)
        if not items:
            return 0
        buf = self.buffer
        if buf is None:
            buf = self.buffer = []
        if type(buf) is list:
            buf[index:index] = items
            if len(buf) > _LIST_MAX:
                self.buffer = deque(buf)
        else:
            assert isinstance(buf, deque)
            if index == 0:
                buf.extendleft(reversed(items))
            else:
                buf.rotate(-index)
                buf.extendleft(reversed(items))
                buf.rotate(index)
        self.nbytes += sum(m.size for m in items)
        return len(items)

    def pop_front(self) -> Message:
        buf = self.buffer
        assert buf is not None
        msg = buf.pop(0) if type(buf) is list else buf.popleft()  # type: ignore[union-attr]
        if not buf:
            self.buffer = None
            self.front = self.returned = 0
        elif self.front:
            self.front -= 1
            if self.returned:
                self.returned -= 1
        self.nbytes -= msg.size
        return msg

    def take_all(self) -> list[Message]:
        """Remove and return every buffered message, oldest first."""
        items = list(self.buffer) if self.buffer is not None else []
        self.buffer = None
        self.nbytes = 0
        self.front = self.returned = 0
        return items

    # -- waiters -------------------------------------------------------------

    def add_receiver(self, fut: Receiver) -> None:
        q = self.receivers
        if q is None:
            self.receivers = [fut]  # type: ignore[assignment]
        else:
            q.append(fut)
            if type(q) is list and len(q) > _LIST_MAX:
                self.receivers = deque(q)
        self.live_receivers += 1

    def add_sender(self, fut: asyncio.Future[bool | None], msg: Message) -> None:
        q = self.senders
        if q is None:
            self.senders = [(fut, msg)]  # type: ignore[assignment]
        else:
            q.append((fut, msg))
            if type(q) is list and len(q) > _LIST_MAX:
                self.senders = deque(q)
        self.live_senders += 1

    def next_receiver(self) -> Receiver | None:
        """Pop the longest-waiting pending receiver, skipping departed ones."""
        q = self.receivers
        while q:
            fut = q.pop(0) if type(q) is list else q.popleft()
            if not fut.done():
                return fut
        return None

    def next_sender(self) -> tuple[asyncio.Future[bool | None], Message] | None:
        """Pop the longest-blocked pending sender, skipping departed ones."""
        q = self.senders
        while q:
            entry = q.pop(0) if type(q) is list else q.popleft()
            if not entry[0].done():
                return entry
        return None

    def peek_sender(self) -> Message | None:
        """The message of the longest-blocked pending sender, left in place."""
        q = self.senders
        while q:
            fut, msg = q[0]
            if not fut.done():
                return msg
            q.pop(0) if type(q) is list else q.popleft()
        return None

    def compact(self) -> None:
        """Drop departed waiters once they outnumber the live ones."""
        q = self.receivers
        if q is not None:
            if self.live_receivers == 0:
                self.receivers = None
            elif len(q) > 2 * self.live_receivers + 16:
                self.receivers = deque(f for f in q if not f.done())
        s = self.senders
        if s is not None:
            if self.live_senders == 0:
                self.senders = None
            elif len(s) > 2 * self.live_senders + 16:
                self.senders = deque(e for e in s if not e[0].done())

    @property
    def is_idle(self) -> bool:
        """Empty and nobody waiting (history readers included): a candidate
        for eviction (a history with unexpired messages still keeps it)."""
        return (
            self.buffer is None
            and self.live_receivers == 0
            and self.live_senders == 0
            and (self.history is None or self.history.live_readers == 0)
        )
