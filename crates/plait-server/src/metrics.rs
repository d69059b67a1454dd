//! Metric names, and the Prometheus recorder behind `/metrics`.

use std::sync::OnceLock;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Open WebSocket connections (gauge).
pub(crate) const CONNECTIONS: &str = "plait_connections";
/// Rooms loaded in memory (gauge).
pub(crate) const ROOMS_LOADED: &str = "plait_rooms_loaded";
/// Protocol messages received, by type.
pub(crate) const MESSAGES_IN: &str = "plait_messages_in_total";
/// Bytes of protocol messages received.
pub(crate) const BYTES_IN: &str = "plait_bytes_in_total";
/// Frames queued to connections.
pub(crate) const MESSAGES_OUT: &str = "plait_messages_out_total";
/// Bytes of frames queued to connections (an update merged into a queued frame adds what the
/// frame grew by).
pub(crate) const BYTES_OUT: &str = "plait_bytes_out_total";
/// Updates merged into an update frame still queued for a connection instead of queued as a
/// frame of their own (not counted in `MESSAGES_OUT`).
pub(crate) const UPDATES_COALESCED: &str = "plait_updates_coalesced_total";
/// Time of one store commit (one batch), in seconds.
pub(crate) const COMMIT_SECONDS: &str = "plait_commit_seconds";
/// Commits that failed (they are retried).
pub(crate) const COMMIT_FAILURES: &str = "plait_commit_failures_total";
/// Connections closed because their outbox was full.
pub(crate) const SLOW_CONSUMER_CLOSES: &str = "plait_slow_consumer_closes_total";
/// Connections dropped because a write to their socket passed `--write-timeout-ms` (a peer
/// that stopped reading).
pub(crate) const WRITE_TIMEOUTS: &str = "plait_write_timeouts_total";
/// Input refused, by reason.
pub(crate) const PROTOCOL_ERRORS: &str = "plait_protocol_errors_total";
/// Stored updates that did not decode at load and were skipped.
pub(crate) const STORED_UPDATES_SKIPPED: &str = "plait_stored_updates_skipped_total";
/// Log compactions written.
pub(crate) const COMPACTIONS: &str = "plait_compactions_total";
/// Webhook deliveries by `outcome`: delivered, retried, failed.
pub(crate) const WEBHOOKS: &str = "plait_webhooks_total";
/// Connections refused before joining a room, by reason.
pub(crate) const REFUSED: &str = "plait_connections_refused_total";
/// Whether the cluster bus (Redis) is connected: 1 up, 0 down (only with --redis).
pub(crate) const BUS_UP: &str = "plait_bus_up";
/// Bus messages published (`dir="out"`) and received from other processes (`dir="in"`), by kind.
pub(crate) const BUS_MESSAGES: &str = "plait_bus_messages_total";
/// Bus messages not delivered, by reason (other processes catch up from the store).
pub(crate) const BUS_DROPPED: &str = "plait_bus_dropped_total";
/// Bus messages refused by validation (malformed, oversized, or updates that do not apply).
pub(crate) const BUS_INVALID: &str = "plait_bus_invalid_total";
/// Times a room caught up from the store (a gap in seqs, or polling while the bus is down).
pub(crate) const BUS_CATCH_UPS: &str = "plait_bus_catch_ups_total";

/// Open sockets of the Hocuspocus endpoint (gauge; also counted in [`CONNECTIONS`]).
pub(crate) const HOCUSPOCUS_CONNECTIONS: &str = "plait_hocuspocus_connections";
/// Documents attached (authenticated and joined) over Hocuspocus sockets (gauge).
pub(crate) const HOCUSPOCUS_DOCUMENTS: &str = "plait_hocuspocus_documents";
/// Hocuspocus messages received, by type.
pub(crate) const HOCUSPOCUS_MESSAGES_IN: &str = "plait_hocuspocus_messages_in_total";
/// Hocuspocus document authentications, by result (`read-write`, `readonly`, or why refused).
pub(crate) const HOCUSPOCUS_AUTH: &str = "plait_hocuspocus_auth_total";

/// Installs the process-wide recorder once and returns the handle that renders it. Several
/// servers in one process (tests) share it.
pub(crate) fn handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(COMMIT_SECONDS.into()),
                    &[
                        0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
                    ],
                )
                .expect("static bucket list is not empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; then ours stays detached and
            // /metrics shows nothing, which is visible rather than fatal.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Handles of the metrics touched for every message, looked up once: `counter!` hashes the
/// name and labels into the registry on every call, which was about 4% of the server's CPU
/// while ingesting the automerge-paper trace.
pub(crate) struct Hot {
    pub(crate) bytes_in: Counter,
    pub(crate) in_sync_step1: Counter,
    pub(crate) in_update: Counter,
    pub(crate) in_awareness: Counter,
    pub(crate) in_query_awareness: Counter,
    pub(crate) in_values: Counter,
    pub(crate) in_ignored: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) updates_coalesced: Counter,
    pub(crate) commit_seconds: Histogram,
}

/// The per-message handles, registered with the process-wide recorder (installed first).
pub(crate) fn hot() -> &'static Hot {
    static HOT: OnceLock<Hot> = OnceLock::new();
    HOT.get_or_init(|| {
        let _ = handle();
        Hot {
            bytes_in: metrics::counter!(BYTES_IN),
            in_sync_step1: metrics::counter!(MESSAGES_IN, "type" => "sync_step1"),
            in_update: metrics::counter!(MESSAGES_IN, "type" => "update"),
            in_awareness: metrics::counter!(MESSAGES_IN, "type" => "awareness"),
            in_query_awareness: metrics::counter!(MESSAGES_IN, "type" => "query_awareness"),
            in_values: metrics::counter!(MESSAGES_IN, "type" => "values"),
            in_ignored: metrics::counter!(MESSAGES_IN, "type" => "ignored"),
            messages_out: metrics::counter!(MESSAGES_OUT),
            bytes_out: metrics::counter!(BYTES_OUT),
            updates_coalesced: metrics::counter!(UPDATES_COALESCED),
            commit_seconds: metrics::histogram!(COMMIT_SECONDS),
        }
    })
}
