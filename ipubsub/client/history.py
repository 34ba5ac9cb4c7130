"""Reading a stream's fan-out history from the client: one read
(:meth:`AsyncClient.read_history`) and an iterator that follows the history
from a position (:meth:`AsyncClient.follow`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from ..errors import HistoryGap
from ..protocol import FROM_HISTORY_PARAM, POSITION_PARAM, STRICT_RECOVERY_PARAM
from .wire import ReceivedMessage

if TYPE_CHECKING:
    from .reading import ReadCalls

__all__ = ["Follower", "HistoryBatch", "HistoryMessage", "history_query", "parse_history"]


@dataclass(frozen=True, slots=True)
class HistoryMessage(ReceivedMessage):
    """A message read from a stream's history.

    Attributes:
        position: this message's position: read after it to go on (opaque).
    """

    position: str = ""


@dataclass(frozen=True, slots=True)
class HistoryBatch:
    """The answer of a history read.

    Attributes:
        messages: 0 to ``max_messages`` messages, oldest first.
        position: where to read after next time (``None`` while the stream
            keeps no history yet).
        recovered: ``None`` for a read without a position; ``True`` when the
            messages continue right after it; ``False`` when they cannot
            (``messages`` is empty and ``position`` is the oldest available
            one; ``gap`` is ``"epoch"`` or ``"window"``).
    """

    messages: list[HistoryMessage]
    position: str | None
    recovered: bool | None = None
    gap: str | None = None


def history_query(
    stream: str, timeout: int, position: str | None, max_messages: int, strict: bool
) -> dict[str, str]:
    """The query string of a history read."""
    query = {"streamId": stream, "timeoutSeconds": str(timeout), FROM_HISTORY_PARAM: "true"}
    query["maxMessages"] = str(max_messages)
    if position is not None:
        query[POSITION_PARAM] = position
    if strict:
        query[STRICT_RECOVERY_PARAM] = "true"
    return query


def parse_history(body: Any) -> HistoryBatch:
    """The batch of a 200 history answer.

    Raises:
        ValueError: the answer is not one.
    """
    try:
        messages = [
            HistoryMessage(
                str(item["messageUuid"]),
                item["message"],
                datetime.fromisoformat(item["timestamp"]),
                None,
                str(item["position"]),
            )
            for item in body["messages"]
        ]
        return HistoryBatch(messages, body["position"], body.get("recovered"), body.get("gap"))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ValueError(f"unexpected history answer: {body!r}") from None


class Follower:
    """Async iterator over a stream's history from a position (see
    :meth:`AsyncClient.follow`): every message once, in order.

    Attributes:
        position: the position of the last message yielded (the starting
            one before the first): save it to follow on later from there.
        gaps: how many times the history could not continue from
            ``position`` and the follower went on from the oldest available
            message (only with ``accept_gaps``).
    """

    def __init__(
        self, client: ReadCalls, stream: str, position: str | None, max_messages: int, timeout: float,
        accept_gaps: bool,
    ) -> None:
        self.stream = stream
        self.position = position
        self.gaps = 0
        self._client = client
        self._max = max_messages
        self._timeout = timeout
        self._accept_gaps = accept_gaps
        self._ready: list[HistoryMessage] = []

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> HistoryMessage:
        """The next message, however many empty polls it takes.

        Raises:
            StopAsyncIteration: the client was closed.
            HistoryGap: the history cannot continue from ``position``
                (without ``accept_gaps``).
            HistoryNotKept: the stream keeps no history.
            Unavailable, Unreachable: a poll failed after its retries.
        """
        while not self._ready:
            if self._client.closed:
                raise StopAsyncIteration
            batch = await self._client.read_history(
                self.stream, self.position, max_messages=self._max, timeout=self._timeout
            )
            if batch.recovered is False:
                if not self._accept_gaps:
                    raise HistoryGap(self.stream, batch.gap or "epoch", batch.position)
                self.gaps += 1
                if batch.position is None:  # no history here yet: go on from its first message
                    self.position = None
            self._ready = batch.messages[::-1]
            if not batch.messages and batch.position is not None:
                self.position = batch.position
        message = self._ready.pop()
        self.position = message.position
        return message
