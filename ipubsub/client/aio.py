"""The asyncio client: :class:`AsyncClient`.

Its calls are layered by responsibility, each class adding to the one
before: :mod:`.transport` (lifecycle, routing, retries, membership),
:mod:`.leasing` (leases, consumer groups, acks), :mod:`.reading` (receives,
durable log, history, the iterators); the sends are here."""

from __future__ import annotations

import uuid as uuid_module
from collections.abc import Iterable
from typing import Any

from ..errors import IPubSubError
from .batches import DEFAULT_CHUNK, BatchItem, send_batch
from .reading import ReadCalls
from .wire import SEND_PATH, SendResult, parse_sent, send_body, whole_seconds

__all__ = ["AsyncClient"]


class AsyncClient(ReadCalls):
    """A client of an ipubsub cluster for asyncio code.

    It learns the members from ``GET /api/v1/cluster``, computes each
    stream's owner with the servers' own ring, and calls the owner directly;
    other nodes are fallbacks.  Connection errors, 503 answers and 424
    ``stream_released`` answers are retried within ``retry``; the
    membership is refreshed at once after each of them, and otherwise in
    the background every ``refresh_interval`` seconds.  Every send carries
    a ``messageUuid`` (a new uuid4 unless given), reused across retries.

    One client belongs to one event loop.  Use it as ``async with
    AsyncClient(...) as client`` or call :meth:`close`.

    Args:
        urls: node URLs, a list or a comma-separated string
            (``http://host:port``; ``host:port`` is accepted).
        retry: retry bounds; see :class:`RetryPolicy`.
        refresh_interval: seconds between background membership refreshes
            (0 < value <= 300).
        connect_timeout: seconds to open a connection to a node.
        request_timeout: seconds a node may take to answer, on top of the
            call's own long-poll or blocking timeout.
        max_connections: size of the connection pool (long polls hold one each).
        token: an API key or a JWT, sent as ``Authorization: Bearer`` on
            every call (nodes with ``auth`` configured).
        ssl: the TLS context for ``https://`` nodes (default: the system's CAs).

    Raises:
        ValueError: no valid URL, or an option out of range.
    """

    # -- the API --------------------------------------------------------------

    async def send(
        self,
        stream: str,
        message: Any,
        *,
        uuid: str | None = None,
        size: int | None = None,
        blocking_timeout: float | None = None,
        persist: bool = False,
        ttl: int | None = None,
        history_size: int | None = None,
        history_ttl: int | None = None,
    ) -> SendResult:
        """Send ``message`` (any JSON value) to ``stream``.

        Args:
            uuid: the ``messageUuid``; a new uuid4 when ``None``.  The same
                value is sent on every retry.
            size: ``inMemoryStreamSize`` (server default 100; 0 = sync match,
                which needs ``blocking_timeout``).
            blocking_timeout: wait up to this many seconds (rounded up) for
                room in the stream, or for a receiver in sync match.
            persist: also write the message to the durable log (``writeToDB``).
            ttl: ``dbTTLSeconds`` of a persisted message.
            history_size: ``historySize``: a new stream keeps a fan-out
                history of this many messages (see :meth:`read_history`).
            history_ttl: ``historyTTLSeconds`` of that history.

        Returns:
            The accepted message's uuid, and its resume token if persisted.

        Raises:
            TypeError: ``message`` is not JSON-encodable (nothing was sent).
            BadRequest: the server rejected a field (400; also
                ``PersistenceNotConfigured``).
            MessageTooLarge: the body exceeds the server's limit (413).
            SendTimeout: the blocking send was not accepted in time (424).
            Unavailable: still 503 when the retries ran out (its subclasses
                say why: ``OwnerUnavailable``, ``BufferFull``, ...).
            Unreachable: no node could be reached within the retries.
        """
        message_uuid = uuid or str(uuid_module.uuid4())
        body = send_body(
            stream, message, message_uuid, size=size, blocking_timeout=blocking_timeout, persist=persist, ttl=ttl,
            history_size=history_size, history_ttl=history_ttl,
        )
        wait = float(whole_seconds(blocking_timeout)) if blocking_timeout else 0.0
        answer = await self._call("POST", SEND_PATH, stream=stream, body=body, wait=wait)
        return parse_sent(answer)

    async def send_batch(
        self, items: Iterable[BatchItem | tuple[str, Any]], *, chunk: int = DEFAULT_CHUNK
    ) -> list[SendResult | IPubSubError]:
        """Send many messages in few calls: ``items`` are :class:`BatchItem`
        (or ``(stream, message)`` pairs), for any streams, in memory or
        persisted.  One result per item, in order: its :class:`SendResult`,
        or the error of that item alone (nothing is raised for one item).
        Items go to their streams' owners, one ``sendBatch`` call per owner
        and ``chunk`` items; each stream keeps its order.  A persisted
        item's uuid makes a retried batch store it once.

        Raises:
            TypeError: a message cannot be encoded as JSON (nothing was sent).
        """
        return await send_batch(self, items, chunk)
