"""The blocking client for scripts and notebooks.

It runs an :class:`~ipubsub.client.aio.AsyncClient` on a private event loop
in a daemon thread and waits for each call's result, so it works the same
whether or not the calling thread already runs a loop (as Jupyter's does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
from collections.abc import Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar

from .aio import AsyncClient
from .consumer import Consumer
from .history import Follower
from .iterators import Replay, Subscription
from .retry import ClientStats
from .wire import LeasedMessage, ReceivedMessage

__all__ = ["Client", "SyncConsumer", "SyncFollower", "SyncReplay", "SyncSubscription"]

T = TypeVar("T")
P = ParamSpec("P")


def _blocking(method: Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, T]]) -> Callable[Concatenate[Client, P], T]:
    """A blocking :class:`Client` method running ``method`` on the client's
    loop: same signature, promises and errors."""

    @functools.wraps(method)
    def call(self: Client, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._run(method(self._async, *args, **kwargs))

    call.__doc__ = f"Blocking :meth:`AsyncClient.{method.__name__}`.\n\n{method.__doc__ or ''}"
    return call


class Client:
    """A blocking client of an ipubsub cluster: the methods of
    :class:`AsyncClient`, each waiting for its answer.

    Takes the same arguments as :class:`AsyncClient`.  Thread-safe: calls
    from several threads run concurrently on the private loop.  Use it as
    ``with Client(...) as client`` or call :meth:`close`.  Ctrl-C during a
    call cancels that call.

    Raises:
        ValueError: no valid URL, or an option out of range.
    """

    def __init__(self, urls: str | Iterable[str], **options: Any) -> None:
        self._async = AsyncClient(urls, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="ipubsub-client", daemon=True)
        self._thread.start()
        self._closed = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def stats(self) -> ClientStats:
        """The counters of the underlying :class:`AsyncClient`."""
        return self._async.stats

    def close(self) -> None:
        """Close the connections and stop the private loop; safe to call twice."""
        if self._closed:
            return
        try:
            self._run(self._async.close())
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            if not self._thread.is_alive():
                self._loop.close()

    send = _blocking(AsyncClient.send)
    send_batch = _blocking(AsyncClient.send_batch)
    read = _blocking(AsyncClient.read)
    cluster = _blocking(AsyncClient.cluster)
    refresh = _blocking(AsyncClient.refresh)
    ack = _blocking(AsyncClient.ack)
    ack_many = _blocking(AsyncClient.ack_many)
    nack = _blocking(AsyncClient.nack)
    groups = _blocking(AsyncClient.groups)
    delete_group = _blocking(AsyncClient.delete_group)
    read_history = _blocking(AsyncClient.read_history)

    def receive(
        self,
        stream: str,
        timeout: float = 30,
        *,
        lease: float | None = None,
        max_deliveries: int | None = None,
        max_messages: int | None = None,
    ) -> ReceivedMessage | list[ReceivedMessage] | None:
        """Blocking :meth:`AsyncClient.receive` (a list with
        ``max_messages``); a leased message's ``ack()``/``nack()`` block too."""
        got: ReceivedMessage | list[ReceivedMessage] | None = self._run(
            self._async.receive(stream, timeout, lease=lease, max_deliveries=max_deliveries, max_messages=max_messages)
        )
        if isinstance(got, list):
            return [self._blocking_leases([m])[0] if isinstance(m, LeasedMessage) else m for m in got]
        return self._blocking_leases([got])[0] if isinstance(got, LeasedMessage) else got

    def receive_leased(self, stream: str, **options: Any) -> list[LeasedMessage]:
        """Blocking :meth:`AsyncClient.receive_leased`."""
        return self._blocking_leases(self._run(self._async.receive_leased(stream, **options)))

    def claim(self, stream: str, **options: Any) -> list[LeasedMessage]:
        """Blocking :meth:`AsyncClient.claim`."""
        return self._blocking_leases(self._run(self._async.claim(stream, **options)))

    def consume(self, stream: str, **options: Any) -> SyncConsumer:
        """A blocking iterator acknowledging each message once the loop
        body that got it finished (see :meth:`AsyncClient.consume`)."""
        return SyncConsumer(self, self._async.consume(stream, **options))

    def _blocking_leases(self, messages: list[LeasedMessage]) -> list[LeasedMessage]:
        return [dataclasses.replace(m, _settle=self._settle) for m in messages]

    def _settle(self, message: LeasedMessage, action: str, delay: float) -> bool:
        return self._run(self._async._settle_receipt(message.stream, message.receipt, action, delay))

    def subscribe(self, stream: str, timeout: float = 30, *, batch: int = 1) -> SyncSubscription:
        """An iterator over in-memory messages (see :meth:`AsyncClient.subscribe`)."""
        return SyncSubscription(self, self._async.subscribe(stream, timeout, batch=batch))

    def replay(
        self, stream: str, token: str | None = None, timeout: float = 30, *, follow: bool = True, batch: int = 100
    ) -> SyncReplay:
        """An iterator over the durable log with a ``token`` to resume from
        (see :meth:`AsyncClient.replay`)."""
        return SyncReplay(self, self._async.replay(stream, token, timeout, follow=follow, batch=batch))

    def follow(self, stream: str, position: str | None = None, **options: Any) -> SyncFollower:
        """An iterator over a stream's history with a ``position`` to follow
        on from (see :meth:`AsyncClient.follow`)."""
        return SyncFollower(self, self._async.follow(stream, position, **options))

    def owner_url(self, stream: str) -> str | None:
        """See :meth:`AsyncClient.owner_url`."""
        return self._async.owner_url(stream)

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("the client is closed")
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C (or any interruption) ends the call on the loop too
            raise


