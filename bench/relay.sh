#!/usr/bin/env bash
# The physical limit (issue 17): fan-out through the raw relay (`plait-bench relay`: rooms by
# path, every frame to the room's other connections, no yrs, no store) and the durable relay
# (the same, writing each frame to disk with an fdatasync before relaying it) beside plait
# (SQLite, strict durability), same generator, same run, interleaved ROUNDS times. Prints one
# JSON record per measurement, writes them to bench/results/<date>-relay.jsonl, and ends with
# a table of each server's medians over the rounds and their ratios to the relay's and the
# durable relay's (bench/relay_summary.py).
#
#   bench/relay.sh                 500 clients, rate and closed loop, 2 rounds; the relay, the
#                                  durable relay, plait strict and plait relaxed
#   CLIENTS=2000 ROUNDS=3 bench/relay.sh
#   KINDS="relay plait hocuspocus" bench/relay.sh    Hocuspocus 4.7.0 (in memory) beside them
#   BEFORE=/path/to/old/plait KINDS="before plait" bench/relay.sh   an older build, same run
#   MODES=closed bench/relay.sh    only the closed loop (or only `rate`)
#   CPUS="shared split" bench/relay.sh   each server also with the machine's CPUs split: the
#                                  server on the first half, the generator on the second (as a
#                                  deployed server has cores of its own); those records are
#                                  labelled KIND/split and set beside relay/split
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/common.sh
CLIENTS=${CLIENTS:-500}
ROUNDS=${ROUNDS:-2}
SECS=${SECS:-8}
KINDS=${KINDS:-"relay relay-durable plait plait-relaxed"}
MODES=${MODES:-"rate closed"}
CPUS=${CPUS:-shared}
NPROC=$(nproc)
HALF=$((NPROC / 2))
if [[ " $CPUS " == *" split "* ]] && (( HALF == 0 )); then
  echo "CPUS=split needs two CPUs or more; this machine has $NPROC" >&2; exit 2
fi
if [[ " $KINDS " == *" hocuspocus "* ]]; then
  (cd bench/hocuspocus && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
setup_run relay
SKIP=$( [[ -f $OUT ]] && wc -l <"$OUT" || echo 0 )
PORT=17600
for round in $(seq 1 "$ROUNDS"); do
  for cpus in $CPUS; do
    case $cpus in
      shared) SERVER_PIN=""; GEN_PIN=""; suffix="" ;;
      split) SERVER_PIN="taskset -c 0-$((HALF - 1))"; GEN_PIN="taskset -c $HALF-$((NPROC - 1))"
        suffix=/split ;;
      *) echo "CPUS: shared or split, not $cpus" >&2; exit 2 ;;
    esac
    for kind in $KINDS; do
      for mode in $MODES; do
        PORT=$((PORT + 1))
        start_kind "$kind" "$PORT"
        PID=$!
        protocol=y-websocket
        if [[ $kind == hocuspocus ]]; then protocol=hocuspocus; fi
        wait_port "$PORT"
        $GEN_PIN "$BENCH" --url "ws://127.0.0.1:$PORT" --protocol "$protocol" --server-pid "$PID" \
          --label "$kind$suffix" --out "$OUT" fanout --clients "$CLIENTS" --mode "$mode" \
          --duration "$SECS"
        kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
      done
    done
  done
  echo "round $round done" >&2
done
echo "records in $OUT" >&2
python3 bench/relay_summary.py "$OUT" --skip "$SKIP"
