#!/usr/bin/env bash
# The cost of strict durability on each store (issue 3, "Measure and report").
#
# For every store (SQLite in a temp file, PostgreSQL in a fresh database on the local server)
# x durability (strict, relaxed-may-lose-recent-edits) x layout (W writers in one room, W
# writers in W rooms) x W (1, 10, 100): starts a fresh release `plait` on a free loopback port,
# runs `plait-bench durability` for DURATION seconds (each writer keeps one edit in flight; an
# edit is acknowledged when an observer in its room receives it), reads the server's
# plait_commit_seconds histogram from /metrics before and after, stops the server and drops
# the database. Writes bench/results/durability-<date>.{jsonl,md}.
#
#   bench/durability.sh              full run (24 runs x 10 s, about 6 minutes)
#   bench/durability.sh --quick      W = 1,10, 3 s each
#
# Environment: STORES="sqlite postgres", MODES="strict relaxed", LAYOUTS="one-room per-room",
# WRITERS="1 10 100", DURATION=10, PG="postgres://postgres@127.0.0.1:5432" (server for the
# temporary databases; psql must reach it as -h 127.0.0.1 -U postgres), KEEP_TMP=1,
# PLAIT_BIN (the server binary to measure; the tree's release build by default), TMPDIR (the
# file system the SQLite databases are written to; /tmp by default).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
STORES=${STORES:-"sqlite postgres"}
MODES=${MODES:-"strict relaxed"}
LAYOUTS=${LAYOUTS:-"one-room per-room"}
WRITERS=${WRITERS:-"1 10 100"}
DURATION=${DURATION:-10}
PG=${PG:-"postgres://postgres@127.0.0.1:5432"}
SUFFIX=""
if [[ "${1:-}" == "--quick" ]]; then
  WRITERS=${WRITERS_QUICK:-"1 10"}; DURATION=3; SUFFIX="-quick"
fi
ulimit -n "$(ulimit -Hn)"

echo "== building plait and plait-bench (release)"
cargo build --release -p plait -p plait-bench 2>&1 | tail -n 2
TMP=$(mktemp -d "${TMPDIR:-/tmp}/plait-durability.XXXXXX")
# Private copies: a rebuild in the shared target/ during the run must not swap binaries.
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
# PLAIT_BIN=path/to/old/plait measures another build (e.g. the commit before a change) with
# this generator, for interleaved before/after runs.
cp "${PLAIT_BIN:-$TARGET_DIR/release/plait}" "$TMP/plait"
cp "$TARGET_DIR/release/plait-bench" "$TMP/"
PLAIT_COMMIT=${PLAIT_LABEL:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
PLAIT_DIRTY=$(git status --porcelain -- crates src 2>/dev/null | wc -l)
DATE=$(date +%Y-%m-%d)
# BENCH_TAG=name keeps several runs of one day apart.
OUT="bench/results/durability-${DATE}${SUFFIX}${BENCH_TAG:+-$BENCH_TAG}"
mkdir -p bench/results
: > "$OUT.jsonl"

SERVER_PID=""
DB=""
PORT=""

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_healthy() {
  for _ in $(seq 1 200); do
    if curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1; then return 0; fi
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
  done
  echo "plait on port $PORT did not start:" >&2
  tail -n 20 "$TMP/plait-$PORT.log" >&2
  return 1
}

# start_server STORE_URL DURABILITY
start_server() {
  PORT=$(free_port)
  # Generous per-connection limits: a throughput benchmark must not be throttled.
  PLAIT_MAX_CONNECTIONS=1000000 PLAIT_MAX_CONNECTIONS_PER_IP=1000000 PLAIT_MAX_ROOMS=100000 \
  RUST_LOG=warn "$TMP/plait" serve --host 127.0.0.1 --port "$PORT" --store "$1" \
    --durability "$2" --max-messages-per-sec 1000000 --max-bytes-per-sec 1000000000 \
    >"$TMP/plait-$PORT.log" 2>&1 &
  SERVER_PID=$!
  wait_healthy
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

drop_db() {
  if [[ -n $DB ]]; then
    psql -h 127.0.0.1 -U postgres -qAt -c "DROP DATABASE IF EXISTS $DB" >/dev/null || true
    DB=""
  fi
}
trap 'stop_server; drop_db; [[ -z ${KEEP_TMP:-} ]] && rm -rf "$TMP"' EXIT

STARTED=$(date +%s)
n=0
for store in $STORES; do
  for mode in $MODES; do
    case $mode in
      strict) flag=strict ;;
      relaxed) flag=relaxed-may-lose-recent-edits ;;
      *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    for layout in $LAYOUTS; do
      for w in $WRITERS; do
        n=$((n + 1))
        case $store in
          sqlite)
            mkdir -p "$TMP/store-$n"
            url="sqlite://$TMP/store-$n/plait.db" ;;
          postgres)
            DB="plait_durability_$$_$n"
            psql -h 127.0.0.1 -U postgres -qAt -c "CREATE DATABASE $DB" >/dev/null
            url="$PG/$DB" ;;
          *) echo "unknown store $store" >&2; exit 2 ;;
        esac
        echo "-- $store $mode $layout writers=$w"
        start_server "$url" "$flag"
        timeout $((DURATION * 3 + 120)) "$TMP/plait-bench" --url "ws://127.0.0.1:$PORT" \
          --server-pid "$SERVER_PID" --label plait --out "$ROOT/$OUT.jsonl" \
          durability --writers "$w" --layout "$layout" --duration "$DURATION" \
          --store "$store" --durability "$mode" >/dev/null \
          || echo "!! $store $mode $layout $w failed ($?)" >&2
        stop_server
        drop_db
      done
    done
  done
