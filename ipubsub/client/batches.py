"""Batches in the client: many sends in one call (``sendBatch``), many
messages in one poll (``maxMessages``)."""

from __future__ import annotations

import asyncio
import uuid as uuid_module
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import IPubSubError, ReceiveTimeout, StreamReleased, error_from_response
from ..protocol import RECEIVE_PATH, SEND_BATCH_PATH
from .wire import ReceivedMessage, SendResult, parse_received, receive_query, send_body, whole_seconds

if TYPE_CHECKING:
    from .transport import ClientTransport

__all__ = ["DEFAULT_CHUNK", "BatchItem", "receive_batch", "send_batch"]

#: items per ``sendBatch`` call (the server's default ``limits.max_batch_messages``)
DEFAULT_CHUNK = 1000


@dataclass(frozen=True, slots=True)
class BatchItem:
    """One send of a batch: the arguments of :meth:`AsyncClient.send`
    (a batch takes no blocking or sync-match sends)."""

    stream: str
    message: Any
    uuid: str | None = None
    size: int | None = None
    persist: bool = False
    ttl: int | None = None


async def send_batch(
    client: ClientTransport, items: Iterable[BatchItem | tuple[str, Any]], chunk: int = DEFAULT_CHUNK
) -> list[SendResult | IPubSubError]:
    """Send every item; one result per item, in order: its
    :class:`SendResult`, or the error of that item alone.

    Items are grouped by their stream's owner and sent as one ``sendBatch``
    call per owner (``chunk`` items at most per call, one call after the
    other per owner, so each stream keeps its order), the owners
    concurrently.  Each item's ``messageUuid`` is fixed before the first
    try, so a retried call stores durable items once.

    Raises:
        TypeError: an item's message cannot be encoded as JSON (nothing was sent).
        ValueError: ``chunk`` < 1.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    bodies: list[bytes] = []
    groups: dict[str | None, list[int]] = {}
    streams: list[str] = []
    for i, item in enumerate(items):
        if not isinstance(item, BatchItem):
            item = BatchItem(*item)
        uuid = item.uuid or str(uuid_module.uuid4())
        bodies.append(
            send_body(item.stream, item.message, uuid, size=item.size, blocking_timeout=None, persist=item.persist,
                      ttl=item.ttl)
        )
        streams.append(item.stream)
        groups.setdefault(client.owner_url(item.stream), []).append(i)
    results: list[SendResult | IPubSubError | None] = [None] * len(bodies)

    async def send_group(indexes: list[int]) -> None:
        for start in range(0, len(indexes), chunk):
            part = indexes[start:start + chunk]
            body = b'{"messages":[' + b",".join(bodies[i] for i in part) + b"]}"
            try:
                answer = await client._call("POST", SEND_BATCH_PATH, stream=streams[part[0]], body=body)
                got = _parse_results(answer, len(part))
            except IPubSubError as exc:
                got = [exc] * len(part)
            for i, result in zip(part, got):
                results[i] = result

    await asyncio.gather(*(send_group(indexes) for indexes in groups.values()))
    return results  # type: ignore[return-value]  # every index was filled


def _parse_results(answer: Any, count: int) -> list[SendResult | IPubSubError]:
    """The per-item results of a 200 ``sendBatch`` answer.

    Raises:
        IPubSubError: the answer does not hold ``count`` results.
    """
    items = answer.get("results") if isinstance(answer, dict) else None
    if not isinstance(items, list) or len(items) != count:
        raise IPubSubError(f"unexpected sendBatch answer: {str(answer)[:200]}")
    out: list[SendResult | IPubSubError] = []
    for item in items:
        if isinstance(item, dict) and "messageUuid" in item:
            out.append(SendResult(str(item["messageUuid"]), item.get("dbResumeToken")))
        else:
            body = item if isinstance(item, dict) else {}
            status = body.get("status")
            out.append(error_from_response(status if isinstance(status, int) else 500, body))
    return out


async def receive_batch(
    client: ClientTransport,
    stream: str,
    timeout: float,
    max_messages: int,
    *,
    from_db: bool = False,
    token: str | None = None,
) -> list[ReceivedMessage]:
    """Up to ``max_messages`` messages of ``stream`` in one poll, oldest
    first: taken from memory, or read from the durable log after ``token``
    (``from_db``; each message carries the token after it).  Waits up to
    ``timeout`` seconds for the first; empty if none arrived.

    Raises:
        ValueError: ``max_messages`` < 1.
        BadRequest, InvalidToken, PersistenceNotConfigured, Unavailable,
        Unreachable: as :meth:`AsyncClient.receive` and :meth:`AsyncClient.read`.
    """
    if max_messages < 1:
        raise ValueError(f"max_messages must be >= 1, got {max_messages}")
    deadline = asyncio.get_running_loop().time() + whole_seconds(timeout)
    query = receive_query(stream, whole_seconds(timeout), from_db=from_db, token=token, max_messages=max_messages)
    try:
        answer = await client._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
    except (ReceiveTimeout, StreamReleased):
        return []
    return parse_received_batch(answer)


def parse_received_batch(body: Any) -> list[ReceivedMessage]:
    """The messages of a 200 batch receive answer ``{"messages": [...]}``.

    Raises:
        ValueError: the answer is not a batch of messages.
    """
    items = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(items, list):
        raise ValueError(f"unexpected receive answer: {str(body)[:200]}")
    return [parse_received(item) for item in items]