class SyncSubscription:
    """Blocking iterator over a :class:`~ipubsub.client.aio.Subscription`."""

    def __init__(self, client: Client, inner: Subscription | Replay | Follower) -> None:
        self._client = client
        self._inner = inner

    def __iter__(self) -> Iterator[ReceivedMessage]:
        return self

    def __next__(self) -> ReceivedMessage:
        try:
            return self._client._run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None


class SyncReplay(SyncSubscription):
    """Blocking iterator over a :class:`~ipubsub.client.aio.Replay`;
    ``token`` resumes after the last message it returned."""

    def __init__(self, client: Client, inner: Replay) -> None:
        super().__init__(client, inner)
        self._replay = inner

    @property
    def token(self) -> str | None:
        """Resume token after the last message returned (the start token before)."""
        return self._replay.token


class SyncFollower(SyncSubscription):
    """Blocking iterator over a :class:`~ipubsub.client.history.Follower`."""

    def __init__(self, client: Client, inner: Follower) -> None:
        super().__init__(client, inner)
        self._follower = inner

    @property
    def position(self) -> str | None:
        """Position of the last message returned (the start position before)."""
        return self._follower.position

    @property
    def gaps(self) -> int:
        return self._follower.gaps


class SyncConsumer:
    """Blocking iterator over a :class:`~ipubsub.client.consumer.Consumer`
    (also a context manager, like it)."""

    def __init__(self, client: Client, inner: Consumer) -> None:
        self._client = client
        self._inner = inner

    @property
    def acked(self) -> int:
        return self._inner.acked

    @property
    def lost(self) -> int:
        return self._inner.lost

    def __iter__(self) -> Iterator[LeasedMessage]:
        return self

    def __next__(self) -> LeasedMessage:
        try:
            message = self._client._run(self._inner.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None
        return dataclasses.replace(message, _settle=self._settle)

    def _settle(self, message: LeasedMessage, action: str, delay: float) -> bool:
        return self._client._run(self._inner._settle(message, action, delay))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._client._run(self._inner.__aexit__(exc_type, exc, tb))
