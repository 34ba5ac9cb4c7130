"""The receives and reads of :class:`~ipubsub.client.aio.AsyncClient`:
``receive`` (in-memory, plain or leased), the durable log, the history, and
the iterators it returns (``subscribe``, ``replay``, ``stream``, ``follow``)."""

from __future__ import annotations

import asyncio
from typing import Literal, overload

from ..errors import ReceiveTimeout, StreamReleased
from .batches import receive_batch
from .history import Follower, HistoryBatch, history_query, parse_history
from .iterators import Replay, Subscription, positive
from .leasing import LeaseCalls
from .streaming import MessageStream
from .wire import RECEIVE_PATH, ReceivedMessage, parse_received, receive_query, whole_seconds

__all__ = ["ReadCalls"]


class ReadCalls(LeaseCalls):
    """Receives, reads of the durable log and the history, and the
    iterators built on polls and pushes (leases come from
    :class:`~ipubsub.client.leasing.LeaseCalls`)."""

    @overload
    async def receive(
        self, stream: str, timeout: float = 30, *, lease: float | None = None, max_deliveries: int | None = None,
        max_messages: None = None,
    ) -> ReceivedMessage | None: ...

    @overload
    async def receive(
        self, stream: str, timeout: float = 30, *, lease: float | None = None, max_deliveries: int | None = None,
        max_messages: int,
    ) -> list[ReceivedMessage]: ...

    async def receive(
        self,
        stream: str,
        timeout: float = 30,
        *,
        lease: float | None = None,
        max_deliveries: int | None = None,
        max_messages: int | None = None,
    ) -> ReceivedMessage | list[ReceivedMessage] | None:
        """Take the next in-memory message of ``stream``, waiting up to
        ``timeout`` seconds (rounded up to whole seconds).

        With ``max_messages`` it answers a list instead: the first message
        to arrive and those available with it, up to ``max_messages`` in
        one poll, oldest first (empty if none arrived in time).

        With ``lease`` (seconds) the message is leased, not taken for good:
        it comes back as a :class:`LeasedMessage` and stays invisible to
        other receivers until ``await msg.ack()`` (done) or ``await
        msg.nack()``; if neither happens within ``lease`` seconds it is
        delivered again (to anyone), and after ``max_deliveries``
        deliveries (server default 5) it moves to ``<stream>.dead``.

        Returns:
            The message, or ``None`` if none arrived in time (424).

        Raises:
            BadRequest: invalid stream id, timeout or lease (400).
            Unavailable: still 503 when the retries ran out.
            Unreachable: no node could be reached within the retries.
        """
        if lease is not None:
            leased = await self._leased(
                stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages
            )
            if max_messages is not None:
                return list(leased)
            return leased[0] if leased else None
        if max_messages is not None:
            return await receive_batch(self, stream, timeout, max_messages)
        return await self._poll(stream, timeout, from_db=False, token=None)

    @overload
    async def read(
        self, stream: str, token: str | None = None, timeout: float = 30, *, max_messages: None = None
    ) -> ReceivedMessage | None: ...

    @overload
    async def read(
        self, stream: str, token: str | None = None, timeout: float = 30, *, max_messages: int
    ) -> list[ReceivedMessage]: ...

    async def read(
        self, stream: str, token: str | None = None, timeout: float = 30, *, max_messages: int | None = None
    ) -> ReceivedMessage | list[ReceivedMessage] | None:
        """Read the next message of the durable log of ``stream`` after
        ``token`` (``None``: the oldest alive), waiting up to ``timeout``
        seconds (rounded up) for one; removes nothing.  With
        ``max_messages``: a list of up to that many, read with one range
        read (empty if none arrived in time); each carries its token.

        Returns:
            The message with the ``token`` that continues after it, or
            ``None`` if there was none in time (424).

        Raises:
            PersistenceNotConfigured: the server has no storage (400).
            InvalidToken: ``token`` is not one of this stream's (400).
            StorageUnavailable: still 503 when the retries ran out.
            Unreachable: no node could be reached within the retries.
        """
        if max_messages is not None:
            return await receive_batch(self, stream, timeout, max_messages, from_db=True, token=token)
        return await self._poll(stream, timeout, from_db=True, token=token)

    def subscribe(self, stream: str, timeout: float = 30, *, batch: int = 1) -> Subscription:
        """An async iterator over the in-memory messages of ``stream``; it
        long-polls for up to ``timeout`` seconds at a time and polls again
        after every 424.  Each message goes to one receiver only.

        ``batch`` > 1 takes up to that many messages per poll
        (``maxMessages``): far fewer requests under load, but the messages
        taken and not yet yielded when you stop iterating are gone from the
        stream (they were delivered to this subscription).

        Raises:
            ValueError: ``timeout`` is not positive, or ``batch`` < 1.
        """
        return Subscription(self, stream, positive(timeout), batch)

    def replay(
        self, stream: str, token: str | None = None, timeout: float = 30, *, follow: bool = True, batch: int = 100
    ) -> Replay:
        """An async iterator over the durable log of ``stream``, starting
        after ``token`` (``None``: the oldest message still alive).

        Reading removes nothing.  The iterator's ``token`` is always the
        resume token after the last message it yielded, so saving it lets a
        later ``replay`` continue exactly there.  With ``follow`` (the
        default) it never ends: at the end of the log it long-polls (up to
        ``timeout`` seconds at a time) for new messages; without, it stops
        at the first poll that finds nothing.  It reads up to ``batch``
        messages per call (one range read on the server); reading removes
        nothing, so stopping mid-batch loses nothing.

        Raises:
            ValueError: ``timeout`` is not positive, or ``batch`` < 1.
        """
        return Replay(self, stream, token, positive(timeout), follow, batch)

    def stream(
        self,
        stream: str,
        *,
        durable: bool = False,
        token: str | None = None,
        transport: Literal["sse", "ws"] = "sse",
        max_messages: int | None = None,
        window: int | None = None,
        idle_timeout: float = 60.0,
    ) -> MessageStream:
        """An async iterator over messages the node pushes (Server-Sent
        Events, or a WebSocket with ``transport="ws"``), reconnecting by
        itself after a disconnect.

        In-memory (default): the iterator is one more competing receiver;
        with ``ws`` up to ``window`` (default 1) messages are taken ahead of
        the loop.  ``durable``: follows the durable log after ``token`` (the
        oldest kept message when ``None``), and after a reconnect resumes
        from the token of the last message yielded (``stream.token``): no
        gap, no duplicate.  ``max_messages`` ends it after that many;
        ``idle_timeout`` is how long a silent connection (no message, no
        heartbeat) is trusted.

        Raises:
            ValueError: an option is out of range.
        """
        return MessageStream(
            self, stream, from_db=durable, token=token, transport=transport, max_messages=max_messages,
            window=window or (100 if durable else 1), idle_timeout=idle_timeout,
        )

    async def read_history(
        self,
        stream: str,
        position: str | None = None,
        *,
        max_messages: int = 100,
        timeout: float = 30,
        strict: bool = False,
    ) -> HistoryBatch:
        """Read up to ``max_messages`` messages of the history of ``stream``
        after ``position`` (``None``: from the oldest held), waiting up to
        ``timeout`` seconds (rounded up) for the first.  Removes nothing:
        every reader gets every message.

        Returns:
            The batch; ``recovered`` is ``False`` when the history cannot
            continue from ``position`` (then ``position`` is the oldest
            available one).  Empty, at the same position, if nothing came
            in time or the stream moved meanwhile.

        Raises:
            HistoryGap: ``strict`` and the position cannot be recovered (409).
            HistoryNotKept: the stream keeps no history (409).
            InvalidPosition: ``position`` is not one the server wrote (400).
            Unavailable, Unreachable: as for :meth:`send`.
        """
        seconds = whole_seconds(timeout)
        deadline = asyncio.get_running_loop().time() + seconds
        query = history_query(stream, seconds, position, max_messages, strict)
        try:
            answer = await self._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
        except StreamReleased:
            return HistoryBatch([], position)
        return parse_history(answer)

    def follow(
        self,
        stream: str,
        position: str | None = None,
        *,
        max_messages: int = 100,
        timeout: float = 30,
        accept_gaps: bool = False,
    ) -> Follower:
        """An async iterator over the history of ``stream`` after
        ``position`` (``None``: from the oldest held), reading up to
        ``max_messages`` at a time and long-polling up to ``timeout``
        seconds when it is at the top.  Its ``position`` is always the last
        yielded message's: save it to follow on later.  When the history
        cannot continue from there it raises :class:`HistoryGap`, or, with
        ``accept_gaps``, goes on from the oldest message held (counting
        ``gaps``).

        Raises:
            ValueError: ``timeout`` is not positive.
        """
        return Follower(self, stream, position, max_messages, positive(timeout), accept_gaps)

    # -- internals ------------------------------------------------------------

    async def _poll(self, stream: str, timeout: float, *, from_db: bool, token: str | None) -> ReceivedMessage | None:
        deadline = asyncio.get_running_loop().time() + whole_seconds(timeout)
        query = receive_query(stream, whole_seconds(timeout), from_db=from_db, token=token)
        try:
            answer = await self._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
        except (ReceiveTimeout, StreamReleased):
            return None
        return parse_received(answer)
