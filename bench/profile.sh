#!/usr/bin/env bash
# CPU flame graphs of plait (release build, SQLite, strict durability) under the scenarios
# whose targets are missed: the automerge-paper ingest, closed-loop fan-out to 500 clients,
# and the 2,000-client reconnect storm. `perf record` samples the server's threads only
# (cpu-clock, DWARF call graphs); inferno (`cargo install inferno`) folds and draws them.
# Writes bench/results/flamegraphs/<scenario>.{svg,txt}: the picture, and the functions with
# the largest inclusive share of the server's samples.
#
#   bench/profile.sh            all three
#   bench/profile.sh ingest     one of: ingest fanout storm
#
# Needs perf (Debian's linux-perf) and permission to profile (root, or
# kernel.perf_event_paranoid <= 1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SCENARIOS=${*:-"ingest fanout storm"}
source bench/common.sh
TRACE="$ROOT/../shared/data/editing-traces/sequential-automerge-paper.json.gz"
OUT=bench/results/flamegraphs
mkdir -p "$OUT"
ulimit -n "$(ulimit -Hn)"

for tool in perf inferno-collapse-perf inferno-flamegraph; do
  command -v "$tool" >/dev/null || {
    echo "$tool not found: apt-get install linux-perf; cargo install inferno" >&2
    exit 1
  }
done

echo "== building plait and plait-bench (release)"
cargo build --release -p plait -p plait-bench 2>&1 | tail -n 1
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
TMP=$(mktemp -d /tmp/plait-profile.XXXXXX)
cp "$TARGET_DIR/release/plait" "$TARGET_DIR/release/plait-bench" "$TMP/"
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
SERVER_PID=""
PERF_PID=""
cleanup() {
  [[ -n $PERF_PID ]] && kill -INT "$PERF_PID" 2>/dev/null || true
  [[ -n $SERVER_PID ]] && kill -TERM "$SERVER_PID" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

PORT=17600
for scenario in $SCENARIOS; do
  PORT=$((PORT + 1))
  case $scenario in
    ingest) args=(bigdoc --trace "$TRACE" --room big) ;; # the automerge-paper trace
    fanout) args=(fanout --clients 500 --mode closed --duration 8) ;;
    storm) args=(storm --clients 2000) ;;
    *) echo "unknown scenario $scenario (ingest, fanout or storm)" >&2; exit 2 ;;
  esac
  echo "== $scenario"
  rm -f "$TMP/result.jsonl"
  start_plait "$TMP/plait" "$PORT" "$TMP/store-$scenario" "$TMP/plait.log"
  SERVER_PID=$!
  wait_port "$PORT"
  perf record -q -e cpu-clock -F 997 --call-graph dwarf,32768 -p "$SERVER_PID" \
    -o "$TMP/perf.data" >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 1
  "$TMP/plait-bench" --url "ws://127.0.0.1:$PORT" --server-pid "$SERVER_PID" --label plait \
    --out "$TMP/result.jsonl" "${args[@]}" >/dev/null
  kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=""
  kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""
  perf script -i "$TMP/perf.data" 2>/dev/null | inferno-collapse-perf >"$TMP/$scenario.folded"
  inferno-flamegraph --width 1600 --minwidth 0.1 \
    --title "plait $COMMIT: $scenario, server CPU samples" \
    <"$TMP/$scenario.folded" >"$OUT/$scenario.svg"
  # The command as run, with this machine's checkout path left out.
  command="${args[*]}"
  python3 bench/folded_top.py "$TMP/$scenario.folded" --result "$TMP/result.jsonl" \
    --title "plait $COMMIT, $scenario: ${command//$ROOT\//}" >"$OUT/$scenario.txt"
  echo "   wrote $OUT/$scenario.svg and $OUT/$scenario.txt"
done
