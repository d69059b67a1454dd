//! The plait server: y-websocket rooms over axum, durable through a [`plait_store::Store`].
//!
//! Components, in reading order:
//! - [`config`]: the typed configuration ([`Config`]).
//! - `http`: the router: WebSocket upgrade at `/{room}`, `/healthz`, `/readyz`, `/metrics`,
//!   the embedded demo.
//! - `connection`: one socket: a reader that decodes and forwards, a writer that drains.
//! - `hocuspocus`: one socket of `@hocuspocus/provider` clients at `/hocuspocus`, several
//!   documents (rooms) over it, each authorized and joined on its own.
//! - `hub`: the registry of loaded rooms.
//! - `budget`: the process-wide budget of large messages in flight.
//! - `room`: the room actor that owns a document, its awareness, its CRDT values and its
//!   members.
//! - `values_api`: the HTTP API for a room's CRDT values.
//! - [`snapshot_file`]: the plait snapshot file (document and values) that export writes;
//!   [`stored_values`]: values between rooms, the store and files (the merge on write, what a
//!   restore does to values).
//! - `awareness`: the awareness table with y-protocols' clock rules.
//! - `metrics`: metric names and the Prometheus recorder.
//! - [`auth`]: the `plait-auth` crate, re-exported: JWT verification, room patterns, tokens in
//!   requests; `access`: upgrade checks, connection caps, per-connection rules (read-only,
//!   identity stamping, rate limits); `kick`: the admin kick.
//!
//! Entry point: [`run`].

mod access;
pub mod admin;
mod awareness;
mod budget;
mod bus;
pub mod config;
mod conn;
mod connection;
pub mod docs;
mod documents_api;
mod hocuspocus;
mod http;
mod hub;
mod kick;
mod metrics;
pub mod ops;
mod outbox;
mod room;
mod room_name;
mod serve;
pub mod snapshot_file;
pub mod stored_values;
mod values_api;
pub mod webhooks;

/// Tokens: JWT verification, claims, room patterns (the `plait-auth` crate).
pub use plait_auth as auth;

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use plait_store::Store;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use access::REVOCATIONS_POLL;
pub use config::{Config, Durability, LogFormat};

/// What every task of one server shares. Immutable but for the atomics.
pub(crate) struct Shared {
    store: Arc<dyn Store>,
    hub: hub::Hub,
    room: Arc<config::RoomConfig>,
    limits: plait_protocol::Limits,
    outbox_frames: usize,
    max_outbox_bytes: usize,
    ping_interval: Duration,
    /// Deadline of one socket write (`--write-timeout-ms`), before the allowance for its size.
    write_timeout: Duration,
    /// Silence after which a connection is sent an empty awareness update; `None`: never.
    keepalive: Option<Duration>,
    max_message_bytes: usize,
    /// The process-wide budget of large messages in flight (`--max-inflight-bytes`), taken by
    /// connection readers in [`room::RoomHandle::send_inbound`] and given back when the room
    /// drops the message.
    inflight: Arc<budget::InflightBytes>,
    max_room_name_bytes: usize,
    /// Documents one Hocuspocus socket may have attached (`--max-documents-per-connection`).
    max_documents_per_connection: usize,
    /// The Hocuspocus documents attached on this process, by room, for stateless messages.
    hocuspocus: hocuspocus::Registry,
    shutdown_timeout_ms: u64,
    /// Cancelled once, when the server starts shutting down; rooms flush and close on it.
    shutdown: CancellationToken,
    /// Every room task and connection task, so shutdown can wait for them.
    tracker: TaskTracker,
    /// False after a failed commit or load, true after a successful one (for `/readyz`).
    store_healthy: AtomicBool,
    metrics: PrometheusHandle,
    /// Bearer token of the admin API; `None` turns it off.
    admin_token: Option<String>,
    /// This process's identity for CRDT values: a random u64 chosen at startup
    /// ([`new_instance_id`]). It is the replica id of every room's HLC and the G-Counter
    /// entry this process increments, so two processes (or one process before and after a
    /// restart) never write under the same replica id.
    instance_id: u64,
    /// Tokens, origins, connection caps, live sessions and per-connection rates.
    access: access::Access,
    /// The cluster bus (`--redis`); `None` for a single process.
    bus: Option<Arc<bus::Bus>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("store", &self.store)
            .field("rooms", &self.hub.len())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn set_store_healthy(&self, healthy: bool) {
        self.store_healthy
            .store(healthy, std::sync::atomic::Ordering::Relaxed);
    }
}

