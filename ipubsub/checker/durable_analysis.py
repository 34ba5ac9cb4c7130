"""Judging the durable log (``writeToDB`` sends, replay readers following
tokens): see :mod:`.analysis` for the rules."""

from __future__ import annotations

import heapq
from collections import defaultdict
from typing import TYPE_CHECKING, Any

from ..errors import InvalidToken
from ..storage.tokens import decode_token

if TYPE_CHECKING:
    from .analysis import Analysis, Msg, Row

__all__ = ["judge_durable"]


def judge_durable(a: Analysis, row_type: type[Row]) -> Row:
    """The durable log's row (the rules: :mod:`.analysis`)."""
    row = row_type("durable log (writeToDB)")
    acked = {u: m for u, m in a.msgs.items() if m.mode == "durable" and m.ack}
    row.messages = len(acked)
    positions: dict[str, set[int]] = defaultdict(set)
    readers: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for take in a.takes:
        if take["src"] == "log" and take.get("ab"):  # an abandoned read: only what it got matters
            why = a.mismatch(take) if a.stream_mode.get(take["st"]) == "durable" else "not a durable stream"
            if why:
                a.phantom(row, take, why)
        elif take["src"] == "log":
            readers[take["r"]].append(take)
        elif take["src"] == "mem" and (take["m"] == "durable" or a.msg_mode(take) == "durable"):
            a.phantom(row, take, "a durable message taken from an in-memory queue")
    flagged: dict[str, set[str]] = defaultdict(set)
    for reader, seq in readers.items():
        last = -1
        seen: set[str] = set()
        for take in sorted(seq, key=lambda t: (t["t0"], t.get("k", 0))):
            uuid, stream = take["uuid"], take["st"]
            if a.stream_mode.get(stream) != "durable":
                a.phantom(row, take, "the durable log of an in-memory stream returned a message")
                continue
            why = a.mismatch(take)
            if why:
                a.phantom(row, take, why)
                continue
            pos = _position(take.get("token"), stream)
            if pos is None:
                row.other += 1
                row.example(f"{reader} got {uuid} with an unreadable token {take.get('token')!r}")
                continue
            positions[uuid].add(pos)
            if uuid in seen and uuid not in flagged["dup"]:
                flagged["dup"].add(uuid)
                row.dup += 1
                row.example(f"{reader} read {uuid} twice (at {take['t0']:.2f}s)")
                a.blame(take["t0"], "dup")
            elif pos <= last and uuid not in seen:
                row.reorder += 1
                row.example(f"{reader} read position {pos} ({uuid}) after {last}")
                a.blame(take["t0"], "reorder")
            seen.add(uuid)
            last = max(last, pos)
    for uuid, where in positions.items():
        if len(where) > 1 and uuid not in flagged["dup"]:
            flagged["dup"].add(uuid)
            row.dup += 1
            row.example(f"{uuid} stored at positions {sorted(where)}")
    seen_by = {r: {t["uuid"] for t in seq} for r, seq in readers.items()}
    reached = _reached(a, readers)
    behind = 0
    replayers: dict[str, set[str]] = defaultdict(set)  # stream -> its replay readers
    for take in a.takes + a.inflight:
        if take["src"] == "log" and not take.get("ab") and a.stream_mode.get(take["st"]) == "durable":
            replayers[take["st"]].add(take["r"])
    for uuid, msg in acked.items():
        ack = msg.ack
        assert ack is not None
        missed = [r for r in sorted(replayers[msg.stream]) if uuid not in seen_by.get(r, set())]
        at = _position(ack.get("token"), msg.stream)
        if missed and at is not None and not any(reached[r](at, ack["t1"]) for r in missed):
            behind += 1  # no reader that missed it went past it: they were still behind when the run ended
        elif missed:
            row.lost += 1
            row.example(f"{uuid} (acknowledged at {ack['t1']:.2f}s) never read by {', '.join(missed)}")
            a.blame(ack["t1"], "lost")
        read_at = positions.get(uuid)
        if read_at and ack.get("token") is not None and _position(ack["token"], msg.stream) not in read_at:
            row.other += 1
            row.example(f"{uuid}: the send answered a token of another position than readers see")
    row.reorder += _writer_order_in_log(acked, positions, row)
    recovered = sum(1 for u, m in a.msgs.items() if m.mode == "durable" and not m.ack and u in positions)
    if recovered:
        row.notes.append(f"{recovered} sends with no answer were stored (allowed: outcome unknown)")
    if row.other:
        row.notes.append(f"{row.other} token anomalies")
    if behind:
        row.notes.append(f"{behind} not read yet by replay readers still behind them when the run ended "
                         "(not judged: see the drain in the recovery row)")
    return row


def _reached(a: Analysis, readers: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per replay reader, whether it went past a position ``p`` stored by
    time ``t``: it read a later position, or a read after a token before
    ``p`` that began after ``t`` found nothing (so a message it never read
    was skipped, not just not reached yet)."""
    furthest: dict[str, int] = {}
    for reader, seq in readers.items():
        positions = [p for p in (_position(t.get("token"), t["st"]) for t in seq) if p is not None]
        furthest[reader] = max(positions, default=-1)
    empty: dict[str, list[tuple[float, int]]] = defaultdict(list)  # reader -> (began, after position)
    for e in a.caught_up:
        after = _position(e.get("after"), e["st"]) if e.get("after") else -1
        if after is not None and not e.get("ab"):
            empty[e["r"]].append((e["t0"], after))

    def judge(reader: str) -> Any:
        return lambda p, t: furthest.get(reader, -1) > p or any(t0 > t and after < p for t0, after in empty[reader])

    return defaultdict(lambda: (lambda p, t: True), {r: judge(r) for r in set(readers) | set(empty)})

def _writer_order_in_log(acked: dict[str, Msg], positions: dict[str, set[int]], row: Row) -> int:
    count = 0
    chains: dict[tuple[str, str], list[Msg]] = defaultdict(list)
    for msg in acked.values():
        chains[(msg.writer, msg.stream)].append(msg)
    for chain in chains.values():
        waiting: list[tuple[float, int, int]] = []  # (its accepted send began, seq, position)
        last = -1
        for msg in sorted(chain, key=lambda m: m.seq):
            while waiting and waiting[0][0] <= msg.attempts[0]["t0"]:  # see _memory_order
                last = max(last, heapq.heappop(waiting)[2])
            where = positions.get(msg.uuid)
            ack = msg.ack
            if not where or ack is None:
                continue
            if min(where) < last:
                count += 1
                row.example(f"{msg.uuid} stored before an earlier message of {msg.writer}")
            heapq.heappush(waiting, (ack["t0"], msg.seq, min(where)))
    return count


def _position(token: str | None, stream: str) -> int | None:
    if not token:
        return None
    try:
        return decode_token(token, stream)
    except InvalidToken:
        return None
