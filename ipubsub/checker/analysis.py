"""Checking a history against each guarantee of the README.

Built from the history file alone, so anyone can re-check a run.  Counts,
per guarantee (each message counted once per kind of anomaly):

* **lost** — acknowledged (a send answered 200) and never received: for the
  durable log, missing from the sequence of a replay reader of its stream;
  for an in-memory mode, never taken by any receiver.  An in-memory loss is
  *allowed* (counted apart) when the first fault after the message was sent
  explains it: a SIGKILL of a node that owned its stream in some node's
  ring at that moment, or a SIGKILL or a partition while a receive of that
  stream was in flight through a node it cut off (the message may have been
  on the wire to that receive).
* **duplicated** — durable: a reader saw a message twice, or it sits at two
  positions; in-memory: taken more often than its sends may have been
  accepted (a send answered 200 or with an unknown outcome — a retry after
  an unknown outcome may legitimately enqueue it twice, counted as
  ``retry copies``, not as a broken promise).
* **reordered** — durable: a reader's positions did not strictly increase,
  or a writer's acknowledged messages sit in the log out of their order;
  in-memory: for two acknowledged messages of one writer on one stream, the
  later one was taken by a receive that ended before the receive that took
  the earlier one had even started (real-time order, sound with concurrent
  receivers).
* **phantom** — received but never sent, sent to another stream, with
  another payload, from the other store (a durable message taken from a
  queue, anything in the log of an in-memory stream), or taken although
  every send of it was refused.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..cluster.ring import Ring
from .durable_analysis import judge_durable
from .history_analysis import judge_history
from .leases_analysis import judge_leases
from .timeline import Timeline

__all__ = ["Analysis", "Row"]

MEMORY = ("circular", "blocking", "sync")
#: how long a message handed to a receiver that went away may take to be given back
GIVE_BACK_SECONDS = 2.0


@dataclass
class Msg:
    uuid: str
    writer: str
    seq: int
    mode: str
    stream: str
    attempts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ack(self) -> dict[str, Any] | None:
        return next((a for a in self.attempts if a["res"] == "ok"), None)

    @property
    def may_be_accepted(self) -> int:
        return sum(1 for a in self.attempts if a["res"] in ("ok", "unknown"))

    def payload(self, run: str) -> dict[str, Any]:
        return {"c": run, "w": self.writer, "s": self.seq, "st": self.stream, "m": self.mode}


@dataclass
class Row:
    """One guarantee's verdict."""

    guarantee: str
    messages: int = 0  # acknowledged messages it covers
    lost: int = 0
    dup: int = 0
    reorder: int = 0
    phantom: int = 0
    excused: int = 0  # lost, explained by a SIGKILL or a partition
    excused_by: dict[str, int] = field(default_factory=dict)  # fault kind -> count
    reorder_ring: int = 0  # reordered across a ring change (not promised)
    reorder_giveback: int = 0  # overtaken while a receiver that went away gave it back (not promised)
    other: int = 0  # broken in another way (see notes)
    notes: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    @property
    def broken(self) -> bool:
        return bool(self.lost or self.dup or self.reorder or self.phantom or self.other)

    def example(self, text: str) -> None:
        if len(self.examples) < 8:
            self.examples.append(text)


