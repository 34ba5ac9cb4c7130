"""Whether the database answers, told truthfully, and a deadline on every call.

:class:`StoreHealth` owns the status a node reports (``connecting``, ``up``,
``down``) and the one background task that changes it without traffic:

* while not up, it opens the store (first time) or pings it, with backoff
  up to ``storage.reconnect_max_seconds``, and marks it up on success;
* while up and idle (no call succeeded for ``storage.probe_interval_seconds``)
  it pings, so a database that stopped answering is reported ``down`` even
  when nobody calls it.

Every durable call runs through :meth:`StoreHealth.run`, bounded by its own
deadline (``storage.operation_timeout_seconds``): a call that times out or
fails marks the store down at once (one slow answer is enough: callers get
503 ``storage_unavailable`` immediately instead of queueing behind a dead
connection), and the probe brings it back.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ..config import StorageConfig
from ..errors import StorageUnavailable
from .base import MessageStore

__all__ = ["StorageStatus", "StoreHealth"]

log = logging.getLogger("ipubsub.storage")

T = TypeVar("T")


class StorageStatus(enum.StrEnum):
    """Whether the database answers: not yet opened, open, or failing."""

    CONNECTING = "connecting"
    UP = "up"
    DOWN = "down"


class StoreHealth:
    """Status, deadlines and the reconnect/liveness probe of one store.

    Args:
        store: the backend (opened by :meth:`start`'s probe).
        config: the ``storage`` section.
        on_down: called when the status turns ``down`` (fail queued work).
    """

    def __init__(self, store: MessageStore, config: StorageConfig, on_down: Callable[[StorageUnavailable], None]) -> None:
        self._store = store
        self._config = config
        self._on_down = on_down
        self.timeout = config.operation_timeout_seconds
        self.status = StorageStatus.CONNECTING
        self.last_error: str | None = None
        self.errors_total = 0
        self._up = asyncio.Event()
        self._changed = asyncio.Event()
        self._last_ok = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the probe task (it opens the store first)."""
        self._task = asyncio.get_running_loop().create_task(self._probe(), name="ipubsub-storage-probe")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The probe task, for the owner to cancel at close."""
        return self._task

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the store is up; return whether it is."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def check(self) -> None:
        """Raise at once unless the store is up.

        Raises:
            StorageUnavailable: it is connecting or down (with the last error).
        """
        if self.status is not StorageStatus.UP:
            state = "not connected yet" if self.status is StorageStatus.CONNECTING else "unavailable"
            detail = f": {self.last_error}" if self.last_error else ""
            raise StorageUnavailable(f"the {self._store.name} database is {state}{detail}", retry_after=1)

    async def run(self, action: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run one database call within the deadline; a failure marks the
        store down.

        Raises:
            StorageUnavailable: the store is not up, the call failed, or it
                did not finish within ``operation_timeout_seconds``.
        """
        self.check()
        try:
            async with asyncio.timeout(self.timeout):
                result = await call()
        except TimeoutError:
            error = self.timed_out(action)
            self.failed(error)
            raise error from None
        except StorageUnavailable as exc:
            self.failed(exc)
            raise
        self.succeeded()
        return result

    def timed_out(self, action: str, detail: str = "") -> StorageUnavailable:
        """The error of a call that outlived its deadline."""
        return StorageUnavailable(
            f"the {self._store.name} database did not answer within {self.timeout:g} s ({action}){detail}",
            retry_after=1,
        )

    def succeeded(self) -> None:
        """A call succeeded: the idle probe can wait."""
        self._last_ok = time.monotonic()

    def failed(self, error: StorageUnavailable) -> None:
        """A call failed: count it and mark the store down (the probe
        reconnects)."""
        self.errors_total += 1
        self.last_error = error.message
        if self.status is StorageStatus.UP:
            log.error("storage unavailable: %s", error.message)
            self.status = StorageStatus.DOWN
            self._up.clear()
            self._changed.set()
            self._on_down(error)

    async def _probe(self) -> None:
        opened = False
        delay = 0.1
        while True:
            if self.status is StorageStatus.UP:
                delay = 0.1
                await self._idle_check()
                continue
            try:
                async with asyncio.timeout(self.timeout if opened else None):
                    await (self._store.ping() if opened else self._store.open())
            except (StorageUnavailable, TimeoutError) as exc:
                self.last_error = exc.message if isinstance(exc, StorageUnavailable) else self.timed_out("ping").message
                log.warning("storage %s not reachable (%s); retrying in %.1fs", self._store.name, self.last_error, delay)
            except Exception as exc:  # a bug or an unexpected driver error: keep trying
                self.last_error = str(exc)
                log.exception("opening storage %s failed", self._store.name)
            else:
                self._mark_up(reconnected=opened)
                opened = True
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.reconnect_max_seconds)

    async def _idle_check(self) -> None:
        """While up: wait until no call succeeded for a probe interval (or
        the status changes), then ping."""
        interval = self._config.probe_interval_seconds
        self._changed.clear()
        wait = self._last_ok + interval - time.monotonic()
        if wait > 0:
            try:
                await asyncio.wait_for(self._changed.wait(), wait)
            except TimeoutError:
                pass
            return
        try:
            await self.run("liveness probe", self._store.ping)
        except StorageUnavailable:
            pass  # run() marked it down

    def _mark_up(self, reconnected: bool) -> None:
        self.status = StorageStatus.UP
        self.last_error = None
        self._last_ok = time.monotonic()
        self._up.set()
        log.info("storage %s %s", self._store.name, "reachable again" if reconnected else "opened")
