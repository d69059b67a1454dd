#!/usr/bin/env bash
# Memory against the physical limit (issue 17): RSS per room (ROOMS rooms x 2 connections, an
# edit per room every 5 s) and per idle connection (CONNS connections, each alone in its own
# room) through the raw relay (`plait-bench relay`) and through plait (SQLite, strict
# durability), same generator, fresh server per measurement, ROUNDS rounds interleaved. Prints
# one JSON record per measurement and appends them to bench/results/<date>-memory.jsonl.
#
#   bench/memory.sh                         1,000 rooms and 5,000 idle connections, 2 rounds
#   ROOMS=9000 CONNS=18000 bench/memory.sh
#   BEFORE=/path/to/old/plait KINDS="relay before plait" bench/memory.sh   an older build beside
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/common.sh
ROOMS=${ROOMS:-1000}
CONNS=${CONNS:-5000}
ROUNDS=${ROUNDS:-2}
KINDS=${KINDS:-"relay plait"}
setup_run memory
PORT=17700
for round in $(seq 1 "$ROUNDS"); do
  for kind in $KINDS; do
    for scenario in rooms idle; do
      PORT=$((PORT + 1))
      start_kind "$kind" "$PORT"
      PID=$!
      wait_port "$PORT"
      if [[ $scenario == rooms ]]; then
        "$BENCH" --url "ws://127.0.0.1:$PORT" --server-pid "$PID" --label "$kind" --out "$OUT" \
          rooms --rooms "$ROOMS" --duration 10
      else
        "$BENCH" --url "ws://127.0.0.1:$PORT" --server-pid "$PID" --label "$kind" --out "$OUT" \
          idle --connections "$CONNS" --per-room 1 --hold 5
      fi
      kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
    done
  done
  echo "round $round done" >&2
done
echo "records in $OUT" >&2
