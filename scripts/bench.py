#!/usr/bin/env python3
"""Load generator for a running ipubsub node (it starts nothing itself).

Modes:
  pipe     C stream pairs, one sender and one long-polling receiver each:
           delivered msg/s, latency p50/p99, server CPU per message.
  idle     K waiting long polls: server RSS per waiting poll, then the time to
           deliver one message to each.
  cluster  the pipe through the stream's owner versus through another node
           (the forwarding hop), given two node URLs.
  persist  persisted sends at 1, 16, 64 concurrent writers, then replay.
  client   the pipe through ipubsub.client.AsyncClient (calls each stream's
           owner) versus a plain aiohttp session sending everything to one
           node (which forwards what it does not own): the hop the client saves.
  streams  N streams holding one small message each: server RSS per stream.

The same harness runs against ``scripts/baseline_server.py`` (a trivial
aiohttp endpoint) with ``--baseline``, giving the ceiling of any aiohttp server
on the machine.  Give ``--pid`` of the server process to read its CPU time and
RSS from /proc.  The client speaks raw HTTP/1.1 keep-alive over asyncio
streams so that it costs far less CPU than the server it drives.

Examples (see docs/benchmarks.md for the full procedure):
  python scripts/bench.py pipe --url http://127.0.0.1:8080 --pid PID --pairs 32
  python scripts/bench.py idle --url http://127.0.0.1:8080 --pid PID --polls 5000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field

# -- a minimal HTTP/1.1 keep-alive client ------------------------------------


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        loop = asyncio.get_running_loop()
        _, proto = await loop.create_connection(cls, host, port)
        return proto

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        waiter = self.waiter
        if waiter is None:
            return
        buf = self.buf
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        length = 0
        if at >= 0:
            eol = head.find(b"\r\n", at + 2)
            length = int(head[at + 17 : eol if eol >= 0 else len(head)])
        if len(buf) < end + 4 + length:
            return
        body = bytes(buf[end + 4 : end + 4 + length])
        status = int(head[9:12])
        del buf[: end + 4 + length]
        self.waiter = None
        if not waiter.done():
            waiter.set_result((status, body))

    async def request(self, data: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def get_request(host: str, path: str, query: dict[str, str]) -> bytes:
    return f"GET {path}?{urllib.parse.urlencode(query)} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode()


def post_request(host: str, path: str, body: bytes) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


# -- server process readings ----------------------------------------------------


def proc_cpu_seconds(pid: int | None) -> float | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss_bytes(pid: int | None) -> int | None:
    if pid is None:
        return None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


# -- pipe ---------------------------------------------------------------------------


@dataclass
class PipeResult:
    delivered: int = 0
    sends: int = 0
    receives: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    send_rtt_ms: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float | None = None

    def report(self, label: str, baseline: bool) -> dict[str, object]:
        requests = self.sends + self.receives
        out: dict[str, object] = {
            "label": label,
            "seconds": round(self.seconds, 2),
            "requests_per_s": round(requests / self.seconds),
            "errors": self.errors,
        }
        if baseline:
            # No matching: each send and each receive is one independent request.
            out["msg_per_s"] = round(requests / 2 / self.seconds)
            out["send_rtt_p50_ms"] = round(percentile(self.send_rtt_ms, 50), 3)
            out["send_rtt_p99_ms"] = round(percentile(self.send_rtt_ms, 99), 3)
            if self.cpu_seconds is not None and requests:
                out["cpu_us_per_request"] = round(self.cpu_seconds / requests * 1e6, 2)
                out["cpu_us_per_msg"] = round(self.cpu_seconds / requests * 2e6, 2)
        else:
            out["msg_per_s"] = round(self.delivered / self.seconds)
            out["latency_p50_ms"] = round(percentile(self.latencies_ms, 50), 3)
            out["latency_p99_ms"] = round(percentile(self.latencies_ms, 99), 3)
            out["send_rtt_p50_ms"] = round(percentile(self.send_rtt_ms, 50), 3)
            out["send_rtt_p99_ms"] = round(percentile(self.send_rtt_ms, 99), 3)
            if self.cpu_seconds is not None and self.delivered:
                out["cpu_us_per_msg"] = round(self.cpu_seconds / self.delivered * 1e6, 2)
                out["cpu_us_per_request"] = round(self.cpu_seconds / max(1, requests) * 1e6, 2)
        return out


class Window:
    """Flags the load loops read: measure only inside the window, then stop."""

    measuring = False
    stop = False


async def run_window(
    window: Window,
    tasks: list[asyncio.Task[None]],
    credits: dict[str, asyncio.Semaphore],
    warmup: float,
    duration: float,
    pid: int | None,
    result: PipeResult,
) -> None:
    """Warm up, measure for ``duration`` (server CPU too), then stop the loops."""
    await asyncio.sleep(warmup)
    cpu0 = proc_cpu_seconds(pid)
    t0 = time.perf_counter()
    window.measuring = True
    await asyncio.sleep(duration)
    window.measuring = False
    result.seconds = time.perf_counter() - t0
    cpu1 = proc_cpu_seconds(pid)
    if cpu0 is not None and cpu1 is not None:
        result.cpu_seconds = cpu1 - cpu0
    window.stop = True
    for credit in credits.values():
        credit.release()
    await asyncio.wait(tasks, timeout=5)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def run_pipe(
    send_url: str,
    receive_url: str,
    pairs: int,
    duration: float,
    warmup: float,
    pid: int | None,
    baseline: bool,
    streams: list[str] | None = None,
    window: int = 1,
) -> PipeResult:
    """Each pair keeps at most ``window`` messages in flight: the sender waits
    until its receiver has taken a message before sending beyond the window.
    With window 1 every message takes the single-message path: a send matched
    with a receive, usually one already parked in a long poll."""
    su = urllib.parse.urlsplit(send_url)
    ru = urllib.parse.urlsplit(receive_url)
    run = uuid.uuid4().hex[:8]
    names = streams or [f"bench-{run}-{i}" for i in range(pairs)]
    result = PipeResult()
    flags = Window()
    credits = {s: asyncio.Semaphore(window) for s in names}

    async def sender(stream: str) -> None:
        conn = await Connection.open(su.hostname or "127.0.0.1", su.port or 80)
        credit = credits[stream]
        try:
            while not flags.stop:
                if not baseline:
                    await credit.acquire()
                body = (
                    b'{"streamId":"%s","message":{"t":%d},"inMemoryStreamSize":%d}'
                    % (stream.encode(), time.time_ns(), max(16, window))
                )
                t0 = time.perf_counter()
                status, _ = await conn.request(post_request(su.netloc, "/api/v1/streams/send", body))
                if flags.measuring:
                    result.sends += 1
                    result.send_rtt_ms.append((time.perf_counter() - t0) * 1000)
                    if status != 200:
                        result.errors += 1
        finally:
            conn.close()

    async def receiver(stream: str) -> None:
        conn = await Connection.open(ru.hostname or "127.0.0.1", ru.port or 80)
        req = get_request(ru.netloc, "/api/v1/streams/receive", {"streamId": stream, "timeoutSeconds": "2"})
        credit = credits[stream]
        try:
            while not flags.stop:
                status, body = await conn.request(req)
                if status == 200 and not baseline:
                    credit.release()
                if not flags.measuring:
                    continue
                result.receives += 1
                if status == 200:
                    result.delivered += 1
                    if not baseline:
                        sent = json.loads(body)["message"]["t"]
                        result.latencies_ms.append((time.time_ns() - sent) / 1e6)
                elif status != 424:
                    result.errors += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(receiver(s)) for s in names]
    tasks += [asyncio.create_task(sender(s)) for s in names]
    await run_window(flags, tasks, credits, warmup, duration, pid, result)
    return result


# -- idle -------------------------------------------------------------------------------


async def run_idle(url: str, polls: int, pid: int | None, baseline: bool, settle: float) -> dict[str, object]:
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    run = uuid.uuid4().hex[:8]
    # Warm the server's allocator with one short round first.
    rss0 = proc_rss_bytes(pid)
    conns: list[Connection] = []
    waits: list[asyncio.Future[tuple[int, bytes]]] = []
    for i in range(polls):
        conn = await Connection.open(host, port)
        conns.append(conn)
        conn.waiter = asyncio.get_running_loop().create_future()
        assert conn.transport is not None
        conn.transport.write(
            get_request(u.netloc, "/api/v1/streams/receive", {"streamId": f"idle-{run}-{i}", "timeoutSeconds": "120"})
        )
        waits.append(conn.waiter)
    await asyncio.sleep(settle)
    rss1 = proc_rss_bytes(pid)
    # Deliver one message to each waiting poll, through 16 sender connections.
    t0 = time.perf_counter()
    senders = [await Connection.open(host, port) for _ in range(16)]
    if baseline:
        await senders[0].request(post_request(u.netloc, "/release", b"{}"))
    else:

        async def feed(k: int) -> None:
            for i in range(k, polls, len(senders)):
                body = json.dumps({"streamId": f"idle-{run}-{i}", "message": i}).encode()
                await senders[k].request(post_request(u.netloc, "/api/v1/streams/send", body))

        await asyncio.gather(*(feed(k) for k in range(len(senders))))
    done = await asyncio.gather(*waits, return_exceptions=True)
    elapsed = time.perf_counter() - t0
    ok = sum(1 for d in done if isinstance(d, tuple) and d[0] == 200)
    for c in conns + senders:
        c.close()
    out: dict[str, object] = {"polls": polls, "delivered": ok, "deliver_all_seconds": round(elapsed, 3)}
    if rss0 is not None and rss1 is not None:
        out["rss_before_mib"] = round(rss0 / 2**20, 1)
        out["rss_after_mib"] = round(rss1 / 2**20, 1)
        out["rss_per_poll_kib"] = round((rss1 - rss0) / polls / 1024, 2)
    return out


# -- streams ------------------------------------------------------------------------------


async def run_streams(url: str, count: int, pid: int | None, connections: int = 64) -> dict[str, object]:
    """Create ``count`` streams, each holding one small message, then idle."""
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    run = uuid.uuid4().hex[:8]
    rss0 = proc_rss_bytes(pid)
    t0 = time.perf_counter()
    errors = 0

    async def feed(k: int) -> None:
        nonlocal errors
        conn = await Connection.open(host, port)
        try:
            for i in range(k, count, connections):
                body = b'{"streamId":"user-%s-%d","message":{"n":%d}}' % (run.encode(), i, i)
                status, _ = await conn.request(post_request(u.netloc, "/api/v1/streams/send", body))
                errors += status != 200
        finally:
            conn.close()

    await asyncio.gather(*(feed(k) for k in range(connections)))
    elapsed = time.perf_counter() - t0
    await asyncio.sleep(2)
    rss1 = proc_rss_bytes(pid)
    out: dict[str, object] = {"streams": count, "errors": errors, "create_seconds": round(elapsed, 1)}
    if rss0 is not None and rss1 is not None:
        out["rss_before_mib"] = round(rss0 / 2**20, 1)
        out["rss_after_mib"] = round(rss1 / 2**20, 1)
        out["rss_per_stream_bytes"] = round((rss1 - rss0) / count)
        out["rss_for_1m_streams_mib"] = round((rss1 - rss0) / count * 1e6 / 2**20)
    return out


# -- cluster ----------------------------------------------------------------------------


async def owned_streams(url: str, node: str, count: int) -> list[str]:
    """Stream ids owned by ``node`` according to ``url``'s ring."""
    u = urllib.parse.urlsplit(url)
    conn = await Connection.open(u.hostname or "127.0.0.1", u.port or 80)
    run = uuid.uuid4().hex[:8]
    found: list[str] = []
    i = 0
    try:
        while len(found) < count:
            sid = f"cl-{run}-{i}"
            i += 1
            status, body = await conn.request(get_request(u.netloc, "/api/v1/streams/owner", {"streamId": sid}))
            if status == 200 and json.loads(body)["node"] == node:
                found.append(sid)
    finally:
        conn.close()
    return found


