"""The iterator :meth:`AsyncClient.consume` returns: at-least-once
processing, one message at a time, acknowledged once the loop body that
got it has finished."""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .wire import LeasedMessage

if TYPE_CHECKING:
    from .leasing import LeaseCalls

__all__ = ["Consumer"]

log = logging.getLogger("ipubsub.client")


class Consumer:
    """Async iterator over leased messages of one stream (a consumer
    group's, or in-memory leases), see :meth:`AsyncClient.consume`.

    Asking for the next message acknowledges the one yielded before: the
    body of the ``async for`` that got it finished without raising (unless
    the body settled it itself with ``ack()`` or ``nack()``).  If
    the body raises, the loop ends without that ack and the message is
    delivered again once its lease ends — at once when the iterator is
    used as ``async with``, whose exit gives back (nacks) what it still
    holds.  Ends when the client is closed.

    Attributes:
        acked: messages acknowledged so far.
        lost: acks that came too late (the lease had ended; the message is
            delivered again, possibly to another consumer).
    """

    def __init__(
        self,
        client: LeaseCalls,
        stream: str,
        group: str | None,
        consumer: str | None,
        lease: float | None,
        max_messages: int,
        timeout: float,
        max_deliveries: int | None,
    ) -> None:
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self._client = client
        self._lease = lease
        self._max_messages = max_messages
        self._timeout = timeout
        self._max_deliveries = max_deliveries
        self._held: deque[LeasedMessage] = deque()  # claimed, not yielded yet
        self._current: LeasedMessage | None = None  # yielded, its body running
        self._settled: str | None = None  # receipt of the current one, if its body acked or nacked it
        self.acked = 0
        self.lost = 0

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> LeasedMessage:
        """Acknowledge the previous message, then the next one, however
        many empty polls it takes.

        Raises:
            StopAsyncIteration: the client was closed.
            Unavailable, Unreachable, StorageUnavailable: a call failed after its retries.
        """
        await self._finish_current()
        while not self._held:
            if self._client.closed:
                raise StopAsyncIteration
            self._held.extend(await self._poll())
        self._current = dataclasses.replace(self._held.popleft(), _settle=self._settle)
        self._settled = None
        return self._current

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Without an exception the last message's body finished (``break``):
        acknowledge it; with one, give it back.  Either way give back the
        messages claimed and not yielded."""
        if exc_type is None:
            await self._finish_current()
        await self.give_back()

    async def give_back(self) -> None:
        """Nack the message being processed and those not yielded yet, so
        they are delivered again at once (not after their lease)."""
        current = self._current if self._current is not None and self._settled is None else None
        held = ([current] if current is not None else []) + list(self._held)
        self._current = None
        self._held.clear()
        if self._client.closed:
            return
        for message in held:
            await message.nack()

    def _settle(self, message: LeasedMessage, action: str, delay: float) -> Any:
        """The body settled its message itself: no ack when it finishes."""
        if self._current is not None and message.receipt == self._current.receipt:
            self._settled = message.receipt
        return self._client._settle_message(message, action, delay)

    async def _finish_current(self) -> None:
        message, self._current = self._current, None
        if message is None or self._settled == message.receipt:
            return
        if await message.ack():
            self.acked += 1
        else:
            self.lost += 1
            log.warning(
                "message %s of stream %r was acknowledged after its lease ended; it is delivered again",
                message.uuid, self.stream,
            )

    async def _poll(self) -> list[LeasedMessage]:
        if self.group is not None:
            return await self._client.claim(
                self.stream,
                group=self.group,
                consumer=self.consumer or "anonymous",
                max_messages=self._max_messages,
                lease=self._lease,
                timeout=self._timeout,
                max_deliveries=self._max_deliveries,
            )
        assert self._lease is not None
        return await self._client.receive_leased(
            self.stream,
            lease=self._lease,
            max_messages=self._max_messages,
            timeout=self._timeout,
            max_deliveries=self._max_deliveries,
        )
