"""The iterators :meth:`AsyncClient.subscribe` and :meth:`AsyncClient.replay`
return: they long-poll again and again, and a replay keeps its resume token."""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Self

from .wire import ReceivedMessage

if TYPE_CHECKING:
    from .reading import ReadCalls

__all__ = ["Replay", "Subscription", "positive"]


class _Polls:
    """What both iterators share: a client, a stream, a poll timeout."""

    def __init__(self, client: ReadCalls, stream: str, timeout: float, batch: int = 1) -> None:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.stream = stream
        self.timeout = timeout
        self.batch = batch
        self._client = client
        self._ready: deque[ReceivedMessage] = deque()  # taken in one batch, not yielded yet

    def __aiter__(self) -> Self:
        return self


class Subscription(_Polls):
    """Async iterator over the in-memory messages of one stream (see
    :meth:`AsyncClient.subscribe`).  Ends when the client is closed."""

    async def __anext__(self) -> ReceivedMessage:
        """The next message, however many empty polls it takes.

        Raises:
            StopAsyncIteration: the client was closed.
            Unavailable, Unreachable: a poll failed after its retries.
        """
        client = self._client
        while not client.closed:
            if self._ready:
                return self._ready.popleft()
            if self.batch > 1:
                self._ready.extend(await client.receive(self.stream, self.timeout, max_messages=self.batch))
                continue
            message = await client.receive(self.stream, self.timeout)
            if message is not None:
                return message
        raise StopAsyncIteration


class Replay(_Polls):
    """Async iterator over the durable log of one stream (see
    :meth:`AsyncClient.replay`).

    Attributes:
        token: resume token after the last yielded message (the starting
            token before the first); pass it to ``replay`` to continue.
    """

    def __init__(
        self, client: ReadCalls, stream: str, token: str | None, timeout: float, follow: bool, batch: int = 100
    ) -> None:
        super().__init__(client, stream, timeout, batch)
        self.token = token
        self.follow = follow

    async def __anext__(self) -> ReceivedMessage:
        """The next persisted message, waiting for new ones when following.

        Raises:
            StopAsyncIteration: the end of the log (without ``follow``) or
                the client was closed.
            InvalidToken: the token is not one of this stream's.
            PersistenceNotConfigured: the server has no storage.
            Unavailable, Unreachable: a poll failed after its retries.
        """
        client = self._client
        while not client.closed:
            if not self._ready:
                self._ready.extend(await client.read(self.stream, self.token, self.timeout, max_messages=self.batch))
            if self._ready:
                message = self._ready.popleft()
                self.token = message.token or self.token
                return message
            if not self.follow:
                break
        raise StopAsyncIteration


def positive(timeout: float) -> float:
    """``timeout`` if it is a usable poll timeout.

    Raises:
        ValueError: not > 0 (a 0 s poll in a loop would spin).
    """
    if not timeout > 0:
        raise ValueError(f"the poll timeout must be > 0 seconds, got {timeout!r}")
    return timeout
