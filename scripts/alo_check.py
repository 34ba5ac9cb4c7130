#!/usr/bin/env python3
"""At-least-once check: a consumer group of worker processes over a durable
stream on PostgreSQL, with random worker kills and one owner kill.

It starts a 3-node cluster on 127.0.0.1 (ports 0, a fresh table), appends
``--messages`` durable messages, and runs ``--workers`` worker processes of
one consumer group (``python alo_check.py --worker``: claim up to 20, ack
each one).  Every ``--kill-every`` seconds it SIGKILLs a random worker and
starts a new one; once a third of the messages are acknowledged it
SIGKILLs the stream's owner node.  Workers report each delivery
(uuid, deliveryCount) and each acknowledgement the server accepted.

Verdict (exit 0 only if all hold):

* every message sent was delivered, and in the end the group reports no
  lag and nothing pending: every message was acknowledged at least once
  (none lost; an ack accepted just before its worker was killed counts,
  though the worker could not report it);
* no message was delivered again after one of its deliveries was
  acknowledged (an accepted ack is final);
* every duplicate delivery (deliveryCount > 1) follows a delivery of the
  same message that was not acknowledged — its lease expired (its worker
  was killed, or it was too slow) — and duplicates are counted.

Run: ``scripts/alo_check.py`` (PostgreSQL on 127.0.0.1:5432, user postgres,
db test; ``--dsn`` to change).  Also run by tests/e2e/test_alo_check.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STREAM = "alo-check"
GROUP = "workers"
FAST = {"heartbeat_interval_seconds": 0.2, "suspect_after_seconds": 0.8, "dead_after_seconds": 2.0}


# -- the worker process ---------------------------------------------------------------


async def worker(urls: str, name: str, lease: float) -> None:
    """Claim and acknowledge until killed; one line per delivery (``D uuid
    count``) and per accepted ack (``A uuid count``) on stdout."""
    from ipubsub.client import AsyncClient, RetryPolicy

    out = sys.stdout
    async with AsyncClient(urls, retry=RetryPolicy(max_total_seconds=30), request_timeout=5) as client:
        while True:
            batch = await client.claim(STREAM, group=GROUP, consumer=name, max_messages=20, lease=lease,
                                       timeout=1, max_deliveries=0)
            for msg in batch:
                out.write(f"D {msg.uuid} {msg.delivery_count}\n")
            out.flush()
            if not batch:
                continue
            await asyncio.sleep(random.random() * 0.02)  # "work" on the batch
            missing = set(await client.ack_many(STREAM, [msg.receipt for msg in batch]))
            for msg in batch:
                if msg.receipt not in missing:
                    out.write(f"A {msg.uuid} {msg.delivery_count}\n")
            out.flush()


# -- the checker ----------------------------------------------------------------------


@dataclass
class Ledger:
    """What the workers reported: per uuid, delivery counts seen and acked."""

    delivered: dict[str, list[int]] = field(default_factory=dict)
    acked: dict[str, list[int]] = field(default_factory=dict)

    def note(self, line: str) -> None:
        kind, uuid, count = line.split()
        (self.delivered if kind == "D" else self.acked).setdefault(uuid, []).append(int(count))


class Node:
    def __init__(self, workdir: Path, name: str, config: dict[str, Any]) -> None:
        self.name = name
        self.config_path = workdir / f"{name}.yaml"
        self.ready_path = workdir / f"{name}.ready.json"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(json.dumps(config))  # JSON is YAML
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ipubsub", "serve", "--config", str(self.config_path),
                 "--ready-file", str(self.ready_path)],
                stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            )

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not self.ready_path.exists():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {self.log_path.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise SystemExit(f"{self.name} did not start within {timeout} s")
            await asyncio.sleep(0.05)
        self.url = "http://" + json.loads(self.ready_path.read_text())["http"]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


async def start_cluster(workdir: Path, dsn: str, table: str) -> list[Node]:
    storage = {"backend": "postgres", "postgres": {"dsn": dsn, "table": table, "pool_size": 4}}

    def config(i: int, seeds: list[str]) -> dict[str, Any]:
        return {"node": {"name": f"n{i}", "listen": "127.0.0.1:0"},
                "cluster": {"name": f"alo-{table}", "seeds": seeds, **FAST},
                "storage": storage, "log": {"level": "warning"}}

    first = Node(workdir, "n1", config(1, []))
    first.start()
    await first.wait_ready()
    seed = first.url.removeprefix("http://")
    others = [Node(workdir, f"n{i}", config(i, [seed])) for i in (2, 3)]
    for node in others:
        node.start()
    for node in others:
        await node.wait_ready()
    nodes = [first, *others]
    await wait_ring(nodes, 3)
    return nodes


async def get_json(url: str) -> tuple[int, Any]:
    import aiohttp

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
        async with http.get(url) as resp:
            return resp.status, await resp.json()


async def wait_ring(nodes: list[Node], size: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        views = []
        for node in nodes:
            try:
                views.append(len((await get_json(node.url + "/api/v1/cluster"))[1]["ringMembers"]))
            except Exception:
                views.append(None)
        if all(v == size for v in views):
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"the ring did not form: {views}")
        await asyncio.sleep(0.1)


async def produce(urls: str, count: int, dsn: str, table: str) -> None:
    """The first 100 messages through the API (the stream's owner stores
    them), the rest appended to the same table by the storage layer in
    batches: the check is about consuming, and a loaded machine stores a
    few hundred single sends a second."""
    from ipubsub.client import AsyncClient
    from ipubsub.storage import NewMessage, create_store

    async with AsyncClient(urls) as client:
        for i in range(min(100, count)):
            await client.send(STREAM, {"i": i}, uuid=f"m{i}", persist=True)
    store = create_store(_storage_config(dsn, table))
    assert store is not None
    await store.open()
    try:
        now = time.time_ns() // 1000
        expires = now + 3600 * 1_000_000
        for start in range(100, count, 500):
            batch = [NewMessage(STREAM, f"m{i}", json.dumps({"i": i}).encode(), now, expires)
                     for i in range(start, min(count, start + 500))]
            await store.append(batch)
    finally:
        await store.close()


def _storage_config(dsn: str, table: str) -> Any:
    import msgspec

    from ipubsub.config import StorageConfig

    return msgspec.convert({"backend": "postgres", "postgres": {"dsn": dsn, "table": table, "pool_size": 2}},
                           StorageConfig)


class Workers:
    """Worker processes and the ledger their output fills."""

    def __init__(self, urls: str, lease: float, ledger: Ledger) -> None:
        self.urls = urls
        self.lease = lease
        self.ledger = ledger
        self.procs: dict[str, asyncio.subprocess.Process] = {}
        self.readers: set[asyncio.Task[None]] = set()
        self.started = 0
        self.killed = 0

    async def spawn(self) -> None:
        self.started += 1
        name = f"w{self.started}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "--worker", "--urls", self.urls, "--name", name, "--lease", str(self.lease),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, cwd=ROOT,
        )
        self.procs[name] = proc
        task = asyncio.get_running_loop().create_task(self._read(proc), name=f"alo-read-{name}")
        self.readers.add(task)
        task.add_done_callback(self.readers.discard)

    async def _read(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        async for line in proc.stdout:
            text = line.decode().strip()
            if text:
                self.ledger.note(text)

    async def kill_one(self) -> None:
        name = random.choice(sorted(self.procs))
        proc = self.procs.pop(name)
        proc.kill()  # SIGKILL: whatever it holds stays leased until the lease ends
        await proc.wait()
        self.killed += 1
        await self.spawn()

    async def stop(self) -> None:
        for proc in self.procs.values():
            if proc.returncode is None:
                proc.kill()
        for proc in self.procs.values():
            await proc.wait()
        if self.readers:
            await asyncio.wait(set(self.readers), timeout=5)


async def group_done(nodes: list[Node]) -> bool:
    """Whether the group has nothing left: no lag, nothing pending (the
    database's word, asked of any live node)."""
    for node in nodes:
        try:
            status, body = await get_json(node.url + f"/api/v1/streams/groups?streamId={STREAM}")
        except Exception:
            continue
        if status == 200:
            return [(g["lag"], g["pending"]) for g in body["groups"] if g["group"] == GROUP] == [(0, 0)]
    return False


def verdict(sent: set[str], ledger: Ledger, group_done: bool) -> tuple[bool, dict[str, Any]]:
    """``group_done``: the group reports no lag and nothing pending, so
    every delivered message was acknowledged (also those whose worker was
    killed after its ack was accepted, before it could report it)."""
    never_delivered = sent - set(ledger.delivered)
    lost = never_delivered if group_done else sent - set(ledger.acked)
    redelivered_after_ack = []
    unexplained = []
    duplicates = 0
    for uuid, counts in ledger.delivered.items():
        duplicates += len(counts) - 1
        acked = ledger.acked.get(uuid, [])
        if acked and max(counts) > min(acked):
            redelivered_after_ack.append(uuid)  # a delivery after an accepted ack
        for c in counts:
            # a delivery with count c > 1 means delivery c - 1 ended without an ack: its lease expired
            if c > 1 and (c - 1) in acked:
                unexplained.append(uuid)
        if sorted(counts) != list(range(1, len(counts) + 1)) and len(set(counts)) != len(counts):
            unexplained.append(uuid)  # the same delivery number twice
    report = {
        "sent": len(sent),
        "acknowledged_seen_by_workers": len(set(ledger.acked) & sent),
        "group_lag_and_pending_zero": group_done,
        "lost": len(lost),
        "lost_examples": sorted(lost)[:5],
        "deliveries": sum(len(c) for c in ledger.delivered.values()),
        "duplicates": duplicates,
        "duplicates_after_an_expired_lease": duplicates - len(unexplained),
        "redelivered_after_ack": len(redelivered_after_ack),
        "unexplained_duplicates": len(unexplained),
    }
    ok = group_done and not lost and not redelivered_after_ack and not unexplained
    return ok, report


async def check(args: argparse.Namespace) -> int:
    import asyncpg

    table = f"alo_{secrets.token_hex(4)}"
    workdir = Path(tempfile.mkdtemp(prefix="alo-check-"))
    nodes: list[Node] = []
    ledger = Ledger()
    workers: Workers | None = None
    started = time.monotonic()
    try:
        nodes = await start_cluster(workdir, args.dsn, table)
        urls = ",".join(n.url for n in nodes)
        print(f"cluster up in {time.monotonic() - started:.1f} s", file=sys.stderr)
        await produce(urls, args.messages, args.dsn, table)
        sent = {f"m{i}" for i in range(args.messages)}
        print(f"{args.messages} messages stored at {time.monotonic() - started:.1f} s", file=sys.stderr)
        _, owner_view = await get_json(nodes[0].url + f"/api/v1/streams/owner?streamId={STREAM}")
        owner = next(n for n in nodes if n.name == owner_view["node"])
        workers = Workers(urls, args.lease, ledger)
        for _ in range(args.workers):
            await workers.spawn()
        owner_killed = False
        next_kill = time.monotonic() + args.kill_every
        deadline = time.monotonic() + args.max_seconds
        next_look = 0.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if set(ledger.delivered) >= sent and time.monotonic() >= next_look:
                next_look = time.monotonic() + 1
                if await group_done([n for n in nodes if n is not owner or not owner_killed]):
                    break
            if not owner_killed and len(ledger.acked) >= args.messages // 3:
                owner.kill()
                owner_killed = True
                print(f"killed the owner {owner.name} at {len(ledger.acked)} acknowledged", file=sys.stderr)
            if time.monotonic() >= next_kill:
                await workers.kill_one()
                next_kill = time.monotonic() + args.kill_every
        # let the remaining leases end: a straggler redelivery would show up now
        await asyncio.sleep(args.lease + 1)
        done = await group_done([n for n in nodes if n is not owner or not owner_killed])
        ok, report = verdict(sent, ledger, done)
        report.update(workers_killed=workers.killed, owner_killed=owner_killed,
                      seconds=round(time.monotonic() - started, 1))
        print(json.dumps(report))
        return 0 if ok else 1
    finally:
        if workers is not None:
            await workers.stop()
        for node in nodes:
            node.kill()
        con = await asyncpg.connect(args.dsn)
        try:
            if args.keep:
                print(f"kept table {table} and {workdir}", file=sys.stderr)
                table = "alo_nothing_to_drop"
            await con.execute(
                f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill"
            )
        finally:
            await con.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--lease", type=float, default=2.0, help="lease seconds of each claim")
    parser.add_argument("--kill-every", type=float, default=3.0, help="seconds between worker kills")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="give up (and fail) after this long")
    parser.add_argument("--dsn", default=os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test"))
    parser.add_argument("--keep", action="store_true", help="keep the tables and logs (debugging)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--urls", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        asyncio.run(worker(args.urls, args.name, args.lease))
        return 0
    return asyncio.run(check(args))


if __name__ == "__main__":
    sys.exit(main())
