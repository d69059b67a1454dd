//! Server configuration: one typed struct, parsed once by clap from flags and `PLAIT_*`
//! environment variables, then split into the sub-configs each part needs.

use std::net::IpAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

/// When an update is made durable relative to being broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Durability {
    /// Committed to the store (fsync'd) before anyone else receives it. The default.
    Strict,
    /// Broadcast first, committed within `--flush-interval-ms`. A crash may lose that window
    /// of edits on the server; clients that still hold them resend them when they reconnect.
    RelaxedMayLoseRecentEdits,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Everything `plait serve` can be told.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "PLAIT_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one and logs it).
    #[arg(long, env = "PLAIT_PORT", default_value_t = 1234)]
    pub port: u16,

    /// Where rooms are stored: sqlite://PATH (created if missing), postgres://USER@HOST/DB,
    /// or memory: (nothing kept).
    #[arg(long, env = "PLAIT_STORE", default_value = "sqlite://data/plait.db")]
    pub store: String,

    /// Most connections to PostgreSQL (SQLite uses one writer and four readers).
    #[arg(long, env = "PLAIT_STORE_POOL_SIZE", default_value_t = 10)]
    pub store_pool_size: u32,

    /// strict: commit before broadcast. relaxed-may-lose-recent-edits: broadcast first, commit
    /// within --flush-interval-ms.
    #[arg(long, env = "PLAIT_DURABILITY", value_enum, default_value_t = Durability::Strict)]
    pub durability: Durability,

    /// With relaxed durability, the longest an update waits before it is committed.
    #[arg(long, env = "PLAIT_FLUSH_INTERVAL_MS", default_value_t = 100)]
    pub flush_interval_ms: u64,

    /// Compact a room's log into a snapshot once it holds this many updates and at least half
    /// the last snapshot's bytes (a snapshot re-encodes the whole document), and always at 16
    /// times this many. Rooms also compact when they unload or shut down.
    #[arg(long, env = "PLAIT_COMPACT_AFTER_UPDATES", default_value_t = 1000)]
    pub compact_after_updates: u64,

    /// Compact a room's log into a snapshot once it holds this many bytes.
    #[arg(long, env = "PLAIT_COMPACT_AFTER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub compact_after_bytes: u64,

    /// Keep a history snapshot (a restore point) of each changed room this often; 0 turns
    /// history off. Rooms also keep one when they unload.
    #[arg(long, env = "PLAIT_HISTORY_INTERVAL_MS", default_value_t = 600_000)]
    pub history_interval_ms: u64,

    /// Delete history snapshots older than this (the newest is always kept); 0 keeps them all.
    #[arg(long, env = "PLAIT_HISTORY_RETENTION_HOURS", default_value_t = 24 * 30)]
    pub history_retention_hours: u64,

    /// Bearer token for the admin API under /api/admin (the CLI sends it); unset disables it.
    #[arg(long, env = "PLAIT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Send signed webhooks (`room.changed`, `room.restored`, `room.deleted`) to this
    /// `https://` (or `http://`) URL; repeatable, or comma-separated in the variable. Needs
    /// `--webhook-secret`. https receivers are verified against the system's certificates
    /// (`SSL_CERT_FILE` names another bundle).
    #[arg(long, env = "PLAIT_WEBHOOK_URL", value_delimiter = ',')]
    pub webhook_url: Vec<String>,

    /// The HMAC-SHA256 key of the `x-plait-signature` header of every webhook.
    #[arg(long, env = "PLAIT_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// At most one `room.changed` per room this often: the changes of that time in one event.
    #[arg(long, env = "PLAIT_WEBHOOK_DEBOUNCE_MS", default_value_t = 2_000)]
    pub webhook_debounce_ms: u64,

    /// Attempts per webhook event (exponential backoff between them) before it is counted as
    /// failed and the next one is sent.
    #[arg(long, env = "PLAIT_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10)]
    pub webhook_max_attempts: u32,

    /// Unload a room this long after its last member left (it is flushed first).
    #[arg(long, env = "PLAIT_ROOM_IDLE_MS", default_value_t = 10_000)]
    pub room_idle_ms: u64,

    /// Most rooms loaded at once; idle rooms are unloaded first, then new rooms are refused
    /// (close code 1013, the client retries).
    #[arg(long, env = "PLAIT_MAX_ROOMS", default_value_t = 10_000)]
    pub max_rooms: usize,

    /// Largest WebSocket message (and frame) accepted; larger ones close the connection with
    /// code 1009. Default: --max-document-bytes plus 64 KiB, so every message an honest client
    /// can send for a document within its cap (a large paste, an offline client's sync step
    /// 2) is taken; memory is bounded by --max-inflight-bytes instead. A smaller value locks
    /// out a client whose message passes it: it reconnects and resends it forever.
    #[arg(long, env = "PLAIT_MAX_MESSAGE_BYTES")]
    pub max_message_bytes: Option<usize>,

    /// Process-wide budget of large messages in flight: a message over 1 MiB takes its size
    /// from it once read and gives it back when its room has applied it. While the budget is
    /// spent its reader waits and reads nothing more from its socket (TCP pushes back on the
    /// client); a message larger than the whole budget waits until it has it to itself.
    #[arg(long, env = "PLAIT_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_bytes: usize,

    /// Largest document a room may grow to, in encoded bytes (its snapshot plus the updates
    /// since). An update that would pass it is refused: the sender gets a permission-denied
    /// message ("document size limit reached") and stays connected; nothing is stored.
    #[arg(long, env = "PLAIT_MAX_DOCUMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_document_bytes: usize,

    /// Let a connection write document structs under a client id whose awareness another live
    /// connection holds. Off by default: such an update is refused and its sender closed with
    /// 1013, so nobody can squat another user's client id and make their edits look applied.
    /// Turn on when clients relay each other's edits (y-webrtc beside y-websocket).
    #[arg(long, env = "PLAIT_ALLOW_CLIENT_ID_RELAY")]
    pub allow_client_id_relay: bool,

    /// Longest room name, in bytes after percent-decoding; longer names are refused with 414.
    #[arg(long, env = "PLAIT_MAX_ROOM_NAME_BYTES", default_value_t = 256)]
    pub max_room_name_bytes: usize,

    /// Documents one Hocuspocus socket (`/hocuspocus`) may have attached at once; a provider
    /// that attaches one more is answered permission-denied for it, and its other documents
    /// stay. Every attached document is a room membership with its own outbox, so this is
    /// what bounds one socket's cost.
    #[arg(long, env = "PLAIT_MAX_DOCUMENTS_PER_CONNECTION", default_value_t = 64)]
    pub max_documents_per_connection: usize,

    /// Frames queued for one connection before it counts as a slow consumer and is closed
    /// (code 1013; the client reconnects and resyncs). Memory is bounded by
    /// --max-outbox-bytes; this counts frames (32 bytes of queue each, the bytes are shared
    /// between receivers) so that a burst of small edits released by one commit (up to about
    /// 770 frames) does not close a reader that is keeping up.
    #[arg(long, env = "PLAIT_OUTBOX_FRAMES", default_value_t = 4096)]
    pub outbox_frames: usize,

    /// Most bytes queued for one connection; past it the connection is closed as a slow
    /// consumer (1013), like a full --outbox-frames. A frame into an empty outbox always goes;
    /// one larger than this counts as a quarter of it.
    #[arg(long, env = "PLAIT_MAX_OUTBOX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_outbox_bytes: usize,

    /// Bytes of updates with missing dependencies a room may hold; past it they are dropped
    /// and their senders asked to resync.
    #[arg(long, env = "PLAIT_MAX_PENDING_BYTES", default_value_t = 1024 * 1024)]
    pub max_pending_bytes: usize,

    /// Update bytes a room holds while its store is failing; past it, writers are closed with
    /// 1013 (try again later) and keep their edits until they reconnect.
    #[arg(long, env = "PLAIT_MAX_UNCOMMITTED_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_uncommitted_bytes: usize,

    /// Largest awareness state of one client, in bytes; larger ones close the connection.
    #[arg(long, env = "PLAIT_MAX_AWARENESS_BYTES", default_value_t = 8 * 1024)]
    pub max_awareness_bytes: usize,

    /// Shared secret for HS256 tokens (at least 32 bytes); turns auth on. Tokens come from
    /// `Authorization: Bearer`, a `plait-auth.TOKEN` subprotocol or `?token=` (see README).
    #[arg(long, env = "PLAIT_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// EdDSA (Ed25519) or ES256 (P-256) public keys for tokens, as one PEM key or a JWKS
    /// document whose keys tokens choose by `kid`; turns auth on.
    #[arg(long, env = "PLAIT_AUTH_PUBLIC_KEY_FILE")]
    pub auth_public_key_file: Option<std::path::PathBuf>,

    /// Clock skew tolerated on a token's `exp` and `nbf`, in seconds (at most 60). A session
    /// ends (close 4401) this long after its token's `exp`.
    #[arg(long, env = "PLAIT_AUTH_LEEWAY_SECS", default_value_t = 30)]
    pub auth_leeway_secs: u64,

    /// Serve without auth on a non-loopback --host (refused otherwise): anyone who can reach
    /// the port may read and write every room.
    #[arg(long, env = "PLAIT_ALLOW_ANONYMOUS")]
    pub allow_anonymous: bool,

    /// Origins (scheme://host[:port], comma-separated) whose pages may open WebSockets; others
    /// are refused with 403. Unset allows every origin; a request without Origin (not a
    /// browser) is always allowed.
    #[arg(long, env = "PLAIT_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most open WebSocket connections; past it upgrades are refused with 503. Connections
    /// still in their HTTP phase (before an upgrade, or API requests) are capped at twice this;
    /// past that new sockets are closed at accept.
    #[arg(long, env = "PLAIT_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Most open WebSocket connections from one IP address; past it upgrades are refused with
    /// 429.
    #[arg(long, env = "PLAIT_MAX_CONNECTIONS_PER_IP", default_value_t = 256)]
    pub max_connections_per_ip: usize,

    /// Messages one connection may send per second once its burst (--max-messages-burst) is
    /// spent; past it the server stops reading from that connection until it is back within
    /// the rate (TCP backpressure slows the sender; nothing is dropped).
    #[arg(long, env = "PLAIT_MAX_MESSAGES_PER_SEC", default_value_t = 300)]
    pub max_messages_per_sec: u32,

    /// Messages one connection may send at full speed before --max-messages-per-sec applies
    /// (the allowance refills at that rate). Large, so that a script importing thousands of
    /// edits or a paste sent keystroke by keystroke is not slowed; a sustained flood is.
    #[arg(long, env = "PLAIT_MAX_MESSAGES_BURST", default_value_t = 10_000)]
    pub max_messages_burst: u32,

    /// Bytes one connection may send per second (bursts of the larger of this and
    /// --max-message-bytes); past it the connection is throttled like --max-messages-per-sec.
    #[arg(long, env = "PLAIT_MAX_BYTES_PER_SEC", default_value_t = 8 * 1024 * 1024)]
    pub max_bytes_per_sec: u64,

    /// Awareness updates one connection may send per second (bursts of twice that); the
    /// excess is dropped.
    #[arg(long, env = "PLAIT_MAX_AWARENESS_PER_SEC", default_value_t = 30)]
    pub max_awareness_per_sec: u32,

    /// How long a new TCP connection may take to send its HTTP request head (past it the
    /// socket is closed), and how long after the upgrade a WebSocket may stay silent before
    /// its first frame (past it: close 1008).
    #[arg(long, env = "PLAIT_HANDSHAKE_TIMEOUT_MS", default_value_t = 10_000)]
    pub handshake_timeout_ms: u64,

    /// Interval of WebSocket pings; a peer silent for two intervals is closed as dead.
    #[arg(long, env = "PLAIT_PING_INTERVAL_MS", default_value_t = 30_000)]
    pub ping_interval_ms: u64,

    /// Longest one write to a WebSocket may take (a batch of frames, a ping, the close frame),
    /// plus one second per 64 KiB written, so a slow but honest link still receives a large
    /// document. A peer that stops reading but keeps its TCP connection open blocks the write;
    /// past the deadline its socket is dropped and its queued frames are freed.
    #[arg(long, env = "PLAIT_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// A connection that has been sent no message for this long is sent an empty awareness
    /// update (`01 01 00`), which every Yjs client ignores but counts as traffic:
    /// y-websocket 4 closes a socket that received no message for 30 s, and WebSocket pings
    /// do not count. 0 turns it off.
    #[arg(long, env = "PLAIT_KEEPALIVE_MS", default_value_t = 15_000)]
    pub keepalive_ms: u64,

    /// How long shutdown waits for rooms to flush before exiting anyway.
    #[arg(long, env = "PLAIT_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// Redis URL of the cluster bus (redis://HOST:PORT): processes sharing one PostgreSQL store
    /// and this Redis serve the same rooms. Unset: a single process, nothing is published.
    #[arg(long, env = "PLAIT_REDIS", hide_env_values = true)]
    pub redis: Option<String>,

    /// Prefix of the bus's Redis channels (`PREFIX:room:NAME`); clusters sharing one Redis need
    /// different prefixes.
    #[arg(long, env = "PLAIT_REDIS_PREFIX", default_value = "plait")]
    pub redis_prefix: String,

    /// While the bus is down, how often each loaded room catches up from the store.
    #[arg(long, env = "PLAIT_BUS_FALLBACK_POLL_MS", default_value_t = 500)]
    pub bus_fallback_poll_ms: u64,

    /// Log format.
    #[arg(long, env = "PLAIT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Pretty)]
    pub log_format: LogFormat,
}

