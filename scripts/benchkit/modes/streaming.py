"""``sse`` and ``ws``: streaming subscribers (issue 12).

Each mode measures three things against one ipubsub node (``--spawn``: one
node, storage none, heartbeats every 60 s so that idle figures are idle):

1. **idle**: ``--subscribers`` K subscribers, each on its own stream and its
   own connection (SSE: ``GET /api/v1/streams/subscribe``; WebSocket: one
   socket each with one subscription and ample credit) → server RSS growth
   per subscriber once settled (every one waiting in the engine);
2. **fan-out delivery**: one message sent to each of the K streams (16
   sender connections) → seconds until every subscriber has its event;
   (``--release batch``: sendBatch calls of 500 on 4 connections);
3. **throughput** (``--pairs`` P streams, one subscriber and one sender
   each, ``--window`` messages in flight per pair): delivered msg/s,
   send-to-event latency and server CPU per message, in interleaved rounds
   with Redis ``RPUSH``/``BLPOP`` pairs of the same shape (``pipe``'s redis
   target) → ``ratio_to_redis`` of CPU per message (``--no-redis`` skips it);
   ``--send-batch N``: the senders publish with ``sendBatch`` of N,
   subscribers still get one event / frame per message; the Redis reference
   stays ``RPUSH``/``BLPOP`` of one value (``--redis-batch N``: ``RPUSH`` of
   N values, ``BLMPOP ... COUNT N``).

The harness's subscribers are raw protocol objects (far cheaper than the
server): SSE events and WebSocket frames are counted, the send time in each
message (``{"t": ns}``) gives the latency.  Example::

    scripts/bench.py sse --spawn --subscribers 10000 --pairs 32 --rounds 3
    scripts/bench.py ws --spawn --subscribers 10000 --pairs 32 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import struct
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace

from ipubsub.protocol import HEALTH_PATH, SEND_BATCH_PATH, SEND_PATH, SUBSCRIBE_PATH, WS_PATH

from ..conn import Endpoint
from ..options import add_mode, add_rounds, add_window
from ..procstat import CpuMeter
from ..rawhttp import Connection, get_json, post_request
from ..rounds import Measure, interleave
from ..servers import Launcher
from ..window import Credits, Row, Tally, Window, run_window
from .memory import deliver_each, rss_growth
from .pipe import PipeLoad

__all__ = ["Subscriber"]

_T = re.compile(rb'"t":(\d+)')


class FirstMessages:
    """Counts messages received (one per idle stream); ``done`` once ``k`` came."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.n = 0
        self.done = asyncio.Event()

    def add(self, n: int) -> None:
        self.n += n
        if self.n >= self.k:
            self.done.set()


class Subscriber(asyncio.Protocol):
    """One SSE or WebSocket subscriber on a raw connection: counts messages,
    records latencies while ``tally`` is set, answers WebSocket pings."""

    def __init__(self, kind: str, credits: Credits | None = None) -> None:
        self.kind = kind
        self.transport: asyncio.Transport | None = None
        self.count = 0
        self.open = asyncio.get_running_loop().create_future()
        self.closed = False
        self.credits = credits
        self.tally: Tally | None = None
        self._buf = b""
        self._head = True
        self.first: FirstMessages | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed before the stream opened"))

    def data_received(self, data: bytes) -> None:
        buf = self._buf + data
        if self._head:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                self._buf = buf
                return
            status = buf[9:12]
            if status not in (b"200", b"101"):
                self.open.set_exception(ConnectionError(buf[:200].decode(errors="replace")))
                return
            self._head = False
            buf = buf[end + 4:]
            if not self.open.done():
                self.open.set_result(None)
        if self.kind == "sse":
            # complete events end with a blank line; count and read their send times
            cut = buf.rfind(b"\n\n")
            if cut < 0:
                self._buf = buf
                return
            done, self._buf = buf[:cut + 2], buf[cut + 2:]
            n = done.count(b"\nid: ") + done.startswith(b"id: ")
            self._got(n, done)
        else:
            self._frames(buf)

    def _frames(self, buf: bytes) -> None:
        n, texts, pos = 0, [], 0
        while len(buf) - pos >= 2:
            op, size = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            head = 2
            if size == 126:
                if len(buf) - pos < 4:
                    break
                size, head = struct.unpack_from(">H", buf, pos + 2)[0], 4
            elif size == 127:
                if len(buf) - pos < 10:
                    break
                size, head = struct.unpack_from(">Q", buf, pos + 2)[0], 10
            if len(buf) - pos < head + size:
                break
            payload = buf[pos + head:pos + head + size]
            pos += head + size
            if op == 0x1 and payload.startswith(b'{"op":"message"'):
                n += 1
                texts.append(payload)
            elif op == 0x9 and self.transport is not None:  # ping: pong, masked with a zero key
                self.transport.write(bytes((0x8A, 0x80 | len(payload))) + b"\0\0\0\0" + payload)
        self._buf = buf[pos:]
        self._got(n, b"".join(texts))

    def _got(self, n: int, data: bytes) -> None:
        if not n:
            return
        if self.first is not None:
            self.first.add(n)
        self.count += n
        if self.credits is not None:
            self.credits.give(n)
        tally = self.tally
        if tally is not None:
            tally.delivered += n
            tally.receives += n
            now = time.time_ns()
            tally.latencies_ms += [(now - int(t)) / 1e6 for t in _T.findall(data)]

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def ws_frame(text: bytes) -> bytes:
    """A client text frame (masked with a zero key: the payload is unchanged)."""
    n = len(text)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + struct.pack(">H", n)
    return head + b"\0\0\0\0" + text


