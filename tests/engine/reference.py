"""A reference model of the engine, for the property test.

Plain Python lists and dicts, one obvious step per rule of docs/design.md §2:
no lazy removal of departed waiters, no list/deque switching, no idle
buckets, no counters updated as a side effect of helpers.  Each operation
returns what the engine must answer, and each waiter records what its task
must end with.  The property test drives the real engine and this model with
the same operations and compares answers, buffers (order included) and
counters after every step.

Outcomes: ``("msg", id)``, ``("msgs", (id, ...))`` (a batch), ``("ok",)``,
``("timeout",)``, ``("released",)``, ``("full",)`` (node byte budget),
``("cancelled",)``.  A receiver served while waiting is first *handed* its
message; it answers one loop step later (:meth:`RefEngine.answer`), when a
batch takes the further messages available then.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ipubsub.engine import EngineStats

DEFAULT_STREAM_SIZE = 100

PENDING = ("pending",)
HANDED = ("handed",)

COUNTERS: tuple[str, ...] = EngineStats.__slots__  # every counter the engine keeps


@dataclass(eq=False)
class RefMessage:
    id: str
    size: int
    taken: int = 0  # engine-wide order of the first take; 0 = never taken


@dataclass(eq=False)
class Waiter:
    wid: int
    kind: str  # "recv" (awaiting receive), "park" (parked receive) or "send"
    stream: str
    deadline: float
    poll_id: str | None = None
    msg: RefMessage | None = None  # a sender's message; a receiver's handed message
    limit: int | None = None  # a batch: up to this many messages
    outcome: tuple = PENDING
    admitted: bool = False  # a sender whose message was accepted
    gives_back: bool = False  # cancelled once handed: gives its message back when its task runs


@dataclass(eq=False)
class RefStream:
    sid: str
    cap: int | None
    buf: list[RefMessage] = field(default_factory=list)
    front: int = 0  # given-back + handed-over messages at the head
    returned: int = 0  # given-back messages at the very head (by take order)
    receivers: list[Waiter] = field(default_factory=list)
    senders: list[Waiter] = field(default_factory=list)
    became_idle: float = 0.0  # when it last went from busy to idle
    sweep_after_touch: float | None = None  # first sweep after the last operation on it

    @property
    def nbytes(self) -> int:
        return sum(m.size for m in self.buf)

    @property
    def idle(self) -> bool:
        return not self.buf and not self.receivers and not self.senders


class RefEngine:
    def __init__(self, *, max_stream_bytes: int, max_buffered_bytes: int, idle_seconds: float) -> None:
        self.max_stream_bytes = max_stream_bytes
        self.max_buffered_bytes = max_buffered_bytes
        self.idle_seconds = idle_seconds
        self.streams: dict[str, RefStream] = {}
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.now = 0.0
        self.taken = 0
        self.polls: dict[str, Waiter] = {}
        self.cancelled_polls: set[str] = set()
        self.messages: dict[str, RefMessage] = {}
        self.handed: list[Waiter] = []  # served receivers, in the order they answer
        self._next_wid = 0

    # -- helpers -------------------------------------------------------------

    def _new_stream(self, sid: str, cap: int | None) -> RefStream:
        st = self.streams[sid] = RefStream(sid, cap, became_idle=self.now)
        return st

    def _waiter(self, kind: str, sid: str, timeout: float, **kw: object) -> Waiter:
        self._next_wid += 1
        return Waiter(self._next_wid, kind, sid, self.now + timeout, **kw)  # type: ignore[arg-type]

    def _resolve(self, w: Waiter, outcome: tuple) -> None:
        w.outcome = outcome
        if outcome is not HANDED and w.poll_id is not None and self.polls.get(w.poll_id) is w:
            del self.polls[w.poll_id]

    def _take_number(self, m: RefMessage) -> None:
        if not m.taken:
            self.taken += 1
            m.taken = self.taken

    def _pop_front(self, st: RefStream) -> RefMessage:
        m = st.buf.pop(0)
        st.front = max(0, st.front - 1)
        st.returned = max(0, st.returned - 1)
        self.stats["buffered_messages"] -= 1
        self.stats["buffered_bytes"] -= m.size
        return m

    def _push_back(self, st: RefStream, m: RefMessage) -> None:
        st.buf.append(m)
        self.stats["buffered_messages"] += 1
        self.stats["buffered_bytes"] += m.size

    def _has_room(self, st: RefStream, size: int) -> bool:
        return len(st.buf) < (st.cap or 0) and st.nbytes + size <= self.max_stream_bytes

    def _serve_receiver(self, st: RefStream, m: RefMessage, *, accepted: bool) -> bool:
        if not st.receivers:
            return False
        w = st.receivers.pop(0)
        self._take_number(m)
        w.msg = m
        self._resolve(w, HANDED)
        self.handed.append(w)
        self.stats["waiting_receivers"] -= 1
        self.stats["delivered_total"] += 1
        if accepted:
            self.stats["accepted_total"] += 1
        return True

    def _admit_senders(self, st: RefStream) -> None:
        while st.senders and self._has_room(st, st.senders[0].msg.size):  # type: ignore[union-attr]
            w = st.senders.pop(0)
            w.admitted = True
            self._resolve(w, ("ok",))
            self.stats["blocked_senders"] -= 1
            self._push_back(st, w.msg)  # type: ignore[arg-type]
            self.stats["accepted_total"] += 1

    def _take(self, st: RefStream) -> RefMessage | None:
        if st.buf:
            m = self._pop_front(st)
            self._take_number(m)
            self.stats["delivered_total"] += 1
            self._admit_senders(st)
            return m
        if st.senders:  # nothing buffered: a blocked sender hands over directly
            w = st.senders.pop(0)
            w.admitted = True
            self._resolve(w, ("ok",))
            self.stats["blocked_senders"] -= 1
            self.stats["accepted_total"] += 1
            self.stats["delivered_total"] += 1
            self._take_number(w.msg)  # type: ignore[arg-type]
            return w.msg
        return None

    def _release(self, st: RefStream) -> int:
        n = 0
        for w in st.receivers:
            self._resolve(w, ("released",))
            self.stats["waiting_receivers"] -= 1
            n += 1
        for w in st.senders:
            self._resolve(w, ("released",))
            self.stats["blocked_senders"] -= 1
            n += 1
        st.receivers.clear()
        st.senders.clear()
        self.stats["released_total"] += n
        return n

    def _put_back(self, st: RefStream, msgs: list[RefMessage]) -> None:
        """Given-back messages go to the head, merged with earlier given-back
        ones by take order (never-taken ones first, in the given order)."""
        head = st.buf[: st.returned]
        st.buf[: st.returned] = sorted(msgs + head, key=lambda m: m.taken)
        st.returned += len(msgs)
        st.front += len(msgs)
        self.stats["buffered_messages"] += len(msgs)
        self.stats["buffered_bytes"] += sum(m.size for m in msgs)

    def touch(self, sid: str) -> None:
        st = self.streams.get(sid)
        if st is not None:
            st.sweep_after_touch = None

    def tidy(self, was_idle: dict[str, bool]) -> None:
        """After every operation: a stream nobody configured is forgotten as
        soon as it is idle; note when configured streams went idle."""
        for sid, st in list(self.streams.items()):
            if st.idle and st.cap is None:
                del self.streams[sid]
            elif st.idle and not was_idle.get(sid, False):
                st.became_idle = self.now

    def idle_map(self) -> dict[str, bool]:
        return {sid: st.idle for sid, st in self.streams.items()}

    # -- operations ------------------------------------------------------------

    def send_nowait(self, sid: str, m: RefMessage, capacity: int) -> tuple:
        st = self.streams.get(sid) or self._new_stream(sid, capacity)
        if st.cap is None:
            st.cap = capacity
        if self._serve_receiver(st, m, accepted=True):
            return ("ok",)
        if st.cap == 0:
            self.stats["send_timeouts_total"] += 1
            return ("timeout",)
        total = self.stats["buffered_bytes"]
        if len(st.buf) < st.cap and st.nbytes + m.size <= self.max_stream_bytes:
            if total + m.size > self.max_buffered_bytes:
                return ("full",)
        else:
            n, freed = 0, 0
            while n < len(st.buf) and (
                len(st.buf) - n >= st.cap or st.nbytes - freed + m.size > self.max_stream_bytes
            ):
                freed += st.buf[n].size
                n += 1
            if total - freed + m.size > self.max_buffered_bytes:
                return ("full",)
            for _ in range(n):
                self._pop_front(st)
            self.stats["dropped_total"] += n
        self._push_back(st, m)
        self.stats["accepted_total"] += 1
        return ("ok",)

    def send(self, sid: str, m: RefMessage, capacity: int, timeout: float) -> Waiter:
        """A blocking (or sync) send: the waiter is resolved at once or left pending."""
        w = self._waiter("send", sid, timeout, msg=m)
        st = self.streams.get(sid) or self._new_stream(sid, capacity)
        if st.cap is None:
            st.cap = capacity
        if self._serve_receiver(st, m, accepted=True):
            w.admitted = True
            w.outcome = ("ok",)
            return w
        if st.cap > 0 and not st.senders and self._has_room(st, m.size):
            if self.stats["buffered_bytes"] + m.size > self.max_buffered_bytes:
                w.outcome = ("full",)
                return w
            self._push_back(st, m)
            self.stats["accepted_total"] += 1
            w.admitted = True
            w.outcome = ("ok",)
            return w
        st.senders.append(w)
        self.stats["blocked_senders"] += 1
        return w

    def _fill(self, st: RefStream, first: RefMessage, limit: int | None) -> tuple:
        if limit is None:
            return ("msg", first.id)
        got = [first]
        while len(got) < limit and self.streams.get(st.sid) is st:
            m = self._take(st)
            if m is None:
                break
            got.append(m)
        got.sort(key=lambda m: m.taken)  # older ones given back meanwhile come first, as in the stream
        return ("msgs", tuple(m.id for m in got))

    def receive(self, sid: str, timeout: float, poll_id: str | None, limit: int | None, kind: str = "recv") -> Waiter:
        """An awaiting receive (``kind`` "recv") or a parked one ("park")."""
        w = self._waiter(kind, sid, timeout, limit=limit)
        if poll_id is not None and poll_id in self.cancelled_polls:
            w.outcome = ("released",)
            return w
        st = self.streams.get(sid)
        if st is not None:
            m = self._take(st)
            if m is not None:
                w.outcome = self._fill(st, m, limit)
                return w
        if timeout <= 0:
            self.stats["receive_timeouts_total"] += 1
            w.outcome = ("timeout",)
            return w
        if st is None:
            st = self._new_stream(sid, None)
        st.receivers.append(w)
        self.stats["waiting_receivers"] += 1
        if poll_id is not None:
            w.poll_id = poll_id
            self.polls[poll_id] = w
        return w

    def answer(self) -> None:
        """One loop step after: served receivers answer, in the order they
        were served; a batch takes the messages its stream has then."""
        while self.handed:  # a message given back may serve another waiting receiver
            self._answer(self.handed.pop(0))

    def _answer(self, w: Waiter) -> None:
        if w.gives_back:
            self.give_back(w.stream, [w.msg])  # type: ignore[list-item]
        elif w.outcome is HANDED:
            st = self.streams.get(w.stream)
            assert w.msg is not None
            if w.limit is None:
                w.outcome = ("msg", w.msg.id)
            elif st is None:
                w.outcome = ("msgs", (w.msg.id,))
            else:
                w.outcome = self._fill(st, w.msg, w.limit)
        self._resolve(w, w.outcome)

    def give_back(self, sid: str, msgs: list[RefMessage]) -> None:
        if not msgs:
            return
        self.stats["requeued_total"] += len(msgs)
        self.stats["delivered_total"] -= len(msgs)
        st = self.streams.get(sid) or self._new_stream(sid, DEFAULT_STREAM_SIZE)
        if st.cap is None:
            st.cap = DEFAULT_STREAM_SIZE
        rest = sorted(msgs, key=lambda m: m.taken)  # the order they were first taken in
        while rest and self._serve_receiver(st, rest[0], accepted=False):
            rest.pop(0)
        if rest:
            self._put_back(st, rest)

    def cancel(self, w: Waiter, by_poll_id: bool = False) -> bool:
        """The waiter's client left before its task or callback ran again:
        its task is cancelled (an awaiting call), :meth:`Parked.end` is
        called (a parked receive), or with ``by_poll_id`` the forwarding node
        cancels the poll by id.  Returns what ``end`` / ``cancel_poll``
        return (True: it ended a waiting or not yet answered receive)."""
        disconnect = w.kind == "send" or (w.kind == "recv" and not by_poll_id)
        ended = ("cancelled",) if disconnect else ("released",)
        if w.outcome is PENDING:
            st = self.streams[w.stream]
            if w.kind == "send":
                st.senders.remove(w)
                self.stats["blocked_senders"] -= 1
            else:
                st.receivers.remove(w)
                self.stats["waiting_receivers"] -= 1
                if not disconnect:
                    self.stats["released_total"] += 1
            self._resolve(w, ended)
            return True
        if w.outcome is HANDED:
            self._resolve(w, ended)
            if disconnect:  # its task gives the message back when it runs, in its turn
                w.gives_back = True
            else:
                self.give_back(w.stream, [w.msg])  # type: ignore[list-item]
            return True
        if disconnect:
            w.outcome = ended
        elif by_poll_id and w.poll_id is not None:
            self.cancelled_polls.add(w.poll_id)
        return False

    def expire(self) -> None:
        """Fire every timer due at ``now``."""
        for st in list(self.streams.values()):
            for w in [w for w in st.receivers if w.deadline <= self.now]:
                st.receivers.remove(w)
                self._resolve(w, ("timeout",))
                self.stats["waiting_receivers"] -= 1
                self.stats["receive_timeouts_total"] += 1
            for w in [w for w in st.senders if w.deadline <= self.now]:
                st.senders.remove(w)
                self._resolve(w, ("timeout",))
                self.stats["blocked_senders"] -= 1
                self.stats["send_timeouts_total"] += 1

    def cancel_poll(self, poll_id: str) -> bool:
        w = self.polls.get(poll_id)
        if w is None:
            self.cancelled_polls.add(poll_id)
            return False
        return self.cancel(w, by_poll_id=True)

    def attach(self, sid: str, capacity: int | None, msgs: list[RefMessage]) -> None:
        st = self.streams.get(sid)
        if st is None:
            st = self._new_stream(sid, capacity)
        elif st.cap is None:
            st.cap = capacity
        if st.cap is None:
            st.cap = DEFAULT_STREAM_SIZE
        self.stats["handed_in_total"] += len(msgs)
        rest = sorted(msgs, key=lambda m: m.taken)  # the order they were first taken in
        while rest and self._serve_receiver(st, rest[0], accepted=False):
            rest.pop(0)
        st.buf[st.front : st.front] = rest
        st.front += len(rest)
        self.stats["buffered_messages"] += len(rest)
        self.stats["buffered_bytes"] += sum(m.size for m in rest)

    def detach(self, sid: str) -> tuple[int | None, list[str]] | None:
        st = self.streams.pop(sid, None)
        if st is None:
            return None
        self._release(st)
        ids = [m.id for m in st.buf]
        self.stats["buffered_messages"] -= len(st.buf)
        self.stats["buffered_bytes"] -= st.nbytes
        self.stats["handed_out_total"] += len(st.buf)
        return st.cap, ids

    def release_waiters(self) -> int:
        return sum(self._release(st) for st in self.streams.values())

    def sweep(self, evicted: set[str]) -> None:
        """Check the engine's choice of streams to evict (``evicted``):
        never one busy or idle for less than ``idle_seconds``; always one
        idle since before the previous sweep and for ``idle_seconds`` after it."""
        limit = self.idle_seconds
        for sid, st in self.streams.items():
            if sid in evicted:
                assert st.idle and st.cap is not None, f"evicted a busy stream {sid}"
                assert self.now - st.became_idle >= limit, f"evicted {sid} after {self.now - st.became_idle}s idle"
            elif st.idle and st.sweep_after_touch is not None:
                assert self.now < st.sweep_after_touch + limit, f"kept {sid}, idle since {st.became_idle}"
        for sid in evicted:
            del self.streams[sid]
        self.stats["evicted_streams_total"] += len(evicted)
        for st in self.streams.values():
            if st.sweep_after_touch is None:
                st.sweep_after_touch = self.now

    def message(self, mid: str) -> RefMessage:
        return self.messages[mid]
