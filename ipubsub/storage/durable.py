"""The durable log as a node uses it, on top of any :class:`MessageStore`.

* Group commit: concurrent appends are queued and written together, one
  batch per database round trip, so persisted throughput grows with the
  number of concurrent writers; each caller is answered only after its
  batch committed.
* Readers waiting for the next message of a stream are woken by appends on
  this node (the stream's owner), not by polling the database; one last read
  at the end of a wait also catches what another node may have written.
* The store is opened in the background with backoff, so a node starts (and
  serves memory-only calls) while its database is down; while the database
  fails, persisted calls answer 503 and a probe reconnects.
* Expired messages are deleted in bounded batches by a background sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import StorageConfig
from ..engine import Clock
from ..errors import ReceiveTimeout, StorageUnavailable
from ..stats import LatencyHistogram
from ..tasks import cancel_tasks
from .base import AppendResult, MessageStore, NewMessage, StoredMessage

__all__ = ["DurableLog"]

log = logging.getLogger("ipubsub.storage")

CONNECTING, UP, DOWN = "connecting", "up", "down"


class DurableLog:
    """Durable streams of one node.

    Args:
        store: the (unopened) backend.
        config: the ``storage`` section.
        clock: wall-clock source for timestamps and expiry.
    """

    def __init__(self, store: MessageStore, config: StorageConfig, clock: Clock) -> None:
        self.store = store
        self._config = config
        self._clock = clock
        self.status = CONNECTING
        self.last_error: str | None = None
        self._pending: list[tuple[NewMessage, asyncio.Future[AppendResult]]] = []
        self._wake_writer = asyncio.Event()
        self._readers: dict[str, list[asyncio.Future[None]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._up = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self.writes_total = 0
        self.batches_total = 0
        self.reads_total = 0
        self.errors_total = 0
        self.expired_deleted_total = 0
        self.write_latency = LatencyHistogram()
        self.read_latency = LatencyHistogram()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background), the writer and the sweeper."""
        loop = asyncio.get_running_loop()
        self._reconnecting = loop.create_task(self._connect(opening=True), name="ipubsub-storage-connect")
        self._tasks = [
            loop.create_task(self._writer(), name="ipubsub-storage-writer"),
            loop.create_task(self._sweeper(), name="ipubsub-storage-sweeper"),
        ]

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the store is open; return whether it is."""
        try:
            await asyncio.wait_for(self._up.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), stop, disconnect."""
        deadline = time.monotonic() + timeout
        while self._pending and self.status == UP and time.monotonic() < deadline:
            self._wake_writer.set()
            await asyncio.sleep(0.01)
        await cancel_tasks([*self._tasks, self._reconnecting])
        for _, fut in self._pending:
            if not fut.done():
                fut.set_exception(StorageUnavailable("the node is shutting down"))
        self._pending.clear()
        for waiters in self._readers.values():
            for waiter in waiters:
                _wake(waiter)
        await self.store.close()

    def describe(self) -> dict[str, Any]:
        """Status for /health."""
        return {
            "backend": self.store.name,
            "status": self.status,
            "error": self.last_error,
            "pendingWrites": len(self._pending),
            "writes": self.writes_total,
            "batches": self.batches_total,
            "reads": self.reads_total,
            "errors": self.errors_total,
            "expiredDeleted": self.expired_deleted_total,
        }

    # -- writing -------------------------------------------------------------------

    async def append(self, msg: NewMessage) -> AppendResult:
        """Store ``msg`` durably; return its position (or its original's, for
        a uuid the stream already holds).

        Raises:
            StorageUnavailable: the database is down or failed the write.
        """
        self._check_up()
        fut: asyncio.Future[AppendResult] = asyncio.get_running_loop().create_future()
        self._pending.append((msg, fut))
        self._wake_writer.set()
        return await fut

    async def _writer(self) -> None:
        limit = self._config.write_batch_max
        while True:
            await self._wake_writer.wait()
            self._wake_writer.clear()
            while self._pending:
                batch, self._pending = self._pending[:limit], self._pending[limit:]
                await self._write(batch)

    async def _write(self, batch: list[tuple[NewMessage, asyncio.Future[AppendResult]]]) -> None:
        started = time.monotonic()
        try:
            results = await self.store.append([m for m, _ in batch])
        except Exception as exc:
            error = exc if isinstance(exc, StorageUnavailable) else StorageUnavailable(f"storage write failed: {exc}")
            if not isinstance(exc, StorageUnavailable):
                log.exception("unexpected storage error")
            self._failed(error)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(error)
            return
        self.write_latency.observe(time.monotonic() - started)
        self.batches_total += 1
        self.writes_total += len(batch)
        streams = set()
        for (msg, fut), result in zip(batch, results):
            if not fut.done():
                fut.set_result(result)
            if not result.duplicate:
                streams.add(msg.stream_id)
        for stream_id in streams:
            self._wake_readers(stream_id)

    # -- reading -------------------------------------------------------------------

    async def read(self, stream_id: str, after: int | None, timeout: float) -> StoredMessage:
        """The first alive message after position ``after`` (``None``: the
        oldest alive), waiting up to ``timeout`` seconds for one.

        Raises:
            ReceiveTimeout: none arrived in time.
            StorageUnavailable: the database is down or failed the read.
        """
        self._check_up()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            # Register before reading, so a write landing between our read
            # and our wait still wakes us.
            waiter: asyncio.Future[None] = loop.create_future()
            self._readers.setdefault(stream_id, []).append(waiter)
            try:
                row = await self._read_one(stream_id, after)
                if row is not None:
                    return row
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ReceiveTimeout(stream_id, timeout)
                handle = loop.call_later(remaining, _wake, waiter)
                try:
                    await waiter
                finally:
                    handle.cancel()
                if loop.time() >= deadline:
                    row = await self._read_one(stream_id, after)  # last look
                    if row is not None:
                        return row
                    raise ReceiveTimeout(stream_id, timeout)
            finally:
                self._forget_reader(stream_id, waiter)

    async def latest(self, stream_id: str, limit: int) -> list[StoredMessage]:
        """The ``limit`` newest alive messages of the stream, oldest first
        (for operators inspecting it; readers use :meth:`read`).

        Raises:
            StorageUnavailable: the database is down or failed the read.
        """
        self._check_up()
        try:
            return await self.store.read_latest(stream_id, self._clock.time_us(), limit)
        except StorageUnavailable as exc:
            self._failed(exc)
            raise

    async def _read_one(self, stream_id: str, after: int | None) -> StoredMessage | None:
        started = time.monotonic()
        try:
            rows = await self.store.read_after(stream_id, after, self._clock.time_us(), 1)
        except StorageUnavailable as exc:
            self._failed(exc)
            raise
        self.read_latency.observe(time.monotonic() - started)
        self.reads_total += 1
        return rows[0] if rows else None

    def _wake_readers(self, stream_id: str) -> None:
        for fut in self._readers.pop(stream_id, ()):
            _wake(fut)

    def _forget_reader(self, stream_id: str, waiter: asyncio.Future[None]) -> None:
        waiters = self._readers.get(stream_id)
        if waiters is None:
            return
        try:
            waiters.remove(waiter)
        except ValueError:
            pass
        if not waiters:
            del self._readers[stream_id]

    @property
    def waiting_readers(self) -> int:
        return sum(len(v) for v in self._readers.values())

    # -- health ------------------------------------------------------------------------

    def _check_up(self) -> None:
        if self.status != UP:
            detail = f": {self.last_error}" if self.last_error else ""
            raise StorageUnavailable(
                f"the {self.store.name} database is {'not connected yet' if self.status == CONNECTING else 'unavailable'}"
                f"{detail}",
                retry_after=1,
            )

    def _failed(self, exc: StorageUnavailable) -> None:
        self.errors_total += 1
        self.last_error = exc.message
        if self.status == UP:
            log.error("storage unavailable: %s", exc.message)
            self.status = DOWN
            self._up.clear()
            if self._reconnecting is None or self._reconnecting.done():
                self._reconnecting = asyncio.get_running_loop().create_task(
                    self._connect(opening=False), name="ipubsub-storage-reconnect"
                )

    async def _connect(self, opening: bool) -> None:
        delay = 0.1
        while True:
            try:
                if opening:
                    await self.store.open()
                else:
                    await self.store.ping()
            except StorageUnavailable as exc:
                self.last_error = exc.message
                log.warning("storage %s not reachable (%s); retrying in %.1fs", self.store.name, exc.message, delay)
            except Exception as exc:  # a bug or an unexpected driver error: keep trying
                self.last_error = str(exc)
                log.exception("opening storage %s failed", self.store.name)
            else:
                self.status = UP
                self.last_error = None
                self._up.set()
                log.info("storage %s %s", self.store.name, "opened" if opening else "reachable again")
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._config.reconnect_max_seconds)

    async def _sweeper(self) -> None:
        interval = self._config.sweep_interval_seconds
        batch = self._config.sweep_batch
        while True:
            await asyncio.sleep(interval)
            if self.status != UP:
                continue
            try:
                for _ in range(100):  # at most 100 batches per round
                    deleted = await self.store.delete_expired(self._clock.time_us(), batch)
                    self.expired_deleted_total += deleted
                    if deleted < batch:
                        break
                    await asyncio.sleep(0)
            except StorageUnavailable as exc:
                self._failed(exc)
            except Exception:
                log.exception("expiry sweep failed")


def _wake(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
