"""Buffered in-memory messages kept across a planned restart of a lone node.

A node that stops with no peer to hand its buffers to spills them to its
durable backend under its own name (:func:`spill_buffers`), and restores
them into the engine, in order, when it starts again, before it serves
anything (:func:`restore_buffers`).  Exactly once: the restore deletes the
rows only after the messages are in the engine, and nothing reads the engine
until it returns (see :meth:`DurableLog.restore_spilled`).  Without a
reachable database nothing changes: a stop loses the buffers (logged), a
start leaves the rows for the next start that reaches it.
"""

from __future__ import annotations

import logging

from .engine import Engine, Message
from .errors import StorageUnavailable
from .storage.base import SpilledMessage, SpilledStream
from .storage.durable import DurableLog

__all__ = ["restore_buffers", "spill_buffers"]

log = logging.getLogger("ipubsub.node")


async def spill_buffers(engine: Engine, durable: DurableLog, node: str) -> int:
    """Move every buffered stream out of ``engine`` into the database;
    return how many messages were kept.  If the database fails them, they
    go back into the engine (and are reported lost with it)."""
    streams: list[SpilledStream] = []
    for stream_id in engine.stream_ids():
        if not engine.buffered(stream_id):
            continue
        detached = engine.detach(stream_id, "node is shutting down")
        if detached is not None and detached[1]:
            capacity, msgs = detached
            spilled = [SpilledMessage(m.uuid, m.payload, m.timestamp_us) for m in msgs]
            streams.append(SpilledStream(stream_id, capacity, spilled))
    if not streams:
        return 0
    try:
        count = await durable.spill(node, streams)
    except StorageUnavailable as exc:
        _attach(engine, streams)
        log.error("could not spill buffered messages to the database: %s", exc.message)
        return 0
    log.info("spilled %d buffered in-memory messages of %d streams to the database", count, len(streams))
    return count


async def restore_buffers(engine: Engine, durable: DurableLog, node: str) -> int:
    """Put back what this node spilled at its last stop, in order; return
    how many messages.  Call before serving anything."""
    try:
        count = await durable.restore_spilled(node, lambda streams: _attach(engine, streams), lambda streams: _detach(engine, streams))
    except StorageUnavailable as exc:
        log.warning("spilled messages (if any) stay in the database until the next start: %s", exc.message)
        return 0
    if count:
        log.info("restored %d buffered in-memory messages spilled at the last stop", count)
    return count


def _attach(engine: Engine, streams: list[SpilledStream]) -> None:
    for stream in streams:  # a stream spilled twice comes twice, older spill first
        msgs = [Message(m.uuid, m.payload, m.timestamp_us) for m in stream.messages]
        engine.attach(stream.stream_id, stream.capacity, msgs)


def _detach(engine: Engine, streams: list[SpilledStream]) -> None:
    for stream_id in {stream.stream_id for stream in streams}:
        engine.detach(stream_id, "restore undone")
