"""The checker's clients: writers that send numbered messages and retry as a
real client does (same ``messageUuid``), in-memory pollers, durable replay
readers following tokens, and pollers that walk away mid-poll.

Every message is ``{"c": run, "w": writer, "s": seq, "st": stream, "m": mode}``
under the uuid ``run-writer-seq``, so anything received names where it came
from.  Each writer is sequential (a message is acknowledged or given up
before the next), which is what makes per-writer order checkable.  Every
call goes to a node chosen at random; the node forwards it to the owner.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .client import Caller, Outcome
from .consumers import Consumers
from .followers import HISTORY_FIELDS, Followers
from .history import History

__all__ = ["MEMORY_MODES", "SEND_FIELDS", "Shape", "Workload"]

MEMORY_MODES = ("circular", "blocking", "sync")
#: what each mode's sends carry besides stream, uuid and message
SEND_FIELDS: dict[str, dict[str, Any]] = {
    "circular": {"inMemoryStreamSize": 100_000},  # never full: any loss is a loss
    "blocking": {"inMemoryStreamSize": 4, "blockingSendTimeoutSeconds": 2},
    "sync": {"inMemoryStreamSize": 0, "blockingSendTimeoutSeconds": 3},
    "durable": {"writeToDB": True, "dbTTLSeconds": 3600},
    "leased": {"inMemoryStreamSize": 100_000},  # read by leased receives (see consumers.py)
    "history": HISTORY_FIELDS,  # read by history followers (see followers.py)
}
POLL_SECONDS = 2
#: the slowly read stream's backlog stays about this long (acknowledged, not taken)
SLOW_BACKLOG = 200


@dataclass(frozen=True)
class Shape:
    """How many streams, writers and readers of each kind, and the target
    rate of sends (messages per second, all writers together)."""

    streams: dict[str, int] = field(
        default_factory=lambda: {"circular": 6, "blocking": 3, "sync": 3, "durable": 4, "leased": 2, "history": 2})
    writers: dict[str, int] = field(
        default_factory=lambda: {"circular": 6, "blocking": 4, "sync": 3, "durable": 6, "leased": 2, "history": 2})
    pollers: dict[str, int] = field(default_factory=lambda: {"circular": 1, "blocking": 1, "sync": 2})
    replay_readers: int = 2
    abandoners: int = 2
    rate: float = 100.0
    send_deadline: float = 60.0

    @classmethod
    def for_rate(cls, rate: float) -> Shape:
        """The default shape with writers, pollers and abandoned polls
        multiplied by one per started 100 msg/s (each writer waits for its
        answer, so a higher rate needs more of them)."""
        base = cls()
        factor = max(1, math.ceil(rate / 100.0))
        return cls(
            streams=base.streams,
            writers={m: n * factor for m, n in base.writers.items()},
            pollers={m: n * factor for m, n in base.pollers.items()},
            replay_readers=base.replay_readers,
            abandoners=base.abandoners * factor,
            rate=rate,
        )


class Workload:
    """Runs the clients until :meth:`stop_writers`, then :meth:`drain`s.

    Args:
        run: the run id (prefix of every stream and uuid).
        nodes: the current ``(name, url)`` of every node a client may call.
        durable: whether the cluster has a durable backend.
        leases: whether the nodes serve at-least-once delivery (leased
            receives, consumer groups on the durable streams).
        histories: whether the nodes keep fan-out histories.
        batches: whether durable reads may ask for ``maxMessages``.
    """

    def __init__(
        self, run: str, shape: Shape, history: History, nodes: Callable[[], list[tuple[str, str]]],
        seed: int, durable: bool, leases: bool = False, histories: bool = False, batches: bool = False,
    ) -> None:
        self.run = run
        self.shape = shape
        self.history = history
        self.targets = nodes
        self.seed = seed
        self.caller = Caller()
        self.batches = batches  # the nodes serve readFromDB with maxMessages
        modes = MEMORY_MODES + (("durable",) if durable else ()) + (("leased",) if leases else ())
        modes += ("history",) if histories else ()
        self.streams = {m: [f"{run}-{m}-{i}" for i in range(shape.streams[m])] for m in modes}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stop = asyncio.Event()
        self._draining = False
        self._drain_over = False
        self._pending: dict[str, set[str]] = {s: set() for ss in self.streams.values() for s in ss}
        self._received: dict[str, set[str]] = {s: set() for s in self._pending}
        self._empties: dict[str, int] = {}
        self._seen: dict[str, set[str]] = {}
        self.acked: dict[str, int] = {m: 0 for m in modes}
        self.gave_up: dict[str, int] = {m: 0 for m in modes}
        self.received = 0

    # -- lifecycle ----------------------------------------------------------------

    async def start(self) -> None:
        await self.caller.start()
        shape = self.shape
        writers = sum(shape.writers[m] for m in self.streams)
        interval = writers / shape.rate
        for mode, streams in self.streams.items():
            for i in range(shape.writers[mode]):
                mine = streams[i % len(streams)::shape.writers[mode]] or streams
                self.spawn(f"{mode[0]}w{i}", self._writer(f"{mode[0]}w{i}", mode, mine, interval))
            for s, stream in enumerate(streams):
                if mode in ("leased", "history"):
                    continue  # read by the at-least-once consumers, the history followers
                if mode == "durable":
                    for r in range(shape.replay_readers):
                        self.spawn(f"dr{s}.{r}", self._replay(f"dr{s}.{r}", stream, "durable"))
                    self.spawn(f"dm{s}", self._poller(f"dm{s}", "durable", stream))  # must stay empty
                    continue
                for r in range(shape.pollers[mode] + (s % 2 if mode == "circular" else 0)):
                    self.spawn(f"{mode[0]}p{s}.{r}", self._poller(f"{mode[0]}p{s}.{r}", mode, stream))
                if mode == "circular" and "durable" in self.streams:
                    self.spawn(f"cx{s}", self._replay(f"cx{s}", stream, mode))  # no log: must stay empty
        for i in range(shape.abandoners):
            self.spawn(f"ab{i}", self._abandoner(f"ab{i}"))
        if "leased" in self.streams:
            Consumers(self).spawn()
        if "history" in self.streams:
            Followers(self).spawn()

    def spawn(self, name: str, coro: Any) -> None:
        """Run ``coro`` as one of the workload's tasks (drained and stopped with it)."""
        self._tasks[name] = asyncio.create_task(coro, name=f"check-{name}")

    async def stop_writers(self, timeout: float) -> None:
        """Writers finish their current message (retrying), then stop."""
        self._stop.set()
        writers = [t for n, t in self._tasks.items() if n[1:2] == "w" or n.startswith("ab")]
        await asyncio.wait(writers, timeout=timeout)

    async def drain(self, timeout: float) -> bool:
        """Readers go on until each stream is empty (or every acknowledged
        message arrived and a poll found nothing more); ``False`` if the
        drain did not finish within ``timeout``."""
        self._draining = True
        readers = [t for t in self._tasks.values() if not t.done()]
        _, pending = await asyncio.wait(readers, timeout=timeout) if readers else (set(), set())
        self._drain_over = True
        return not pending

    async def close(self) -> None:
        self._stop.set()
        self._drain_over = True
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.caller.close()

    # -- writers ------------------------------------------------------------------

    async def _writer(self, name: str, mode: str, streams: list[str], interval: float) -> None:
        rng = random.Random(f"{self.seed}/{name}")
        loop = asyncio.get_running_loop()
        seq = 0
        next_at = loop.time()
        while not self._stop.is_set():
            seq += 1
            await self._send_one(name, mode, rng.choice(streams), seq, rng)
            next_at += interval * rng.uniform(0.5, 1.5)
            delay = next_at - loop.time()
            if delay <= 0:
                next_at = loop.time()
                continue
            try:
                await asyncio.wait_for(self._stop.wait(), delay)
            except TimeoutError:
                pass

    async def _send_one(self, writer: str, mode: str, stream: str, seq: int, rng: random.Random) -> None:
        h = self.history
        uuid = f"{self.run}-{writer}-{seq}"
        fields = SEND_FIELDS[mode]
        message = {"c": self.run, "w": writer, "s": seq, "st": stream, "m": mode}
        body = msgspec.json.encode({"streamId": stream, "messageUuid": uuid, "message": message, **fields})
        timeout = 15.0 if mode == "durable" else fields.get("blockingSendTimeoutSeconds", 0) + 10.0
        deadline = h.now() + self.shape.send_deadline
        waits = 0
        for attempt in range(1, 10_000):
            via, url = rng.choice(self.targets())
            t0 = h.now()
            out = await self.caller.send(url, body, timeout)
            event = {"ev": "send", "w": writer, "m": mode, "st": stream, "uuid": uuid, "seq": seq, "try": attempt,
                     "t0": t0, "t1": h.now(), "via": via, "res": out.res, "status": out.status, "code": out.code}
            if out.res == "ok" and out.body is not None and "dbResumeToken" in out.body:
                event["token"] = out.body["dbResumeToken"]
            h.write(event)
            if out.res == "ok":
                self.acked[mode] += 1
                if uuid not in self._received[stream]:
                    self._pending[stream].add(uuid)
                return
            if out.status in (400, 413) or h.now() > deadline:
                break
            if out.status == 424:
                await asyncio.sleep(rng.uniform(0.01, 0.1))  # not accepted in time: try again at once
            else:
                await asyncio.sleep(min(2.0, 0.05 * 2**waits) * rng.uniform(0.5, 1.0))
                waits += 1
        self.gave_up[mode] += 1

    # -- readers ------------------------------------------------------------------

    def _record_receive(self, reader: str, src: str, mode: str, stream: str, via: str, t0: float, out: Outcome,
                        after: str | None = None, abandoned: bool = False, k: int | None = None) -> str | None:
        """Write one receive to the history (``src``: ``mem`` for a take from
        the in-memory queue, ``log`` for a durable read; ``k``: the message's
        place in a batch answer)."""
        event: dict[str, Any] = {"ev": "recv", "r": reader, "src": src, "m": mode, "st": stream, "t0": t0,
                                 "t1": self.history.now(), "via": via, "res": out.res, "status": out.status,
                                 "code": out.code}
        if k is not None:
            event["k"] = k
        if after is not None:
            event["after"] = after
        if abandoned:
            event["ab"] = True
        if out.partial:
            event["partial"] = True
        uuid = None
        if out.res == "ok" and out.body is not None:
            uuid = str(out.body.get("messageUuid"))
            event["uuid"] = uuid
            event["p"] = out.body.get("message")
            if "dbResumeToken" in out.body:
                event["token"] = out.body["dbResumeToken"]
            self.received += 1
            if (src == "mem") == (mode != "durable"):  # a take from a queue, or a read of a log
                self._received[stream].add(uuid)
                self._pending[stream].discard(uuid)
        self.history.write(event)
        return uuid

    def done(self, key: str, outstanding: Callable[[], set[str]]) -> bool:
        """Whether reader ``key`` may stop: the drain is over, or it is
        draining, its last poll found nothing, and nothing acknowledged is
        still missing (or three polls in a row found nothing)."""
        if self._drain_over:
            return True
        if not self._draining or self._empties.get(key, 0) < 1:
            return False
        return self._empties[key] >= 3 or not outstanding()

    @property
    def draining(self) -> bool:
        return self._draining

    def acked_sends(self, stream: str) -> set[str]:
        """The uuids of ``stream``'s acknowledged sends so far."""
        return self._pending[stream] | self._received[stream]

    def empty_poll(self, key: str, reset: bool = False) -> None:
        """Count one more poll of reader ``key`` that found nothing while
        draining (``reset``: it found something)."""
        self._empties[key] = 0 if reset else self._empties.get(key, 0) + 1

    def _outstanding(self, mode: str, stream: str, seen: set[str] | None) -> Callable[[], set[str]]:
        """What a reader of ``stream`` still waits for: acknowledged in-memory
        messages nobody took yet (pollers), acknowledged durable messages
        this reader has not read (replay readers); nothing when the stream
        has no such messages (a poller of a durable stream, a replay reader
        of an in-memory one)."""
        if (mode == "durable") != (seen is not None):
            return set
        if seen is None:
            return lambda: self._pending[stream]
        return lambda: (self._pending[stream] | self._received[stream]) - seen

    async def _poller(self, reader: str, mode: str, stream: str) -> None:
        rng = random.Random(f"{self.seed}/{reader}")
        stall_every = 40 if mode == "blocking" else 0  # let blocking streams fill now and then
        # The first circular stream is read slowly, so that it always holds a
        # backlog for faults to act on (hand-off, spill, a kill); it catches
        # up once the writers stop.
        slow = mode == "circular" and stream == self.streams["circular"][0]
        polls = 0
        outstanding = self._outstanding(mode, stream, None)
        key = f"{reader}:{stream}"
        while not self.done(key, outstanding):
            via, url = rng.choice(self.targets())
            t0 = self.history.now()
            params = {"streamId": stream, "timeoutSeconds": str(POLL_SECONDS)}
            out = await self.caller.receive(url, params, POLL_SECONDS + 8)
            self._record_receive(reader, "mem", mode, stream, via, t0, out)
            polls += 1
            if out.res == "empty" and out.code == "receive_timeout" and self._draining:
                self._empties[key] = self._empties.get(key, 0) + 1
            elif out.res == "ok":
                self._empties[key] = 0
            elif out.res != "empty":
                await asyncio.sleep(rng.uniform(0.05, 0.3))
            if stall_every and polls % stall_every == 0 and not self._stop.is_set():
                await asyncio.sleep(rng.uniform(0.5, 2.5))
            elif slow and not self._stop.is_set() and len(self._pending[stream]) < SLOW_BACKLOG:
                await asyncio.sleep(rng.uniform(0.3, 1.2))

    async def _replay(self, reader: str, stream: str, mode: str) -> None:
        """Follow ``stream``'s durable log from its start with tokens: one
        message per read, or (where the nodes serve it) up to ``maxMessages``
        in three reads of four."""
        rng = random.Random(f"{self.seed}/{reader}")
        seen = self._seen.setdefault(reader, set())
        outstanding = self._outstanding(mode, stream, seen)
        token: str | None = None
        while not self.done(reader, outstanding):
            via, url = rng.choice(self.targets())
            params = {"streamId": stream, "readFromDB": "true", "timeoutSeconds": str(POLL_SECONDS)}
            if token is not None:
                params["dbResumeToken"] = token
            batch = self.batches and rng.random() < 0.75
            if batch:
                params["maxMessages"] = str(rng.randint(2, 100))
            t0 = self.history.now()
            out = await self.caller.receive(url, params, POLL_SECONDS + 8)
            if batch and out.res == "ok" and out.body is not None and isinstance(out.body.get("messages"), list):
                got = [m for m in out.body["messages"] if isinstance(m, dict)]
                for k, m in enumerate(got):
                    self._record_receive(reader, "log", mode, stream, via, t0, Outcome("ok", 200, "", m),
                                         after=token or "", k=k)
                    seen.add(str(m.get("messageUuid")))
                token = str(out.body.get("dbResumeToken") or token)
                self._empties[reader] = 0
                continue
            uuid = self._record_receive(reader, "log", mode, stream, via, t0, out, after=token or "")
            if uuid is not None and out.body is not None:
                seen.add(uuid)
                token = str(out.body.get("dbResumeToken") or token)
                self._empties[reader] = 0
            elif out.res == "empty" and self._draining:
                self._empties[reader] = self._empties.get(reader, 0) + 1
            elif out.res != "empty":
                await asyncio.sleep(rng.uniform(0.05, 0.3))

    async def _abandoner(self, reader: str) -> None:
        """Polls that go away after a few milliseconds to a few hundred."""
        rng = random.Random(f"{self.seed}/{reader}")
        # Only odd streams: the others keep a strict FIFO check (a message
        # given back by a poll that went away may be overtaken).
        targets = [(m, s) for m, streams in self.streams.items() if m in MEMORY_MODES + ("durable",)
                   for s in streams[1::2]]
        while not self._stop.is_set():
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            mode, stream = rng.choice(targets)
            via, url = rng.choice(self.targets())
            params = {"streamId": stream, "timeoutSeconds": "10"}
            if mode == "durable" and rng.random() < 0.5:
                params["readFromDB"] = "true"  # an abandoned durable read must leave memory alone
            t0 = self.history.now()
            out = await self.caller.abandoned_receive(url, params, rng.uniform(0.002, 0.4))
            src = "log" if "readFromDB" in params else "mem"
            self._record_receive(reader, src, mode, stream, via, t0, out, abandoned=True)
