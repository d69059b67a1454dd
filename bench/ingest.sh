#!/usr/bin/env bash
# Ingest (issue 17): the automerge-paper trace replayed by one writer into one room, with an
# observer, through plait (SQLite, strict durability); with BEFORE=/path/to/plait an older
# build runs beside it, interleaved, ROUNDS rounds. Records go to
# bench/results/<date>-ingest.jsonl.
#
#   bench/ingest.sh
#   BEFORE=/tmp/plait-before KINDS="before plait" ROUNDS=3 bench/ingest.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/common.sh
ROUNDS=${ROUNDS:-2}
KINDS=${KINDS:-plait}
TRACE=${TRACE:-../shared/data/editing-traces/sequential-automerge-paper.json.gz}
setup_run ingest
PORT=17950
for round in $(seq 1 "$ROUNDS"); do
  for kind in $KINDS; do
    PORT=$((PORT + 1))
    start_kind "$kind" "$PORT"
    PID=$!
    wait_port "$PORT"
    "$BENCH" --url "ws://127.0.0.1:$PORT" --server-pid "$PID" --label "$kind" --out "$OUT" \
      bigdoc --trace "$TRACE" --room big
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
  echo "round $round done" >&2
done
echo "records in $OUT" >&2
