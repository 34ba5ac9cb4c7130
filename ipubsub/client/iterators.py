"""The iterators :meth:`AsyncClient.subscribe` and :meth:`AsyncClient.replay`
return: they long-poll again and again, and a replay keeps its resume token."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self

from .wire import ReceivedMessage

if TYPE_CHECKING:
    from .aio import AsyncClient

__all__ = ["Replay", "Subscription", "positive"]


class _Polls:
    """What both iterators share: a client, a stream, a poll timeout."""

    def __init__(self, client: AsyncClient, stream: str, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout
        self._client = client

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
        while not self._client.closed:
            message = await self._client.receive(self.stream, self.timeout)
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

    def __init__(self, client: AsyncClient, stream: str, token: str | None, timeout: float, follow: bool) -> None:
        super().__init__(client, stream, timeout)
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
        while not self._client.closed:
            message = await self._client.read(self.stream, self.token, self.timeout)
            if message is not None:
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
