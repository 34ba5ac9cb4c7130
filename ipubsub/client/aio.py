"""The asyncio client: :class:`AsyncClient`, and the iterators it returns."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
import uuid as uuid_module
from types import TracebackType
from typing import Any, Iterable, Literal, Self, overload

import aiohttp
import msgspec

from ..errors import GroupNotFound, IPubSubError, LeaseNotFound, ReceiveTimeout, StreamReleased, Unavailable, error_from_response
from ..protocol import AUTHORIZATION_HEADER, JSON_CONTENT_TYPE, RETRY_AFTER_HEADER, RING_HEADER
from .batches import DEFAULT_CHUNK, BatchItem, receive_batch, send_batch
from .consumer import Consumer
from .history import Follower, HistoryBatch, history_query, parse_history
from .iterators import Replay, Subscription, positive
from .retry import Attempts, ClientStats, RetryPolicy, Unreachable
from .routing import Router, parse_urls
from .streaming import MessageStream
from .wire import (
    ACK_PATH,
    CLUSTER_PATH,
    GROUPS_PATH,
    NACK_PATH,
    RECEIVE_PATH,
    SEND_PATH,
    ClusterView,
    GroupInfo,
    LeasedMessage,
    ReceivedMessage,
    SendResult,
    decode_json,
    lease_body,
    parse_cluster,
    parse_groups,
    parse_leased,
    parse_received,
    parse_sent,
    receive_query,
    send_body,
    whole_seconds,
)

__all__ = ["AsyncClient"]

log = logging.getLogger("ipubsub.client")

# Failures after which the same request may go to another node.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
# ...of which these happen before the request reached the node.
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# A forced refresh (after an error) is skipped if one ran this recently.
MIN_REFRESH_GAP_SECONDS = 0.2
MAX_REFRESH_INTERVAL_SECONDS = 300.0
_JSON_HEADERS = {"Content-Type": JSON_CONTENT_TYPE}


class AsyncClient:
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

    def __init__(
        self,
        urls: str | Iterable[str],
        *,
        retry: RetryPolicy | None = None,
        refresh_interval: float = 5.0,
        connect_timeout: float = 2.0,
        request_timeout: float = 10.0,
        max_connections: int = 100,
        token: str | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        if not 0 < refresh_interval <= MAX_REFRESH_INTERVAL_SECONDS:
            raise ValueError(f"refresh_interval must be in (0, {MAX_REFRESH_INTERVAL_SECONDS:g}] seconds")
        if connect_timeout <= 0 or request_timeout <= 0:
            raise ValueError("connect_timeout and request_timeout must be > 0")
        self.router = Router(parse_urls(urls))
        self.retry = retry or RetryPolicy()
        self.stats = ClientStats()
        self._refresh_interval = refresh_interval
        self._connect_timeout = connect_timeout
        self._request_timeout = request_timeout
        self._max_connections = max_connections
        self._headers = {AUTHORIZATION_HEADER: f"Bearer {token}"} if token else None
        self._ssl = ssl
        self._session: aiohttp.ClientSession | None = None
        self._refresh_lock: asyncio.Lock | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._closed = False

    # -- lifecycle ------------------------------------------------------------

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called (calls then raise ``RuntimeError``)."""
        return self._closed

    async def close(self) -> None:
        """Stop the background refresh and close every connection (polls in
        flight are cut; the server puts back what they had taken).  Safe to
        call more than once."""
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            await asyncio.gather(self._refresher, return_exceptions=True)
            self._refresher = None
        if self._session is not None:
            await self._session.close()
            self._session = None

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

    async def receive_leased(
        self,
        stream: str,
        *,
        lease: float,
        max_messages: int = 1,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> list[LeasedMessage]:
        """Up to ``max_messages`` in-memory messages of ``stream``, each
        leased for ``lease`` seconds (see :meth:`receive`); waits up to
        ``timeout`` seconds for the first.  Empty if none arrived in time.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`receive`.
        """
        return await self._leased(stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages)

    async def claim(
        self,
        stream: str,
        *,
        group: str,
        consumer: str,
        max_messages: int = 1,
        lease: float | None = None,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> list[LeasedMessage]:
        """Up to ``max_messages`` messages of the durable stream for
        ``consumer`` of the consumer group ``group`` (created on first
        use): each message of the log goes to one consumer of the group,
        leased for ``lease`` seconds (server default 30); a lease that ends
        unacknowledged hands the message to the next consumer that asks.
        Waits up to ``timeout`` seconds for the first; empty if none.

        Raises:
            PersistenceNotConfigured: the server has no storage (400).
            BadRequest: an invalid name or parameter (400).
            StorageUnavailable: still 503 when the retries ran out.
            Unreachable: no node could be reached within the retries.
        """
        return await self._leased(
            stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages,
            group=group, consumer=consumer,
        )

    async def ack(self, stream: str, receipt: str) -> bool:
        """Acknowledge the leased delivery named by ``receipt``; False if no
        such lease is held any more (it ended: the message was or will be
        delivered again, or was acknowledged already).

        Raises:
            BadRequest: malformed receipt (400).
            Unavailable, Unreachable: as :meth:`send`.
        """
        return await self._settle_receipt(stream, receipt, "ack", 0.0)

    async def ack_many(self, stream: str, receipts: list[str]) -> list[str]:
        """Acknowledge several leased deliveries of ``stream`` in one call
        (at most the server's ``limits.max_batch_messages``); returns the
        receipts that named no lease held any more.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`ack`.
        """
        if not receipts:
            return []
        if len(receipts) == 1:
            return [] if await self.ack(stream, receipts[0]) else list(receipts)
        answer = await self._call("POST", ACK_PATH, stream=stream, body=lease_body(stream, list(receipts)))
        missing = [str(r) for r in (answer or {}).get("notFound") or []]
        self.stats.leases_lost += len(missing)
        return missing

    async def nack(self, stream: str, receipt: str, delay: float = 0.0) -> bool:
        """Give a leased delivery back, to be delivered again after
        ``delay`` seconds; False as :meth:`ack`.

        Raises:
            BadRequest, Unavailable, Unreachable: as :meth:`ack`.
        """
        return await self._settle_receipt(stream, receipt, "nack", delay)

    async def groups(self, stream: str) -> list[GroupInfo]:
        """The consumer groups of a durable stream with their lag and
        pending messages.

        Raises:
            PersistenceNotConfigured, StorageUnavailable, Unreachable.
        """
        return parse_groups(await self._call("GET", GROUPS_PATH, stream=stream, query={"streamId": stream}))

    async def delete_group(self, stream: str, group: str) -> bool:
        """Remove a consumer group (admin credentials when auth is on);
        False if there was none.

        Raises:
            AdminRequired, PersistenceNotConfigured, StorageUnavailable, Unreachable.
        """
        try:
            await self._call("DELETE", GROUPS_PATH, stream=stream, query={"streamId": stream, "group": group})
        except GroupNotFound:
            return False
        return True

    def consume(
        self,
        stream: str,
        *,
        group: str | None = None,
        consumer: str | None = None,
        lease: float | None = None,
        max_messages: int = 1,
        timeout: float = 30,
        max_deliveries: int | None = None,
    ) -> Consumer:
        """At-least-once processing: an async iterator over the messages of
        ``stream`` that acknowledges each one once the body of the loop
        that got it has finished, and never when it raises (then its lease
        ends and the message is delivered again)::

            async for msg in client.consume("orders", group="billing", consumer="w1"):
                await bill(msg.message)        # acked when this returns

        With ``group`` it reads the durable stream as ``consumer`` of that
        consumer group; without, it takes leased in-memory messages.
        ``lease`` defaults to the server's 30 s for a group and must be
        given otherwise; ``max_messages`` per poll (others of a batch stay
        leased to this consumer until yielded).  As ``async with`` it also
        gives back at once what it holds when the block ends (a message
        whose body raised, messages not yet yielded).

        Raises:
            ValueError: ``timeout`` is not positive, or no ``lease`` without ``group``.
        """
        if group is None and lease is None:
            raise ValueError("an in-memory consume needs lease= (seconds)")
        return Consumer(self, stream, group, consumer, lease, max_messages, positive(timeout), max_deliveries)

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

    async def cluster(self) -> ClusterView:
        """A fresh view of the cluster from any node (also adopted for routing).

        Raises:
            Unavailable, Unreachable: as for :meth:`send`.
        """
        view = parse_cluster(await self._call("GET", CLUSTER_PATH))
        self.router.apply(view)
        return view

    async def refresh(self) -> ClusterView | None:
        """Fetch the membership now; ``None`` if no node answered."""
        return await self._refresh(force=True, min_gap=0.0)

    def owner_url(self, stream: str) -> str | None:
        """URL of the node the client will call first for ``stream``
        (``None`` before the first membership refresh)."""
        return self.router.owner_url(stream)

    # -- internals ------------------------------------------------------------

    async def _poll(self, stream: str, timeout: float, *, from_db: bool, token: str | None) -> ReceivedMessage | None:
        deadline = asyncio.get_running_loop().time() + whole_seconds(timeout)
        query = receive_query(stream, whole_seconds(timeout), from_db=from_db, token=token)
        try:
            answer = await self._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
        except (ReceiveTimeout, StreamReleased):
            return None
        return parse_received(answer)

    async def _leased(
        self,
        stream: str,
        timeout: float,
        *,
        lease: float | None,
        max_deliveries: int | None,
        max_messages: int | None = None,
        group: str | None = None,
        consumer: str | None = None,
    ) -> list[LeasedMessage]:
        deadline = asyncio.get_running_loop().time() + whole_seconds(timeout)
        query = receive_query(
            stream, whole_seconds(timeout), from_db=group is not None, token=None, lease=lease,
            max_deliveries=max_deliveries, group=group, consumer=consumer, max_messages=max_messages,
        )
        try:
            answer = await self._call("GET", RECEIVE_PATH, stream=stream, query=query, poll_deadline=deadline)
        except (ReceiveTimeout, StreamReleased):
            return []
        return parse_leased(answer, stream, group, self._settle_message)

    def _settle_message(self, message: LeasedMessage, action: str, delay: float) -> Any:
        return self._settle_receipt(message.stream, message.receipt, action, delay)

    async def _settle_receipt(self, stream: str, receipt: str, action: str, delay: float) -> bool:
        path = ACK_PATH if action == "ack" else NACK_PATH
        body = lease_body(stream, [receipt], delay if action == "nack" else None)
        try:
            await self._call("POST", path, stream=stream, body=body)
        except LeaseNotFound:
            self.stats.leases_lost += 1
            return False
        return True

    async def _call(
        self,
        method: str,
        path: str,
        *,
        stream: str | None = None,
        body: bytes | None = None,
        query: dict[str, str] | None = None,
        wait: float = 0.0,
        poll_deadline: float | None = None,
    ) -> Any:
        """One API call with routing and retries; the decoded 200 answer.

        ``wait`` is how long the server may legitimately hold the call
        (blocking send); for a receive, ``poll_deadline`` is when its long
        poll ends, and each retry asks only for the time left.
        """
        session = self._get_session()
        if self.router.refreshed_at is None:
            await self._refresh(force=True)
        loop = asyncio.get_running_loop()
        attempts = Attempts(self.retry)
        tried: set[str] = set()
        while True:
            self._refresh_in_background()
            url = self.router.pick(stream, tried) or self.router.seeds[0]
            if poll_deadline is not None and query is not None:
                wait = max(0.0, poll_deadline - loop.time())
                query["timeoutSeconds"] = str(whole_seconds(wait))
            if attempts.count:
                self.stats.retries += 1
            attempts.count += 1
            started = loop.time()
            try:
                status, answer, retry_after = await self._request(session, method, url + path, query, body, wait)
            except _CONNECTION_ERRORS as exc:
                # A poll cut after it reached the node (e.g. the node died
                # mid-poll) used time it was entitled to: only the excess counts.
                held = 0.0 if isinstance(exc, _CONNECT_ERRORS) else wait
                attempts.spent += max(0.0, loop.time() - started - held)
                self.stats.connection_errors += 1
                attempts.only_refused &= _is_refused(exc)
                attempts.failures[url] = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                log.debug("%s %s failed: %s", method, url + path, attempts.failures[url])
                self.router.mark_down(url)
                tried.add(url)
                await self._counted_refresh(attempts)
                if self.router.pick(stream, tried) is not None and attempts.can_retry():
                    continue  # another node, at once
                delay = self.retry.backoff(attempts.waits)
                if not attempts.can_retry(delay) or (attempts.only_refused and not self.retry.retry_refused):
                    raise Unreachable(_unreachable_text(attempts), attempts.failures) from None
                await self._backoff(attempts, delay, tried)
                continue
            self.router.mark_up(url)
            if status == 200:
                return answer
            error = error_from_response(status, answer, retry_after=retry_after)
            if not isinstance(error, (Unavailable, StreamReleased)):
                raise error
            if isinstance(error, Unavailable):
                self.stats.unavailable += 1
            else:
                self.stats.released += 1
            attempts.spent += max(0.0, loop.time() - started - wait)
            await self._counted_refresh(attempts)
            delay = self.retry.backoff(attempts.waits, getattr(error, "retry_after", None))
            if not attempts.can_retry(delay):
                raise error
            log.debug("%s %s answered %s (%s); retrying in %.2fs", method, url + path, status, error.code, delay)
            await self._backoff(attempts, delay, tried)

    async def _counted_refresh(self, attempts: Attempts) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._refresh(force=True)
        attempts.spent += loop.time() - started

    async def _backoff(self, attempts: Attempts, delay: float, tried: set[str]) -> None:
        attempts.waits += 1
        attempts.spent += delay
        tried.clear()
        await asyncio.sleep(delay)

    async def _request(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        query: dict[str, str] | None,
        body: bytes | None,
        wait: float,
    ) -> tuple[int, Any, int | None]:
        timeout = aiohttp.ClientTimeout(total=wait + self._request_timeout, sock_connect=self._connect_timeout)
        self.stats.requests += 1
        async with session.request(
            method, url, params=query, data=body, headers=_JSON_HEADERS if body is not None else None, timeout=timeout
        ) as response:
            raw = await response.read()
            retry_after = response.headers.get(RETRY_AFTER_HEADER, "")
            self._note_ring(response.headers.get(RING_HEADER))
        try:
            answer = decode_json(raw) if raw else None
        except msgspec.DecodeError:
            answer = None
        return response.status, answer, int(retry_after) if retry_after.isdigit() else None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl or True)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
            self._refresh_lock = asyncio.Lock()
        return self._session

    def _note_ring(self, ring: str | None) -> None:
        """A node told its ring's hash (``X-IPubSub-Ring``): if it differs
        from the view's, the membership changed — refresh now, in the
        background (at most once per ``MIN_REFRESH_GAP_SECONDS``)."""
        view = self.router.view
        if ring is None or view is None or ring == str(view.ring_hash):
            return
        if self.router.seconds_since_refresh() < MIN_REFRESH_GAP_SECONDS:
            return
        if self._refresher is None or self._refresher.done():
            self.stats.ring_changes_seen += 1
            self._refresher = asyncio.create_task(self._changed_ring_refresh(), name="ipubsub-client-refresh")

    async def _changed_ring_refresh(self) -> None:
        try:
            await self._refresh(force=True)
        except Exception:  # a background task has no caller to tell
            log.warning("membership refresh failed", exc_info=True)

    def _refresh_in_background(self) -> None:
        if self.router.seconds_since_refresh() < self._refresh_interval:
            return
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.create_task(self._periodic_refresh(), name="ipubsub-client-refresh")

    async def _periodic_refresh(self) -> None:
        try:
            await self._refresh(force=False)
        except Exception:  # a background task has no caller to tell
            log.warning("membership refresh failed", exc_info=True)

    async def _refresh(self, *, force: bool, min_gap: float = MIN_REFRESH_GAP_SECONDS) -> ClusterView | None:
        """Fetch the cluster view from the first node that answers.

        Concurrent callers share one fetch; a forced refresh is skipped when
        one ran less than ``min_gap`` seconds ago, a periodic one when one
        ran less than the refresh interval ago.
        """
        session = self._get_session()
        assert self._refresh_lock is not None
        async with self._refresh_lock:
            if self.router.seconds_since_refresh() < (min_gap if force else self._refresh_interval):
                return self.router.view
            self.router.note_refresh()
            self.stats.refreshes += 1
            timeout = aiohttp.ClientTimeout(total=self._request_timeout, sock_connect=self._connect_timeout)
            for url in self.router.candidates():
                try:
                    async with session.get(url + CLUSTER_PATH, timeout=timeout) as response:
                        if response.status != 200:
                            continue
                        view = parse_cluster(decode_json(await response.read()))
                except (*_CONNECTION_ERRORS, ValueError, msgspec.DecodeError):
                    self.router.mark_down(url)
                    continue
                if self.router.apply(view):
                    log.debug("ring is now %s (via %s)", ", ".join(view.ring_members), url)
                return view
            return None


def _is_refused(exc: BaseException) -> bool:
    """Whether a connection error means nothing listens at the address."""
    cause = getattr(exc, "os_error", None)
    return isinstance(exc, aiohttp.ClientConnectorError) and isinstance(cause, ConnectionRefusedError)


def _unreachable_text(attempts: Attempts) -> str:
    failures = "; ".join(f"{url}: {why}" for url, why in attempts.failures.items())
    return f"no ipubsub node could be reached after {attempts.count} attempts ({failures})"
