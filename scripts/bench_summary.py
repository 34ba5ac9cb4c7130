#!/usr/bin/env python3
"""Summarise a scripts/bench-all.sh result folder as the markdown tables of
docs/benchmarks.md (medians over rounds, ratios to the trivial endpoint).

    python scripts/bench_summary.py bench-results/
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def rows(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> int:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench-results")
    pipe = rows(out / "pipe.jsonl")
    # Rows come in rounds, each opened by the trivial endpoint: ratios are
    # taken within a round (same machine state), then the median over rounds.
    by_label: dict[str, list[tuple[dict[str, object], float]]] = {}
    base = float("nan")
    for row in pipe:
        if row["label"] == "baseline":
            base = float(row["cpu_us_per_msg"])  # type: ignore[arg-type]
        by_label.setdefault(str(row["label"]), []).append((row, base))
    print("| server (pipe, 64 pairs, window 1 unless noted) | rounds | msg/s | server CPU µs per message "
          "| ratio to 2 trivial requests (same round) | latency p50 / p99 ms |")
    print("|---|---|---|---|---|---|")
    for label in ("baseline", "naive-queue", "ipubsub", "ipubsub-window8"):
        runs = by_label.get(label, [])
        if not runs:
            continue
        cpu = median([float(r["cpu_us_per_msg"]) for r, _ in runs])  # type: ignore[arg-type]
        ratio = median([float(r["cpu_us_per_msg"]) / b for r, b in runs])  # type: ignore[arg-type]
        rate = median([float(r["msg_per_s"]) for r, _ in runs])  # type: ignore[arg-type]
        p50 = median([float(r.get("latency_p50_ms", r.get("send_rtt_p50_ms"))) for r, _ in runs])  # type: ignore[arg-type]
        p99 = median([float(r.get("latency_p99_ms", r.get("send_rtt_p99_ms"))) for r, _ in runs])  # type: ignore[arg-type]
        print(f"| {label} | {len(runs)} | {rate:,.0f} | {cpu:.1f} | {ratio:.2f} | {p50:.2f} / {p99:.2f} |")
    print()
    for row in rows(out / "idle.jsonl"):
        print(f"idle {row['label']}: {row.get('rss_per_poll_kib')} KiB RSS per waiting poll "
              f"({row['polls']} polls, delivered to all in {row['deliver_all_seconds']} s)")
    for row in rows(out / "streams.json"):
        print(f"streams: {row.get('rss_per_stream_bytes')} bytes per stream holding one message "
              f"-> {row.get('rss_for_1m_streams_mib')} MiB for 1 M")
    for name in ("cluster.json", "client.json"):
        for row in rows(out / name):
            print(f"{row['label']}: {row['msg_per_s']} msg/s, latency p50 {row['latency_p50_ms']} ms, "
                  f"p99 {row['latency_p99_ms']} ms")
    for backend in ("sqlite", "postgres", "mysql"):
        for row in rows(out / f"persist-{backend}.json"):
            print(f"persist {backend} writers={row['writers']} streams={row.get('streams', 1)}: {row['persisted_msg_per_s']} msg/s "
                  f"(p50 {row['send_p50_ms']} ms, p99 {row['send_p99_ms']} ms), replay {row['replay_msg_per_s']} msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
