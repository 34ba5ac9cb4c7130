"""Batches on a node: a batch send served where each item's stream is
owned, and batch receives (``maxMessages``) of in-memory streams and of the
durable log.

A batch send (:meth:`Batches.send_batch`) groups its items by owner:

* items this node serves: the in-memory ones enter their streams in request
  order, the durable ones are stored with one ``append_batch`` (one group
  commit, per-stream order kept);
* items owned elsewhere go to their owner as one sub-batch per owner
  (``sendBatch`` carrying the items' exact bodies), all owners concurrently;
  the owner serves every item of it itself.  If an owner cannot be reached
  and the items never got there, they are grouped again by the ring as it is
  then and tried once more (an owner that left hands its streams on); items
  that may have reached it are not sent again; what fails gets that error,
  item by item.

Every item gets its own result, in request order: its send's answer or its
error.  All items of one stream travel together (same owner, same sub-batch,
same transaction), so their order is kept end to end.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import msgspec

from .calls import Delivery, ReceiveCall, Relayed, SendCall, Sent
from .engine import Message, new_uuid
from .errors import IPubSubError, NodeDraining, PersistenceNotConfigured, error_from_response
from .observability.snapshot import NodeState
from .protocol import SendBatchReply
from .storage import NewMessage
from .storage.durable import MAX_READ_BATCH
from .storage.tokens import encode_token, encode_tokens

if TYPE_CHECKING:
    from .node import Node

__all__ = ["BatchResult", "Batches"]

#: one item's outcome: accepted here, refused, or the owner's answer as it came
BatchResult = Sent | IPubSubError | msgspec.Raw

_decode_reply = msgspec.json.Decoder(SendBatchReply).decode


def batch_uuids() -> Iterator[str]:
    """Ids for the items of one batch that name none: version-4 UUIDs that
    share one random prefix (74 random bits) and count up from a random
    48-bit node part — unique like independent UUID4s, at a fraction of the
    cost of drawing and formatting each."""
    base = new_uuid()
    prefix, start = base[:24], int(base[24:], 16)
    for i in itertools.count():
        yield f"{prefix}{(start + i) & 0xFFFF_FFFF_FFFF:012x}"


class Batches:
    """The batch calls of one node (see the module docstring)."""

    def __init__(self, node: Node) -> None:
        self._node = node

    # -- sending ---------------------------------------------------------------------

    async def send_batch(
        self,
        items: Sequence[SendCall | IPubSubError],
        *,
        forwarded_by: str | None = None,
        request_id: str | None = None,
    ) -> list[BatchResult]:
        """Accept the valid items of a batch, each where its stream is owned;
        one result per item, in request order (an item that is already an
        error stays that error).  A batch forwarded by a peer
        (``forwarded_by``) is served here entirely.  Never raises for one
        item's failure: that item's result is the error."""
        # each SendCall is a placeholder until its result replaces it
        results: list[BatchResult] = list(items)  # type: ignore[arg-type]
        todo = [i for i, item in enumerate(items) if isinstance(item, SendCall)]
        for attempt in (1, 2):
            groups = self._group(items, todo, forwarded_by)
            local = groups.pop(None, [])
            if not groups:  # all served here: no task per job
                await self._serve_here(items, local, results, forwarded_by)
                break
            jobs = [self._serve_here(items, local, results, forwarded_by)]
            jobs += [self._forward(owner, items, indexes, results, request_id) for owner, indexes in groups.items() if owner is not None]
            failed = await asyncio.gather(*jobs)
            todo = [i for indexes in failed for i in indexes]
            if not todo or attempt == 2:
                break
            # The owner was unreachable: retry with the ring as it is now,
            # but only items whose owner changed (the rest keep their error).
            todo = [i for i in todo if self._owner_of(items[i], forwarded_by) != _owner_name(results[i])]
        return results

    def _group(
        self, items: Sequence[SendCall | IPubSubError], indexes: list[int], forwarded_by: str | None
    ) -> dict[str | None, list[int]]:
        """The indexes per remote owner (``None``: served here), each owner
        looked up once per stream."""
        if forwarded_by is not None:
            self._node.calls.counts[("send", "for_peer")] += len(indexes)
            return {None: indexes} if indexes else {}
        groups: dict[str | None, list[int]] = {}
        owners: dict[str, str | None] = {}
        for i in indexes:
            stream_id = items[i].stream_id  # type: ignore[union-attr]
            owner = owners.get(stream_id, "")
            if owner == "":
                owner = owners[stream_id] = self._owner_of(items[i], None)
            group = groups.get(owner)
            if group is None:
                group = groups[owner] = []
            group.append(i)
        counts = self._node.calls.counts
        for owner, group in groups.items():
            counts[("send", "local" if owner is None else "forwarded")] += len(group)
        return groups

    def _owner_of(self, item: SendCall | IPubSubError, forwarded_by: str | None) -> str | None:
        """The remote owner of the item's stream, ``None`` to serve it here."""
        if forwarded_by is not None:
            return None
        assert isinstance(item, SendCall)
        node = self._node
        owner = node.cluster.owner(item.stream_id)
        return None if owner is None or owner == node.name else owner

    async def _serve_here(
        self,
        items: Sequence[SendCall | IPubSubError],
        indexes: list[int],
        results: list[BatchResult],
        forwarded_by: str | None,
    ) -> list[int]:
        """Serve items here: in-memory ones now in order, durable ones in one
        append.  Returns no indexes (nothing here is retried elsewhere)."""
        node = self._node
        memory: list[int] = []
        durable: list[int] = []
        for i in indexes:
            (durable if items[i].persist else memory).append(i)  # type: ignore[union-attr]
        if memory:
            self._send_memory(items, memory, results)
        if durable:
            await self._persist(items, durable, results)
        if forwarded_by is not None:
            for stream_id in {items[i].stream_id for i in indexes}:  # type: ignore[union-attr]
                node.cluster.served_elsewhere_owned(stream_id)
        return []

    def _send_memory(
        self, items: Sequence[SendCall | IPubSubError], indexes: list[int], results: list[BatchResult]
    ) -> None:
        """In-memory items enter their streams in request order, one
        timestamp for the batch; each fails alone (a new stream over
        ``limits.max_streams``, a full node)."""
        node = self._node
        if node.state is not NodeState.RUNNING and not len(node.cluster.ring):
            draining = NodeDraining("this node is shutting down; retry on another node", retry_after=1)
            for i in indexes:
                results[i] = draining
            return
        now = node.clock.time_us()
        engine = node.engine
        send = engine.send_nowait
        check_stream = node.limits.check_stream
        uuids = batch_uuids()
        for i in indexes:
            cmd: SendCall = items[i]  # type: ignore[assignment]
            stream_id = cmd.stream_id
            try:
                if stream_id not in engine:
                    check_stream(stream_id)
                msg = Message(cmd.uuid or next(uuids), cmd.payload, now)
                send(stream_id, msg, cmd.size, cmd.history)
            except IPubSubError as exc:
                results[i] = exc
            else:
                results[i] = Sent(msg.uuid)

    async def _persist(
        self, items: Sequence[SendCall | IPubSubError], indexes: list[int], results: list[BatchResult]
    ) -> None:
        node = self._node
        if node.durable is None:
            for i in indexes:
                results[i] = PersistenceNotConfigured(
                    "persistence is not configured on this node (storage.backend: none)", field="writeToDB"
                )
            return
        now = node.clock.time_us()
        stored = []
        uuids = batch_uuids()
        for i in indexes:
            cmd = items[i]
            assert isinstance(cmd, SendCall)
            stored.append(
                NewMessage(cmd.stream_id, cmd.uuid or next(uuids), cmd.payload, now, now + cmd.ttl_seconds * 1_000_000)
            )
        try:
            appended = await node.durable.append_batch(stored)
        except IPubSubError as exc:
            for i in indexes:
                results[i] = exc
            return
        for i, new, result in zip(indexes, stored, appended):
            results[i] = Sent(new.uuid, encode_token(new.stream_id, result.position))

    async def _forward(
        self,
        owner: str,
        items: Sequence[SendCall | IPubSubError],
        indexes: list[int],
        results: list[BatchResult],
        request_id: str | None,
    ) -> list[int]:
        """Send the items to their owner as one sub-batch; returns the indexes
        to try again: the owner could not be reached and the items never got
        there (their result is that error, tagged with the owner).  Items
        that may have reached it are never sent again (no duplicates)."""
        raws = [items[i].raw for i in indexes]  # type: ignore[union-attr]
        try:
            reply = await self._node.cluster.forward_send_batch(owner, raws, request_id or new_uuid())
        except IPubSubError as exc:
            exc.fields.setdefault("node", owner)
            for i in indexes:
                results[i] = exc
            return indexes if getattr(exc, "replay_safe", False) else []
        for i, result in zip(indexes, _owner_results(reply, len(indexes))):
            results[i] = result
        return []


