"""The checker's judgement on small hand-written histories: every kind of
anomaly is counted under its guarantee, and what a guarantee allows is not."""

from __future__ import annotations

from typing import Any

from ipubsub.checker.analysis import Analysis
from ipubsub.cluster.ring import Ring
from ipubsub.storage.tokens import encode_token

RUN = "r1"


class H:
    """A history under construction."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = [{"ev": "meta", "run": RUN, "vnodes": 160},
                                             {"ev": "phase", "name": "faults", "t": 0.0}]
        self.t = 1.0

    def tick(self, dt: float = 0.1) -> float:
        self.t += dt
        return self.t

    def send(self, w: str, seq: int, st: str, mode: str, res: str = "ok", pos: int | None = None,
             via: str = "n1", t0: float | None = None) -> str:
        uuid = f"{RUN}-{w}-{seq}"
        t0 = self.tick() if t0 is None else t0
        e = {"ev": "send", "w": w, "m": mode, "st": st, "uuid": uuid, "seq": seq, "try": 1, "t0": t0,
             "t1": self.tick(), "via": via, "res": res, "status": 200 if res == "ok" else 0, "code": ""}
        if pos is not None and res == "ok":
            e["token"] = encode_token(st, pos)
        self.events.append(e)
        return uuid

    def take(self, r: str, st: str, mode: str, w: str, seq: int, src: str = "mem", pos: int | None = None,
             payload: dict[str, Any] | None = None, t0: float | None = None, t1: float | None = None,
             via: str = "n2") -> None:
        uuid = f"{RUN}-{w}-{seq}"
        e = {"ev": "recv", "r": r, "src": src, "m": mode, "st": st, "t0": self.tick() if t0 is None else t0,
             "t1": self.tick() if t1 is None else t1, "via": via, "res": "ok", "status": 200, "code": "",
             "uuid": uuid, "p": payload if payload is not None else {"c": RUN, "w": w, "s": seq, "st": st,
                                                                    "m": "durable" if src == "log" else mode}}
        if pos is not None:
            e["token"] = encode_token(st, pos)
        self.events.append(e)

    def fault(self, number: int, kind: str, node: str, views: dict[str, list[str]], length: float = 1.0) -> None:
        begin = self.tick()
        self.events.append({"ev": "fault", "phase": "begin", "t": begin, "number": number, "kind": kind,
                            "node": node, "views": views})
        self.t += length
        self.events.append({"ev": "fault", "phase": "end", "t": self.t, "recovered": self.t, "number": number,
                            "kind": kind, "node": node, "converged": True})

    def judge(self) -> dict[str, Any]:
        a = Analysis(self.events)
        return {r.guarantee.split()[-1].strip("()"): r for r in a.rows}


def test_a_clean_history_keeps_every_promise() -> None:
    h = H()
    for seq in range(1, 4):
        h.send("dw", seq, "d", "durable", pos=seq)
        h.send("cw", seq, "c", "circular")
    for seq in range(1, 4):
        h.take("dr", "d", "durable", "dw", seq, src="log", pos=seq)
        h.take("cp", "c", "circular", "cw", seq)
    rows = h.judge()
    assert not any(r.broken for r in rows.values()), {k: vars(r) for k, r in rows.items()}
    assert rows["writeToDB"].messages == 3 and rows["circular"].messages == 3


def test_durable_lost_duplicated_reordered() -> None:
    h = H()
    for seq in range(1, 5):
        h.send("dw", seq, "d", "durable", pos=seq)
    h.take("dr", "d", "durable", "dw", 2, src="log", pos=2)
    h.take("dr", "d", "durable", "dw", 1, src="log", pos=1)  # went back: reorder
    h.take("dr", "d", "durable", "dw", 2, src="log", pos=2)  # again: dup
    h.take("dr", "d", "durable", "dw", 3, src="log", pos=3)
    h.events.append({"ev": "recv", "r": "dr", "src": "log", "m": "durable", "st": "d", "t0": h.tick(), "t1": h.tick(),
                     "via": "n1", "res": "empty", "status": 424, "code": "receive_timeout",
                     "after": encode_token("d", 3)})  # nothing after 3, though 4 was stored: lost
    row = h.judge()["writeToDB"]
    assert (row.lost, row.dup, row.reorder, row.phantom) == (1, 1, 1, 0), row.examples


def test_a_durable_message_is_lost_to_a_reader_only_once_it_went_past_it() -> None:
    h = H()
    for seq in range(1, 5):
        h.send("dw", seq, "d", "durable", pos=seq)
    h.take("dr", "d", "durable", "dw", 1, src="log", pos=1)
    h.take("dr", "d", "durable", "dw", 3, src="log", pos=3)  # went past 2: lost; 4 not reached yet
    row = h.judge()["writeToDB"]
    assert row.lost == 1 and "1 not read yet" in " ".join(row.notes), (row.examples, row.notes)
    h.events.append({"ev": "recv", "r": "dr", "src": "log", "m": "durable", "st": "d", "t0": 0.5, "t1": 0.6,
                     "via": "n1", "res": "empty", "status": 424, "code": "receive_timeout",
                     "after": encode_token("d", 3)})  # found nothing, but before 4 was stored: still behind
    assert h.judge()["writeToDB"].lost == 1


def test_durable_token_of_the_send_must_be_where_readers_find_it() -> None:
    h = H()
    h.send("dw", 1, "d", "durable", pos=7)
    h.take("dr", "d", "durable", "dw", 1, src="log", pos=8)
    assert h.judge()["writeToDB"].other == 1


def test_a_durable_message_in_memory_is_a_phantom() -> None:
    h = H()
    h.send("dw", 1, "d", "durable", pos=1)
    h.take("dr", "d", "durable", "dw", 1, src="log", pos=1)
    h.take("dm", "d", "durable", "dw", 1, src="mem", payload={"c": RUN, "w": "dw", "s": 1, "st": "d", "m": "durable"})
    assert h.judge()["writeToDB"].phantom == 1


def test_memory_phantoms() -> None:
    h = H()
    h.send("cw", 1, "c", "circular")
    h.send("cw", 2, "c", "circular", res="rejected")
    h.take("cp", "c", "circular", "cw", 1)
    h.take("cp", "c", "circular", "cw", 2)  # every send refused
    h.take("cp", "c", "circular", "xx", 9)  # never sent
    h.take("cp", "c", "circular", "cw", 1, payload={"c": RUN, "w": "cw", "s": 1, "st": "c", "m": "circular", "x": 1})
    assert h.judge()["circular"].phantom == 3


def test_memory_duplicates_beyond_retries() -> None:
    h = H()
    h.send("cw", 1, "c", "circular")
    h.take("cp", "c", "circular", "cw", 1)
    h.take("cp", "c", "circular", "cw", 1)
    assert h.judge()["circular"].dup == 1
    h2 = H()  # a first attempt of unknown outcome, then a 200: two copies are allowed
    h2.send("cw", 1, "c", "circular", res="unknown")
    h2.send("cw", 1, "c", "circular")
    h2.take("cp", "c", "circular", "cw", 1)
    h2.take("cp", "c", "circular", "cw", 1)
    row = h2.judge()["circular"]
    assert row.dup == 0 and any("retry copies" in n for n in row.notes)


def _owned_by(node: str, members: list[str]) -> str:
    ring = Ring({m: "" for m in members}, 160)
    return next(f"s{i}" for i in range(1000) if ring.owner(f"s{i}") == node)


def test_memory_loss_excused_only_by_the_kill_of_its_owner() -> None:
    members = ["n1", "n2", "n3"]
    mine, other = _owned_by("n2", members), _owned_by("n3", members)
    h = H()
    h.send("cw", 1, mine, "circular")
    h.send("cw", 2, other, "circular")
    h.fault(1, "kill", "n2", {m: members for m in members})
    row = h.judge()["circular"]
    assert (row.excused, row.lost) == (1, 1), row.examples


def test_a_loss_before_another_fault_is_not_excused_by_a_later_kill() -> None:
    """The stream moved on past the message (a later one was taken while the
    ring stood still) before the kill: it was lost earlier."""
    members = ["n1", "n2", "n3"]
    mine = _owned_by("n2", members)
    h = H()
    h.send("cw", 1, mine, "circular")
    h.fault(1, "term", "n1", {m: members for m in members})
    h.t += 5.0  # the ring settles
    h.send("cw", 2, mine, "circular")
    h.take("cp", mine, "circular", "cw", 2)
    h.fault(2, "kill", "n2", {m: members for m in members})
    row = h.judge()["circular"]
    assert (row.excused, row.lost) == (0, 1)


def test_a_backlog_carried_through_a_join_is_lost_at_its_owners_kill() -> None:
    """Nothing overtook the message: it was still buffered when its owner died."""
    members = ["n1", "n2", "n3"]
    mine = _owned_by("n2", members)
    h = H()
    h.send("cw", 1, mine, "circular")
    h.fault(1, "join", "n4", {m: members for m in members})
    h.fault(2, "kill", "n2", {m: members for m in members})
    row = h.judge()["circular"]
    assert (row.excused, row.lost) == (1, 0)


def test_a_partition_excuses_only_a_loss_with_a_receive_in_flight() -> None:
    h = H()
    h.send("cw", 1, "c", "circular")
    h.send("cw", 2, "d", "circular")
    h.events.append({"ev": "recv", "r": "cp", "src": "mem", "m": "circular", "st": "c", "t0": h.t, "t1": h.t + 3,
                     "via": "n1", "res": "error", "status": 503, "code": "owner_unavailable"})
    h.fault(1, "partition", "n2", {})
    row = h.judge()["circular"]
    assert (row.excused, row.lost) == (1, 1) and row.excused_by == {"partition": 1}


def test_memory_reorder_and_ring_changes() -> None:
    h = H()
    h.send("cw", 1, "c", "circular")
    h.send("cw", 2, "c", "circular")
    h.take("cp", "c", "circular", "cw", 2, t0=5.0, t1=5.1)
    h.take("cp", "c", "circular", "cw", 1, t0=5.2, t1=5.3)
    assert h.judge()["circular"].reorder == 1
    h.events.append({"ev": "ring", "t": 4.0, "node": "n1", "members": ["n1", "n2"]})
    row = h.judge()["circular"]
    assert (row.reorder, row.reorder_ring) == (0, 1)


def test_memory_reorder_behind_a_receiver_that_went_away() -> None:
    """The earlier message may have been handed to a poll whose client left,
    and given back after the later one was taken."""
    h = H()
    h.send("cw", 1, "c", "circular", t0=3.0)
    h.send("cw", 2, "c", "circular", t0=3.2)
    h.events.append({"ev": "recv", "r": "ab0", "src": "mem", "m": "circular", "st": "c", "t0": 2.0, "t1": 3.1,
                     "via": "n1", "res": "aborted", "status": 0, "code": "abandoned", "ab": True})
    h.take("cp", "c", "circular", "cw", 2, t0=5.0, t1=5.1)
    h.take("cp", "c", "circular", "cw", 1, t0=5.2, t1=5.3)
    row = h.judge()["circular"]
    assert (row.reorder, row.reorder_giveback) == (0, 1)


def test_concurrent_receivers_are_not_a_reorder() -> None:
    """Two polls overlapping in time may finish in any order."""
    h = H()
    h.send("cw", 1, "c", "circular")
    h.send("cw", 2, "c", "circular")
    h.take("cp", "c", "circular", "cw", 1, t0=5.0, t1=5.4)
    h.take("cq", "c", "circular", "cw", 2, t0=5.1, t1=5.2)
    assert h.judge()["circular"].reorder == 0


def test_sync_acknowledged_but_never_taken_is_lost() -> None:
    h = H()
    h.send("sw", 1, "s", "sync")
    row = h.judge()["sync"]
    assert row.lost == 1 and row.broken


def test_a_retried_item_may_land_behind_later_ones() -> None:
    """Order is checked only against messages whose accepted send began no
    later than the later message's first send."""
    h = H()
    h.send("cw", 1, "c", "circular", res="unknown", t0=2.0)
    h.send("cw", 2, "c", "circular", t0=2.0)  # same call (a batch): 2 accepted, 1 not known
    h.send("cw", 1, "c", "circular", t0=3.0)  # 1 again, alone, after
    h.take("cp", "c", "circular", "cw", 2, t0=5.0, t1=5.1)
    h.take("cp", "c", "circular", "cw", 1, t0=5.2, t1=5.3)
    assert h.judge()["circular"].reorder == 0


