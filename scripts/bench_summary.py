#!/usr/bin/env python3
"""Print a scripts/bench-all.sh result folder as the markdown tables of
docs/benchmarks.md.  The medians and within-round ratios come from the
summary rows scripts/bench.py writes itself (``"summary": true``); this only
formats them.

    python scripts/bench_summary.py bench-results/
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Row = dict[str, Any]
Column = tuple[str, Callable[[Row], str]]


def rows(path: Path) -> list[Row]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def summaries(path: Path) -> list[Row]:
    return [r for r in rows(path) if r.get("summary")]


def num(key: str, fmt: str = ",.0f") -> Callable[[Row], str]:
    return lambda r: "—" if r.get(key) is None else format(r[key], fmt)


def pair(a: str, b: str) -> Callable[[Row], str]:
    return lambda r: f"{num(a, '.2f')(r)} / {num(b, '.2f')(r)}"


def ratio(ref: str) -> Callable[[Row], str]:
    def cell(r: Row) -> str:
        if f"ratio_to_{ref}" not in r:
            return "1.00" if r["label"] == ref else "—"
        def fmt(x: float) -> str:
            return f"{x:.3f}" if x < 0.1 else f"{x:.2f}"

        rounds = ", ".join(fmt(x) for x in r[f"ratio_to_{ref}_rounds"])
        return f"{fmt(r[f'ratio_to_{ref}'])} ({rounds})"
    return cell


def table(title: str, data: Sequence[Row], columns: Sequence[Column]) -> None:
    if not data:
        return
    print(f"### {title}\n")
    print("| " + " | ".join(h for h, _ in columns) + " |")
    print("|" + "---|" * len(columns))
    for r in data:
        print("| " + " | ".join(cell(r) for _, cell in columns) + " |")
    print()


LABEL: Column = ("label", lambda r: str(r["label"]))
ROUNDS: Column = ("rounds", num("rounds"))
RATE: Column = ("msg/s", num("msg_per_s"))
CPU: Column = ("server CPU µs/msg", num("cpu_us_per_msg", ".1f"))
UTIL: Column = ("server / client CPU util", lambda r: f"{num('server_cpu_util', '.2f')(r)} / "
                f"{num('client_cpu_util', '.2f')(r)}")
LATENCY: Column = ("send→receive p50 / p99 ms", pair("latency_p50_ms", "latency_p99_ms"))
RTT: Column = ("send RTT p50 / p99 ms", pair("send_rtt_p50_ms", "send_rtt_p99_ms"))


def ratio_to_kind(kind: str) -> Callable[[Row], str]:
    """The ratio to the same run's ``<kind>-R<readers>`` (fanout labels carry R)."""
    def cell(r: Row) -> str:
        return ratio(f"{kind}-R{r.get('readers')}")(r)
    return cell


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")
    table("pipe (single node; a trivial 'message' is two requests)", summaries(out / "pipe.jsonl"),
          [LABEL, ROUNDS, RATE, CPU, ("ratio to trivial", ratio("trivial")), ("ratio to redis", ratio("redis")),
           UTIL, LATENCY])
    cluster = summaries(out / "cluster.jsonl")
    table("cluster: direct to the owner versus forwarded (CPU summed over all nodes)", cluster,
          [("pairs", num("pairs")), LABEL, ROUNDS, RATE, RTT, LATENCY, CPU,
           ("ratio to direct", ratio("direct-to-owner")),
           ("added p50 ms", num("latency_p50_added_ms_vs_direct-to-owner", ".2f"))])
    table("lb: random entry node for every call (CPU summed over all nodes)", summaries(out / "lb.jsonl"),
          [LABEL, ROUNDS, RATE, CPU, ("ratio to one node", ratio("one-node")), UTIL, LATENCY])
    table("client: owner-aware client versus one node", summaries(out / "client.jsonl"),
          [LABEL, ROUNDS, RATE, CPU, RTT, LATENCY])
    table("fanout: one sender, R readers each getting every message (a 'msg' is one delivered copy)",
          summaries(out / "fanout.jsonl"),
          [("readers", num("readers")), LABEL, ROUNDS, ("copies/s", num("msg_per_s")),
           ("server CPU µs/copy", num("cpu_us_per_msg", ".2f")), ("ratio to Redis", ratio_to_kind("redis")),
           UTIL, LATENCY])
    table("waiting long polls", rows(out / "idle.jsonl"),
          [LABEL, ("polls", num("polls")), ("RSS KiB per poll", num("rss_per_poll_kib", ".2f")),
           ("owner / entry RSS KiB per forwarded poll",
            lambda r: f"{num('owner_rss_per_poll_kib', '.2f')(r)} / {num('entry_rss_per_poll_kib', '.2f')(r)}"),
           ("deliver to all s", num("deliver_all_seconds", ".2f")),
           ("answered before the release", lambda r: ", ".join(
               f"{n} × {code}" for code, n in r.get("answered_before_release", {}).items()) or "—")])
    table("idle streams holding one message", rows(out / "streams.jsonl"),
          [("streams", num("streams")), ("bytes per stream", num("rss_per_stream_bytes")),
           ("MiB for 1 M", num("rss_for_1m_streams_mib"))])
    table("persistence", rows(out / "persist.jsonl"),
          [("backend", lambda r: str(r["label"])), ("writers", num("writers")), ("streams", num("streams")),
           ("persisted msg/s", num("persisted_msg_per_s")), ("send p50 / p99 ms", pair("send_p50_ms", "send_p99_ms")),
           ("replay msg/s", num("replay_msg_per_s")), ("server CPU µs/msg", num("cpu_us_per_persisted_msg", ".1f"))])
    return 0


if __name__ == "__main__":
    sys.exit(main())
