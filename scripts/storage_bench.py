#!/usr/bin/env python3
"""Store-level throughput of the durable log (no HTTP): what the database
path alone can do, through :class:`ipubsub.storage.durable.DurableLog`.

For each backend, on a fresh table:
  append  W concurrent writers, each appending batches of B messages with
          ``DurableLog.append_batch`` (group commit merges them) for
          ``--duration`` seconds: persisted (committed) msg/s.
  replay  one reader following the log from the start with
          ``DurableLog.read_batch`` (R messages per read): replayed msg/s.

Every combination of ``--writers`` x ``--batch`` and every ``--replay-batch``
runs in the same process, so batch and single-message figures come from the
same run.  ``--baseline`` adds, in the same run, the database's own ceiling
on the same table (raw driver writes and reads, PostgreSQL and SQLite).  With ``--streams N`` writer k appends to stream k mod N (the
replay then follows the first of them).  CPU is this process's CPU time per message (the database's own
CPU is not included).  Tables are dropped afterwards.

Example (the figures in docs/benchmarks.md):
  python scripts/storage_bench.py --backends sqlite postgres mysql \\
      --writers 1 16 --batch 1 100 --replay-batch 1 1000 --baseline
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ipubsub.config import MysqlConfig, PostgresConfig, SqliteConfig, StorageConfig
from ipubsub.engine import SystemClock
from ipubsub.storage import NewMessage, create_store
from ipubsub.storage.durable import DurableLog

POSTGRES_DSN = os.environ.get("IPUBSUB_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_DSN = os.environ.get("IPUBSUB_TEST_MYSQL", "mysql://root@127.0.0.1:3306/test")
PAYLOAD = b'{"order":12345,"item":"book","qty":2,"note":"a typical small message"}'
HOUR_US = 3_600_000_000


def config(backend: str, table: str, workdir: Path, write_batch_max: int) -> StorageConfig:
    return StorageConfig(
        backend=backend,  # type: ignore[arg-type]
        write_batch_max=write_batch_max,
        operation_timeout_seconds=30,
        sqlite=SqliteConfig(path=str(workdir / f"{table}.db"), table=table),
        postgres=PostgresConfig(dsn=POSTGRES_DSN, table=table, pool_size=8),
        mysql=MysqlConfig(dsn=MYSQL_DSN, table=table, pool_size=8),
    )


async def drop(backend: str, table: str) -> None:
    if backend == "postgres":
        import asyncpg

        con = await asyncpg.connect(POSTGRES_DSN)
        try:
            await con.execute(f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill")
        finally:
            await con.close()
    elif backend == "mysql":
        import aiomysql

        from ipubsub.storage.mysql import parse_mysql_dsn

        conn = await aiomysql.connect(**parse_mysql_dsn(MYSQL_DSN))
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(f"DROP TABLE IF EXISTS {table}, {table}_streams, {table}_groups, {table}_pending, {table}_spill")
        finally:
            conn.close()


async def run_append(
    log: DurableLog, stream: str, writers: int, batch: int, duration: float, streams: int
) -> dict[str, Any]:
    """W writers appending batches of ``batch`` for ``duration`` s, writer k
    to stream ``{stream}`` when ``streams`` is 1, else ``{stream}-{k % streams}``."""
    stop = False
    committed = 0
    first_stream = 0  # messages committed to the first stream (the one replayed)
    latencies: list[float] = []

    async def writer(k: int) -> None:
        nonlocal committed, first_stream
        n = 0
        mine = stream if streams == 1 else f"{stream}-{k % streams}"
        while not stop:
            now = time.time_ns() // 1000
            msgs = [NewMessage(mine, f"{k}-{n + i}", PAYLOAD, now, now + HOUR_US) for i in range(batch)]
            n += batch
            started = time.perf_counter()
            await log.append_batch(msgs)
            latencies.append(time.perf_counter() - started)
            committed += batch
            first_stream += batch if k % streams == 0 else 0

    cpu0, t0 = time.process_time(), time.perf_counter()
    tasks = [asyncio.create_task(writer(k)) for k in range(writers)]
    await asyncio.sleep(duration)
    stop = True
    await asyncio.gather(*tasks)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    latencies.sort()
    return {
        "writers": writers,
        "streams": streams,
        "batch": batch,
        "msg_per_s": round(committed / seconds),
        "messages": committed,
        "replay_stream": (stream if streams == 1 else f"{stream}-0", first_stream),
        "call_p50_ms": round(latencies[len(latencies) // 2] * 1000, 2),
        "db_batches": None,
        "client_cpu_us_per_msg": round(cpu / committed * 1e6, 1),
    }


async def run_replay(log: DurableLog, stream: str, batch: int, limit: int) -> dict[str, Any]:
    """Follow the stream from the start, ``batch`` per read, up to ``limit`` messages."""
    after = None
    read = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    while read < limit:
        rows = await log.read_batch(stream, after, 0, min(batch, limit - read))
        read += len(rows)
        after = rows[-1].position
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {
        "batch": batch,
        "msg_per_s": round(read / seconds),
        "messages": read,
        "client_cpu_us_per_msg": round(cpu / read * 1e6, 1),
    }


async def run_baseline(backend: str, table: str, workdir: Path, batch: int, duration: float) -> dict[str, Any]:
    """The database's own ceiling on this machine, in the same run: rows of
    ``batch`` written straight into the store's messages table (same
    indexes) in one transaction each, with the fastest path of the driver
    (asyncpg COPY; sqlite3 executemany), then read back 1000 per query.
    No uuid lookup, no position counter, no result objects: what the
    durable log's work is compared with."""
    now = time.time_ns() // 1000
    stream = "baseline"
    cols = ("stream_id", "position", "message_uuid", "payload", "timestamp_us", "expires_at_us")
    read = f"SELECT position, message_uuid, payload, timestamp_us, expires_at_us FROM {table}" \
        " WHERE stream_id = {p1} AND position > {p2} AND expires_at_us > {p3} ORDER BY position LIMIT {p4}"
    written = 0
    if backend == "postgres":
        import asyncpg

        con = await asyncpg.connect(POSTGRES_DSN)
        try:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < duration:
                rows = [(stream, written + i, f"b-{written + i}", PAYLOAD, now, now + HOUR_US) for i in range(batch)]
                async with con.transaction():
                    await con.copy_records_to_table(table, records=rows, columns=list(cols))
                written += batch
            append_rate = written / (time.perf_counter() - t0)
            statement = await con.prepare(read.format(p1="$1", p2="$2", p3="$3", p4="$4"))
            replay_rates = []
            for _ in range(2):  # as the durable log's replay: rows just written, then settled
                t1, after, got = time.perf_counter(), -1, 0
                while rows := await statement.fetch(stream, after, now, 1000):
                    got += len(rows)
                    after = rows[-1][0]
                replay_rates.append(round(got / (time.perf_counter() - t1)))
        finally:
            await con.close()
    elif backend == "sqlite":
        import sqlite3

        db = sqlite3.connect(workdir / f"{table}.db", isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            insert = f"INSERT INTO {table} ({', '.join(cols)}) VALUES (?, ?, ?, ?, ?, ?)"
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < duration:
                rows = [(stream, written + i, f"b-{written + i}", PAYLOAD, now, now + HOUR_US) for i in range(batch)]
                db.execute("BEGIN IMMEDIATE")
                db.executemany(insert, rows)
                db.execute("COMMIT")
                written += batch
            append_rate = written / (time.perf_counter() - t0)
            query = read.format(p1="?", p2="?", p3="?", p4="?")
            replay_rates = []
            for _ in range(2):
                t1, after, got = time.perf_counter(), -1, 0
                while rows := db.execute(query, (stream, after, now, 1000)).fetchall():
                    got += len(rows)
                    after = rows[-1][0]
                replay_rates.append(round(got / (time.perf_counter() - t1)))
        finally:
            db.close()
    else:
        return {}
    return {"batch": batch, "append_msg_per_s": round(append_rate), "replay_msg_per_s_by_pass": replay_rates}


async def bench_backend(backend: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    table = f"bench_{secrets.token_hex(4)}"
    store = create_store(config(backend, table, workdir, args.write_batch_max))
    assert store is not None
    log = DurableLog(store, config(backend, table, workdir, args.write_batch_max), SystemClock())
    await log.start()
    out: dict[str, Any] = {"backend": backend, "append": [], "replay": []}
    try:
        if not await log.wait_up(30):
            raise SystemExit(f"{backend}: {log.last_error}")
        longest = ("", 0)
        for writers in args.writers:
            for batch in args.batch:
                stream = f"s-{writers}-{batch}"
                batches0 = log.batches_total
                result = await run_append(log, stream, writers, batch, args.duration, min(args.streams, writers))
                result["db_batches"] = log.batches_total - batches0
                replayable = result.pop("replay_stream")
                out["append"].append(result)
                print(json.dumps({"backend": backend, "append": result}), flush=True)
                if replayable[1] > longest[1]:
                    longest = replayable
        for batch in args.replay_batch:
            count = min(longest[1], args.replay_limit if batch > 1 else args.single_replay_limit)
            for replay_pass in range(1, args.replay_passes + 1):
                # the first pass reads rows just written (PostgreSQL sets hint
                # bits, caches are cold); later passes read settled rows
                result = {"pass": replay_pass, **await run_replay(log, longest[0], batch, count)}
                out["replay"].append(result)
                print(json.dumps({"backend": backend, "replay": result}), flush=True)
        if args.baseline:
            out["baseline"] = await run_baseline(backend, table, workdir, args.baseline_batch, args.duration)
            if out["baseline"]:
                print(json.dumps({"backend": backend, "baseline": out["baseline"]}), flush=True)
    finally:
        await log.close()
        await drop(backend, table)
    return out


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgres", "mysql"])
    parser.add_argument("--writers", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 100], help="messages per append call")
    parser.add_argument("--replay-batch", type=int, nargs="+", default=[1, 1000], help="messages per read")
    parser.add_argument("--streams", type=int, default=1, help="spread the writers over this many streams")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per append run")
    parser.add_argument("--replay-limit", type=int, default=200_000, help="messages replayed in batches")
    parser.add_argument("--replay-passes", type=int, default=2, help="replays of the same messages, each measured")
    parser.add_argument("--single-replay-limit", type=int, default=5_000, help="messages replayed one by one")
    parser.add_argument("--baseline", action="store_true",
                        help="also measure the database's own ceiling (postgres, sqlite) in the same run")
    parser.add_argument("--baseline-batch", type=int, default=1600, help="rows per baseline transaction")
    parser.add_argument("--write-batch-max", type=int, default=StorageConfig().write_batch_max)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ipubsub-bench-") as tmp:
        for backend in args.backends:
            await bench_backend(backend, args, Path(tmp))
    return 0


if __name__ == "__main__":
    try:
        import uvloop  # the event loop ``ipubsub serve`` uses when installed
    except ImportError:
        sys.exit(asyncio.run(main()))
    sys.exit(uvloop.run(main()))