/// A random u64 for [`Shared::instance_id`], from the standard library's per-process random
/// hasher keys (seeded by the operating system), mixed with the time and the process id.
fn new_instance_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Serves until `shutdown` completes, then stops accepting, flushes every room, closes every
/// socket with 1001 (going away) and returns, waiting at most `--shutdown-timeout-ms`.
///
/// # Errors
/// An I/O error from the listener.
pub async fn run(
    listener: TcpListener,
    config: Config,
    store: Arc<dyn Store>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let access = access::Access::from_config(&config)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    let public = listener
        .local_addr()
        .map_or(true, |a| !a.ip().is_loopback());
    let listener_port = listener.local_addr().map_or(0, |a| a.port());
    if access.auth.is_none() && public {
        warn!(
            "AUTH IS OFF ON A PUBLIC ADDRESS: anyone who reaches this port may read and write \
             every room (--allow-anonymous); set --auth-secret or --auth-public-key-file"
        );
    }
    let token = CancellationToken::new();
    let instance_id = new_instance_id();
    let limits = plait_protocol::Limits {
        max_awareness_state_bytes: config.max_awareness_bytes,
        ..plait_protocol::Limits::default()
    };
    // Before the bus starts, so its first gauge values are recorded.
    let metrics_handle = metrics::handle();
    let bus = match &config.redis {
        Some(url) => Some(
            bus::Bus::start(
                url,
                &config.redis_prefix,
                instance_id,
                limits,
                config.message_limit_bytes(),
                Duration::from_millis(config.bus_fallback_poll_ms.max(10)),
                token.clone(),
            )
            .map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("--redis: {e}"))
            })?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared {
        store,
        hub: hub::Hub::new(config.max_rooms),
        room: Arc::new(config.room()),
        limits,
        outbox_frames: config.outbox_frames,
        max_outbox_bytes: config.max_outbox_bytes,
        ping_interval: Duration::from_millis(config.ping_interval_ms),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
        keepalive: (config.keepalive_ms > 0).then(|| Duration::from_millis(config.keepalive_ms)),
        max_message_bytes: config.message_limit_bytes(),
        inflight: Arc::new(budget::InflightBytes::new(config.max_inflight_bytes)),
        max_room_name_bytes: config.max_room_name_bytes,
        max_documents_per_connection: config.max_documents_per_connection,
        hocuspocus: hocuspocus::Registry::default(),
        shutdown_timeout_ms: config.shutdown_timeout_ms,
        shutdown: token.clone(),
        tracker: TaskTracker::new(),
        store_healthy: AtomicBool::new(true),
        metrics: metrics_handle,
        admin_token: config.admin_token.clone(),
        instance_id,
        access,
        bus,
    });
    if let Some(secret) = config
        .webhook_secret
        .clone()
        .filter(|_| !config.webhook_url.is_empty())
    {
        let webhooks = webhooks::WebhookConfig {
            holder: webhooks::holder(listener_port),
            targets: config.webhook_url.clone(),
            secret,
            debounce: Duration::from_millis(config.webhook_debounce_ms),
            max_attempts: config.webhook_max_attempts,
        };
        tokio::spawn(webhooks::deliver(shared.clone(), webhooks));
    }
    if shared.access.auth.is_some() {
        // Before the first upgrade: a restarted server refuses revoked tokens at once.
        kick::load_revocations(&shared).await;
        tokio::spawn(kick::follow_revocations(shared.clone()));
    }
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        info!("shutting down: flushing rooms and closing connections");
        trigger.cancel();
    });
    let app = http::app(shared.clone());
    // Room for every WebSocket the caps allow plus as many plain HTTP requests.
    let max_open = config.max_connections.saturating_mul(2);
    serve::serve(
        listener,
        app,
        Duration::from_millis(config.handshake_timeout_ms),
        max_open,
        token.clone(),
    )
    .await;
    shared.tracker.close();
    let deadline = Duration::from_millis(config.shutdown_timeout_ms);
    if tokio::time::timeout(deadline, shared.tracker.wait())
        .await
        .is_err()
    {
        warn!("shutdown deadline passed; exiting with tasks still running");
    }
    if let Some(bus) = &shared.bus {
        bus.stop().await;
    }
    info!("stopped");
    Ok(())
}
