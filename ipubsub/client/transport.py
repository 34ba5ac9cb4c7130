"""What every call of :class:`~ipubsub.client.aio.AsyncClient` goes
through: the connection pool, routing to the stream's owner with retries
(:meth:`ClientTransport._call`), and the membership refreshes that keep the
routing current."""

from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

import aiohttp
import msgspec

from ..errors import StreamReleased, Unavailable, error_from_response
from ..protocol import AUTHORIZATION_HEADER, JSON_CONTENT_TYPE, RETRY_AFTER_HEADER, RING_HEADER
from .retry import Attempts, ClientStats, RetryPolicy, Unreachable
from .routing import Router, parse_urls
from .wire import CLUSTER_PATH, ClusterView, decode_json, parse_cluster, whole_seconds

__all__ = ["MAX_REFRESH_INTERVAL_SECONDS", "MIN_REFRESH_GAP_SECONDS", "ClientTransport"]

log = logging.getLogger("ipubsub.client")

# Failures after which the same request may go to another node.
_CONNECTION_ERRORS = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, TimeoutError)
# ...of which these happen before the request reached the node.
_CONNECT_ERRORS = (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)
# A forced refresh (after an error) is skipped if one ran this recently.
MIN_REFRESH_GAP_SECONDS = 0.2
MAX_REFRESH_INTERVAL_SECONDS = 300.0
_JSON_HEADERS = {"Content-Type": JSON_CONTENT_TYPE}


class ClientTransport:
    """The state and the request machinery of an
    :class:`~ipubsub.client.aio.AsyncClient` (whose docstring describes the
    options): lifecycle, routed calls with retries, membership refreshes.

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
