"""Judging at-least-once delivery: leased receives of in-memory streams and a
consumer group on each durable stream (see :mod:`.consumers`).

Per message of those streams whose send was acknowledged:

* **lost** — no consumer's ack of it succeeded (an ack whose outcome is
  unknown counts as a success).  For leases, a loss the first fault after
  the send explains (see :meth:`Analysis.explained_loss`) is allowed, as
  for any in-memory message; a consumer group's messages are durable: none.
* **duplicated** — delivered again after an ack of it succeeded: an
  acknowledged message must never come back.  Redeliveries before that (a
  lease that ended, a consumer that "crashed" without acking) are what
  at-least-once means, and are only counted in a note.
* **phantom** — a delivery of a message never sent, sent to another stream
  or of another kind, or with another payload.

Order is not promised once a message is delivered again, and not judged.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .analysis import Analysis, Row

__all__ = ["judge_leases"]

_KINDS = (("lease", "leased", "at-least-once leases (in-memory)"), ("group", "durable", "consumer group (durable)"))


def judge_leases(a: Analysis, row_type: type[Row]) -> list[Row]:
    """One row per kind of at-least-once consumer that ran (none if none did)."""
    rows = []
    for src, mode, title in _KINDS:
        deliveries = [t for t in a.takes if t["src"] == src]
        acks = [e for e in a.acks if e["src"] == src]
        if not deliveries and not acks:
            continue
        rows.append(_judge(a, row_type(title), src, mode, deliveries, acks))
    return rows


def _judge(a: Analysis, row: Row, src: str, mode: str, deliveries: list[dict[str, Any]],
           acks: list[dict[str, Any]]) -> Row:
    streams = {d["st"] for d in deliveries} | {e["st"] for e in acks}
    msgs = {u: m for u, m in a.msgs.items() if m.stream in streams and m.ack is not None}
    row.messages = len(msgs)
    acked_at: dict[str, float] = {}  # uuid -> when an ack of it surely succeeded (its answer came)
    maybe: set[str] = set()  # an ack of unknown outcome
    for e in acks:
        if e["res"] == "ok":
            missing = set(e.get("notFound") or [])
            for uuid, receipt in zip(e["uuids"], e["receipts"]):
                if receipt not in missing:
                    acked_at[uuid] = min(acked_at.get(uuid, e["t1"]), e["t1"])
        elif not e["status"] or e["status"] >= 500:
            maybe.update(e["uuids"])
    count: dict[str, int] = defaultdict(int)
    flagged: set[str] = set()
    for d in sorted(deliveries, key=lambda d: d["t0"]):
        why = a.mismatch(d, store=mode)
        if why:
            a.phantom(row, d, why)
            continue
        uuid = d["uuid"]
        count[uuid] += 1
        done = acked_at.get(uuid)
        if done is not None and d["t0"] > done and uuid not in flagged:
            flagged.add(uuid)
            row.dup += 1
            row.example(f"{uuid} delivered to {d['r']} at {d['t1']:.2f}s after an ack of it succeeded at {done:.2f}s")
            a.blame(d["t1"], "dup")
    for uuid, msg in msgs.items():
        if uuid in acked_at or uuid in maybe:
            continue
        ack = msg.ack
        assert ack is not None
        fault = a.explained_loss(msg, ack) if src == "lease" else None
        if fault is not None:
            row.excused += 1
            row.excused_by[fault["kind"]] = row.excused_by.get(fault["kind"], 0) + 1
            a.attributed[fault["number"]][f"lost@{fault['kind']}"] += 1
            continue
        row.lost += 1
        delivered = count.get(uuid, 0)
        row.example(f"{uuid} on {msg.stream} (acknowledged at {ack['t1']:.2f}s) never acknowledged by a consumer "
                    f"({delivered} deliveries)")
        a.blame(ack["t1"], "lost")
    again = sum(n - 1 for n in count.values() if n > 1)
    if again:
        row.notes.append(f"{again} deliveries again after a lease ended or a consumer dropped one (at-least-once)")
    return row
