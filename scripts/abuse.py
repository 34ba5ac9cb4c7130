#!/usr/bin/env python3
"""Cheap attacks against one ipubsub node on loopback, bounded in time and
traffic, and what they did to it.

    scripts/abuse.py                    # spawn a node (auth on) and attack it
    scripts/abuse.py --scale 0.1        # a tenth of every count (the test suite's run)
    scripts/abuse.py --url http://127.0.0.1:8080 --pid 1234 --api-key KEY   # a running node

Before the attacks it sends messages and keeps the acknowledged ones; then
slowloris, idle connections, waiting polls, oversized and deeply nested
bodies, header floods, invalid UTF-8 and invalid credentials, twice.
Afterwards it checks that ``/health`` answers within 100 ms, that RSS after
the last round is within 20 % of the cold start (RSS after round 1 is
reported too: growth across rounds would be a leak), and that every
acknowledged message is still there.  ``--malloc`` spawns the node with
``PYTHONMALLOC=malloc``, under which memory returns to the OS after the
flood (docs/security.md has both runs).  Prints
a Markdown table (attack, answer, effect) and, with ``--json FILE``, the
rows.  Exit status 1 if a check failed.  Loopback addresses only.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ipubsub.protocol import HEALTH_PATH, RECEIVE_PATH, SEND_PATH  # noqa: E402

KEY = "ipk_abuse_0123456789abcdef0123456789"
HEALTH_BOUND_MS = 100.0
RSS_BOUND = 0.20


@dataclass
class Row:
    attack: str
    answer: str
    effect: str
    ok: bool


# -- raw HTTP on loopback ----------------------------------------------------------


class Target:
    def __init__(self, host: str, port: int, pid: int, key: str) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("abuse.py attacks loopback addresses only")
        self.host, self.port, self.pid, self.key = host, port, pid, key

    def auth(self) -> bytes:
        return f"Authorization: Bearer {self.key}\r\n".encode() if self.key else b""

    async def request(self, data: bytes, timeout: float = 10.0) -> tuple[int, bytes, float]:
        """Send ``data`` on a new connection; (status, body, seconds to the answer)."""
        start = time.perf_counter()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), timeout)
        try:
            writer.write(data)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
            elapsed = time.perf_counter() - start
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            body = await asyncio.wait_for(reader.readexactly(length), timeout) if length else b""
            return int(head.split(b" ")[1]), body, elapsed
        except (asyncio.IncompleteReadError, ConnectionError) as exc:
            return 0, str(exc).encode(), time.perf_counter() - start
        finally:
            writer.close()

    def get(self, path: str) -> bytes:
        return f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".encode() + self.auth() + b"\r\n"

    def post(self, path: str, body: bytes, extra: bytes = b"") -> bytes:
        return (f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\n").encode() + self.auth() + extra + b"\r\n" + body

    async def health_ms(self) -> float:
        """The best of three /health round trips, in ms (fresh connections)."""
        best = float("inf")
        for _ in range(3):
            status, _, seconds = await self.request(self.get(HEALTH_PATH), timeout=5)
            if status == 200:
                best = min(best, seconds * 1000)
        return best

    def rss(self) -> int:
        with open(f"/proc/{self.pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _open_many(
    target: Target, n: int, first: Callable[[int], bytes] | None = None
) -> list[asyncio.StreamWriter]:
    """``n`` connections, 200 at a time; ``first(i)``: what connection i sends at once."""
    writers: list[asyncio.StreamWriter] = []
    for i in range(0, n, 200):
        batch = await asyncio.gather(
            *(asyncio.open_connection(target.host, target.port) for _ in range(min(200, n - i))), return_exceptions=True
        )
        for result in batch:
            if isinstance(result, BaseException):
                continue
            writer = result[1]
            if first is not None:
                writer.write(first(len(writers)))
            writers.append(writer)
    return writers


async def _count_closed(writers: list[asyncio.StreamWriter], within: float) -> tuple[int, float]:
    """Wait (at most ``within`` s) until the server closed every connection;
    (how many it closed, seconds that took)."""
    start = time.monotonic()

    async def closed(w: asyncio.StreamWriter) -> bool:
        reader = w._protocol._stream_reader  # type: ignore[attr-defined]
        try:
            await asyncio.wait_for(reader.read(), max(0.1, within - (time.monotonic() - start)))
            return True
        except (TimeoutError, ConnectionError):
            return False

    results = await asyncio.gather(*(closed(w) for w in writers))
    return sum(results), time.monotonic() - start


# -- the attacks -----------------------------------------------------------------------


async def slowloris(t: Target, n: int, header_timeout: float) -> Row:
    writers = await _open_many(t, n)
    for w in writers:
        w.write(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")

    async def trickle() -> None:
        while True:
            await asyncio.sleep(0.5)
            for w in writers:
                if not w.is_closing():
                    w.write(b"a")

    dripper = asyncio.create_task(trickle())
    health = await t.health_ms()
    closed, took = await _count_closed(writers, header_timeout + 5)
    dripper.cancel()
    for w in writers:
        w.close()
    return Row(f"slowloris: {n} connections sending a header 1 byte / 0.5 s",
               f"closed after {took:.1f} s (http.header_timeout_seconds)",
               f"{closed}/{len(writers)} cut; /health {health:.1f} ms meanwhile", closed == len(writers))


async def idle_connections(t: Target, n: int, header_timeout: float) -> Row:
    writers = await _open_many(t, n)
    health = await t.health_ms()
    closed, took = await _count_closed(writers, header_timeout + 10)
    for w in writers:
        w.close()
    return Row(f"{n} idle connections (nothing sent)", f"closed after {took:.1f} s",
               f"{closed}/{len(writers)} cut; /health {health:.1f} ms meanwhile", closed == len(writers))


async def waiting_polls(t: Target, n: int) -> Row:
    def poll(i: int) -> bytes:
        return t.get(f"{RECEIVE_PATH}?streamId=abuse-poll-{i}&timeoutSeconds=60").replace(b"Connection: close\r\n", b"")

    writers = await _open_many(t, n, poll)
    deadline = time.monotonic() + 30
    waiting = 0
    while time.monotonic() < deadline:
        status, body, _ = await t.request(t.get(HEALTH_PATH))
        waiting = json.loads(body).get("waitingReceivers", 0) if status == 200 else waiting
        if waiting >= len(writers):
            break
        await asyncio.sleep(0.2)
    health = await t.health_ms()
    rss = t.rss()
    for w in writers:
        w.close()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        status, body, _ = await t.request(t.get(HEALTH_PATH))
        if status == 200 and json.loads(body).get("waitingReceivers", 1) == 0:
            break
        await asyncio.sleep(0.2)
    released = status == 200 and json.loads(body).get("waitingReceivers") == 0
    return Row(f"{n} waiting long polls, then the clients vanish", f"{waiting} parked; released on disconnect",
               f"RSS {rss / 2**20:.0f} MiB while parked; /health {health:.1f} ms",
               waiting >= 0.99 * len(writers) and released)


async def oversized(t: Target) -> Row:
    status1, _body1, s1 = await t.request(
        b"POST " + SEND_PATH.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n" + t.auth() + b"\r\n{}")
    big = b'{"streamId":"abuse","message":"' + b"x" * (2 * 2**20) + b'"}'
    status2, _body2, _ = await t.request(t.post(SEND_PATH, big))
    ok = status1 == 413 and s1 < 1.0 and status2 == 413
    return Row("declared Content-Length 10 GB (2-byte body); a real 2 MiB body",
               f"{status1} in {s1 * 1000:.0f} ms; {status2}", "nothing read past the limit", ok)


async def nested(t: Target) -> Row:
    depth = 100_000
    status, body, _ = await t.request(t.post(SEND_PATH, b'{"streamId":"abuse","message":' + b"[" * depth + b"]" * depth + b"}"))
    return Row(f"message nested {depth:,} levels (200 KB)", f"{status} {_code(body)}", "no stack overflow", status == 400)


async def header_flood(t: Target) -> Row:
    many = b"".join(b"X-H%d: v\r\n" % i for i in range(1000))
    s1, b1, _ = await t.request(b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")
    s2, b2, _ = await t.request(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
    s3, b3, _ = await t.request(b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    ok = all(400 <= s < 500 or s == 0 for s in (s1, s2, s3))
    return Row("1,000 headers; a 100 KB header; a 100 KB request line",
               f"{s1} {_code(b1)}, {s2} {_code(b2)}, {s3} {_code(b3)}",
               "rejected by the parser limits (http.max_headers / max_field_size / max_line_size), counted", ok)


async def invalid_utf8(t: Target) -> Row:
    s1, b1, _ = await t.request(t.get(f"{RECEIVE_PATH}?streamId=%FF%FE&timeoutSeconds=0"))
    s2, b2, _ = await t.request(t.post(SEND_PATH, b'{"streamId":"\xff\xfe","message":1}'))
    s3, _, _ = await t.request(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Bad: \xff\xfe\r\nConnection: close\r\n\r\n")
    ok = s1 == 400 and s2 == 400 and s3 == 200
    return Row("invalid UTF-8 in a query, a body and a header", f"{s1} {_code(b1)}, {s2} {_code(b2)}, {s3}",
               "clear 400s; the header is ignored", ok)


async def bad_credentials(t: Target, n: int) -> Row:
    if not t.key:
        return Row("invalid tokens", "skipped", "the node has no auth", True)
    codes: dict[int, int] = {}
    for i in range(n):
        data = t.get(f"{RECEIVE_PATH}?streamId=abuse&timeoutSeconds=0").replace(
            t.auth(), f"Authorization: Bearer not.a.token{i}\r\n".encode())
        status, _, _ = await t.request(data)
        codes[status] = codes.get(status, 0) + 1
    ok = set(codes) <= {401, 429} and codes.get(429, 0) > 0
    return Row(f"{n} requests with invalid tokens from one address",
               ", ".join(f"{c}×{s}" for s, c in sorted(codes.items())),
               "blocked after auth.failed_attempts.max_failures", ok)


def _code(body: bytes) -> str:
    try:
        return json.loads(body).get("code", "")
    except ValueError:
        return ""


# -- the run ---------------------------------------------------------------------------


async def acknowledged(t: Target, n: int) -> list[str]:
    uuids = []
    for i in range(n):
        body = json.dumps({"streamId": f"abuse-keep-{i % 10}", "message": {"i": i},
                           "messageUuid": f"keep-{i}", "inMemoryStreamSize": n}).encode()
        status, _, _ = await t.request(t.post(SEND_PATH, body))
        if status == 200:
            uuids.append(f"keep-{i}")
    return uuids


async def still_there(t: Target, uuids: list[str]) -> int:
    got = set()
    for stream in range(10):
        while True:
            status, body, _ = await t.request(t.get(f"{RECEIVE_PATH}?streamId=abuse-keep-{stream}&timeoutSeconds=0"))
            if status != 200:
                break
            got.add(json.loads(body)["messageUuid"])
    return len(set(uuids) & got)


async def attack(t: Target, scale: float, header_timeout: float, rounds: int = 2) -> list[Row]:
    """Every attack, ``rounds`` times (rows of the last round), then the
    checks.  RSS is compared with the start (cold) and with the end of the
    first round: the process keeps the pages its allocators took at the
    first peak (a high-water mark, not live objects), so growth across
    later rounds is what would reveal a leak."""

    def count(n: int) -> int:
        return max(10, int(n * scale))

    kept = await acknowledged(t, count(1000))
    await t.health_ms()
    rss_cold = t.rss()
    rss_warm = rss_cold
    rows: list[Row] = []
    for round_no in range(rounds):
        steps: list[Callable[[], Awaitable[Row]]] = [
            lambda: slowloris(t, count(1000), header_timeout),
            lambda: idle_connections(t, count(5000), header_timeout),
            lambda: waiting_polls(t, count(5000)),
            lambda: oversized(t),
            lambda: nested(t),
            lambda: header_flood(t),
            lambda: invalid_utf8(t),
            lambda: bad_credentials(t, max(40, count(100))),  # past auth.failed_attempts.max_failures (20)
        ]
        rows = [await step() for step in steps]
        await _settle(t)
        if round_no == 0:
            rss_warm = t.rss()
    health = await t.health_ms()
    rss_after = t.rss()
    found = await still_there(t, kept)
    growth = rss_after / rss_cold - 1
    rows.append(Row("afterwards: /health", f"{health:.1f} ms", f"bound {HEALTH_BOUND_MS:.0f} ms", health <= HEALTH_BOUND_MS))
    rows.append(Row(
        f"afterwards: RSS (after round {rounds} vs cold)",
        f"cold {rss_cold / 2**20:.1f}, after round 1 {rss_warm / 2**20:.1f}, after round {rounds} "
        f"{rss_after / 2**20:.1f} MiB ({growth:+.0%} vs cold; {rss_after / rss_warm - 1:+.0%} across rounds)",
        f"bound +{RSS_BOUND:.0%} vs cold", growth <= RSS_BOUND))
    rows.append(Row("afterwards: acknowledged messages", f"{found}/{len(kept)} received back", "none lost",
                    found == len(kept) and len(kept) > 0))
    return rows


async def _settle(t: Target) -> None:
    """Wait out the block the invalid tokens earned this address
    (auth.failed_attempts.block_seconds) and the eviction of the polls'
    streams (match.stream_idle_seconds)."""
    deadline = time.monotonic() + 120
    while (await t.request(t.get(f"{RECEIVE_PATH}?streamId=abuse&timeoutSeconds=0")))[0] == 429:
        if time.monotonic() > deadline:
            return
        await asyncio.sleep(0.5)
    while time.monotonic() < deadline:
        status, body, _ = await t.request(t.get(HEALTH_PATH))
        if status == 200 and json.loads(body).get("streams", 0) <= 11:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)


def spawn_node(workdir: Path, header_timeout: float, malloc: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    config = {
        "node": {"name": "abuse", "listen": "127.0.0.1:0"},
        "storage": {"backend": "none"},
        "log": {"level": "warning"},
        "http": {"header_timeout_seconds": header_timeout, "keepalive_timeout_seconds": header_timeout},
        # the polls' 5,000 streams go once idle, as they would after match.stream_idle_seconds (300 s)
        "match": {"stream_idle_seconds": 5},
        "auth": {"api_keys": [{"name": "abuse", "key_sha256": hashlib.sha256(KEY.encode()).hexdigest(),
                               "allow": {"send": ["*"], "receive": ["*"]}}],
                 "failed_attempts": {"max_failures": 20, "window_seconds": 60, "block_seconds": 3}},
    }
    (workdir / "abuse.yaml").write_text(json.dumps(config))
    ready = workdir / "ready.json"
    log = open(workdir / "node.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ipubsub", "serve", "--config", str(workdir / "abuse.yaml"),
                             "--ready-file", str(ready)], stdout=log, stderr=subprocess.STDOUT, cwd=workdir,
                            env={**os.environ, **({"PYTHONMALLOC": "malloc"} if malloc else {}),
                                 **dict(e.split("=", 1) for e in os.environ.get("ABUSE_NODE_ENV", "").split() if "=" in e)})
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"the node did not start:\n{(workdir / 'node.log').read_text()}")
        time.sleep(0.05)
    return proc, json.loads(ready.read_text())["http"]


def table(rows: list[Row]) -> str:
    lines = ["| attack | answer | effect | ok |", "|---|---|---|---|"]
    lines += [f"| {r.attack} | {r.answer} | {r.effect} | {'yes' if r.ok else '**NO**'} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running node on loopback (default: spawn one)")
    parser.add_argument("--pid", type=int, help="its process id (for RSS)")
    parser.add_argument("--api-key", default="", help="a key the running node admits on every stream")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every count (default 1: 5,000 polls...)")
    parser.add_argument("--header-timeout", type=float, default=2.0,
                        help="http.header_timeout_seconds of a spawned node (of the running one with --url)")
    parser.add_argument("--rounds", type=int, default=2, help="run every attack this many times (default 2)")
    parser.add_argument("--json", metavar="FILE", help="write the rows as JSON")
    parser.add_argument("--malloc", action="store_true", help="spawn the node with PYTHONMALLOC=malloc")
    args = parser.parse_args(argv)
    proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.url:
            if not args.pid:
                parser.error("--url needs --pid")
            parts = urlsplit(args.url)
            target = Target(parts.hostname or "", parts.port or 80, args.pid, args.api_key)
        else:
            proc, address = spawn_node(Path(tmp), args.header_timeout, args.malloc)
            host, _, port = address.rpartition(":")
            target = Target(host, int(port), proc.pid, KEY)
        try:
            rows = asyncio.run(attack(target, args.scale, args.header_timeout, args.rounds))
        finally:
            if proc is not None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
    print(table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