def _deliver(h: H, r: str, st: str, w: str, seq: int, src: str, t0: float, mode: str = "leased") -> dict[str, Any]:
    e = {"ev": "recv", "r": r, "src": src, "m": mode, "st": st, "t0": t0, "t1": t0 + 0.1, "via": "n1", "res": "ok",
         "status": 200, "code": "", "k": 0, "uuid": f"{RUN}-{w}-{seq}", "receipt": f"rc{seq}-{t0}", "dc": 1,
         "p": {"c": RUN, "w": w, "s": seq, "st": st, "m": mode}}
    h.events.append(e)
    return e


def _ack(h: H, src: str, st: str, deliveries: list[dict[str, Any]], t0: float, res: str = "ok", status: int = 200,
         not_found: list[str] | None = None) -> None:
    h.events.append({"ev": "ack", "r": "x", "src": src, "st": st, "t0": t0, "t1": t0 + 0.1, "via": "n1", "res": res,
                     "status": status, "code": "", "receipts": [d["receipt"] for d in deliveries],
                     "uuids": [d["uuid"] for d in deliveries], "notFound": not_found or []})


def test_leases_redelivery_is_allowed_but_not_after_an_ack() -> None:
    h = H()
    for seq in (1, 2, 3, 4):
        h.send("lw", seq, "l", "leased")
    first = _deliver(h, "lc", "l", "lw", 1, "lease", 5.0)  # dropped: comes back
    again = _deliver(h, "lc", "l", "lw", 1, "lease", 9.0)
    _ack(h, "lease", "l", [again], 9.2)
    late = _deliver(h, "lc", "l", "lw", 1, "lease", 12.0)  # after a successful ack: broken
    two = _deliver(h, "lc", "l", "lw", 2, "lease", 5.0)
    _ack(h, "lease", "l", [two], 5.2, not_found=[two["receipt"]])  # the ack found no lease: 2 not acknowledged
    three = _deliver(h, "lc", "l", "lw", 3, "lease", 5.0)
    _ack(h, "lease", "l", [three], 5.2, res="error", status=0)  # unknown outcome: may be acknowledged
    assert first and late
    rows = {r.guarantee: r for r in Analysis(h.events).rows}
    row = rows["at-least-once leases (in-memory)"]
    assert (row.dup, row.lost, row.phantom) == (1, 2, 0), row.examples  # 2 and 4 never acknowledged
    assert any("deliveries again" in n for n in row.notes)