async def subscribe(
    entry: Endpoint, kind: str, stream: str | list[str], credits: Credits | None = None
) -> Subscriber:
    """Open one subscriber of ``stream`` and wait until its stream is open
    (WebSocket: a list of streams is one socket with a subscription each)."""
    loop = asyncio.get_running_loop()
    _, sub = await loop.create_connection(lambda: Subscriber(kind, credits), entry.host, entry.port)
    assert sub.transport is not None
    if kind == "sse":
        sub.transport.write(f"GET {SUBSCRIBE_PATH}?streamId={stream} HTTP/1.1\r\nHost: {entry.netloc}\r\n\r\n".encode())
    else:
        key = base64.b64encode(os.urandom(16)).decode()
        sub.transport.write(
            f"GET {WS_PATH} HTTP/1.1\r\nHost: {entry.netloc}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
    await sub.open
    if kind == "ws":
        for i, name in enumerate([stream] if isinstance(stream, str) else stream):
            frame = {"op": "subscribe", "sub": str(i), "streamId": name, "credit": 1_000_000_000}
            sub.transport.write(ws_frame(json.dumps(frame).encode()))
    return sub


async def _waiting(entry: Endpoint, n: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, health = await get_json(entry, HEALTH_PATH)
        if status == 200 and health["waitingReceivers"] >= n:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"fewer than {n} subscribers waiting after {timeout} s")


async def deliver_batched(entry: Endpoint, streams: Sequence[str], per_call: int = 500, connections: int = 4) -> None:
    """One message to each stream, ``per_call`` of them per ``sendBatch``."""
    conns = [await Connection.open(entry) for _ in range(connections)]
    chunks = [streams[i:i + per_call] for i in range(0, len(streams), per_call)]

    async def feed(k: int) -> None:
        for chunk in chunks[k::connections]:
            body = json.dumps({"messages": [{"streamId": s, "message": i} for i, s in enumerate(chunk)]}).encode()
            status, _ = await conns[k].request(post_request(entry.netloc, SEND_BATCH_PATH, body))
            assert status == 200, status

    try:
        await asyncio.gather(*(feed(k) for k in range(connections)))
    finally:
        for c in conns:
            c.close()


async def idle_and_fanout(
    entry: Endpoint, pid: int | None, kind: str, k: int, settle: float, batched: bool, per_socket: int = 1
) -> Row:
    """K idle subscribers: RSS per subscriber, then one message to each
    (single sends on 16 connections, or ``batched``: sendBatch of 500)."""
    run = uuid.uuid4().hex[:8]
    streams = [f"{kind}-idle-{run}-{i}" for i in range(k)]
    subs: list[Subscriber] = []

    groups: list[str | list[str]] = list(streams) if per_socket == 1 else [
        streams[i:i + per_socket] for i in range(0, k, per_socket)]

    async def open_all() -> None:
        for i in range(0, len(groups), 200):  # 200 at a time: the accept queue stays short
            subs.extend(await asyncio.gather(*(subscribe(entry, kind, g) for g in groups[i:i + 200])))

    out: Row = {"label": f"{kind}-idle", "subscribers": k, "connections": len(groups),
                "release": "sendBatch of 500" if batched else "single sends"}
    try:
        if pid is not None:
            async def ready() -> bool:
                await _waiting(entry, k)
                return True

            out |= await rss_growth({"": pid}, lambda: k, "subscriber", open_all, settle, ready)
        else:
            await open_all()
            await _waiting(entry, k)
        first = FirstMessages(k - sum(s.count for s in subs))
        for s in subs:
            s.first = first
        t0 = time.perf_counter()
        await (deliver_batched(entry, streams) if batched else deliver_each(entry, streams))
        try:
            await asyncio.wait_for(first.done.wait(), 120)
        except TimeoutError:
            pass
        out["deliver_all_seconds"] = round(time.perf_counter() - t0, 3)
        out["delivered"] = sum(s.count for s in subs)
        out["disconnected"] = sum(s.closed for s in subs)
    finally:
        for s in subs:
            s.close()
    return out


async def stream_pipe(entry: Endpoint, pids: Sequence[int], kind: str, load: PipeLoad) -> Tally:
    """P pairs: a sender per stream keeping ``load.window`` messages in
    flight, a streaming subscriber per stream."""
    run = uuid.uuid4().hex[:8]
    streams = [f"{kind}-pipe-{run}-{i}" for i in range(load.pairs)]
    tally, flags = Tally(), Window()
    batch = load.batch
    credits = {s: Credits(load.window * batch) for s in streams}
    subs = [await subscribe(entry, kind, s, credits[s]) for s in streams]
    await _waiting(entry, len(subs), 30)

    async def sender(stream: str) -> None:
        conn = await Connection.open(entry)
        credit = credits[stream]
        head = b'{"streamId":"%s","message":{"t":' % stream.encode()
        try:
            while not flags.stop:
                await credit.take(batch)
                if flags.stop:
                    break
                t0 = time.perf_counter()
                if batch == 1:
                    request = post_request(entry.netloc, SEND_PATH, head + b"%d}}" % time.time_ns())
                else:  # one sendBatch of ``batch`` messages for this stream
                    item = head + b"%d}}" % time.time_ns()
                    request = post_request(entry.netloc, SEND_BATCH_PATH, b'{"messages":[%s]}' % b",".join([item] * batch))
                status, _ = await conn.request(request)
                if flags.measuring:
                    tally.sends += 1
                    tally.errors += status != 200
                    tally.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
        finally:
            conn.close()

    async def measuring() -> None:  # subscribers count only inside the window
        while not flags.stop:
            for s in subs:
                s.tally = tally if flags.measuring else None
            await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(sender(s)) for s in streams] + [asyncio.create_task(measuring())]
    try:
        await run_window(flags, tasks, credits.values(), load.warmup, load.duration, CpuMeter(pids), tally)
    finally:
        for s in subs:
            s.close()
    return tally


