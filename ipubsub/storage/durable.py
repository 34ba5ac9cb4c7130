"""The durable log as a node uses it, on top of any :class:`MessageStore`.

* Group commit (:mod:`.group_commit`): concurrent appends are queued and
  written together, one batch per database transaction, so persisted
  throughput grows with the number of concurrent writers; each caller is
  answered only after its batch committed.  A caller's own batch
  (:meth:`DurableLog.append_batch`) is never split across transactions.
* Reads come in batches: wait for the first message after a position, then
  take up to ``limit`` in one indexed range read.  Readers waiting for the
  next message of a stream are woken by appends on this node (the stream's
  owner), not by polling the database; one last read at the end of a wait
  also catches what another node may have written.
* Health (:mod:`.health`): the store is opened in the background with
  backoff, so a node starts (and serves memory-only calls) while its
  database is down.  Every call is bounded by ``operation_timeout_seconds``
  (an append's time in the queue included); the first call that fails or
  times out marks the store ``down``, queued appends fail at once, later
  calls answer 503 without waiting, and a probe reconnects.  An idle node
  pings its database, so ``/health`` tells the truth without traffic.
* Consumer groups (:meth:`DurableLog.claim`, :meth:`DurableLog.ack`, ...)
  and spilled in-memory buffers (:meth:`DurableLog.spill`,
  :meth:`DurableLog.restore_spilled`) go through the same deadlines and
  status; see :mod:`.base` for what each promises.
* Expired messages, and groups idle for ``storage.group_idle_seconds``, are
  deleted in bounded batches by a background sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..config import StorageConfig
from ..engine import Clock
from ..errors import ReceiveTimeout, StorageUnavailable
from ..observability.counters import LatencyHistogram
from ..tasks import cancel_tasks
from .base import AppendResult, Claim, GroupInfo, LeaseRef, MessageStore, NewMessage, SpilledStream, StoredMessage
from .group_commit import GroupCommit
from .health import StorageStatus, StoreHealth
from .waiters import StreamWaiters

__all__ = ["MAX_READ_BATCH", "DurableLog", "StorageSnapshot", "StorageStatus"]

log = logging.getLogger("ipubsub.storage")

CONNECTING, UP, DOWN = StorageStatus.CONNECTING, StorageStatus.UP, StorageStatus.DOWN


@dataclass(frozen=True, slots=True)
class StorageSnapshot:
    """The durable log's state and counters at one instant."""

    backend: str
    status: StorageStatus
    error: str | None
    pending_writes: int
    writes: int
    batches: int
    reads: int
    errors: int
    expired_deleted: int
    write_latency: LatencyHistogram
    read_latency: LatencyHistogram

