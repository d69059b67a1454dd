# Sourced by bench/run.sh and bench/profile.sh: start_plait BINARY PORT STORE_DIR LOG starts
# plait (SQLite in STORE_DIR, strict durability) in the background, as every benchmark runs it.
#
# The per-connection abuse limits (messages/s, bytes/s, connections per IP, ...) would close
# the load generator's clients; a capacity benchmark raises them. Environment variables, so a
# build without these flags still starts.
start_plait() {
  mkdir -p "$3"
  PLAIT_MAX_CONNECTIONS=1000000 PLAIT_MAX_CONNECTIONS_PER_IP=1000000 \
  PLAIT_MAX_MESSAGES_PER_SEC=100000000 PLAIT_MAX_BYTES_PER_SEC=100000000000 \
  PLAIT_MAX_AWARENESS_PER_SEC=100000000 PLAIT_MAX_ROOMS=100000 \
  RUST_LOG=warn "$1" serve --host 127.0.0.1 --port "$2" \
    --store "sqlite://$3/plait.db" --durability strict >"$4" 2>&1 &
}
