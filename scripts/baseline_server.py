#!/usr/bin/env python3
"""A trivial aiohttp server answering the ipubsub routes without doing any work:
the ceiling any aiohttp-based server can reach on this machine.

    python scripts/baseline_server.py --port 18090

``POST /api/v1/streams/send`` reads the body and answers a constant JSON;
``GET /api/v1/streams/receive`` answers a constant message at once, or, with
``--hold``, parks the request on a bare future until ``/release`` (a naive
long poll, for the memory baseline of waiting polls).

With ``--naive-queue`` it is instead the simplest real matcher one would
write with aiohttp: a dict of deques of messages and of waiting futures, the
body parsed with ``json``, no validation, no limits, no cleanup of streams
(the "naive aiohttp queue" reference of docs/benchmarks.md).

Same settings as ipubsub: uvloop, no access log, handler cancellation on.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from ipubsub.protocol import HEALTH_PATH, JSON_CONTENT_TYPE, RECEIVE_PATH, SEND_PATH

RELEASE_PATH = "/release"  # --hold: answer every parked receive

SEND_REPLY = b'{"messageUuid":"00000000-0000-4000-8000-000000000000"}'
RECEIVE_REPLY = (
    b'{"messageUuid":"00000000-0000-4000-8000-000000000000","message":{"t":0},'
    b'"timestamp":"2026-01-01T00:00:00.000000Z"}'
)


Handler = Callable[[web.Request], Awaitable[web.Response]]


def _app(send: Handler, receive: Handler, waiting: Callable[[], int]) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        # waitingReceivers as ipubsub reports it: the harness waits for it
        # before reading the RSS of parked polls
        return web.json_response({"status": "ok", "waitingReceivers": waiting()})

    app = web.Application()
    app.router.add_post(SEND_PATH, send)
    app.router.add_get(RECEIVE_PATH, receive)
    app.router.add_get(HEALTH_PATH, health)
    return app


def build_naive_queue_app() -> web.Application:
    import json
    from collections import defaultdict, deque

    messages: defaultdict[str, deque[object]] = defaultdict(deque)
    waiting: defaultdict[str, deque[asyncio.Future[object]]] = defaultdict(deque)

    async def send(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        stream, message = body["streamId"], body["message"]
        waiters = waiting[stream]
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(message)
                break
        else:
            messages[stream].append(message)
        return web.Response(body=SEND_REPLY, content_type=JSON_CONTENT_TYPE)

    async def receive(request: web.Request) -> web.Response:
        stream = request.query["streamId"]
        queue = messages[stream]
        if queue:
            message = queue.popleft()
        else:
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[object] = loop.create_future()
            waiting[stream].append(fut)
            handle = loop.call_later(float(request.query.get("timeoutSeconds", "30")), fut.cancel)
            try:
                message = await fut
            except asyncio.CancelledError:
                return web.Response(status=424, body=b'{"error":"timeout"}', content_type=JSON_CONTENT_TYPE)
            finally:
                handle.cancel()
        reply = {"messageUuid": "x", "message": message, "timestamp": "2026-01-01T00:00:00.000000Z"}
        return web.Response(body=json.dumps(reply).encode(), content_type=JSON_CONTENT_TYPE)

    return _app(send, receive, lambda: sum(len(w) for w in waiting.values()))


def build_app(hold: bool) -> web.Application:
    waiters: list[asyncio.Future[None]] = []

    async def send(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=SEND_REPLY, content_type=JSON_CONTENT_TYPE)

    async def receive(request: web.Request) -> web.Response:
        if hold:
            fut = asyncio.get_running_loop().create_future()
            waiters.append(fut)
            await fut
        return web.Response(body=RECEIVE_REPLY, content_type=JSON_CONTENT_TYPE)

    async def release(request: web.Request) -> web.Response:
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)
        waiters.clear()
        return web.Response(body=b"{}", content_type=JSON_CONTENT_TYPE)

    app = _app(send, receive, lambda: sum(not fut.done() for fut in waiters))
    app.router.add_post(RELEASE_PATH, release)
    return app


async def serve(port: int, hold: bool, naive_queue: bool) -> None:
    app = build_naive_queue_app() if naive_queue else build_app(hold)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=4096)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=18090)
    parser.add_argument("--hold", action="store_true", help="park receives until POST /release")
    parser.add_argument("--naive-queue", action="store_true", help="a minimal real matcher instead")
    args = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        try:
            runner.run(serve(args.port, args.hold, args.naive_queue))
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