async def node_name(url: str) -> str:
    u = urllib.parse.urlsplit(url)
    conn = await Connection.open(u.hostname or "127.0.0.1", u.port or 80)
    try:
        _, body = await conn.request(get_request(u.netloc, "/", {}))
        return str(json.loads(body)["node"])
    finally:
        conn.close()


# -- client -------------------------------------------------------------------------------


async def run_client_pipe(urls: list[str], pairs: int, duration: float, warmup: float, owner_aware: bool) -> PipeResult:
    """Pairs of (send, receive) loops through a real aiohttp-based client."""
    import aiohttp

    from ipubsub.client import AsyncClient

    run = uuid.uuid4().hex[:8]
    names = [f"client-{run}-{i}" for i in range(pairs)]
    result = PipeResult()
    flags = Window()
    credits = {s: asyncio.Semaphore(1) for s in names}
    client = AsyncClient(urls) if owner_aware else None
    session = aiohttp.ClientSession() if not owner_aware else None
    target = urls[0]

    async def send(stream: str) -> None:
        if client is not None:
            await client.send(stream, {"t": time.time_ns()})
        else:
            assert session is not None
            body = {"streamId": stream, "message": {"t": time.time_ns()}}
            async with session.post(f"{target}/api/v1/streams/send", json=body) as r:
                await r.read()

    async def receive(stream: str) -> dict[str, object] | None:
        if client is not None:
            got = await client.receive(stream, timeout=2)
            return None if got is None else {"message": got.message}
        assert session is not None
        params = {"streamId": stream, "timeoutSeconds": "2"}
        async with session.get(f"{target}/api/v1/streams/receive", params=params) as r:
            return await r.json() if r.status == 200 else None

    async def sender(stream: str) -> None:
        while not flags.stop:
            await credits[stream].acquire()
            t0 = time.perf_counter()
            await send(stream)
            if flags.measuring:
                result.sends += 1
                result.send_rtt_ms.append((time.perf_counter() - t0) * 1000)

    async def receiver(stream: str) -> None:
        while not flags.stop:
            got = await receive(stream)
            if got is not None:
                credits[stream].release()
                if flags.measuring:
                    result.delivered += 1
                    result.latencies_ms.append((time.time_ns() - got["message"]["t"]) / 1e6)  # type: ignore[index]
            if flags.measuring:
                result.receives += 1

    tasks = [asyncio.create_task(receiver(s)) for s in names] + [asyncio.create_task(sender(s)) for s in names]
    await run_window(flags, tasks, credits, warmup, duration, None, result)
    if client is not None:
        await client.close()
    if session is not None:
        await session.close()
    return result


