#!/usr/bin/env bash
# Run every benchmark of docs/benchmarks.md in one go, then print the summary.
#   scripts/bench-all.sh [OUT_DIR [SECTION...]]   (default: bench-results/, all sections)
# Sections: pipe batch memory cluster lb persist fanout group streaming.
# scripts/bench.py starts every server itself (--spawn): servers pinned to
# CPU 0, the harness to CPU 1 (SERVER_CPU / CLIENT_CPU to change), random
# loopback ports, all stopped at the end.  Needs: taskset, redis-server (pipe),
# the package installed with '.[speed,postgres,mysql]' in the Python on PATH
# (or PYTHON=...), PostgreSQL and MariaDB for the persist runs.
# ROUNDS (default 3): interleaved rounds of the comparisons; STREAMS (default
# 1000000): idle streams created by the memory section.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-bench-results}
shift || true
SECTIONS=${*:-pipe batch memory cluster lb persist fanout group streaming}
ROUNDS=${ROUNDS:-3}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
bench() { "$PY" scripts/bench.py "$1" --server-cpu "${SERVER_CPU:-0}" --client-cpu "${CLIENT_CPU:-1}" "${@:2}"; }
mkdir -p "$OUT"

if want pipe; then
  echo "== pipe: trivial, naive queue, ipubsub, ipubsub window 8, Redis, Redis batches ($ROUNDS rounds)" >&2
  bench pipe --spawn --rounds "$ROUNDS" --pairs 64 --duration 8 \
    --target trivial --target naive --target ipubsub --target ipubsub:window=8 \
    --target redis --target redis:batch=100 --ratio-to trivial --ratio-to redis | tee "$OUT/pipe.jsonl"
fi

if want batch; then
  echo "== batches (issue 11): pipe sendBatch/maxMessages 100 next to single messages and Redis; persist and replay" >&2
  bench pipe --spawn --rounds "$ROUNDS" --duration 5 --warmup 2 --target ipubsub --target ipubsub:batch=100 \
    --target redis --target redis:batch=100 --ratio-to redis --ratio-to ipubsub | tee "$OUT/batch-pipe.jsonl"
  rm -f "$OUT/batch-persist.jsonl" "$OUT/batch-replay.jsonl"
  for backend in postgres sqlite; do
    bench persist --spawn --storage "$backend" --writers 16 64 --batch 1 100 --duration 5 --replay-limit 2000 \
      | tee -a "$OUT/batch-persist.jsonl"
    bench replay --spawn --storage "$backend" --messages 100000 --batch 1 1000 --single-limit 5000 \
      --rounds "$ROUNDS" | tee -a "$OUT/batch-replay.jsonl"
  done
fi

if want memory; then
  echo "== waiting long polls (direct and forwarded) and idle streams" >&2
  bench idle --spawn --baseline --polls 8000 | tee "$OUT/idle.jsonl"
  bench idle --spawn --polls 8000 | tee -a "$OUT/idle.jsonl"
  bench cluster-idle --spawn 2 --polls 8000 | tee -a "$OUT/idle.jsonl"
  bench streams --spawn --count "${STREAMS:-1000000}" | tee "$OUT/streams.jsonl"
fi

if want cluster; then
  echo "== cluster: direct to the owner versus forwarded; owner-aware client ($ROUNDS rounds)" >&2
  bench cluster --spawn 3 --pairs 32 1 --rounds "$ROUNDS" --duration 8 | tee "$OUT/cluster.jsonl"
  bench client --spawn 3 --pairs 32 --duration 8 | tee "$OUT/client.jsonl"
fi

if want lb; then
  echo "== lb: random entry node on 2 and 3 nodes versus one node ($ROUNDS rounds)" >&2
  bench lb --spawn 2 3 --pairs 32 --rounds "$ROUNDS" --duration 8 | tee "$OUT/lb.jsonl"
fi

if want persist; then
  echo "== persistence" >&2
  rm -f "$OUT/persist.jsonl"
  for backend in sqlite postgres mysql; do
    bench persist --spawn --storage "$backend" --writers 1 16 64 --duration 5 | tee -a "$OUT/persist.jsonl"
    bench persist --spawn --storage "$backend" --writers 64 --streams 64 --duration 5 | tee -a "$OUT/persist.jsonl"
  done
fi

if want fanout; then
  echo "== fanout: one sender, R readers: history, durable log on SQLite, Redis lists ($ROUNDS rounds)" >&2
  bench fanout --spawn --readers 10 100 1000 --rounds "$ROUNDS" --duration 8 --send-batch 100 --ratio-to redis | tee "$OUT/fanout.jsonl"
fi

if want group; then
  echo "== at-least-once: a consumer group of 8 (maxMessages 100) on sqlite and postgres; lease+ack versus plain receive" >&2
  bench group --storage sqlite postgres --consumers 8 --max-messages 100 --backlog 30000 --rounds "$ROUNDS" \
    --duration 8 | tee "$OUT/group.jsonl"
fi

if want streaming; then
  echo "== streaming: 10,000 idle SSE / WebSocket subscribers (RSS, fan-out delivery), throughput next to Redis ($ROUNDS rounds)" >&2
  for kind in sse ws; do
    bench "$kind" --spawn --subscribers 10000 --pairs 32 --rounds "$ROUNDS" --duration 8 | tee -a "$OUT/streaming.jsonl"
  done
fi

"$PY" scripts/bench_summary.py "$OUT"
echo "results in $OUT/" >&2
