#!/usr/bin/env python3
"""Micro benchmark of one node-to-node call: the peer link versus the
transports it could have been built on.

Each mode runs an echo server in a child process and C concurrent callers in
this process, both pinned to the same CPU (so calls/s is what one core does
for both sides), and reports calls/s and CPU µs per call of each side (from
/proc for the server, process_time for the caller):

  link   ipubsub.cluster.link (asyncio BufferedProtocol, length-prefixed
         MessagePack frames, one connection, writes coalesced per tick)
  ws     the same frames, coalesced the same way, as aiohttp WebSocket binary
         messages over one connection (the alternative transport)
  http   one aiohttp HTTP POST per call over a keep-alive ClientSession pool
         (what forwarding did before the link)

Example:
  python scripts/link_bench.py --modes link,ws,http --concurrency 64 --duration 5 --cpu 0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import msgspec

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from ipubsub.cluster.link import Identity, Incoming, LinkClient, LinkServer
from ipubsub.cluster.link.frames import REPLY, FrameReader, FrameWriter


class Echo(msgspec.Struct, array_like=True, tag=1):
    n: int


class Echoed(msgspec.Struct, array_like=True):
    n: int


IDENTITY = Identity("bench", "server", 1, b"bench-secret")
CALLER = Identity("bench", "caller", 2, b"bench-secret")
MAX_FRAME = 8 * 1024 * 1024


# -- servers (child process) -----------------------------------------------------------


async def serve(mode: str) -> None:
    from aiohttp import WSMsgType, web

    if mode == "link":
        def handler(incoming: Incoming) -> None:
            incoming.reply(Echoed(incoming.meta.n), incoming.payload)

        server = LinkServer(IDENTITY, handler, Echo)
        _, port = await server.start("127.0.0.1", 0)
    else:
        app = web.Application()
        if mode == "http":
            async def echo(request: web.Request) -> web.Response:
                return web.Response(body=await request.read(), content_type="application/json")

            app.router.add_post("/echo", echo)
        else:
            decode = msgspec.msgpack.Decoder(Echo).decode

            async def ws_echo(request: web.Request) -> web.WebSocketResponse:
                ws = web.WebSocketResponse(compress=False, max_msg_size=MAX_FRAME)
                await ws.prepare(request)
                out = _TickWriter(lambda data: ws.send_bytes(data))

                def on_frame(kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
                    out.add(REPLY, call_id, Echoed(decode(meta).n), payload)

                reader = FrameReader(MAX_FRAME)
                async for msg in ws:
                    if msg.type == WSMsgType.BINARY:
                        _feed(reader, msg.data, on_frame)
                return ws

            app.router.add_get("/ws", ws_echo)
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"PORT {port}", flush=True)
    await asyncio.Event().wait()


def _feed(reader: FrameReader, data: bytes, on_frame: Callable[..., None]) -> None:
    view = memoryview(data)
    while view:
        buf = reader.get_buffer()
        n = min(len(buf), len(view))
        buf[:n] = view[:n]
        buf.release()
        reader.parse(n, on_frame)
        view = view[n:]


class _TickWriter:
    """Frames of one tick sent as one WebSocket message."""

    def __init__(self, send: Callable[[bytes], Any]) -> None:
        self._writer = FrameWriter(MAX_FRAME)
        self._send = send
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def add(self, kind: int, call_id: int, meta: Any, payload: bytes) -> None:
        self._writer.add(kind, call_id, meta, payload)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        task = asyncio.ensure_future(self._send(bytes(self._writer.take())))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


# -- callers ------------------------------------------------------------------------------


async def caller_link(port: int) -> tuple[Callable[[int, bytes], Any], Callable[[], Any]]:
    client: LinkClient[Echoed] = LinkClient(f"127.0.0.1:{port}", CALLER, Echoed)

    async def call(n: int, payload: bytes) -> None:
        reply = await client.call(Echo(n), payload)
        assert reply.meta.n == n and reply.payload == payload

    return call, client.close


async def caller_http(port: int) -> tuple[Callable[[int, bytes], Any], Callable[[], Any]]:
    import aiohttp

    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = f"http://127.0.0.1:{port}/echo"

    async def call(n: int, payload: bytes) -> None:
        async with session.post(url, data=payload, headers={"Content-Type": "application/json"}) as resp:
            assert await resp.read() == payload

    return call, session.close


async def caller_ws(port: int) -> tuple[Callable[[int, bytes], Any], Callable[[], Any]]:
    import aiohttp

    session = aiohttp.ClientSession()
    ws = await session.ws_connect(f"http://127.0.0.1:{port}/ws", compress=0, max_msg_size=MAX_FRAME)
    waiting: dict[int, asyncio.Future[tuple[int, bytes]]] = {}
    decode = msgspec.msgpack.Decoder(Echoed).decode
    out = _TickWriter(ws.send_bytes)
    reader = FrameReader(MAX_FRAME)
    ids = iter(range(1, 1 << 31))

    def on_frame(kind: int, call_id: int, meta: memoryview, payload: bytes) -> None:
        waiting.pop(call_id).set_result((decode(meta).n, payload))

    async def read_loop() -> None:
        async for msg in ws:
            _feed(reader, msg.data, on_frame)

    reading = asyncio.get_running_loop().create_task(read_loop(), name="link-bench-ws-reader")

    async def call(n: int, payload: bytes) -> None:
        call_id = next(ids)
        fut = waiting[call_id] = asyncio.get_running_loop().create_future()
        out.add(1, call_id, Echo(n), payload)
        got = await fut
        assert got == (n, payload)

    async def close() -> None:
        reading.cancel()
        await ws.close()
        await session.close()

    return call, close


CALLERS = {"link": caller_link, "http": caller_http, "ws": caller_ws}


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def measure(mode: str, concurrency: int, duration: float, warmup: float, payload_size: int,
                  cpu: int | None) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--serve", mode]
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        if cpu is not None:
            os.sched_setaffinity(child.pid, {cpu})
        assert child.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(child.stdout.readline), 15)
        port = int(line.split()[1])
        call, close = await CALLERS[mode](port)
        payload = b'{"k":"' + b"x" * max(0, payload_size - 8) + b'"}'
        count = 0
        running = True
        latencies: list[float] = []
        clock = time.perf_counter

        async def worker(k: int) -> None:
            nonlocal count
            while running:
                started = clock()
                await call(k, payload)
                latencies.append(clock() - started)
                count += 1

        workers = [asyncio.ensure_future(worker(k)) for k in range(concurrency)]
        await asyncio.sleep(warmup)
        latencies.clear()
        n0, t0, s0, c0 = count, time.perf_counter(), proc_cpu(child.pid), time.process_time()
        await asyncio.sleep(duration)
        n1, t1, s1, c1 = count, time.perf_counter(), proc_cpu(child.pid), time.process_time()
        running = False
        window = sorted(latencies)
        await asyncio.wait(workers, timeout=10)
        await close()
        calls = n1 - n0
        return {
            "calls_per_s": calls / (t1 - t0),
            "server_us": 1e6 * (s1 - s0) / calls,
            "caller_us": 1e6 * (c1 - c0) / calls,
            "p50_ms": 1e3 * window[len(window) // 2],
            "p99_ms": 1e3 * window[int(len(window) * 0.99)],
        }
    finally:
        child.kill()
        child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", choices=sorted(CALLERS), help=argparse.SUPPRESS)
    parser.add_argument("--modes", default="link,ws,http")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--payload", type=int, default=100, help="payload bytes per call")
    parser.add_argument("--cpu", type=int, default=0, help="CPU both sides are pinned to (-1: no pinning)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the modes, interleaved")
    args = parser.parse_args()
    import uvloop

    if args.serve:
        uvloop.run(serve(args.serve))
        return 0
    cpu = None if args.cpu < 0 else args.cpu
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    modes = args.modes.split(",")
    print(f"{'mode':6} {'calls/s':>9} {'server µs':>10} {'caller µs':>10} {'total µs':>9} {'p50 ms':>7} {'p99 ms':>7}"
          f"   (C={args.concurrency}, "
          f"payload {args.payload} B, {'CPU ' + str(cpu) if cpu is not None else 'unpinned'})")
    for _ in range(args.rounds):
        for mode in modes:
            r = uvloop.run(measure(mode, args.concurrency, args.duration, args.warmup, args.payload, cpu))
            total = r["server_us"] + r["caller_us"]
            print(f"{mode:6} {r['calls_per_s']:9,.0f} {r['server_us']:10.1f} {r['caller_us']:10.1f} {total:9.1f}"
                  f" {r['p50_ms']:7.3f} {r['p99_ms']:7.3f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