done
ELAPSED=$(( $(date +%s) - STARTED ))

echo "== report"
python3 - "$OUT.jsonl" "$OUT.md" "$PLAIT_COMMIT" "$PLAIT_DIRTY" "$ELAPSED" "$DURATION" <<'PY'
import json, platform, subprocess, sys
src, dst, commit, dirty, elapsed, duration = sys.argv[1:]
recs = [json.loads(l) for l in open(src) if l.strip()]
def f(v, d=2):
    if v is None: return "n/a"
    if abs(v) >= 1000: return f"{v:,.0f}"
    if abs(v) >= 100: return f"{v:.0f}"
    if abs(v) >= 10: return f"{v:.1f}"
    return f"{v:.{d}f}"
order = {"sqlite": 0, "postgres": 1, "strict": 0, "relaxed": 1, "one-room": 0, "per-room": 1}
recs.sort(key=lambda r: (order.get(r["params"]["store"], 9), order.get(r["params"]["layout"], 9),
                         order.get(r["params"]["durability"], 9), r["params"]["writers"]))
by = {(r["params"]["store"], r["params"]["durability"], r["params"]["layout"], r["params"]["writers"]): r["metrics"] for r in recs}
kernel = platform.release()
nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
try:
    pgv = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-qAtc", "show server_version"],
                         capture_output=True, text=True).stdout.strip()
except Exception:
    pgv = "?"
L = []
L.append(f"# Durability cost: strict vs relaxed, SQLite and PostgreSQL\n")
L.append(f"plait `{commit}` with {dirty} uncommitted files in crates/ and src/, {platform.machine()}, "
         f"{nproc} cores, Linux {kernel}, PostgreSQL {pgv} on the same machine; generator and server share the cores. "
         f"Every row is a fresh `plait` (release) on a fresh store (SQLite: a temp file; PostgreSQL: a new database, dropped after), "
         f"{duration} s of writing, `--max-messages-per-sec 1000000 --max-bytes-per-sec 1000000000`. "
         f"Run took {elapsed} s (plus the build).\n")
