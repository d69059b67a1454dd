#!/usr/bin/env bash
# What one strict edit costs the server beyond a relaxed one, and where (issue 17): a room of
# CLIENTS clients (WRITERS of them editing, RATE edits/s in all), so few receivers that the
# fixed cost of each edit shows instead of the fan-out's. Runs plait strict on the disk,
# strict with its SQLite store on a tmpfs (every fsync returns at once: what is left over
# relaxed is the hop to SQLite's thread and back and SQLite's own work) and relaxed,
# interleaved ROUNDS times, then prints the server's CPU per edit (user and system) for each,
# medians over the rounds. At 500 receivers, divide the differences by 499 for the cost per
# delivery.
#
#   bench/strict_cost.sh
#   ROUNDS=5 SECS=20 bench/strict_cost.sh
#   PLAIT_BIN=/path/to/plait bench/strict_cost.sh     another build
#   KINDS="relay relay-durable strict-disk relaxed" bench/strict_cost.sh
#                                  any of start_kind's relay kinds (bench/common.sh) beside
#                                  plait's: what an edit costs a server that keeps nothing, and
#                                  one that keeps it the simplest way
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
source bench/common.sh
CLIENTS=${CLIENTS:-4}
WRITERS=${WRITERS:-2}
RATE=${RATE:-100}
ROUNDS=${ROUNDS:-3}
SECS=${SECS:-10}
KINDS=${KINDS:-"strict-disk strict-tmpfs relaxed"}
setup_run strict-cost
PLAIT_BIN=${PLAIT_BIN:-$ROOT/target/release/plait}
SHM=$(mktemp -d -p /dev/shm)
trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$TMP" "$SHM" "$SHM"-*' EXIT
SKIP=$( [[ -f $OUT ]] && wc -l <"$OUT" || echo 0 )
PORT=17700
for round in $(seq 1 "$ROUNDS"); do
  for kind in $KINDS; do
    PORT=$((PORT + 1))
    case $kind in
      strict-disk) start_plait "$PLAIT_BIN" "$PORT" "$TMP/store-$PORT" "$TMP/plait.log" ;;
      strict-tmpfs) start_plait "$PLAIT_BIN" "$PORT" "$SHM/store-$PORT" "$TMP/plait.log" ;;
      relaxed) DURABILITY=relaxed-may-lose-recent-edits \
        start_plait "$PLAIT_BIN" "$PORT" "$TMP/store-$PORT" "$TMP/plait.log" ;;
      relay*) start_kind "$kind" "$PORT" ;;
      *) echo "KINDS: strict-disk, strict-tmpfs, relaxed or a relay kind, not $kind" >&2; exit 2 ;;
    esac
    PID=$!
    wait_port "$PORT"
    "$BENCH" --url "ws://127.0.0.1:$PORT" --server-pid "$PID" --label "$kind" --out "$OUT" \
      fanout --clients "$CLIENTS" --writers "$WRITERS" --mode rate --rate "$RATE" \
      --duration "$SECS"
    kill "$PID"; wait "$PID" 2>/dev/null || true; PID=""
  done
  echo "round $round done" >&2
done
echo "records in $OUT" >&2
python3 - "$OUT" "$SKIP" <<'EOF'
import json, statistics, sys
runs = {}
with open(sys.argv[1]) as f:
    for line in list(f)[int(sys.argv[2]):]:
        r = json.loads(line)
        runs.setdefault(r["server"], []).append(r["metrics"])
def per_edit(m, key):
    return m[key] / m["edits"] * 1e6
print("\n| server | rounds | CPU per edit µs | user µs | system µs | switches per edit | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|---|---|")
for server, ms in runs.items():
    cells = [statistics.median(per_edit(m, k) for m in ms)
             for k in ("server_cpu_s", "server_user_s", "server_sys_s")]
    switches = statistics.median(m["server_switches"] / m["edits"] for m in ms)
    cells += [statistics.median(m[k] for m in ms) for k in ("p50_ms", "p99_ms")]
    print(f"| {server} | {len(ms)} | " + " | ".join(f"{c:.0f}" for c in cells[:3])
          + f" | {switches:.1f} | " + " | ".join(f"{c:.2f}" for c in cells[3:]) + " |")
EOF
