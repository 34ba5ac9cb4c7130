"""A stream's in-memory history: the window of recent messages that every
reader reads (fan-out), addressed by recoverable positions.

A history has an **epoch** (a random name for this incarnation of the
history: a new one whenever the history is created again — owner restart,
idle eviction, a node that took the stream over without its history) and
numbers its messages with consecutive **offsets** from 1.  A position
``epoch-offset`` names a message; reading *after* a position returns the
messages that follow it.  A position is valid while its epoch is the
history's and its offset is at least the one before the oldest message held
(:attr:`History.floor`); otherwise a reader that comes back with it is told
that it cannot be recovered — never given a silent gap.

The window is bounded by a count (``historySize``), an age
(``historyTTLSeconds``, measured from the message's timestamp, which moves
with it on hand-off) and bytes (the stream byte bound); every message that
leaves it is counted in :class:`HistoryStats` by reason.  This module holds
data structures only: the engine (:mod:`.history_reads`) drives them.
"""

from __future__ import annotations

import os
from collections import deque
from itertools import islice
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .message import Message

if TYPE_CHECKING:
    from .history_reads import ParkedRead

__all__ = [
    "DROP_REASONS",
    "History",
    "HistoryEntry",
    "HistoryRead",
    "HistorySpec",
    "HistoryState",
    "HistoryStats",
    "Position",
    "format_position",
    "new_epoch",
    "parse_position",
]

#: Why a message left a history: ``size`` (historySize reached), ``bytes``
#: (the stream's byte bound), ``budget`` (the node's byte budget, own history
#: first), ``ttl`` (older than historyTTLSeconds), ``evicted`` (the stream went
#: away: evicted when idle, or dropped).
DROP_REASONS: Final = ("size", "bytes", "budget", "ttl", "evicted")

#: Bytes charged per history entry on top of twice its message size (the
#: message, and the encoded answer fragment kept for readers).
ENTRY_OVERHEAD: Final = 128

_EPOCH_BYTES = 6
_MAX_POSITION_CHARS = 64
#: epochs of merged-in histories a history still translates (oldest forgotten first)
MAX_ALIASES: Final = 16


class Position(NamedTuple):
    """A parsed position: the history's epoch and a message offset (0: before the first)."""

    epoch: str
    offset: int


def new_epoch() -> str:
    """A fresh random epoch name (12 hex digits)."""
    return os.urandom(_EPOCH_BYTES).hex()


def format_position(epoch: str, offset: int) -> str:
    """The opaque text of a position, e.g. ``3f2a9c01b7de-42``."""
    return f"{epoch}-{offset}"


def parse_position(text: str) -> Position:
    """The position written by :func:`format_position`.

    Raises:
        ValueError: not a position.
    """
    if len(text) > _MAX_POSITION_CHARS or not text.isascii():
        raise ValueError("not a position")
    epoch, sep, digits = text.rpartition("-")
    if not sep or not epoch or not epoch.isalnum() or not digits.isdigit() or len(digits) > 18:
        raise ValueError("not a position")
    return Position(epoch, int(digits))


class HistorySpec(NamedTuple):
    """How a history is kept: ``size`` messages at most, each for ``ttl_seconds``."""

    size: int
    ttl_seconds: int


class HistoryEntry:
    """One message of a history at its offset.  ``encoded`` is a cache for
    the API's encoder (the answer fragment of this entry, made once and
    shared by every reader); the engine never reads it."""

    __slots__ = ("message", "offset", "encoded")

    def __init__(self, message: Message, offset: int) -> None:
        self.message = message
        self.offset = offset
        self.encoded: Any = None