def test_group_delivery_of_another_kind_of_message_is_a_phantom() -> None:
    h = H()
    h.send("dw", 1, "d", "durable", pos=1)
    h.send("cw", 1, "d", "circular")  # an in-memory message on the same stream id
    d1 = _deliver(h, "gc", "d", "dw", 1, "group", 5.0, mode="durable")
    _ack(h, "group", "d", [d1], 5.2)
    h.events.append({**d1, "uuid": f"{RUN}-cw-1", "receipt": "x", "p": {"c": RUN, "w": "cw", "s": 1, "st": "d",
                                                                         "m": "circular"}})
    rows = {r.guarantee: r for r in Analysis(h.events).rows}
    assert rows["consumer group (durable)"].phantom == 1


def _read(h: H, r: str, w: str, seq: int, pos: str, t0: float, st: str = "hs") -> None:
    h.events.append({"ev": "recv", "r": r, "src": "history", "m": "history", "st": st, "t0": t0, "t1": t0 + 0.1,
                     "via": "n1", "res": "ok", "status": 200, "code": "", "k": 0, "uuid": f"{RUN}-{w}-{seq}",
                     "pos": pos, "p": {"c": RUN, "w": w, "s": seq, "st": st, "m": "history"}})


def test_history_silent_gap_told_gap_and_order() -> None:
    h = H()
    for seq in (1, 2, 3, 4):
        h.send("hw", seq, "hs", "history")
    # reader a: reads 1, 3 (2 missing, no gap told), then 4
    _read(h, "a", "hw", 1, "e1-1", 5.0)
    _read(h, "a", "hw", 3, "e1-3", 5.2)
    _read(h, "a", "hw", 4, "e1-4", 5.4)
    # reader b: told of a gap after the sends, then reads 4 then 3 (no ring change: a reorder)
    h.events.append({"ev": "gap", "r": "b", "st": "hs", "t0": 4.0, "t1": 4.1, "via": "n1", "gap": "epoch"})
    _read(h, "b", "hw", 4, "e2-1", 5.0)
    _read(h, "b", "hw", 3, "e2-2", 5.2)
    rows = {r.guarantee: r for r in Analysis(h.events).rows}
    row = rows["fan-out history (every reader)"]
    assert row.lost == 1  # 2 for reader a: a silent gap
    assert row.excused == 1  # 1 (and 2) for reader b: told — only 1 is not lost elsewhere
    assert row.reorder == 0 and row.reorder_ring == 1  # b's reorder follows the gap it was told of
    h2 = H()
    for seq in (1, 2):
        h2.send("hw", seq, "hs", "history")
    _read(h2, "a", "hw", 2, "e1-2", 5.0)
    _read(h2, "a", "hw", 1, "e1-1", 5.2)
    row2 = {r.guarantee: r for r in Analysis(h2.events).rows}["fan-out history (every reader)"]
    assert (row2.reorder, row2.other) == (1, 1)  # read out of order, and its position went back


