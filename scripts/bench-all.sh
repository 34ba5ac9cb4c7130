#!/usr/bin/env bash
# Run every benchmark of docs/benchmarks.md on this machine, servers pinned to
# CPU 0 and the load generator (scripts/bench.py) to CPU 1.
#   scripts/bench-all.sh [OUT_DIR [SECTION...]]   (default: bench-results/, all sections)
# Sections: pipe memory cluster persist.
# Needs: taskset, the package installed with '.[speed,postgres,mysql]' in the
# Python on PATH (or PYTHON=...), PostgreSQL and MariaDB for the persist runs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${1:-bench-results}
shift || true
SECTIONS=${*:-pipe memory cluster persist}
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
mkdir -p "$OUT"
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

bench() { taskset -c "$CLIENT_CPU" "$PY" scripts/bench.py "$@"; }

wait_http() {  # url
  for _ in $(seq 1 100); do
    if "$PY" - "$1" <<'EOF' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1] + "/health", timeout=1)
EOF
    sleep 0.1
  done
  echo "no answer from $1" >&2; return 1
}

start_node() {  # name port storage-yaml [extra-cluster-yaml]
  local cfg="$WORK/$1.yaml"
  cat >"$cfg" <<EOF
node: {name: $1, listen: "127.0.0.1:$2", shutdown_grace_seconds: 2}
cluster: {name: bench, seeds: [${4:-"127.0.0.1:$2"}]}
storage: $3
log: {level: warning}
EOF
  taskset -c "$SERVER_CPU" "$PY" -m ipubsub serve --config "$cfg" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
  LAST_PID=$!
  wait_http "http://127.0.0.1:$2"
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# CPU time per operation on a shared VM drifts by tens of percent over
# minutes, so the single-node pipe runs in interleaved rounds and the summary
# takes medians: trivial endpoint, naive aiohttp queue, ipubsub, again.
ROUNDS=${ROUNDS:-3}
if want pipe; then
rm -f "$OUT/pipe.jsonl"
for round in $(seq 1 "$ROUNDS"); do
  echo "== pipe round $round: trivial endpoint, naive queue, ipubsub" >&2
  taskset -c "$SERVER_CPU" "$PY" scripts/baseline_server.py --port 18090 & BP=$!; PIDS+=($BP)
  wait_http http://127.0.0.1:18090
  bench pipe --url http://127.0.0.1:18090 --pid "$BP" --baseline --pairs 64 --duration 8 | tee -a "$OUT/pipe.jsonl"
  stop_pid "$BP"
  taskset -c "$SERVER_CPU" "$PY" scripts/baseline_server.py --port 18090 --naive-queue & BP=$!; PIDS+=($BP)
  wait_http http://127.0.0.1:18090
  bench pipe --url http://127.0.0.1:18090 --pid "$BP" --pairs 64 --duration 8 --label naive-queue | tee -a "$OUT/pipe.jsonl"
  stop_pid "$BP"
  start_node bench1 18100 "{backend: none}"; NP=$LAST_PID
  bench pipe --url http://127.0.0.1:18100 --pid "$NP" --pairs 64 --duration 8 | tee -a "$OUT/pipe.jsonl"
  bench pipe --url http://127.0.0.1:18100 --pid "$NP" --pairs 64 --window 8 --duration 8 --label ipubsub-window8 | tee -a "$OUT/pipe.jsonl"
  stop_pid "$NP"
done

fi

if want memory; then
rm -f "$OUT/idle.jsonl"
echo "== waiting long polls and idle streams" >&2
taskset -c "$SERVER_CPU" "$PY" scripts/baseline_server.py --port 18090 --hold & BP=$!; PIDS+=($BP)
wait_http http://127.0.0.1:18090
bench idle --url http://127.0.0.1:18090 --pid "$BP" --baseline --polls 8000 | tee -a "$OUT/idle.jsonl"
stop_pid "$BP"
start_node bench1 18100 "{backend: none}"; NP=$LAST_PID
bench idle --url http://127.0.0.1:18100 --pid "$NP" --polls 8000 | tee -a "$OUT/idle.jsonl"
stop_pid "$NP"
start_node bench1 18100 "{backend: none}"; NP=$LAST_PID
bench streams --url http://127.0.0.1:18100 --pid "$NP" --count 1000000 | tee "$OUT/streams.json"
stop_pid "$NP"

fi

if want cluster; then
echo "== cluster: direct to the owner versus forwarded" >&2
SEEDS='"127.0.0.1:18111", "127.0.0.1:18112", "127.0.0.1:18113"'
start_node c1 18111 "{backend: none}" "$SEEDS"
start_node c2 18112 "{backend: none}" "$SEEDS"
start_node c3 18113 "{backend: none}" "$SEEDS"
sleep 2
bench cluster --owner-url http://127.0.0.1:18111 --via-url http://127.0.0.1:18112 --pairs 32 --duration 8 | tee "$OUT/cluster.json"
bench client --urls http://127.0.0.1:18111,http://127.0.0.1:18112,http://127.0.0.1:18113 --pairs 32 --duration 8 | tee "$OUT/client.json" || true
for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
sleep 1

fi

if want persist; then
echo "== persistence" >&2
for backend in sqlite postgres mysql; do
  case $backend in
    sqlite) storage="{backend: sqlite, sqlite: {path: $WORK/bench.db}}" ;;
    postgres) storage="{backend: postgres, postgres: {dsn: 'postgresql://postgres@127.0.0.1:5432/test', table: bench_messages}}" ;;
    mysql) storage="{backend: mysql, mysql: {dsn: 'mysql://root@127.0.0.1:3306/test', table: bench_messages}}" ;;
  esac
  start_node "p-$backend" 18120 "$storage"; NP=$LAST_PID
  sleep 1
  bench persist --url http://127.0.0.1:18120 --writers 1 16 64 --duration 5 --label "$backend" | tee "$OUT/persist-$backend.json"
  bench persist --url http://127.0.0.1:18120 --writers 64 --streams 64 --duration 5 --label "$backend" | tee -a "$OUT/persist-$backend.json"
  stop_pid "$NP"
done
fi
"$PY" scripts/bench_summary.py "$OUT"
echo "results in $OUT/" >&2