async def run(args: argparse.Namespace, launch: Launcher) -> AsyncIterator[Row]:
    kind = args.mode
    config = {"stream": {"heartbeat_seconds": 60, "max_subscribers": 200_000, "max_subscribers_per_stream": 1000,
                         "max_subscriptions_per_socket": 1000},
              "limits": {"max_connections": 200_000}}
    if args.spawn:
        servers = await launch.ipubsub(1, extra=config)
        entry, pid = servers[0].endpoint, servers[0].pid
    else:
        servers, entry, pid = [], Endpoint.parse(args.url), args.pid
    if args.subscribers:
        yield await idle_and_fanout(entry, pid, kind, args.subscribers, args.settle, args.release == "batch",
                                    getattr(args, "per_socket", 1))
    if args.pairs:
        load = PipeLoad(pairs=args.pairs, duration=args.duration, warmup=args.warmup, window=args.window,
                        batch=args.send_batch)
        pids = [pid] if pid is not None else []

        async def measure_stream() -> Row:
            return (await stream_pipe(entry, pids, kind, load)).report(kind)

        plan: list[tuple[str, Measure]] = [(kind, measure_stream)]
        if not args.no_redis:
            from .redis import redis_pipe

            redis = (await launch.redis()) if args.spawn else None
            if redis is not None:
                redis_load = replace(load, batch=args.redis_batch)

                async def measure_redis() -> Row:
                    return (await redis_pipe(redis.endpoint, [redis.pid], redis_load)).report("redis")

                plan.append(("redis", measure_redis))
        async for row in interleave(plan, args.rounds, args.ratio_to or (["redis"] if len(plan) > 1 else [])):
            yield row
    await launch.stop(servers)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for kind, what in (("sse", "Server-Sent Events"), ("ws", "WebSocket")):
        p = add_mode(sub, kind, run, f"{what} subscribers: RSS per idle subscriber, fan-out delivery time, "
                                     "throughput and CPU per message (next to Redis)")
        p.add_argument("--url", default="http://127.0.0.1:8080", help="an already running node")
        p.add_argument("--pid", type=int, help="its process id, for RSS and CPU from /proc")
        p.add_argument("--spawn", action="store_true", help="start the node (and redis-server) for this run")
        p.add_argument("--subscribers", type=int, default=10_000, help="idle subscribers (0: skip)")
        p.add_argument("--settle", type=float, default=3.0, help="seconds at least before reading RSS")
        p.add_argument("--release", choices=("single", "batch"), default="single",
                       help="one message to each idle subscriber by single sends (16 connections) or sendBatch of 500")
        p.add_argument("--pairs", type=int, default=32, help="streams of the throughput part (0: skip)")
        p.add_argument("--window", type=int, default=1, help="sends (of --send-batch messages) in flight per stream")
        p.add_argument("--send-batch", type=int, default=1,
                       help="messages per send (sendBatch); Redis: RPUSH of N values, BLMPOP COUNT N")
        p.add_argument("--no-redis", action="store_true", help="no Redis reference in the throughput part")
        p.add_argument("--redis-batch", type=int, default=1,
                       help="the Redis reference's values per RPUSH / BLMPOP COUNT (default 1: RPUSH/BLPOP, "
                            "the issue's reference, whatever --send-batch is)")
        if kind == "ws":
            p.add_argument("--per-socket", type=int, default=1,
                           help="idle subscriptions per WebSocket (many subscriptions share one socket)")
        add_window(p)
        add_rounds(p)
