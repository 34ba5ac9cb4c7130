"""Hand-off: buffered messages follow their stream to its new owner.

After every ring change (and whenever this node served a stream it does not
own) a reconcile pass detaches each such stream from the engine (releasing
its waiters with 424, so they re-poll and land on the new owner) and posts
its messages, in order, to the new owner, which puts them ahead of anything
it accepted for that stream since.  Leased messages and the fan-out history
travel with their stream (:mod:`.carried`): receipts and positions stay valid.

A batch that surely did not arrive (connection refused) goes back into the
local engine, at the front, and is retried.  A batch whose fate is unknown
(timeout, reset) is resent *as is*, same batch id, so the receiver applies
it once; if its target leaves the ring meanwhile, it is re-homed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable

from ..engine import Engine, Leases, new_uuid
from ..errors import WrongCluster
from ..tasks import cancel_tasks
from .carried import PackedStream, pack_stream, release_history_readers, restore_stream, unpack_stream
from .link import LinkError
from .link_calls import HandoffBatch
from .links import Links
from .messages import HandedStream, Handoff, decode, encode
from .ring import Ring

__all__ = ["HandoffManager"]

log = logging.getLogger("ipubsub.cluster")

_MAX_BATCH_MESSAGES = 5000
_MAX_BATCH_BYTES = 8 * 1024 * 1024
_REMEMBERED_BATCHES = 10000
_DEBOUNCE_SECONDS = 0.05


class HandoffManager:
    """Moves buffered messages of streams this node no longer owns.

    Args:
        name / cluster: this node and its cluster.
        engine: the node's in-memory streams.
        ring: returns the current ring.
        links: the peer links (batches travel as HandoffBatch calls).
        on_unreachable: told the name of an owner that could not be reached.
        retry_seconds: pause before retrying a failed transfer.
    """

    def __init__(
        self,
        name: str,
        cluster: str,
        engine: Engine,
        ring: Callable[[], Ring],
        links: Links,
        on_unreachable: Callable[[str], None],
        retry_seconds: float,
    ) -> None:
        self._name = name
        self._cluster = cluster
        self._engine = engine
        self._ring = ring
        self._links = links
        self._on_unreachable = on_unreachable
        self._retry = retry_seconds
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsettled: list[tuple[str, Handoff]] = []  # (target name, batch) of unknown fate
        self._applied: OrderedDict[str, None] = OrderedDict()
        self._lock = asyncio.Lock()
        # the node's in-memory leases, carried with their streams (set by Cluster.carry_leases)
        self.leases: Leases | None = None
        self.moved_out_total = 0
        self.moved_in_total = 0
        self.batches_total = 0

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._loop(), name="ipubsub-handoff")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_tasks([task])

    def trigger(self) -> None:
        """Ask for a reconcile pass soon (ring changed, or a non-owned stream
        was served here)."""
        self._wake.set()

    @property
    def pending(self) -> int:
        """Messages in transfers whose fate is not known yet."""
        return sum(len(hs.messages) + len(hs.leases) for _, batch in self._unsettled for hs in batch.streams)

    async def drain(self, timeout: float) -> bool:
        """Reconcile until nothing is left to move or ``timeout`` passes;
        return whether everything found a new home."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self.reconcile():
                return True
            if loop.time() + self._retry > deadline:
                return False
            await asyncio.sleep(self._retry)

    # -- moving out ----------------------------------------------------------------

    async def reconcile(self) -> bool:
        """One pass; returns True when nothing remains to be moved."""
        async with self._lock:
            ring = self._ring()
            done = await self._resend_unsettled(ring)
            targets: dict[str, list[str]] = {}
            stream_ids = self._engine.stream_ids()
            if self.leases is not None:  # a stream evicted while its messages are leased
                known = set(stream_ids)
                stream_ids += [s for s in self.leases.stream_ids() if s not in known]
            for i, stream_id in enumerate(stream_ids):
                owner = ring.owner(stream_id)
                if owner is not None and owner != self._name:
                    targets.setdefault(owner, []).append(stream_id)
                if i % 2000 == 1999:
                    await asyncio.sleep(0)  # a million streams must not stall the loop
            for owner, owned in targets.items():
                packed: list[PackedStream] = []
                for stream_id in owned:
                    one = pack_stream(self._engine, self.leases, stream_id, f"stream moved to node {owner}")
                    if one is not None:
                        packed.append(one)
                try:
                    for batch in self._batches([p.handed for p in packed]):
                        done &= await self._transfer(owner, ring, batch)
                finally:
                    for one in packed:  # history readers read again, wherever the history is now
                        release_history_readers(self._engine, one, f"stream moved to node {owner}")
            return done

    def _batches(self, streams: list[HandedStream]) -> list[Handoff]:
        batches: list[Handoff] = []
        current: list[HandedStream] = []
        count = size = 0
        for hs in streams:
            if current and (count + len(hs.messages) > _MAX_BATCH_MESSAGES or size > _MAX_BATCH_BYTES):
                batches.append(Handoff(self._cluster, new_uuid(), self._name, current))
                current, count, size = [], 0, 0
            current.append(hs)
            count += len(hs.messages) + len(hs.leases) + (len(hs.history.entries) if hs.history else 0)
            size += sum(len(m.message) + len(m.uuid) for m in hs.messages)
            size += sum(len(h.message.message) + len(h.receipt) for h in hs.leases)
            if hs.history is not None:
                size += sum(len(e.message.message) + len(e.message.uuid) for e in hs.history.entries)
        if current:
            batches.append(Handoff(self._cluster, new_uuid(), self._name, current))
        return batches

    async def _transfer(self, owner: str, ring: Ring, batch: Handoff) -> bool:
        try:
            reply = await self._links.call(owner, HandoffBatch(), encode(batch), timeout=10.0)
            status, body = reply.meta.status, reply.payload
        except LinkError as exc:
            self._on_unreachable(owner)
            if exc.may_have_reached:
                self._unsettled.append((owner, batch))
            else:
                self._take_back(batch)
            log.warning("hand-off of %d streams to %s failed (%s); will retry", len(batch.streams), owner, exc)
            return False
        if status != 200:
            log.warning("hand-off to %s refused (HTTP %d): %s", owner, status, body[:200])
            self._take_back(batch)
            return False
        moved = sum(len(hs.messages) + len(hs.leases) for hs in batch.streams)
        self.moved_out_total += moved
        self.batches_total += 1
        log.info("handed %d messages of %d streams to %s", moved, len(batch.streams), owner)
        return True

    async def _resend_unsettled(self, ring: Ring) -> bool:
        unsettled, self._unsettled = self._unsettled, []
        done = True
        for owner, batch in unsettled:
            if owner in ring and owner != self._name:
                done &= await self._transfer(owner, ring, batch)
            else:
                self._take_back(batch)  # its target left: the next pass re-homes it
                done = False
        return done

    def _take_back(self, batch: Handoff) -> None:
        for hs in batch.streams:
            restore_stream(self._engine, self.leases, hs)

    async def _loop(self) -> None:
        while True:
            await self._wake.wait()
            await asyncio.sleep(_DEBOUNCE_SECONDS)
            self._wake.clear()
            try:
                done = await self.reconcile()
            except Exception:
                log.exception("hand-off pass failed")
                done = False
            if not done:
                await asyncio.sleep(self._retry)
                self._wake.set()

    # -- moving in ---------------------------------------------------------------------

    def apply(self, body: bytes) -> int:
        """Take in a batch from a stream's previous owner (once per batch id);
        return how many messages it held.

        Raises:
            BadRequest: malformed payload.  WrongCluster: another cluster.
        """
        batch = decode(body, Handoff)
        if batch.cluster != self._cluster:
            raise WrongCluster(f"this node belongs to cluster {self._cluster!r}, not {batch.cluster!r}")
        if batch.batchId in self._applied:
            return 0
        self._applied[batch.batchId] = None
        while len(self._applied) > _REMEMBERED_BATCHES:
            self._applied.popitem(last=False)
        count = 0
        for hs in batch.streams:
            try:
                count += unpack_stream(self._engine, self.leases, hs)
            except ValueError as exc:
                log.error("stream %r handed over by %s: its history is dropped (%s)", hs.streamId, batch.sender, exc)
        self.moved_in_total += count
        ring = self._ring()
        if any(ring.owner(hs.streamId) not in (self._name, None) for hs in batch.streams):
            self.trigger()  # our view says someone else owns some: pass them on
        return count
