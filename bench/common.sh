# Sourced by bench/run.sh and bench/profile.sh.

# wait_port PORT: waits (up to 10 s) until something listens on 127.0.0.1:PORT.
wait_port() {
  for _ in $(seq 1 200); do
    if (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  echo "server on port $1 did not start" >&2
  return 1
}

# start_plait BINARY PORT STORE_DIR LOG starts plait (SQLite in STORE_DIR, strict durability;
# DURABILITY=relaxed-may-lose-recent-edits for the other mode) in the background, as every
# benchmark runs it.
#
# The per-connection abuse limits (messages/s, bytes/s, connections per IP, ...) would close
# the load generator's clients; a capacity benchmark raises them. Environment variables, so a
# build without these flags still starts.
start_plait() {
  mkdir -p "$3"
  PLAIT_MAX_CONNECTIONS=1000000 PLAIT_MAX_CONNECTIONS_PER_IP=1000000 \
  PLAIT_MAX_MESSAGES_PER_SEC=100000000 PLAIT_MAX_BYTES_PER_SEC=100000000000 \
  PLAIT_MAX_AWARENESS_PER_SEC=100000000 PLAIT_MAX_ROOMS=100000 \
  RUST_LOG=warn ${SERVER_PIN:-} "$1" serve --host 127.0.0.1 --port "$2" \
    --store "sqlite://$3/plait.db" --durability "${DURABILITY:-strict}" >"$4" 2>&1 &
}

# SERVER_PIN, when set (e.g. "taskset -c 0"), prefixes every server command, so the server runs
# on CPUs of its own (relay.sh's CPUS=split); unset, servers run wherever the kernel puts them.

# start_relay PORT [OPTION...]: starts plait-bench's relay in the background (the relay makes
# a --durable directory itself).
start_relay() {
  ${SERVER_PIN:-} "$BENCH" relay --port "$@" >"$TMP/relay.log" 2>&1 &
}

# start_kind KIND PORT: starts the server under test in the background (its PID in $!): `relay`
# (plait-bench's raw relay), `relay-durable` (the same, writing every frame to a log file beside
# plait's store and fdatasyncing it before relaying it: the floor under strict durability),
# `relay-durable-shm` (that log on /dev/shm, where a sync costs nothing), `relay-durable-inline`
# (the same log, written and synced by the task that read the frame, on its runtime thread, with no
# log thread), `relay-hold` (every frame held 1 ms on the runtime's timer, a commit's wait with no
# other thread), `plait` (this checkout's release build; `plait-relaxed` the same with relaxed
# durability, to set beside servers that keep nothing), `before` (the plait binary $BEFORE names, to
# compare builds in one run) or `hocuspocus` (Hocuspocus 4.7.0 in memory; the caller installs
# bench/hocuspocus). Needs BENCH, TMP and SHM (setup_run).
start_kind() {
  case $1 in
    relay) start_relay "$2" ;;
    relay-hold) start_relay "$2" --hold-us 1000 ;;
    relay-durable) start_relay "$2" --durable "$TMP/store-$2" ;;
    relay-durable-inline) start_relay "$2" --durable "$TMP/store-$2" --inline ;;
    relay-durable-shm) start_relay "$2" --durable "$SHM-$2" ;;
    plait) start_plait "$ROOT/target/release/plait" "$2" "$TMP/store-$2" "$TMP/plait.log" ;;
    plait-relaxed) DURABILITY=relaxed-may-lose-recent-edits \
      start_plait "$ROOT/target/release/plait" "$2" "$TMP/store-$2" "$TMP/plait.log" ;;
    before) start_plait "$BEFORE" "$2" "$TMP/store-$2" "$TMP/plait.log" ;;
    hocuspocus) HOST=127.0.0.1 PORT=$2 ${SERVER_PIN:-} node "$ROOT/bench/hocuspocus/server.mjs" \
      >"$TMP/hocus.log" 2>&1 & ;;
    *) echo "unknown kind $1" >&2; exit 2 ;;
  esac
}

# setup_run NAME: what relay.sh, memory.sh and endpoints.sh each start with. Raises the open
# file limit, builds plait and plait-bench in release mode, and sets BENCH (the generator),
# OUT (bench/results/<date>-NAME.jsonl, appended to), TMP (removed at exit), SHM (a prefix for
# directories on /dev/shm, removed at exit) and PID (the server under test, killed at exit if
# still set).
setup_run() {
  ulimit -n "$(ulimit -Hn)"
  cargo build --release -p plait -p plait-bench 2>&1 | tail -n 1
  BENCH="$ROOT/target/release/plait-bench"
  OUT="$ROOT/bench/results/$(date +%F)-$1.jsonl"
  TMP=$(mktemp -d)
  SHM="/dev/shm/$(basename "$TMP")"
  PID=""
  trap '[[ -n $PID ]] && kill "$PID" 2>/dev/null; rm -rf "$TMP" "$SHM"-*' EXIT
}