L.append("Each writer keeps one edit (a 13-byte text append) in flight and sends the next when the previous one is "
         "acknowledged, i.e. when an observer client in the same room (which never writes) receives it. In strict mode "
         "the server broadcasts only after the commit, so the client latency is commit + delivery; in relaxed mode it "
         "is delivery only (the commit follows within `--flush-interval-ms`, 100 ms). Layouts: **one room** (W writers and "
         "1 observer in one room; every writer also receives the others' edits) and **W rooms** (1 writer + 1 observer "
         "each). Server commit p50/p99 are interpolated from the `plait_commit_seconds` bucket deltas of `GET /metrics` "
         "(buckets 0.5, 1, 2, 5, 10, 20, 50 ms, ...), so they are coarse; `upd/commit` = acknowledged updates / commits "
         "(group commit).\n")
L.append("| store | layout | mode | writers | updates/s | p50 (ms) | p99 (ms) | server commit p50 (ms) | server commit p99 (ms) | commits | upd/commit | server CPU (%) |")
L.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for r in recs:
    p, m = r["params"], r["metrics"]
    L.append(f"| {p['store']} | {'one room' if p['layout']=='one-room' else 'W rooms'} | {p['durability']} | {p['writers']} | "
             f"{f(m.get('updates_per_s'))} | {f(m.get('p50_ms'))} | {f(m.get('p99_ms'))} | "
             f"{f(m.get('server_commit_p50_ms'))} | {f(m.get('server_commit_p99_ms'))} | "
             f"{f(m.get('server_commits'),0)} | {f(m.get('updates_per_commit'))} | {f(m.get('server_cpu_pct'),1)} |")
bad = [r for r in recs if r["metrics"].get("writers_unacked") or r["metrics"].get("clients_dropped") or r["metrics"].get("writers_capped")]
if bad:
    L.append("")
    for r in bad:
        p, m = r["params"], r["metrics"]
        L.append(f"- warning: {p['store']} {p['durability']} {p['layout']} W={p['writers']}: writers_unacked={m.get('writers_unacked')}, "
                 f"clients_dropped={m.get('clients_dropped')}, writers_capped={m.get('writers_capped')}")
L.append("\n## Strict / relaxed\n")
L.append("Throughput ratio = relaxed updates/s / strict updates/s (how many times slower strict is); latency ratio = strict p50 / relaxed p50.\n")
L.append("| store | layout | writers | relaxed updates/s | strict updates/s | slowdown (relaxed/strict) | p50 strict/relaxed | p99 strict/relaxed |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|")
ws = sorted({k[3] for k in by})
for store in ["sqlite", "postgres"]:
    for layout in ["one-room", "per-room"]:
        for w in ws:
            s, rx = by.get((store, "strict", layout, w)), by.get((store, "relaxed", layout, w))
            if not s or not rx: continue
            ratio = lambda a, b: (a / b) if a and b else None
            L.append(f"| {store} | {'one room' if layout=='one-room' else 'W rooms'} | {w} | {f(rx.get('updates_per_s'))} | {f(s.get('updates_per_s'))} | "
                     f"{f(ratio(rx.get('updates_per_s'), s.get('updates_per_s')))} | {f(ratio(s.get('p50_ms'), rx.get('p50_ms')))} | "
                     f"{f(ratio(s.get('p99_ms'), rx.get('p99_ms')))} |")
L.append("\n## Target from issue 3\n")
L.append("| target | goal | measured (relaxed/strict updates/s, 100 writers) | status |")
L.append("|---|---|---:|---|")
for layout in ["one-room", "per-room"]:
    s, rx = by.get(("postgres", "strict", layout, 100)), by.get(("postgres", "relaxed", layout, 100))
    if s and rx and s.get("updates_per_s") and rx.get("updates_per_s"):
        r_ = rx["updates_per_s"] / s["updates_per_s"]
        L.append(f"| strict on PostgreSQL within 2x of relaxed, 100 writers, {'one room' if layout=='one-room' else '100 rooms'} | <= 2.0 | "
                 f"{f(r_)} | {'met' if r_ <= 2.0 else 'missed'} |")
L.append(f"\nRaw records: `{src.split('/')[-1]}` (every metric, including server CPU, RSS, mean latencies, commit means).")
open(dst, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
echo "wrote $OUT.md and $OUT.jsonl"