#: the most messages one batch read returns
MAX_READ_BATCH = 1000


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
        self._health = StoreHealth(store, config, self._down)
        self._writes = GroupCommit(
            store,
            config.write_batch_max,
            self._health.timeout,
            lambda detail: self._health.timed_out("append", detail),
            self._written,
            self._health.failed,
        )
        self._waiters = StreamWaiters()
        self._tasks: list[asyncio.Task[None]] = []
        self.writes_total = 0
        self.batches_total = 0
        self.reads_total = 0
        self.expired_deleted_total = 0
        self.idle_groups_deleted_total = 0
        self.write_latency = LatencyHistogram()
        self.read_latency = LatencyHistogram()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting (in the background), the writers and the sweeper."""
        self._health.start()
        self._writes.start()
        self._tasks = [asyncio.get_running_loop().create_task(self._sweeper(), name="ipubsub-storage-sweeper")]

    async def wait_up(self, timeout: float) -> bool:
        """Wait until the store is open; return whether it is."""
        return await self._health.wait_up(timeout)

    @property
    def status(self) -> StorageStatus:
        """``connecting``, ``up`` or ``down``."""
        return self._health.status

    @property
    def last_error(self) -> str | None:
        """Why the store is not up (``None`` while up)."""
        return self._health.last_error

    @property
    def errors_total(self) -> int:
        return self._health.errors_total

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by ``timeout``), stop, disconnect."""
        if self.status == UP:
            await self._writes.flush(timeout)
        await cancel_tasks([*self._tasks, *self._writes.tasks, self._health.task])
        self._writes.fail_queued(StorageUnavailable("the node is shutting down"))
        self._waiters.wake_all()
        await self.store.close()

    def snapshot(self) -> StorageSnapshot:
        """State and counters for /health and /metrics (the latency
        histograms are the live objects, not copies)."""
        return StorageSnapshot(
            backend=self.store.name,
            status=self.status,
            error=self.last_error,
            pending_writes=self._writes.pending,
            writes=self.writes_total,
            batches=self.batches_total,
            reads=self.reads_total,
            errors=self.errors_total,
            expired_deleted=self.expired_deleted_total,
            write_latency=self.write_latency,
            read_latency=self.read_latency,
        )

    # -- writing -------------------------------------------------------------------

    async def append(self, msg: NewMessage) -> AppendResult:
        """Store ``msg`` durably; return its position (or its original's, for
        a uuid the stream already holds).

        Raises:
            StorageUnavailable: the database is down or failed the write.
        """
        (result,) = await self.append_batch((msg,))
        return result

    async def append_batch(self, msgs: Sequence[NewMessage]) -> list[AppendResult]:
        """Store ``msgs`` durably in one transaction (streams may differ;
        per-stream order is kept); one result per message, in order, as
        :meth:`MessageStore.append` promises.

        Raises:
            StorageUnavailable: the database is down or failed the write
                (then nothing of the batch was stored).
        """
        self._health.check()
        if not msgs:
            return []
        results = await self._writes.append(msgs)
        self._health.succeeded()
        return results

    def _written(self, streams: set[str], count: int, seconds: float) -> None:
        self.write_latency.observe(seconds)
        self.batches_total += 1
        self.writes_total += count
        for stream_id in streams:
            self._waiters.wake(stream_id)

    # -- reading -------------------------------------------------------------------

    async def read(self, stream_id: str, after: int | None, timeout: float) -> StoredMessage:
        """The first alive message after position ``after`` (``None``: the
        oldest alive), waiting up to ``timeout`` seconds for one.

        Raises:
            ReceiveTimeout: none arrived in time.
            StorageUnavailable: the database is down or failed the read.
        """
        (row,) = await self.read_batch(stream_id, after, timeout, 1)
        return row

    async def read_batch(self, stream_id: str, after: int | None, timeout: float, limit: int) -> list[StoredMessage]:
        """Alive messages after position ``after`` (``None``: from the oldest
        alive), oldest first: wait up to ``timeout`` seconds for the first
        one, then return at once up to ``limit`` (1..:data:`MAX_READ_BATCH`)
        that are stored, read with one indexed range read.  Never empty.

        Raises:
            ValueError: ``limit`` is out of range (a caller's bug: the API
                validates ``maxMessages``).
            ReceiveTimeout: nothing arrived in time.
            StorageUnavailable: the database is down or failed the read.
        """
        if not 1 <= limit <= MAX_READ_BATCH:
            raise ValueError(f"limit must be 1..{MAX_READ_BATCH}, got {limit}")
        self._health.check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._waiters.watch(stream_id) as wakeup:
                rows = await self._read_rows(stream_id, after, limit)
                if rows:
                    return rows
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise ReceiveTimeout(stream_id, timeout)
                await wakeup.wait(remaining)
                if loop.time() >= deadline:
                    rows = await self._read_rows(stream_id, after, limit)  # last look
                    if rows:
                        return rows
                    raise ReceiveTimeout(stream_id, timeout)

    async def latest(self, stream_id: str, limit: int) -> list[StoredMessage]:
        """The ``limit`` newest alive messages of the stream, oldest first
        (for operators inspecting it; readers use :meth:`read`).

        Raises:
            StorageUnavailable: the database is down or failed the read.
        """
        return await self._health.run("read", lambda: self.store.read_latest(stream_id, self._clock.time_us(), limit))

    async def _read_rows(self, stream_id: str, after: int | None, limit: int) -> list[StoredMessage]:
        started = time.monotonic()
        rows = await self._health.run("read", lambda: self.store.read_after(stream_id, after, self._clock.time_us(), limit))
        self.read_latency.observe(time.monotonic() - started)
        self.reads_total += 1
        return rows

    @property
    def waiting_readers(self) -> int:
        return len(self._waiters)

    # -- consumer groups -------------------------------------------------------------------

    async def claim(
        self,
        stream_id: str,
        group: str,
        consumer: str,
        limit: int,
        lease_seconds: float,
        timeout: float,
        max_deliveries: int = 0,
    ) -> Claim:
        """Lease up to ``limit`` (1..:data:`MAX_READ_BATCH`) messages of the
        stream to ``consumer`` of ``group`` for ``lease_seconds``, waiting up
        to ``timeout`` seconds for anything to claim (a new message, woken by
        this node's appends, or a lease that ends).  Returns as soon as the
        claim holds messages or dead ones (see :meth:`MessageStore.claim`).

        Raises:
            ValueError: ``limit`` or ``lease_seconds`` out of range (the
                API validates them).
            ReceiveTimeout: nothing to claim in time.
            StorageUnavailable: the database is down, failed or too slow.
        """
        if not 1 <= limit <= MAX_READ_BATCH or lease_seconds <= 0:
            raise ValueError(f"limit must be 1..{MAX_READ_BATCH} and lease_seconds > 0")
        self._health.check()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        lease_us = int(lease_seconds * 1_000_000)
        while True:
            with self._waiters.watch(stream_id) as wakeup:  # before claiming: see read_batch
                claim = await self._health.run(
                    "claim",
                    lambda: self.store.claim(
                        stream_id, group, consumer, limit, lease_us, self._clock.time_us(), max_deliveries
                    ),
                )
                remaining = deadline - loop.time()
                if claim.messages or claim.dead:
                    return claim
                if remaining <= 0:
                    raise ReceiveTimeout(stream_id, timeout)
                if claim.next_lease_end_us is not None:  # a lease may end before the deadline
                    until_lease_end = (claim.next_lease_end_us - self._clock.time_us()) / 1_000_000
                    remaining = min(remaining, max(until_lease_end, 0.001))
                await wakeup.wait(remaining)

    async def ack(self, stream_id: str, group: str, refs: Sequence[LeaseRef]) -> list[bool]:
        """Acknowledge leased messages; see :meth:`MessageStore.ack`.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        now = self._clock.time_us()
        return await self._health.run("ack", lambda: self.store.ack(stream_id, group, refs, now))

    async def nack(self, stream_id: str, group: str, refs: Sequence[LeaseRef], delay_seconds: float = 0) -> list[bool]:
        """Give leased messages back (after ``delay_seconds``); see :meth:`MessageStore.nack`.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        now = self._clock.time_us()
        delay_us = int(delay_seconds * 1_000_000)
        answers = await self._health.run("nack", lambda: self.store.nack(stream_id, group, refs, now, delay_us))
        if any(answers):
            self._waiters.wake(stream_id)  # waiting consumers may claim them now
        return answers

    async def groups(self, stream_id: str) -> list[GroupInfo]:
        """The stream's consumer groups with lag and pending counts.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        now = self._clock.time_us()
        return await self._health.run("list groups", lambda: self.store.list_groups(stream_id, now))

    async def delete_group(self, stream_id: str, group: str) -> bool:
        """Remove a consumer group; ``False`` if there was none.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        return await self._health.run("delete group", lambda: self.store.delete_group(stream_id, group))

    # -- spilled in-memory buffers ---------------------------------------------------------

    async def spill(self, node: str, streams: Sequence[SpilledStream]) -> int:
        """Keep ``node``'s buffered streams in the database until
        :meth:`restore_spilled`; return how many messages.

        Raises:
            StorageUnavailable: the database is down, failed or too slow
                (then nothing was kept, or, on SQL backends, everything).
        """
        spill_id = self._clock.time_us()
        return await self._health.run("spill", lambda: self.store.spill(node, spill_id, streams))

    async def restore_spilled(
        self,
        node: str,
        restore: Callable[[list[SpilledStream]], None],
        undo: Callable[[list[SpilledStream]], None],
    ) -> int:
        """Give what was spilled for ``node`` to ``restore`` (in spill order),
        then delete it from the database; return how many messages.

        Exactly once, if the caller serves nothing before this returns: a
        crash before the delete commits leaves the rows for the next start
        (the restored copies died with the process, unseen); after it, the
        messages live only in memory.  If the delete fails, ``undo`` is given
        the same streams to take back out, and they stay in the database.

        Raises:
            StorageUnavailable: the database is down, failed or too slow.
        """
        spilled = await self._health.run("read spilled", lambda: self.store.read_spilled(node))
        if not spilled:
            return 0
        through = max(stream.spill_id for stream in spilled)
        restore(spilled)
        try:
            await self._health.run("delete spilled", lambda: self.store.delete_spilled(node, through))
        except StorageUnavailable:
            undo(spilled)
            raise
        return sum(len(stream.messages) for stream in spilled)

    # -- health ------------------------------------------------------------------------

    def _down(self, error: StorageUnavailable) -> None:
        """The store just went down: queued appends fail now rather than
        wait for their deadline."""
        failed = self._writes.fail_queued(error)
        if failed:
            log.warning("%d queued durable writes failed: %s", failed, error.message)

    async def _delete_idle_groups(self) -> int:
        idle_before = self._clock.time_us() - int(self._config.group_idle_seconds * 1_000_000)
        return await self.store.delete_idle_groups(idle_before, self._config.sweep_batch)

    async def _sweeper(self) -> None:
        interval = self._config.sweep_interval_seconds
        batch = self._config.sweep_batch
        while True:
            await asyncio.sleep(interval)
            if self.status != UP:
                continue
            try:
                for _ in range(100):  # at most 100 batches per round
                    deleted = await self._health.run(
                        "delete expired", lambda: self.store.delete_expired(self._clock.time_us(), batch)
                    )
                    self.expired_deleted_total += deleted
                    if deleted < batch:
                        break
                    await asyncio.sleep(0)
                self.idle_groups_deleted_total += await self._health.run("delete idle groups", self._delete_idle_groups)
            except StorageUnavailable:
                pass  # the health component marked the store down
            except Exception:
                log.exception("expiry sweep failed")