class Analysis:
    """Reads the events of one run and judges them (see the module doc)."""

    def __init__(self, events: Iterable[dict[str, Any]]) -> None:
        self.meta: dict[str, Any] = {}
        self.msgs: dict[str, Msg] = {}
        self.takes: list[dict[str, Any]] = []  # receives that got a message
        self.acks: list[dict[str, Any]] = []  # at-least-once consumers' acks
        self.gaps: list[dict[str, Any]] = []  # history reads told recovered: false
        self.inflight: list[dict[str, Any]] = []  # receives that ended in an error
        self.caught_up: list[dict[str, Any]] = []  # durable reads that found nothing after their token
        self.faults: dict[int, dict[str, Any]] = {}
        self.rings: list[dict[str, Any]] = []
        self.phases: dict[str, dict[str, Any]] = {}
        self.stream_mode: dict[str, str] = {}
        for event in events:
            self._add(event)
        self.run = str(self.meta.get("run", ""))
        self.vnodes = int(self.meta.get("vnodes", 160))
        self._rings: dict[tuple[str, ...], Ring] = {}
        self.timeline = Timeline(self.faults, self.rings, self.phases.get("faults", {}).get("t", 0.0))
        first_take: dict[str, float] = {}
        for take in self.takes:
            if take["src"] in ("mem", "lease") and take["uuid"] in self.msgs:
                first_take[take["uuid"]] = min(first_take.get(take["uuid"], take["t1"]), take["t1"])
        # stream -> (first sent, first taken) of its messages, for _overtaken
        self._by_stream: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for uuid, taken in first_take.items():
            msg = self.msgs[uuid]
            self._by_stream[msg.stream].append((msg.attempts[0]["t0"], taken))
        self.attributed: dict[int | None, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.rows = [judge_durable(self, Row)] + [self._memory(mode) for mode in MEMORY]
        self.rows += judge_leases(self, Row) + judge_history(self, Row) + [self._recovery()]
        for row in self.rows:
            for kind, count in sorted(row.excused_by.items()):
                row.notes.append(f"{count} lost at a {'SIGKILL' if kind == 'kill' else 'partition'} (allowed: "
                                 + ("in the killed node's buffers, or on their way to a receive through it)"
                                    if kind == "kill" else "on their way to a receive through a cut connection)"))

    def _add(self, e: dict[str, Any]) -> None:
        kind = e.get("ev")
        if kind == "send":
            msg = self.msgs.get(e["uuid"])
            if msg is None:
                msg = self.msgs[e["uuid"]] = Msg(e["uuid"], e["w"], e["seq"], e["m"], e["st"])
            msg.attempts.append(e)
            self.stream_mode[e["st"]] = e["m"]
        elif kind == "recv":
            self.stream_mode.setdefault(e["st"], e["m"])
            if e["res"] == "ok":
                self.takes.append(e)
            elif e["res"] in ("error", "aborted"):
                self.inflight.append(e)
            elif e["res"] == "empty" and e["src"] == "log":
                self.caught_up.append(e)
        elif kind == "fault":
            self.faults.setdefault(e["number"], {}).update({f"{e['phase']}": e, **e})
        elif kind == "ring":
            self.rings.append(e)
        elif kind == "ack":
            self.acks.append(e)
        elif kind == "gap":
            self.gaps.append(e)
        elif kind == "phase":
            self.phases[e["name"]] = e
        elif kind == "meta":
            self.meta = e

    @property
    def broken(self) -> bool:
        return any(row.broken for row in self.rows)

    # -- in-memory modes --------------------------------------------------------------

    def _memory(self, mode: str) -> Row:
        row = Row(f"in-memory {mode}")
        msgs = {u: m for u, m in self.msgs.items() if m.mode == mode}
        row.messages = sum(1 for m in msgs.values() if m.ack)
        takes_of: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for take in self.takes:
            if take["src"] != "mem" or take["m"] != mode:
                continue
            why = self.mismatch(take)
            if why:
                if self.msg_mode(take) != "durable":  # those are the durable row's
                    self.phantom(row, take, why)
                continue
            msg = msgs[take["uuid"]]
            if msg.may_be_accepted == 0:
                self.phantom(row, take, "taken although every send of it was refused")
                continue
            takes_of[take["uuid"]].append(take)
        copies = 0
        for uuid, takes in takes_of.items():
            allowed = max(1, msgs[uuid].may_be_accepted)
            if len(takes) > allowed:
                row.dup += 1
                row.example(f"{uuid} taken {len(takes)} times, sent at most {allowed} times")
                self.blame(sorted(t["t1"] for t in takes)[1], "dup")
            elif len(takes) > 1:
                copies += 1
        if copies:
            row.notes.append(f"{copies} retry copies (a resend after an unknown outcome, taken twice: allowed)")
        for uuid, msg in msgs.items():
            ack = msg.ack
            if ack is None or uuid in takes_of:
                continue
            fault = self.explained_loss(msg, ack)
            if fault is not None:
                row.excused += 1
                row.excused_by[fault["kind"]] = row.excused_by.get(fault["kind"], 0) + 1
                self.attributed[fault["number"]][f"lost@{fault['kind']}"] += 1
            else:
                row.lost += 1
                row.example(f"{uuid} on {msg.stream} (acknowledged at {ack['t1']:.2f}s via {ack['via']}) "
                            f"never taken{self._unanswered_poll(msg.stream, ack['t1'])}")
                self.blame(ack["t1"], "lost")
        self._memory_order(msgs, takes_of, row)
        if row.reorder_ring:
            row.notes.append(f"{row.reorder_ring} taken out of order across a ring change (not promised)")
        if row.reorder_giveback:
            row.notes.append(f"{row.reorder_giveback} taken before an earlier message that a receiver which "
                             "went away was giving back (not promised)")
        return row

    def _memory_order(self, msgs: dict[str, Msg], takes_of: dict[str, list[dict[str, Any]]], row: Row) -> None:
        chains: dict[tuple[str, str], list[Msg]] = defaultdict(list)
        for msg in msgs.values():
            if msg.ack is not None and msg.uuid in takes_of:
                chains[(msg.writer, msg.stream)].append(msg)
        for chain in chains.values():
            # A message counts as "earlier" than j only if the send that got
            # it accepted began no later than j's first send (a writer's
            # retried item may legitimately land behind later ones).
            waiting: list[tuple[float, int, float, Msg]] = []  # (its accepted send began, seq, taken from, msg)
            latest_start = float("-inf")
            before: Msg | None = None
            for msg in sorted(chain, key=lambda m: m.seq):
                while waiting and waiting[0][0] <= msg.attempts[0]["t0"]:
                    _, _, start, earlier = heapq.heappop(waiting)
                    if start > latest_start:
                        latest_start, before = start, earlier
                first = min(takes_of[msg.uuid], key=lambda t: t["t1"])
                if before is not None and first["t1"] < latest_start:
                    if self.timeline.ring_changed(before.attempts[0]["t0"], first["t1"]):
                        row.reorder_ring += 1
                        self.blame(first["t1"], "reorder@ring")
                    elif self._receiver_left(msg.stream, before.attempts[0]["t0"] - GIVE_BACK_SECONDS, first["t1"]):
                        row.reorder_giveback += 1
                        self.blame(first["t1"], "reorder@giveback")
                    else:
                        row.reorder += 1
                        row.example(f"{msg.uuid} taken by {first['r']} at {first['t1']:.2f}s, "
                                    f"before {before.uuid} was (no ring change in between)")
                        self.blame(first["t1"], "reorder")
                ack = msg.ack
                assert ack is not None
                heapq.heappush(waiting, (ack["t0"], msg.seq, first["t0"], msg))

    def explained_loss(self, msg: Msg, ack: dict[str, Any]) -> dict[str, Any] | None:
        """The fault that explains ``msg``'s loss, if one does: a SIGKILL of
        a node that owned the stream in some node's ring at that moment, or
        through which a receive of the stream was in flight (the message may
        have been on its way to it) — provided the stream had not moved on
        past the message before the kill (see :meth:`_overtaken`); or, as
        the first fault after the message was sent, a partition while a
        receive of the stream was in flight (on the wire through the cut)."""
        first = True
        for fault in sorted(self.faults.values(), key=lambda f: f.get("begin", {}).get("t", -1.0)):
            begin = fault.get("begin", {}).get("t")
            if begin is None or begin <= ack["t0"]:
                continue
            kind = fault.get("kind")
            if kind == "kill":
                victim = fault["node"]
                owners = {self._owner(view, msg.stream) for view in fault["begin"].get("views", {}).values()}
                if victim in owners or self._poll_through(victim, msg.stream, begin):
                    return None if self._overtaken(msg, ack, begin) else fault
            elif kind == "partition" and first and self._poll_through(None, msg.stream, begin):
                return fault
            first = first and begin <= ack["t1"]
        return None

    def _overtaken(self, msg: Msg, ack: dict[str, Any], before: float) -> bool:
        """Whether a message of ``msg``'s stream first sent after ``msg`` was
        acknowledged, and sent and taken while the ring stood still, was
        taken before ``before``: the queue had then moved on past ``msg``
        (FIFO), so ``msg`` was gone before that moment, whatever happened
        later."""
        for sent, taken in self._by_stream.get(msg.stream, ()):
            if sent > ack["t1"] and taken < before and not self.timeline.ring_changed(sent, taken):
                return True
        return False

    def _poll_through(self, node: str | None, stream: str, at: float) -> bool:
        """Whether a receive of ``stream`` (through ``node``; any node when
        ``None``) was in flight at ``at`` and ended without an answer."""
        return any(
            (node is None or e["via"] == node) and e["st"] == stream and e["src"] == "mem"
            and e["t0"] <= at <= e["t1"] + 0.5
            for e in self._unanswered()
        )

    def _unanswered(self) -> list[dict[str, Any]]:
        """Receives that ended without an answer after their request may
        have reached a node (a refused connection never did)."""
        return [e for e in self.inflight if e["code"] != "ClientConnectorError"]

    def _receiver_left(self, stream: str, start: float, end: float) -> bool:
        """Whether a receive of ``stream`` ended without an answer (its client
        went away, or its connection broke) between ``start`` and ``end``."""
        return any(e["st"] == stream and e["src"] == "mem" and start <= e["t1"] <= end for e in self._unanswered())

    def _unanswered_poll(self, stream: str, t: float) -> str:
        """A hint for a lost message: the first receive of its stream that
        was waiting at its acknowledgement or began within 10 s after it,
        and ended without an answer (its client went away, or its
        connection broke)."""
        for e in sorted(self._unanswered(), key=lambda e: e["t1"]):
            if e["st"] == stream and e["src"] == "mem" and e["t1"] >= t and e["t0"] <= t + 10.0:
                how = "abandoned by its client" if e.get("ab") else f"ended with {e['code'] or e['res']}"
                return f" — a poll of this stream via {e['via']} (from {e['t0']:.2f}s) was {how} at {e['t1']:.2f}s"
        return ""

    # -- recovery ---------------------------------------------------------------------

    def _recovery(self) -> Row:
        row = Row("cluster recovers after each fault")
        ends = [f["end"] for f in self.faults.values() if "end" in f]
        row.messages = len(ends)
        for end in ends:
            if not end.get("converged", True):
                row.other += 1
                row.example(f"#{end['number']} {end['kind']} {end['node']}: rings did not agree in time")
        if self.timeline.unplanned_changes:
            row.notes.append(f"{self.timeline.unplanned_changes} ring changes no fault caused "
                             "(members suspected or declared dead while alive: a loaded machine?)")
        drain = self.phases.get("drained")
        if drain is not None and not drain.get("complete", True):
            row.other += 1
            row.example("the final drain did not finish in time")
        return row

    # -- helpers ------------------------------------------------------------------------

    def mismatch(self, take: dict[str, Any], store: str | None = None) -> str:
        """Why what ``take`` got is not what was sent to its stream ("": it is).
        ``store``: the kind of stream it must come from (default: the
        durable log for a durable read, a queue for any other take)."""
        msg = self.msgs.get(take["uuid"])
        if msg is None:
            return "never sent"
        if msg.stream != take["st"]:
            return f"sent to {msg.stream}"
        if take.get("p") != msg.payload(self.run):
            return "payload differs from what was sent"
        if store is not None and msg.mode != store:
            return f"a {msg.mode} message where a {store} one belongs"
        if store is None and (take["src"] == "log") != (msg.mode == "durable"):
            return "from the other store"
        return ""

    def msg_mode(self, take: dict[str, Any]) -> str | None:
        msg = self.msgs.get(take["uuid"])
        return msg.mode if msg is not None else None

    def phantom(self, row: Row, take: dict[str, Any], why: str) -> None:
        row.phantom += 1
        row.example(f"{take['r']} got {take['uuid']} from {take['st']} at {take['t1']:.2f}s via {take['via']}: {why}")
        self.blame(take["t1"], "phantom")

    def _owner(self, members: list[str], stream: str) -> str | None:
        key = tuple(members)
        ring = self._rings.get(key)
        if ring is None:
            ring = self._rings[key] = Ring({m: "" for m in members}, self.vnodes)
        return ring.owner(stream)

    def blame(self, t: float, what: str) -> None:
        """Count an anomaly against the fault around time ``t`` (or the first
        one after it; ``None``: no fault)."""
        self.attributed[self.timeline.fault_at(t)][what] += 1