# -- persist ------------------------------------------------------------------------------


async def run_persist(
    url: str, writers: int, duration: float, replay_limit: int, streams: int = 1
) -> dict[str, object]:
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    run = uuid.uuid4().hex[:8]
    stream = f"persist-{run}-{writers}"
    names = [stream] if streams <= 1 else [f"{stream}-{i}" for i in range(streams)]
    count = 0
    first_stream_count = 0
    errors = 0
    lat: list[float] = []
    flags = Window()

    async def writer(k: int) -> None:
        nonlocal count, errors, first_stream_count
        conn = await Connection.open(host, port)
        n = 0
        try:
            while not flags.stop:
                body = json.dumps(
                    {"streamId": names[k % len(names)], "messageUuid": f"{k}-{n}", "message": {"k": k, "n": n},
                     "writeToDB": True, "dbTTLSeconds": 3600}
                ).encode()
                n += 1
                t0 = time.perf_counter()
                status, _ = await conn.request(post_request(u.netloc, "/api/v1/streams/send", body))
                lat.append((time.perf_counter() - t0) * 1000)
                if status == 200:
                    count += 1
                    first_stream_count += k % len(names) == 0
                else:
                    errors += 1
        finally:
            conn.close()

    tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
    t0 = time.perf_counter()
    await asyncio.sleep(duration)
    flags.stop = True
    await asyncio.gather(*tasks, return_exceptions=True)
    write_seconds = time.perf_counter() - t0
    # Replay (the first) stream from the start, one long poll per message.
    conn = await Connection.open(host, port)
    token: str | None = None
    read = 0
    t1 = time.perf_counter()
    try:
        while read < min(first_stream_count, replay_limit):
            query = {"streamId": names[0], "readFromDB": "true", "timeoutSeconds": "0"}
            if token:
                query["dbResumeToken"] = token
            status, body = await conn.request(get_request(u.netloc, "/api/v1/streams/receive", query))
            if status != 200:
                break
            token = json.loads(body)["dbResumeToken"]
            read += 1
    finally:
        conn.close()
    replay_seconds = time.perf_counter() - t1
    return {
        "writers": writers,
        "streams": len(names),
        "persisted_msg_per_s": round(count / write_seconds),
        "send_p50_ms": round(percentile(lat, 50), 2),
        "send_p99_ms": round(percentile(lat, 99), 2),
        "errors": errors,
        "replayed": read,
        "replay_msg_per_s": round(read / replay_seconds) if replay_seconds > 0 else None,
    }


