"""Judging fan-out histories (see :mod:`.followers`): every reader gets every
message, in order, from its own position — or is told it cannot
(``recovered: false``): never a silent gap.

Per reader of a history stream, and per message whose send was
acknowledged:

* **lost** — the reader never read it, read a message sent after it was
  acknowledged (so it went past it), and no answer to it reported a gap
  after the message was sent (a gap it was told of is allowed and counted
  in ``lost@fault``: the history was recreated, or the message left it).
  A reader that read nothing sent after it was still behind it when the
  run ended: counted in a note, not judged.
* **duplicated** — the reader read it more often than its sends may have
  been accepted.
* **reordered** — two messages of one writer read in the other order than
  they were sent (sent one after the other), with no ring change and no
  reported gap in between; ``other``: a reader's positions in one epoch
  did not increase.
* **phantom** — a message never sent, of another stream or kind, or with
  another payload.

Besides, ``other`` counts every ``gap: epoch`` a reader was told during a
planned ring change (a join, a graceful leave, a SIGTERM and restart of a
node with peers): the history moves with its epoch and offsets then, so
positions stay valid.  Only a SIGKILL, a lone node's restart, a pause or a
partition may end an epoch: a gap told after one of them began, since the
reader's last message, is allowed.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analysis import Analysis, Row

__all__ = ["judge_history"]

#: ring changes that move a history with its epoch (a SIGTERM's restart is a join)
PLANNED = frozenset({"join", "term", "leave"})


def judge_history(a: Analysis, row_type: type[Row]) -> list[Row]:
    """The fan-out row (none if no history reader ran)."""
    reads = [t for t in a.takes if t["src"] == "history"]
    if not reads:
        return []
    row = row_type("fan-out history (every reader)")
    streams = {t["st"] for t in a.takes + a.inflight if t["src"] == "history"}
    msgs = {u: m for u, m in a.msgs.items() if m.stream in streams and m.ack is not None}
    row.messages = len(msgs)
    by_reader: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for t in reads:
        by_reader[t["r"]].append(t)
    readers_of: dict[str, set[str]] = defaultdict(set)
    for t in a.takes + a.inflight:
        if t["src"] == "history":
            readers_of[t["st"]].add(t["r"])
    gaps: dict[str, list[float]] = defaultdict(list)  # reader -> when answers reported a gap
    ending = _epoch_endings(a)
    read_at: dict[str, list[float]] = defaultdict(list)  # reader -> when its reads got messages, in order
    for t in reads:
        read_at[t["r"]].append(t["t1"])
    for times in read_at.values():
        times.sort()
    for g in a.gaps:
        gaps[g["r"]].append(g["t0"])
        kind = a.timeline.kind(a.timeline.fault_at(g["t0"]))
        times = read_at[g["r"]]
        i = bisect.bisect_right(times, g["t0"])
        since = times[i - 1] if i else 0.0  # the reader's last message before the gap
        if g.get("gap") == "epoch" and kind in PLANNED and not any(since - 0.5 <= t <= g["t1"] for t in ending):
            row.other += 1
            row.example(f"{g['r']} was told at {g['t1']:.2f}s (via {g['via']}) that {g['st']}'s history was "
                        f"recreated, during a planned {kind}: positions must stay valid across it")
            a.blame(g["t0"], "epoch gap")
    lost: set[str] = set()
    told: set[str] = set()
    behind: set[str] = set()
    dup: set[str] = set()
    for reader, seq in by_reader.items():
        seq.sort(key=lambda t: (t["t0"], t.get("k", 0)))
        got: dict[str, int] = defaultdict(int)
        last: tuple[str, int] | None = None
        for t in seq:
            why = a.mismatch(t, store="history")
            if why:
                a.phantom(row, t, why)
                continue
            got[t["uuid"]] += 1
            pos = _position(t.get("pos"))
            if pos is not None and last is not None and pos[0] == last[0] and pos[1] <= last[1]:
                row.other += 1
                row.example(f"{reader} read {t['uuid']} at position {t.get('pos')} after {last[0]}-{last[1]}")
            last = pos or last
        for uuid, n in got.items():
            if n > max(1, a.msgs[uuid].may_be_accepted) and uuid not in dup:
                dup.add(uuid)
                row.dup += 1
                row.example(f"{reader} read {uuid} {n} times")
        latest = max((a.msgs[u].attempts[0]["t0"] for u in got), default=float("-inf"))
        # per gap told to this reader: when, and the latest send among what it had read before it
        ends: list[float] = []
        highest: list[float] = []  # reads by end time, and the latest send read up to each
        for end, sent_at in sorted((t["t1"], a.msgs[t["uuid"]].attempts[0]["t0"]) for t in seq if t["uuid"] in a.msgs):
            ends.append(end)
            highest.append(max(sent_at, highest[-1]) if highest else sent_at)
        before_gap = []
        for when in gaps[reader]:
            i = bisect.bisect_right(ends, when)
            before_gap.append((when, highest[i - 1] if i else float("-inf")))
        for uuid, msg in msgs.items():
            if uuid in got or reader not in readers_of[msg.stream] or uuid in lost:
                continue
            sent = msg.attempts[0]["t0"]
            # a told gap covers a message sent before it that the reader had not gone past yet
            if any(when >= sent and had <= msg.ack["t1"] for when, had in before_gap):  # type: ignore[index]
                told.add(uuid)
                continue
            if latest <= msg.ack["t1"]:  # type: ignore[index]
                behind.add(uuid)  # it read nothing sent after this one was stored: not there yet
                continue
            lost.add(uuid)
            row.example(f"{reader} never read {uuid} (acknowledged at {msg.ack['t1']:.2f}s), "  # type: ignore[index]
                        "and was told of no gap")
            a.blame(msg.attempts[-1]["t1"], "lost")
        row.reorder += _order(a, row, reader, seq, gaps[reader])
    row.lost = len(lost)
    told -= lost
    if told:
        row.excused += len(told)
        row.notes.append(f"{len(told)} not read by a reader that was told of a gap after they were sent "
                         "(recovered: false — allowed)")
    behind -= lost | told
    if behind:
        row.notes.append(f"{len(behind)} not read yet by a reader still behind them when the run ended "
                         "(not judged: see the drain in the recovery row)")
    return [row]


def _epoch_endings(a: Analysis) -> list[float]:
    """When faults that may end a history's epoch began: a SIGKILL, a pause,
    a partition, a lone node's restart (``solo``, or a SIGTERM of a node
    that was alone in its ring)."""
    out = []
    for fault in a.faults.values():
        begin = fault.get("begin", {})
        kind, node = fault.get("kind"), fault.get("node")
        alone = begin.get("views", {}).get(node) == [node]
        if "t" in begin and (kind in ("kill", "pause", "partition", "solo") or (kind == "term" and alone)):
            out.append(begin["t"])
    return out


def _order(a: Analysis, row: Row, reader: str, seq: list[dict[str, Any]], gaps: list[float]) -> int:
    count = 0
    last_seq: dict[tuple[str, str], tuple[int, float]] = {}  # (writer, stream) -> (seq, when read)
    for t in seq:
        msg = a.msgs.get(t["uuid"])
        if msg is None or msg.ack is None:
            continue
        key = (msg.writer, msg.stream)
        before = last_seq.get(key)
        if before is not None and msg.seq < before[0]:
            earlier_sent = msg.attempts[0]["t0"]
            if any(earlier_sent <= g <= t["t1"] for g in gaps) or a.timeline.ring_changed(earlier_sent, t["t1"]):
                row.reorder_ring += 1
            else:
                count += 1
                row.example(f"{reader} read {t['uuid']} after a later message of {msg.writer}")
                a.blame(t["t1"], "reorder")
        if before is None or msg.seq > before[0]:
            last_seq[key] = (msg.seq, t["t1"])
    return count


def _position(text: Any) -> tuple[str, int] | None:
    """``(epoch, offset)`` of a history position ``EPOCH-OFFSET``."""
    if not isinstance(text, str) or "-" not in text:
        return None
    epoch, _, offset = text.rpartition("-")
    return (epoch, int(offset)) if offset.isdigit() else None
