#!/usr/bin/env bash
# Run the local 3-node cluster of config/multi-node-{1,2,3}.yaml.
#   scripts/run-cluster.sh start|stop|status
# Logs and pid files go to $IPUBSUB_RUN_DIR (default ./ipubsub-data/cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${IPUBSUB_RUN_DIR:-./ipubsub-data/cluster}
PORTS=(16681 16682 16683)
if command -v ipubsub >/dev/null 2>&1; then
  IPUBSUB=(ipubsub)
else
  IPUBSUB=("${PYTHON:-python3}" -m ipubsub)
fi

pid_of() { cat "$RUN_DIR/node-$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

start() {
  mkdir -p "$RUN_DIR"
  for i in 1 2 3; do
    if running "$i"; then echo "node-$i already running (pid $(pid_of "$i"))"; continue; fi
    nohup "${IPUBSUB[@]}" serve --config "config/multi-node-$i.yaml" >>"$RUN_DIR/node-$i.log" 2>&1 &
    echo $! >"$RUN_DIR/node-$i.pid"
    echo "node-$i started (pid $!, http://127.0.0.1:${PORTS[$((i-1))]}, log $RUN_DIR/node-$i.log)"
  done
  for _ in $(seq 1 100); do
    if status >/dev/null 2>&1; then status; return 0; fi
    sleep 0.1
  done
  echo "the cluster did not answer within 10 s; see $RUN_DIR/*.log" >&2
  return 1
}

stop() {
  for i in 1 2 3; do
    if running "$i"; then
      kill -TERM "$(pid_of "$i")"
      echo "node-$i stopping"
    fi
  done
  for i in 1 2 3; do
    for _ in $(seq 1 150); do running "$i" || break; sleep 0.1; done
    if running "$i"; then echo "node-$i did not stop; killing" >&2; kill -KILL "$(pid_of "$i")"; fi
    rm -f "$RUN_DIR/node-$i.pid"
  done
}

status() {
  local ok=0
  for i in 1 2 3; do
    local url="http://127.0.0.1:${PORTS[$((i-1))]}"
    if body=$(curl -fsS --max-time 2 "$url/api/v1/cluster" 2>/dev/null); then
      echo "node-$i $url: $body"
    else
      echo "node-$i $url: not answering"
      ok=1
    fi
  done
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
