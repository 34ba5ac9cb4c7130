"""Readers waiting for the next write to a durable stream.

A reader registers *before* it reads the database, so that a write landing
between its read and its wait still wakes it; :meth:`StreamWaiters.watch`
registers for one round (read, then maybe wait) and unregisters in
``finally``, whatever happens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["StreamWaiters", "Wakeup"]


class Wakeup:
    """One registration: set by a write to the stream, or by a timer."""

    __slots__ = ("future",)

    def __init__(self, future: asyncio.Future[None]) -> None:
        self.future = future

    async def wait(self, seconds: float) -> None:
        """Until a write to the stream (or :meth:`StreamWaiters.wake_all`),
        at most ``seconds``."""
        handle = asyncio.get_running_loop().call_later(seconds, _set, self.future)
        try:
            await self.future
        finally:
            handle.cancel()


class StreamWaiters:
    """The registrations of every stream, woken by this node's writes."""

    def __init__(self) -> None:
        self._by_stream: dict[str, list[asyncio.Future[None]]] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_stream.values())

    @contextmanager
    def watch(self, stream_id: str) -> Iterator[Wakeup]:
        """Register for the next write to ``stream_id`` while the block runs."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._by_stream.setdefault(stream_id, []).append(future)
        try:
            yield Wakeup(future)
        finally:
            futures = self._by_stream.get(stream_id)
            if futures is not None:
                try:
                    futures.remove(future)
                except ValueError:
                    pass  # woken: wake() took the whole list
                if not futures:
                    del self._by_stream[stream_id]

    def wake(self, stream_id: str) -> None:
        """Wake everyone waiting for ``stream_id``."""
        for future in self._by_stream.pop(stream_id, ()):
            _set(future)

    def wake_all(self) -> None:
        """Wake every waiter (shutdown)."""
        for stream_id in list(self._by_stream):
            self.wake(stream_id)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
