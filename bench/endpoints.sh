#!/usr/bin/env bash
# plait's two endpoints beside Hocuspocus (issue 15): fan-out (CLIENTS clients in one room,
# writers at 100 edits/s) and idle memory (CONNS connections, each alone in a room) through
#   plait-ws     plait's y-websocket endpoint (ws://HOST/ROOM),
#   plait-hocus  plait's Hocuspocus endpoint (ws://HOST/hocuspocus, the document name in every
#                message, an Auth message first),
#   hocuspocus   Hocuspocus 4.7.0 itself (bench/hocuspocus/server.mjs, in memory),
# with plait on SQLite with strict durability; same generator, a fresh server per measurement,
# ROUNDS rounds interleaved. Records go to bench/results/<date>-endpoints.jsonl.
#
#   bench/endpoints.sh
#   CLIENTS=2000 CONNS=10000 ROUNDS=3 bench/endpoints.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/common.sh
CLIENTS=${CLIENTS:-500}
CONNS=${CONNS:-5000}
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-8}
(cd bench/hocuspocus && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
setup_run endpoints
PORT=17800
for round in $(seq 1 "$ROUNDS"); do
  for kind in plait-ws plait-hocus hocuspocus; do
    for scenario in fanout idle; do
      PORT=$((PORT + 1))
      url="ws://127.0.0.1:$PORT"
      protocol=y-websocket
      case $kind in
        hocuspocus)
          HOST=127.0.0.1 PORT=$PORT node bench/hocuspocus/server.mjs >"$TMP/hocus.log" 2>&1 &
          protocol=hocuspocus ;;
        plait-hocus)
          start_plait "$ROOT/target/release/plait" "$PORT" "$TMP/store-$PORT" "$TMP/plait.log"
          url="$url/hocuspocus"; protocol=hocuspocus ;;
        plait-ws)
          start_plait "$ROOT/target/release/plait" "$PORT" "$TMP/store-$PORT" "$TMP/plait.log" ;;
      esac
      PID=$!
      wait_port "$PORT"
      common=(--url "$url" --protocol "$protocol" --server-pid "$PID" --label "$kind" --out "$OUT")
      if [[ $scenario == fanout ]]; then
        "$BENCH" "${common[@]}" fanout --clients "$CLIENTS" --mode rate --duration "$SECS"
      else
        "$BENCH" "${common[@]}" idle --connections "$CONNS" --per-room 1 --hold 5
      fi
      kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    done
  done
  echo "round $round done" >&2
done
echo "records in $OUT" >&2