class HistoryRead:
    """The answer to a history read.

    ``entries``: the messages read, oldest first (maybe none).  ``epoch`` and
    ``after``: the position to read after next time (the last entry's, or
    the reader's own when nothing came; ``epoch`` is ``None`` while the stream
    keeps no history yet).  ``recovered``: ``None`` when the read came
    without a position, ``True`` when everything after it was still held,
    ``False`` when not — then ``entries`` is empty, ``after`` is the oldest
    available position and ``gap`` says why (``"epoch"``: the history was
    recreated, ``"window"``: the messages after it left the window).

    An answer may be shared by the readers woken at the same position: treat
    it as read-only.  ``encoded`` is a cache for the API's encoder (the
    answer's body, made once for all of them); the engine never reads it.
    """

    __slots__ = ("entries", "epoch", "after", "recovered", "gap", "encoded")

    def __init__(
        self,
        entries: list[HistoryEntry],
        epoch: str | None,
        after: int,
        recovered: bool | None = None,
        gap: str | None = None,
    ) -> None:
        self.entries = entries
        self.epoch = epoch
        self.after = after
        self.recovered = recovered
        self.gap = gap
        self.encoded: bytes | None = None

    @property
    def position(self) -> str | None:
        """The position to read after next time, as text (``None``: no history yet)."""
        return None if self.epoch is None else format_position(self.epoch, self.after)


class HistoryState(NamedTuple):
    """A history as it moves to a stream's new owner (hand-off): its epoch,
    window settings, the offset of its newest message and its messages with
    their offsets, oldest first.  ``created_us`` decides which epoch survives
    when the new owner has started a history of its own meanwhile."""

    epoch: str
    size: int
    ttl_seconds: int
    top: int
    created_us: int
    messages: list[tuple[int, Message]]
    aliases: dict[str, tuple[int, int]] = {}  # noqa: RUF012 (never mutated: read by the importer only)


class HistoryStats:
    """Counters of every history of an engine.  Gauges go up and down;
    ``*_total`` only up."""

    __slots__ = (
        "histories",
        "messages",
        "bytes",
        "waiting_readers",
        "appended_total",
        "delivered_total",
        "reads_total",
        "recovered_total",
        "not_recovered_total",
        "dropped",
    )

    def __init__(self) -> None:
        self.histories = 0
        self.messages = 0
        self.bytes = 0
        self.waiting_readers = 0
        self.appended_total = 0
        self.delivered_total = 0  # copies handed to readers
        self.reads_total = 0
        self.recovered_total = 0  # reads with a position whose continuation was complete
        self.not_recovered_total = 0  # reads with a position answered "recovered": false
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)


def entry_cost(msg: Message) -> int:
    """Bytes a history entry of ``msg`` is charged."""
    return 2 * msg.size + ENTRY_OVERHEAD


