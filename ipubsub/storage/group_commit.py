"""Group commit: appends from concurrent callers written together.

Each caller queues its messages (one message, or a whole batch of a
``sendBatch`` call) as one entry; a writer task takes queued entries in
arrival order, up to ``storage.write_batch_max`` messages (an entry is never
split, so a caller's batch lands in one database transaction), writes them
with one :meth:`MessageStore.append` and answers every caller from that one
commit.  Persisted throughput therefore grows with the number of concurrent
writers while each caller still waits for its own commit.

There are :attr:`MessageStore.append_concurrency` writer tasks, so that
many batches can be in flight (a pooled SQL database works on one while the
next is being prepared); batches of the same stream still commit one after
another, in position order (the store's counter lock).  An idle writer takes
whatever is queued at once: batches grow only when the writers are busy.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Sequence

from ..errors import StorageUnavailable
from .base import AppendResult, MessageStore, NewMessage

__all__ = ["GroupCommit"]

log = logging.getLogger("ipubsub.storage")


class _Entry:
    """One caller's messages, the future that answers it, and whether a
    writer took it (then the database may commit it whatever happens)."""

    __slots__ = ("msgs", "future", "taken")

    def __init__(self, msgs: Sequence[NewMessage], future: asyncio.Future[list[AppendResult]]) -> None:
        self.msgs = msgs
        self.future = future
        self.taken = False


class GroupCommit:
    """The write queue of one store and the task that drains it.

    Args:
        store: the open store to append to.
        batch_max: messages per database batch (entries are not split).
        deadline: seconds a database batch may take.
        timed_out: builds the error of a batch or caller past its deadline
            (given a detail to append to the message).
        on_written: called after each committed batch with the stream ids
            that received new messages (to wake readers).
        on_failed: called with the error of a failed batch (marks the
            store down).
    """

    def __init__(
        self,
        store: MessageStore,
        batch_max: int,
        deadline: float,
        timed_out: Callable[[str], StorageUnavailable],
        on_written: Callable[[set[str], int, float], None],
        on_failed: Callable[[StorageUnavailable], None],
    ) -> None:
        self._store = store
        self._batch_max = batch_max
        self._deadline = deadline
        self._timed_out = timed_out
        self._on_written = on_written
        self._on_failed = on_failed
        self._queue: collections.deque[_Entry] = collections.deque()
        self._queued_messages = 0
        self._writing = 0  # batches handed to the database and not answered yet
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def pending(self) -> int:
        """Messages queued and not yet handed to the database."""
        return self._queued_messages

    def start(self) -> None:
        """Start the writer tasks (see :attr:`tasks`)."""
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name=f"ipubsub-storage-writer-{n}")
            for n in range(max(1, self._store.append_concurrency))
        ]

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The writer tasks, for the owner to cancel at close."""
        return self._tasks

    async def append(self, msgs: Sequence[NewMessage]) -> list[AppendResult]:
        """Queue ``msgs`` and wait for the commit of the batch that holds
        them, at most ``deadline`` seconds in all (queueing included).

        Raises:
            StorageUnavailable: the batch failed, or the deadline passed
                (``on_failed`` hears of it too).  If the messages were still queued they are
                withdrawn (not stored); if a batch was writing them they may
                have been stored: a retry with the same uuids is safe.
        """
        future: asyncio.Future[list[AppendResult]] = asyncio.get_running_loop().create_future()
        entry = _Entry(msgs, future)
        self._queue.append(entry)
        self._queued_messages += len(msgs)
        self._wake.set()
        try:
            async with asyncio.timeout(self._deadline):
                return await future
        except TimeoutError:
            if entry.taken:
                error = self._timed_out("; the write may have been stored: retry with the same messageUuid")
            else:
                self._queue.remove(entry)
                self._queued_messages -= len(msgs)
                error = self._timed_out("; nothing was stored")
            self._on_failed(error)
            raise error from None

    async def flush(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds until everything queued is written
        (the queue drained and no batch still being written)."""
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.01)

    def fail_queued(self, error: StorageUnavailable) -> int:
        """Answer every queued (not yet written) entry with ``error``;
        return how many messages that was."""
        failed = 0
        while self._queue:
            entry = self._queue.popleft()
            failed += len(entry.msgs)
            if not entry.future.done():
                entry.future.set_exception(error)
        self._queued_messages = 0
        return failed

    async def _run(self) -> None:
        while True:
            while not self._queue:
                # every writer waiting here is woken by one set()
                self._wake.clear()
                await self._wake.wait()
            await self._write(self._take())

    def _take(self) -> list[_Entry]:
        """Entries from the head of the queue, at most ``batch_max`` messages
        (at least one entry, whatever its size)."""
        batch = [self._queue.popleft()]
        count = len(batch[0].msgs)
        while self._queue and count + len(self._queue[0].msgs) <= self._batch_max:
            entry = self._queue.popleft()
            batch.append(entry)
            count += len(entry.msgs)
        self._queued_messages -= count
        for entry in batch:
            entry.taken = True
        return batch

    async def _write(self, batch: list[_Entry]) -> None:
        msgs = [m for entry in batch for m in entry.msgs]
        started = time.monotonic()
        self._writing += 1
        try:
            async with asyncio.timeout(self._deadline):
                results = await self._store.append(msgs)
        except asyncio.CancelledError:  # closing: answer the callers now, not at their deadline
            error = StorageUnavailable("the node is shutting down; the write may have been stored: "
                                       "retry with the same messageUuid")
            _fail(batch, error)
            raise
        except TimeoutError:
            error = self._timed_out("")
            self._on_failed(error)
            _fail(batch, error)
            return
        except Exception as exc:
            if isinstance(exc, StorageUnavailable):
                error = exc
            else:
                log.exception("unexpected storage error")
                error = StorageUnavailable(f"storage write failed: {exc}")
            self._on_failed(error)
            _fail(batch, error)
            return
        finally:
            self._writing -= 1
        streams: set[str] = set()
        start = 0
        for entry in batch:
            mine = results[start : start + len(entry.msgs)]
            start += len(entry.msgs)
            if not entry.future.done():
                entry.future.set_result(mine)
            for msg, result in zip(entry.msgs, mine):
                if not result.duplicate:
                    streams.add(msg.stream_id)
        self._on_written(streams, len(msgs), time.monotonic() - started)


def _fail(batch: list[_Entry], error: StorageUnavailable) -> None:
    for entry in batch:
        if not entry.future.done():
            entry.future.set_exception(error)