# -- command line ---------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    pipe = sub.add_parser("pipe", help="sender/receiver pairs")
    pipe.add_argument("--url", default="http://127.0.0.1:8080")
    pipe.add_argument("--pairs", type=int, default=32)
    pipe.add_argument("--duration", type=float, default=10.0)
    pipe.add_argument("--warmup", type=float, default=2.0)
    pipe.add_argument("--pid", type=int, help="server pid, for CPU time from /proc")
    pipe.add_argument("--window", type=int, default=1, help="messages in flight per pair")
    pipe.add_argument("--baseline", action="store_true", help="the target is scripts/baseline_server.py")
    pipe.add_argument("--label", default="")
    idle = sub.add_parser("idle", help="many waiting long polls")
    idle.add_argument("--url", default="http://127.0.0.1:8080")
    idle.add_argument("--polls", type=int, default=5000)
    idle.add_argument("--pid", type=int, help="server pid, for RSS from /proc")
    idle.add_argument("--settle", type=float, default=3.0)
    idle.add_argument("--baseline", action="store_true", help="the target is baseline_server.py --hold")
    idle.add_argument("--label", default="")
    cluster = sub.add_parser("cluster", help="owner versus forwarded calls")
    cluster.add_argument("--owner-url", required=True, help="node that owns the streams used")
    cluster.add_argument("--via-url", required=True, help="another node of the same cluster")
    cluster.add_argument("--pairs", type=int, default=16)
    cluster.add_argument("--duration", type=float, default=8.0)
    cluster.add_argument("--warmup", type=float, default=2.0)
    persist = sub.add_parser("persist", help="persisted sends and replay")
    persist.add_argument("--url", default="http://127.0.0.1:8080")
    persist.add_argument("--writers", type=int, nargs="+", default=[1, 16, 64])
    persist.add_argument("--duration", type=float, default=5.0)
    persist.add_argument("--replay-limit", type=int, default=20000)
    persist.add_argument("--streams", type=int, default=1, help="spread the writers over this many streams")
    persist.add_argument("--label", default="")
    client = sub.add_parser("client", help="owner-aware client versus one fixed node")
    client.add_argument("--urls", required=True, help="comma-separated node URLs of one cluster")
    client.add_argument("--pairs", type=int, default=32)
    client.add_argument("--duration", type=float, default=8.0)
    client.add_argument("--warmup", type=float, default=2.0)
    streams = sub.add_parser("streams", help="many idle streams holding one message each")
    streams.add_argument("--url", default="http://127.0.0.1:8080")
    streams.add_argument("--count", type=int, default=1_000_000)
    streams.add_argument("--pid", type=int, help="server pid, for RSS from /proc")
    args = parser.parse_args()
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        if args.mode == "pipe":
            res = runner.run(
                run_pipe(
                    args.url, args.url, args.pairs, args.duration, args.warmup, args.pid, args.baseline,
                    window=args.window,
                )
            )
            out = res.report(args.label or ("baseline" if args.baseline else "ipubsub"), args.baseline)
            out["pairs"] = args.pairs
            print(json.dumps(out))
        elif args.mode == "idle":
            out = runner.run(run_idle(args.url, args.polls, args.pid, args.baseline, args.settle))
            out["label"] = args.label or ("baseline" if args.baseline else "ipubsub")
            print(json.dumps(out))
        elif args.mode == "cluster":
            owner = runner.run(node_name(args.owner_url))
            streams = runner.run(owned_streams(args.owner_url, owner, args.pairs))
            for label, url in (("direct-to-owner", args.owner_url), ("forwarded", args.via_url)):
                res = runner.run(
                    run_pipe(url, url, args.pairs, args.duration, args.warmup, None, False, streams=streams)
                )
                out = res.report(label, False)
                out["pairs"] = args.pairs
                print(json.dumps(out))
        elif args.mode == "client":
            urls = args.urls.split(",")
            for label, aware in (("client-owner-aware", True), ("plain-session-one-node", False)):
                res = runner.run(run_client_pipe(urls, args.pairs, args.duration, args.warmup, aware))
                out = res.report(label, False)
                out["pairs"] = args.pairs
                print(json.dumps(out))
        elif args.mode == "streams":
            print(json.dumps(runner.run(run_streams(args.url, args.count, args.pid))))
        elif args.mode == "persist":
            for writers in args.writers:
                out = runner.run(run_persist(args.url, writers, args.duration, args.replay_limit, args.streams))
                out["label"] = args.label
                print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
