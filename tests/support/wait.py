"""The suite's one bounded wait: poll a condition until it holds or a
deadline passes, then fail naming what was awaited and what was seen last.

Tests never sleep before a hard assertion: they wait for the condition the
assertion is about (``await wait_until(lambda: node.engine.stats.waiting_receivers == 1,
what="the receiver registered")``).  The condition may be a plain function
or a coroutine function; its last truthy value is returned.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["wait_until", "wait_until_sync"]

T = TypeVar("T")

DEFAULT_TIMEOUT = 10.0


async def wait_until(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "the condition",
    interval: float = 0.01,
    show: Callable[[], Any] | None = None,
) -> T:
    """Poll ``condition()`` (sync or async) every ``interval`` seconds until
    it returns something truthy, and return that.

    Raises:
        AssertionError: not reached within ``timeout`` seconds; the message
            names ``what`` and the last value seen (or ``show()``).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() >= deadline:
            seen = show() if show is not None else value
            raise AssertionError(f"{what}: not reached within {timeout} s (last seen: {seen!r})")
        await asyncio.sleep(interval)


def wait_until_sync(
    condition: Callable[[], T],
    timeout: float = DEFAULT_TIMEOUT,
    what: str = "the condition",
    interval: float = 0.05,
    show: Callable[[], Any] | None = None,
    ignore: tuple[type[BaseException], ...] = (),
) -> T:
    """:func:`wait_until` for code outside an event loop (blocking);
    exceptions of the ``ignore`` types count as "not yet"."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except ignore as exc:
            value = exc  # type: ignore[assignment]
        if value and not isinstance(value, BaseException):
            return value
        if time.monotonic() >= deadline:
            seen = show() if show is not None else value
            raise AssertionError(f"{what}: not reached within {timeout} s (last seen: {seen!r})")
        time.sleep(interval)
