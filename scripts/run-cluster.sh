#!/usr/bin/env bash
# Run the local 3-node cluster of config/multi-node-{1,2,3}.yaml.
#   scripts/run-cluster.sh start|stop|status
# Uses the project's .venv when it exists (else $PYTHON, else python3).
# Logs and pid files go to $IPUBSUB_RUN_DIR (default ./ipubsub-data/cluster).
# The configs are read from $IPUBSUB_CONFIG_DIR (default ./config); each
# node's URL is its config's node.advertise (else node.listen).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR=${IPUBSUB_RUN_DIR:-./ipubsub-data/cluster}
CONFIG_DIR=${IPUBSUB_CONFIG_DIR:-config}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then
  PYTHON=.venv/bin/python
fi
PYTHON=${PYTHON:-python3}

config_of() { echo "$CONFIG_DIR/multi-node-$1.yaml"; }

# URLS[i-1]: node i's HTTP address, read once from the three configs.
URLS=()
load_urls() {
  [ "${#URLS[@]}" = 3 ] && return 0
  mapfile -t URLS < <("$PYTHON" -c '
import sys, yaml
for path in sys.argv[1:]:
    node = yaml.safe_load(open(path))["node"]
    print("http://" + (node.get("advertise") or node["listen"]))' "$(config_of 1)" "$(config_of 2)" "$(config_of 3)")
  [ "${#URLS[@]}" = 3 ]
}

pid_of() { cat "$RUN_DIR/node-$1.pid" 2>/dev/null || true; }
running() { local pid; pid=$(pid_of "$1"); [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; }

# One clear line, and exit 1, if the nodes could not start: ipubsub not
# importable by $PYTHON, an invalid config, or a missing database driver.
preflight() {
  if ! "$PYTHON" -c "import ipubsub" 2>/dev/null; then
    echo "run-cluster: $PYTHON cannot import ipubsub; install it first:" \
      "python3 -m venv .venv && .venv/bin/pip install '.[speed,postgres]'" >&2
    return 1
  fi
  local i out
  for i in 1 2 3; do
    if ! out=$("$PYTHON" -m ipubsub serve --config "$(config_of "$i")" --dry-run 2>&1); then
      echo "run-cluster: node-$i: ${out#ipubsub: } (using $PYTHON)" >&2
      return 1
    fi
  done
}

start() {
  preflight || return 1
  load_urls
  mkdir -p "$RUN_DIR"
  for i in 1 2 3; do
    if running "$i"; then echo "node-$i already running (pid $(pid_of "$i"))"; continue; fi
    nohup "$PYTHON" -m ipubsub serve --config "$(config_of "$i")" >>"$RUN_DIR/node-$i.log" 2>&1 &
    echo $! >"$RUN_DIR/node-$i.pid"
    echo "node-$i started (pid $!, ${URLS[$((i-1))]}, log $RUN_DIR/node-$i.log)"
  done
  for _ in $(seq 1 100); do
    if status >/dev/null 2>&1; then status; return 0; fi
    for i in 1 2 3; do
      if ! running "$i"; then
        echo "node-$i exited; the end of $RUN_DIR/node-$i.log:" >&2
        tail -n 5 "$RUN_DIR/node-$i.log" >&2
        return 1
      fi
    done
    sleep 0.1
  done
  echo "the cluster did not agree on its ring within 10 s; see $RUN_DIR/*.log" >&2
  status || true
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

# Each node's view: its ring members and ring hash (equal on nodes whose rings
# agree; ringVersion only counts that node's own ring changes). Succeeds when
# every node answers and all rings hold all three nodes.
status() {
  local ok=0 hashes=() i url body line
  load_urls
  for i in 1 2 3; do
    url=${URLS[$((i-1))]}
    if body=$(curl -fsS --max-time 2 "$url/api/v1/cluster" 2>/dev/null); then
      line=$("$PYTHON" -c '
import json, sys
v = json.loads(sys.argv[1])
states = ", ".join(f"{m['"'"'name'"'"']} {m['"'"'status'"'"']}" for m in v["members"])
print(f"ring {v['"'"'ringHash'"'"']:>10} members [{states}] (ring changes seen here: {v['"'"'ringVersion'"'"']})")
print(len(v["ringMembers"]))' "$body")
      echo "node-$i $url: $(head -n1 <<<"$line")"
      hashes+=("$(awk '{print $2}' <<<"$line" | head -n1)")
      [ "$(tail -n1 <<<"$line")" = 3 ] || ok=1
    else
      echo "node-$i $url: not answering"
      ok=1
    fi
  done
  if [ "$ok" = 0 ] && [ "$(printf '%s\n' "${hashes[@]}" | sort -u | wc -l)" = 1 ]; then
    echo "all three nodes agree on the ring (hash ${hashes[0]})"
  else
    ok=1
  fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
