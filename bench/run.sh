#!/usr/bin/env bash
# Runs every plait-bench scenario against the Node reference server (y-websocket 1.5.4
# bin/server.js, in memory), Hocuspocus (@hocuspocus/server 4.7.0, bench/hocuspocus/server.mjs,
# in memory) and plait (SQLite in a temp dir, strict durability), one after the other, each
# scenario on a freshly started server. Writes bench/results/<date>[-quick].{jsonl,json,md,png}.
#
#   bench/run.sh            full mode (about 20 minutes on 2 cores)
#   bench/run.sh --quick    small sizes (under 3 minutes)
#
# Environment: SERVERS="reference hocuspocus plait" (the default; any subset), KEEP_TMP=1 keeps
# the temp dir.
set -euo pipefail

MODE=full
if [[ "${1:-}" == "--quick" ]]; then MODE=quick; fi
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SERVERS=${SERVERS:-"reference hocuspocus plait"}
source bench/common.sh
TRACE="$ROOT/../shared/data/editing-traces/sequential-automerge-paper.json.gz"

# Every process of this run gets the hard file limit (idle and rooms open ~20,000 sockets).
ulimit -n "$(ulimit -Hn)"
echo "RLIMIT_NOFILE $(ulimit -n) (the server needs it as high as the connection count)"

REF_JS="$ROOT/bench/reference/node_modules/y-websocket/bin/server.js"
HOCUS_JS="$ROOT/bench/hocuspocus/server.mjs"
HOCUS_VERSION=""
if [[ " $SERVERS " == *" reference "* ]]; then
  echo "== installing the reference server (bench/reference, npm ci)"
  (cd bench/reference && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
if [[ " $SERVERS " == *" hocuspocus "* ]]; then
  echo "== installing Hocuspocus (bench/hocuspocus, npm ci)"
  (cd bench/hocuspocus && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  HOCUS_VERSION=$(node -p 'require("./bench/hocuspocus/node_modules/@hocuspocus/server/package.json").version')
fi

echo "== building plait and plait-bench (release)"
cargo build --release -p plait -p plait-bench 2>&1 | tail -n 2
TMP=$(mktemp -d /tmp/plait-bench.XXXXXX)
# Private copies: a rebuild in the shared target/ during the run must not swap binaries.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cp "$TARGET_DIR/release/plait" "$TARGET_DIR/release/plait-bench" "$TMP/"
BENCH="$TMP/plait-bench"
PLAIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
PLAIT_DIRTY=$(git status --porcelain -- crates src 2>/dev/null | wc -l)

DATE=$(date +%Y-%m-%d)
SUFFIX=""; [[ $MODE == quick ]] && SUFFIX="-quick"
# BENCH_TAG=name keeps several runs of one day apart: bench/results/<date>-<name>.*
OUT="bench/results/${DATE}${SUFFIX}${BENCH_TAG:+-$BENCH_TAG}"
mkdir -p bench/results
: > "$OUT.jsonl"

if [[ $MODE == quick ]]; then
  FANOUT_CLIENTS=10,100,500; FANOUT_SECS=3
  ROOMS=200; ROOMS_SECS=4; ROOMS_INTERVAL=2000
  IDLE=2000
  BIGDOC_EDITS=30000
  STORM=200,500
else
  FANOUT_CLIENTS=10,100,500,2000; FANOUT_SECS=8
  # 10,000 rooms x 2 clients would need 20,000+ sockets on each side; the hard limit here is
  # 20,000 file descriptors, so the large run is 9,000 rooms (18,000 connections).
  ROOMS=1000,9000; ROOMS_SECS=15; ROOMS_INTERVAL=5000
  IDLE=10000,18000
  BIGDOC_EDITS=0
  STORM=500,2000
fi

PORT=17400
SERVER_PID=""
URL=""

# start_server KIND STORE_DIR
start_server() {
  PORT=$((PORT + 1))
  URL="ws://127.0.0.1:$PORT"
  case $1 in
    reference)
      HOST=127.0.0.1 PORT=$PORT node "$REF_JS" >"$TMP/reference-$PORT.log" 2>&1 &
      ;;
    hocuspocus)
      # In memory, no extensions, any token accepted (see bench/hocuspocus/server.mjs).
      HOST=127.0.0.1 PORT=$PORT node "$HOCUS_JS" >"$TMP/hocuspocus-$PORT.log" 2>&1 &
      ;;
    plait)
      start_plait "$TMP/plait" "$PORT" "$2" "$TMP/plait-$PORT.log"
      ;;
  esac
  SERVER_PID=$!
  wait_port "$PORT"
}

stop_server() {
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    for _ in $(seq 1 100); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  SERVER_PID=""
}
trap 'stop_server; [[ -z ${KEEP_TMP:-} ]] && rm -rf "$TMP"' EXIT

# bench KIND ARGS...: runs plait-bench against the current server.
bench() {
  local kind=$1; shift
  local protocol=y-websocket
  if [[ $kind == hocuspocus ]]; then protocol=hocuspocus; fi
  timeout 600 "$BENCH" --url "$URL" --server-pid "$SERVER_PID" --label "$kind" \
    --protocol "$protocol" --out "$ROOT/$OUT.jsonl" "$@" >/dev/null || echo "!! $kind $* failed ($?)" >&2
}

STARTED=$(date +%s)
for kind in $SERVERS; do
  echo "== $kind"
  n=0
  fresh() { n=$((n + 1)); stop_server; start_server "$kind" "$TMP/store-$kind-$n"; }

  echo "-- fanout ($FANOUT_CLIENTS clients)"
  for c in ${FANOUT_CLIENTS//,/ }; do
    fresh; bench "$kind" fanout --clients "$c" --mode rate --duration "$FANOUT_SECS"
    fresh; bench "$kind" fanout --clients "$c" --mode closed --duration "$FANOUT_SECS"
  done
  echo "-- rooms ($ROOMS)"
  for r in ${ROOMS//,/ }; do
    fresh; bench "$kind" rooms --rooms "$r" --duration "$ROOMS_SECS" --edit-interval-ms "$ROOMS_INTERVAL"
  done
  echo "-- idle ($IDLE)"
  for k in ${IDLE//,/ }; do
    fresh; bench "$kind" idle --connections "$k"
  done
  echo "-- bigdoc"
  fresh
  room="bigdoc-$$"
  bench "$kind" bigdoc --trace "$TRACE" --edits "$BIGDOC_EDITS" --room "$room"
  if [[ $kind == plait ]]; then
    # Cold: restart the server on the same store; the room is loaded on first join.
    store="$TMP/store-$kind-$n"
    stop_server; start_server plait "$store"
    bench "$kind" bigdoc --trace "$TRACE" --room "$room" --skip-ingest --cold-url "$URL" --cold-pid "$SERVER_PID"
  fi
  echo "-- storm ($STORM)"
  for c in ${STORM//,/ }; do
    fresh; bench "$kind" storm --clients "$c"
  done
  stop_server
  echo "   $kind done after $(( $(date +%s) - STARTED )) s"
done

echo "== report"
python3 -c 'import matplotlib' 2>/dev/null || python3 -m pip install --quiet --user matplotlib >/dev/null 2>&1 || true
python3 bench/report.py "$OUT.jsonl" --mode "$MODE" --commit "$PLAIT_COMMIT" --dirty "$PLAIT_DIRTY" \
  --nproc "$(nproc)" --elapsed "$(( $(date +%s) - STARTED ))" ${HOCUS_VERSION:+--hocuspocus-version "$HOCUS_VERSION"}
echo "wrote $OUT.md, $OUT.json, $OUT.jsonl and the plot"