class History:
    """The window of one stream, and the readers waiting at its top.

    A *pending* history (``spec`` is ``None``) has no epoch and no messages:
    it only holds readers that came before the stream's first send.

    ``aliases`` map the epochs of histories merged into this one (a node
    that started its own history before the hand-off arrived) to offsets
    here: ``alias epoch -> (their base, our base)``, position ``alias-k``
    being ``our base + k - their base`` here, so that positions of either
    epoch stay valid.
    """

    __slots__ = (
        "spec", "epoch", "created_us", "top", "entries", "nbytes", "readers", "live_readers", "wake_pending",
        "aliases",
    )

    def __init__(self, spec: HistorySpec | None, epoch: str | None = None, created_us: int = 0, top: int = 0) -> None:
        self.spec = spec
        self.epoch = epoch if epoch is not None or spec is None else new_epoch()
        self.created_us = created_us
        self.top = top  # offset of the newest message appended (0: none yet)
        self.entries: deque[HistoryEntry] = deque()
        self.nbytes = 0
        self.readers: list[ParkedRead] | None = None
        self.live_readers = 0
        self.wake_pending = False
        self.aliases: dict[str, tuple[int, int]] | None = None

    def translate(self, epoch: str, offset: int) -> int | None:
        """The offset here of position ``epoch-offset``: this epoch's, or an
        alias's translated; ``None`` for an epoch this history does not know."""
        if epoch == self.epoch:
            return offset
        alias = self.aliases.get(epoch) if self.aliases else None
        return None if alias is None else alias[1] + offset - alias[0]

    def add_alias(self, epoch: str, theirs: int, ours: int) -> None:
        """Position ``epoch-k`` is ``ours + k - theirs`` here from now on."""
        aliases = self.aliases
        if aliases is None:
            aliases = self.aliases = {}
        aliases.pop(epoch, None)
        aliases[epoch] = (theirs, ours)
        while len(aliases) > MAX_ALIASES:
            del aliases[next(iter(aliases))]

    @property
    def floor(self) -> int:
        """The oldest position still readable after: the offset before the oldest message held."""
        return self.top - len(self.entries)

    # -- the window --------------------------------------------------------------------

    def append(self, msg: Message, stats: HistoryStats) -> None:
        """Add ``msg`` at the next offset (bounds are applied by :meth:`trim`)."""
        self.top += 1
        self.entries.append(HistoryEntry(msg, self.top))
        cost = entry_cost(msg)
        self.nbytes += cost
        stats.messages += 1
        stats.bytes += cost
        stats.appended_total += 1

    def trim(self, now_us: int, max_bytes: int, stats: HistoryStats) -> None:
        """Drop the oldest messages beyond the count and byte bounds (the
        newest one stays), and those older than the TTL."""
        spec = self.spec
        if spec is None:
            return
        entries = self.entries
        while len(entries) > spec.size:
            self._drop_oldest(stats, "size")
        while self.nbytes > max_bytes and len(entries) > 1:
            self._drop_oldest(stats, "bytes")
        self.expire(now_us, stats)

    def expire(self, now_us: int, stats: HistoryStats) -> None:
        """Drop the messages older than the TTL (oldest first: a message that
        outlived it holds back none behind it for long, since ages only grow)."""
        spec = self.spec
        if spec is None:
            return
        limit = now_us - spec.ttl_seconds * 1_000_000
        entries = self.entries
        while entries and entries[0].message.timestamp_us <= limit:
            self._drop_oldest(stats, "ttl")

    def shed(self, nbytes: int, stats: HistoryStats) -> int:
        """Drop oldest messages (reason ``budget``) until ``nbytes`` are freed
        or one message is left; return the bytes freed."""
        freed = 0
        while freed < nbytes and len(self.entries) > 1:
            freed += self._drop_oldest(stats, "budget")
        return freed

    def clear(self, stats: HistoryStats, reason: str = "evicted") -> None:
        """Forget every message (counted under ``reason``) and this history."""
        n = len(self.entries)
        stats.dropped[reason] += n
        stats.messages -= n
        stats.bytes -= self.nbytes
        self.entries.clear()
        self.nbytes = 0

    def _drop_oldest(self, stats: HistoryStats, reason: str) -> int:
        entry = self.entries.popleft()
        cost = entry_cost(entry.message)
        self.nbytes -= cost
        stats.messages -= 1
        stats.bytes -= cost
        stats.dropped[reason] += 1
        return cost

    # -- reading -----------------------------------------------------------------------

    def after(self, offset: int, limit: int) -> list[HistoryEntry]:
        """Up to ``limit`` entries after ``offset`` (``floor <= offset <= top``), oldest first."""
        entries = self.entries
        n = len(entries)
        start = offset - self.floor
        stop = min(n, start + limit)
        if start >= stop:
            return []
        if start <= n - stop:  # nearer the oldest end
            return list(islice(entries, start, stop))
        picked = list(islice(reversed(entries), n - stop, n - start))
        picked.reverse()
        return picked

    def state(self) -> HistoryState:
        """This history as it moves to a new owner."""
        assert self.spec is not None and self.epoch is not None
        return HistoryState(
            self.epoch,
            self.spec.size,
            self.spec.ttl_seconds,
            self.top,
            self.created_us,
            [(e.offset, e.message) for e in self.entries],
            dict(self.aliases or {}),
        )

    @classmethod
    def from_state(cls, state: HistoryState, stats: HistoryStats) -> History:
        """A history rebuilt from a previous owner's :meth:`state` (same epoch, same offsets)."""
        history = cls(HistorySpec(state.size, state.ttl_seconds), state.epoch, state.created_us, state.top)
        for epoch, (theirs, ours) in state.aliases.items():
            history.add_alias(epoch, theirs, ours)
        offsets = [offset for offset, _ in state.messages]
        if offsets and offsets != list(range(state.top - len(offsets) + 1, state.top + 1)):
            raise ValueError("a handed-over history's offsets must be consecutive and end at its top")
        for offset, msg in state.messages:
            history.entries.append(HistoryEntry(msg, offset))
            cost = entry_cost(msg)
            history.nbytes += cost
            stats.messages += 1
            stats.bytes += cost
        return history