def _owner_results(reply: Relayed, count: int) -> list[BatchResult]:
    """The owner's results of a sub-batch, one per item: passed through as
    they came, or the owner's error for every item when it refused the
    sub-batch as a whole (or answered something that is not a batch reply)."""
    if reply.status == 200:
        try:
            results = _decode_reply(reply.body).results
        except msgspec.DecodeError:
            results = []
        if len(results) == count:
            return list(results)
        error: IPubSubError = error_from_response(502, {"error": "the owner answered a batch with a bad reply"})
    else:
        try:
            body = msgspec.json.decode(reply.body)
        except msgspec.DecodeError:
            body = None
        retry = int(reply.retry_after) if reply.retry_after and reply.retry_after.isdigit() else None
        error = error_from_response(reply.status, body, retry_after=retry)
    return [error] * count


def _owner_name(result: BatchResult) -> str | None:
    return result.fields.get("node") if isinstance(result, IPubSubError) else None


# -- receiving ---------------------------------------------------------------------------


async def receive_memory_batch(node: Node, cmd: ReceiveCall, poll_id: str | None) -> list[Delivery]:
    """Take 1 to ``cmd.max_messages`` messages of an in-memory stream,
    waiting up to ``cmd.timeout`` s for the first (see
    :meth:`Engine.receive_many`: a poll cancelled before it answers gives
    every message back to the front, in order).

    Raises:
        ReceiveTimeout, StreamReleased: as :meth:`Engine.receive`.
    """
    assert cmd.max_messages is not None
    msgs = await node.engine.receive_many(cmd.stream_id, cmd.timeout, cmd.max_messages, poll_id)
    return [Delivery(msg) for msg in msgs]


async def read_log_batch(node: Node, cmd: ReceiveCall, after: int | None) -> list[Delivery]:
    """Read 1 to ``cmd.max_messages`` (at most :data:`MAX_READ_BATCH`) messages of the durable log after
    position ``after`` with one range read, waiting up to ``cmd.timeout`` s
    for the first; each carries its resume token (the last one's resumes
    after the batch).

    Raises:
        ReceiveTimeout, StorageUnavailable: as :meth:`DurableLog.read_batch`.
    """
    assert node.durable is not None and cmd.max_messages is not None
    stream_id = cmd.stream_id
    limit = min(cmd.max_messages, MAX_READ_BATCH)
    rows = await node.durable.read_batch(stream_id, after, cmd.timeout, limit)
    tokens = encode_tokens(stream_id, [row.position for row in rows])
    return [Delivery(Message(row.uuid, row.payload, row.timestamp_us), token) for row, token in zip(rows, tokens)]