def test_an_epoch_gap_during_a_planned_change_is_a_broken_promise() -> None:
    h = H()
    h.send("hw", 1, "hs", "history")
    _read(h, "a", "hw", 1, "e1-1", 2.0)
    h.fault(1, "join", "n4", {})
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.t - 0.5, "t1": h.t - 0.4, "via": "n4",
                     "gap": "epoch"})
    h.fault(2, "kill", "n1", {})
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.t - 0.5, "t1": h.t - 0.4, "via": "n2",
                     "gap": "epoch"})  # a kill may end an epoch
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.other == 1 and row.broken


def test_an_epoch_gap_after_a_lone_restart_is_allowed_even_next_to_a_planned_change() -> None:
    h = H()
    h.send("hw", 1, "hs", "history")
    _read(h, "a", "hw", 1, "e1-1", 1.5)
    h.fault(1, "term", "n1", {"n1": ["n1"]})  # alone in its ring: a lone restart, the history starts anew
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.t - 0.5, "t1": h.t - 0.4, "via": "n1",
                     "gap": "epoch"})
    h.fault(2, "solo", "n1", {"n1": ["n1", "n2"]})
    h.t += 2.0  # told late, once the lone node serves again: counted against the next fault, a join
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.t, "t1": h.t + 0.1, "via": "n1", "gap": "epoch"})
    h.fault(3, "join", "n3", {"n1": ["n1", "n2"]})
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.other == 0 and not row.broken
    h.send("hw", 2, "hs", "history")
    _read(h, "a", "hw", 2, "e2-1", h.tick())  # read on since the gaps
    h.fault(4, "term", "n2", {"n1": ["n1", "n2", "n3"], "n2": ["n1", "n2", "n3"]})  # with peers: planned
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.t - 0.5, "t1": h.t - 0.4, "via": "n1",
                     "gap": "epoch"})
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.other == 1 and row.broken


