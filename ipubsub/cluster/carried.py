"""What a stream carries to its new owner on a hand-off, besides its
buffered messages: its leased messages (same receipts, same delivery
numbers, the rest of each lease) and its fan-out history (same epoch, same
offsets).  So an ack sent after a ring change still finds its lease, and a
history reader's position stays valid.

:func:`pack_stream` takes all of it out of this node (engine and leases);
:func:`unpack_stream` puts a received stream into this node;
:func:`restore_stream` puts back a stream whose hand-off surely failed.
"""

from __future__ import annotations

import msgspec

from ..engine import Engine, HeldLease, HistoryState, Leases, Message
from ..engine.history import History
from .messages import HandedHistory, HandedHistoryEntry, HandedLease, HandedMessage, HandedStream

__all__ = ["PackedStream", "pack_stream", "release_history_readers", "restore_stream", "unpack_stream"]


class PackedStream:
    """A stream taken out of this node for a hand-off, and the history
    object whose waiting readers are released once its fate is known."""

    __slots__ = ("handed", "history")

    def __init__(self, handed: HandedStream, history: History | None) -> None:
        self.handed = handed
        self.history = history


def pack_stream(engine: Engine, leases: Leases | None, stream_id: str, reason: str) -> PackedStream | None:
    """Take a stream out of this node: its history (readers left waiting on
    the returned history object), its buffer (waiters released with
    ``reason``) and its leases.  ``None`` if there is nothing to move."""
    exported = engine.export_history(stream_id)
    detached = engine.detach(stream_id, reason)
    held = leases.detach(stream_id) if leases is not None else []
    capacity, msgs = detached if detached is not None else (None, [])
    if not msgs and not held and exported is None:
        return None
    handed = HandedStream(
        stream_id,
        capacity,
        [_handed(m) for m in msgs],
        [HandedLease(h.receipt, _handed(h.message), h.delivery, h.max_deliveries, h.remaining_seconds) for h in held],
        _handed_history(exported[0]) if exported is not None else None,
    )
    return PackedStream(handed, exported[1] if exported is not None else None)


def unpack_stream(engine: Engine, leases: Leases | None, hs: HandedStream) -> int:
    """Put a stream handed over by its previous owner into this node:
    messages ahead of anything accepted here since, then its leases
    (receipts unchanged), then its history (merged with one started here
    meanwhile).  Returns how many buffered and leased messages it held.

    Raises:
        ValueError: the history's offsets are not consecutive up to its top.
    """
    engine.attach(hs.streamId, hs.capacity, [_message(m) for m in hs.messages])
    if hs.leases:
        if leases is None:  # nobody to hold them: back into the stream, not counted
            engine.give_back(hs.streamId, [_message(h.message) for h in hs.leases], hs.capacity)
        else:
            leases.attach(hs.streamId, [_held(h) for h in hs.leases], hs.capacity)
    if hs.history is not None:
        engine.import_history(hs.streamId, _history_state(hs.history))
    return len(hs.messages) + len(hs.leases)


def restore_stream(engine: Engine, leases: Leases | None, hs: HandedStream) -> None:
    """A hand-off that surely did not arrive: everything back into this
    node as it was (a later pass moves it again)."""
    unpack_stream(engine, leases, hs)


def release_history_readers(engine: Engine, packed: PackedStream, reason: str) -> None:
    """Let the readers left waiting on a moved history go (they read again
    and find the history where it is now)."""
    if packed.history is not None:
        engine.release_readers(packed.history, reason)
        packed.history = None


def _handed(msg: Message) -> HandedMessage:
    return HandedMessage(msg.uuid, msgspec.Raw(msg.payload), msg.timestamp_us, msg.deliveries)


def _message(m: HandedMessage) -> Message:
    return Message(m.uuid, bytes(m.message), m.timestampUs, m.deliveries)


def _held(h: HandedLease) -> HeldLease:
    return HeldLease(h.receipt, _message(h.message), h.delivery, h.maxDeliveries, h.remainingSeconds)


def _handed_history(state: HistoryState) -> HandedHistory:
    return HandedHistory(
        state.epoch,
        state.size,
        state.ttl_seconds,
        state.top,
        state.created_us,
        [HandedHistoryEntry(offset, _handed(msg)) for offset, msg in state.messages],
        dict(state.aliases),
    )


def _history_state(h: HandedHistory) -> HistoryState:
    return HistoryState(
        h.epoch,
        h.size,
        h.ttlSeconds,
        h.top,
        h.createdUs,
        [(e.offset, _message(e.message)) for e in h.entries],
        {epoch: (theirs, ours) for epoch, (theirs, ours) in h.aliases.items()},
    )