impl Config {
    /// The configuration with every default, as `plait serve` with no flags would have it,
    /// ignoring `PLAIT_*` variables (for tests).
    pub fn defaults() -> Self {
        Self::parse_with(|cmd| cmd.mut_args(|a| a.env(None::<&str>)))
    }

    fn parse_with(adjust: impl FnOnce(clap::Command) -> clap::Command) -> Self {
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let cmd = adjust(<Wrapper as clap::CommandFactory>::command().name("plait"));
        let matches = cmd.get_matches_from(["plait"]);
        match <Wrapper as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(w) => w.config,
            Err(e) => e.exit(),
        }
    }

    /// Checks values that clap cannot.
    ///
    /// # Errors
    /// A message naming the flag and what to do.
    pub fn validate(&self) -> Result<(), String> {
        if !self.webhook_url.is_empty() && self.webhook_secret.as_deref().is_none_or(str::is_empty)
        {
            return Err("--webhook-url needs --webhook-secret (PLAIT_WEBHOOK_SECRET): receivers verify the signature with it".into());
        }
        for url in &self.webhook_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!(
                    "--webhook-url {url:?} must start with https:// or http://"
                ));
            }
        }
        if self.webhook_max_attempts == 0 || self.webhook_debounce_ms == 0 {
            return Err(
                "--webhook-max-attempts and --webhook-debounce-ms must be at least 1".into(),
            );
        }
        if self.max_documents_per_connection == 0 {
            return Err("--max-documents-per-connection must be at least 1".into());
        }
        if self.outbox_frames == 0 {
            return Err("--outbox-frames must be at least 1".into());
        }
        if self.max_rooms == 0 {
            return Err("--max-rooms must be at least 1".into());
        }
        if self.max_message_bytes.is_some_and(|b| b < 1024) {
            return Err("--max-message-bytes must be at least 1024".into());
        }
        if self.max_inflight_bytes < 1024 * 1024 {
            return Err("--max-inflight-bytes must be at least 1 MiB".into());
        }
        if self.max_document_bytes < 1024 {
            return Err("--max-document-bytes must be at least 1024".into());
        }
        if self.flush_interval_ms == 0 {
            return Err("--flush-interval-ms must be at least 1".into());
        }
        if self.ping_interval_ms < 100 {
            return Err("--ping-interval-ms must be at least 100".into());
        }
        if self.write_timeout_ms < 100 {
            return Err("--write-timeout-ms must be at least 100".into());
        }
        if self.keepalive_ms != 0 && self.keepalive_ms < 100 {
            return Err("--keepalive-ms must be 0 (off) or at least 100".into());
        }
        if self.auth_secret.as_ref().is_some_and(|s| s.len() < 32) {
            return Err(
                "--auth-secret must be at least 32 bytes (try: openssl rand -hex 32)".into(),
            );
        }
        if !self.auth_enabled() && !self.host.is_loopback() && !self.allow_anonymous {
            return Err(format!(
                "refusing to serve {} without auth: anyone could read and write every room. \
                 Set --auth-secret or --auth-public-key-file, or pass --allow-anonymous",
                self.host
            ));
        }
        if self.redis.is_some() && self.bus_fallback_poll_ms < 10 {
            return Err("--bus-fallback-poll-ms must be at least 10".into());
        }
        if self.auth_leeway_secs > 60 {
            return Err("--auth-leeway-secs must be at most 60".into());
        }
        if self.max_connections == 0 || self.max_connections_per_ip == 0 {
            return Err("--max-connections and --max-connections-per-ip must be at least 1".into());
        }
        if self.max_messages_per_sec == 0 || self.max_bytes_per_sec == 0 {
            return Err("--max-messages-per-sec and --max-bytes-per-sec must be at least 1".into());
        }
        Ok(())
    }

    /// Whether tokens are required (a secret or a public key file is set).
    pub fn auth_enabled(&self) -> bool {
        self.auth_secret.is_some() || self.auth_public_key_file.is_some()
    }

    /// The largest message accepted: --max-message-bytes, or by default the document cap
    /// plus [`MESSAGE_FRAMING_BYTES`].
    pub fn message_limit_bytes(&self) -> usize {
        self.max_message_bytes.unwrap_or(
            self.max_document_bytes
                .saturating_add(MESSAGE_FRAMING_BYTES),
        )
    }

    /// What each room actor needs.
    pub(crate) fn room(&self) -> RoomConfig {
        RoomConfig {
            durability: self.durability,
            flush_interval: Duration::from_millis(self.flush_interval_ms),
            compact_after_updates: self.compact_after_updates,
            compact_after_bytes: self.compact_after_bytes,
            idle_grace: Duration::from_millis(self.room_idle_ms),
            max_pending_bytes: self.max_pending_bytes,
            // One message up to the limit is held while it commits; counting it as an outage
            // would close its honest sender (1013), which then resends it.
            max_uncommitted_bytes: self.max_uncommitted_bytes.max(self.message_limit_bytes()),
            max_document_bytes: self.max_document_bytes,
            bind_client_ids: !self.allow_client_id_relay,
            history_interval: Duration::from_millis(self.history_interval_ms),
            history_retention: (self.history_retention_hours > 0)
                .then(|| Duration::from_secs(self.history_retention_hours * 3600)),
        }
    }
}

/// What the default message limit adds to the document cap: a message carrying a whole
/// document at the cap has a few bytes of message header, and an update's encoding may be
/// slightly larger than the document it grows.
pub const MESSAGE_FRAMING_BYTES: usize = 64 * 1024;

/// The part of [`Config`] a room actor uses.
#[derive(Debug, Clone)]
pub(crate) struct RoomConfig {
    pub(crate) durability: Durability,
    pub(crate) flush_interval: Duration,
    pub(crate) compact_after_updates: u64,
    pub(crate) compact_after_bytes: u64,
    pub(crate) idle_grace: Duration,
    pub(crate) max_pending_bytes: usize,
    pub(crate) max_uncommitted_bytes: usize,
    pub(crate) max_document_bytes: usize,
    pub(crate) bind_client_ids: bool,
    pub(crate) history_interval: Duration,
    pub(crate) history_retention: Option<Duration>,
}