def test_a_history_reader_still_behind_at_the_end_has_lost_nothing_yet() -> None:
    h = H()
    for seq in (1, 2, 3):
        h.send("hw", seq, "hs", "history")
    _read(h, "a", "hw", 1, "e1-1", h.tick())  # then the run ended: 2 and 3 not reached
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.lost == 0 and "2 not read yet" in " ".join(row.notes), row.notes
    _read(h, "a", "hw", 3, "e1-3", h.tick())  # went past 2
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.lost == 1 and row.broken


def test_a_gap_told_later_does_not_excuse_a_message_the_reader_had_skipped_silently() -> None:
    h = H()
    for seq in (1, 2, 3):
        h.send("hw", seq, "hs", "history")
    _read(h, "a", "hw", 1, "e1-1", h.tick())
    _read(h, "a", "hw", 3, "e1-2", h.tick())  # 2 skipped without a word
    h.events.append({"ev": "gap", "r": "a", "st": "hs", "t0": h.tick(), "t1": h.tick(), "via": "n1", "gap": "epoch"})
    h.send("hw", 4, "hs", "history")  # sent after the gap: read
    _read(h, "a", "hw", 4, "e2-1", h.tick())
    row = {r.guarantee: r for r in Analysis(h.events).rows}["fan-out history (every reader)"]
    assert row.lost == 1 and row.broken, row.examples
