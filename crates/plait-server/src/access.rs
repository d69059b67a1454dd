//! Who may connect and what a connection may do: the checks at the WebSocket upgrade (origin,
//! token, connection caps), the live-session registry the admin kick uses, and each
//! connection's [`ConnPolicy`] (read-only enforcement, awareness identity stamping, rate
//! limits).

use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::header::{ORIGIN, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use dashmap::DashMap;
use plait_protocol::message::encode_permission_denied;
use plait_protocol::AwarenessEntry;
use plait_store::Revocation;
use tracing::info;

use crate::auth::{self, AuthError, Authenticator, Claims, Right};
use crate::config::Config;
use crate::conn::{Close, ConnId};
use crate::metrics as m;
use crate::outbox::{CloseSignal, Outbox};
use crate::room::Inbound;
use crate::Shared;

/// How often a read-only connection is told `[2, 0, "read-only"]` at most; edits in between
/// are dropped without a word.
pub(crate) const PERMISSION_DENIED_INTERVAL: Duration = Duration::from_secs(10);

/// The session's token expired (permanent for stock v3 clients: they stop reconnecting).
pub(crate) const TOKEN_EXPIRED: Close = Close {
    code: 4401,
    reason: "token expired",
};
/// An administrator revoked the session's token (permanent: the same token is refused).
pub(crate) const REVOKED: Close = Close {
    code: 4401,
    reason: "token revoked",
};
/// An administrator removed the session.
pub(crate) const KICKED: Close = Close {
    code: 4403,
    reason: "removed by an administrator",
};
/// The connection exceeded `--max-messages-per-sec` or `--max-bytes-per-sec`.
/// The connection sent nothing within `--handshake-timeout-ms` of the upgrade.
pub(crate) const HANDSHAKE_TIMEOUT: Close = Close {
    code: 1008,
    reason: "handshake timeout",
};

/// The access rules of one server, built once from [`Config`].
#[derive(Debug)]
pub(crate) struct Access {
    /// `None` when auth is off: every connection may write, none is verified.
    pub(crate) auth: Option<Authenticator>,
    /// Origins allowed to open WebSockets (lowercase, exact); empty allows every origin.
    allowed_origins: Vec<String>,
    max_connections: usize,
    max_connections_per_ip: usize,
    /// Open connections, counted from the upgrade until the socket task ends.
    n_connections: AtomicUsize,
    /// Open connections per peer address; entries are removed when they reach zero.
    per_ip: DashMap<IpAddr, usize>,
    /// Every live session, for the admin kick. Inserted when a socket task starts, removed by
    /// [`SessionGuard`] when it ends.
    sessions: DashMap<ConnId, Session>,
    /// Revoked tokens, as last read from the store (`POST /api/admin/revoke`, and every
    /// [`REVOCATIONS_POLL`] for other processes' revocations). A std lock: read per upgrade and
    /// per API request, replaced whole, never held across an await.
    revocations: std::sync::RwLock<Vec<Revocation>>,
    pub(crate) rates: Rates,
}

/// How often a process reads the revocations from the store: the longest a revocation made
/// through another process takes to reach this one's sessions.
pub const REVOCATIONS_POLL: Duration = Duration::from_secs(2);

/// What of a token a revocation can name.
#[derive(Debug, Clone, Default)]
pub(crate) struct TokenId {
    pub(crate) user: Option<String>,
    pub(crate) jti: Option<String>,
    pub(crate) iat: Option<u64>,
}

impl TokenId {
    fn of(claims: &Claims) -> Self {
        TokenId {
            user: claims.user.clone(),
            jti: claims.jti.clone(),
            iat: claims.iat,
        }
    }

    /// Whether `r` covers this token. A token without `iat` counts as issued at 0: it cannot
    /// show it came after an `issued_before`.
    fn revoked_by(&self, r: &Revocation) -> bool {
        r.user.is_some() && r.user == self.user
            || r.jti.is_some() && r.jti == self.jti
            || r.issued_before
                .is_some_and(|before| self.iat.unwrap_or(0) < before)
    }
}

/// The per-connection rate limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    messages_per_sec: f64,
    /// Messages one burst may hold (`--max-messages-burst`).
    messages_burst: f64,
    bytes_per_sec: f64,
    /// Bytes one burst may hold: at least one largest message.
    bytes_burst: f64,
    awareness_per_sec: f64,
    handshake_timeout: Duration,
}

/// A live session, as the kick sees it.
#[derive(Debug)]
struct Session {
    room: Arc<str>,
    user: Option<String>,
    token: TokenId,
    /// The connection's close channel (capacity 1; the first close wins).
    control: CloseSignal,
}

/// What the upgrade established about a connection.
#[derive(Debug, Clone)]
pub(crate) struct Grant {
    pub(crate) right: Right,
    /// The verified user name, if the token named one.
    pub(crate) user: Option<String>,
    /// When the session ends: the token's `exp` plus the leeway (seconds since the Unix
    /// epoch); `None` with auth off.
    pub(crate) expires_at: Option<u64>,
    /// What a revocation can name of the token (nothing with auth off).
    pub(crate) token: TokenId,
}

/// Why an upgrade was refused, as an HTTP response (the stock client backs off and retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No token, or one that is invalid or expired: 401.
    Unauthenticated,
    /// A valid token without this room or right: 403.
    Forbidden,
    /// An `Origin` not in `--allowed-origins`: 403.
    Origin,
    /// `--max-connections-per-ip` reached: 429.
    PerIp,
    /// `--max-connections` reached: 503.
    Total,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Unauthenticated => "unauthenticated",
            Refusal::Forbidden => "forbidden",
            Refusal::Origin => "origin",
            Refusal::PerIp => "connections_per_ip",
            Refusal::Total => "connections_total",
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        metrics::counter!(m::REFUSED, "reason" => self.reason()).increment(1);
        match self {
            Refusal::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                [(WWW_AUTHENTICATE, "Bearer")],
                "a valid token is required\n",
            )
                .into_response(),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                "the token does not grant this room\n",
            )
                .into_response(),
            Refusal::Origin => (StatusCode::FORBIDDEN, "origin not allowed\n").into_response(),
            Refusal::PerIp => (
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from this address\n",
            )
                .into_response(),
            Refusal::Total => (
                StatusCode::SERVICE_UNAVAILABLE,
                "server at connection capacity\n",
            )
                .into_response(),
        }
    }
}

impl Access {
    /// # Errors
    /// The public key file cannot be used.
    pub(crate) fn from_config(config: &Config) -> Result<Self, auth::KeyError> {
        let auth = Authenticator::new(
            config.auth_secret.as_deref(),
            config.auth_public_key_file.as_deref(),
            config.auth_leeway_secs,
        )?;
        Ok(Access {
            auth,
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect(),
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            n_connections: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            sessions: DashMap::new(),
            revocations: std::sync::RwLock::new(Vec::new()),
            rates: Rates {
                messages_per_sec: config.max_messages_per_sec as f64,
                messages_burst: f64::from(config.max_messages_burst)
                    .max(f64::from(config.max_messages_per_sec)),
                bytes_per_sec: config.max_bytes_per_sec as f64,
                bytes_burst: (config.max_bytes_per_sec as f64)
                    .max(config.message_limit_bytes() as f64 + 16.0),
                awareness_per_sec: config.max_awareness_per_sec as f64,
                handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
            },
        })
    }

    /// Checks an upgrade: origin, then token and room, then connection caps. On success the
    /// returned permit must live as long as the connection.
    pub(crate) fn admit(
        shared: &Arc<Shared>,
        headers: &HeaderMap,
        uri: &Uri,
        room: &str,
        peer: Option<IpAddr>,
    ) -> Result<(Grant, ConnPermit), Refusal> {
        let access = &shared.access;
        if !access.origin_allowed(headers) {
            info!(path = %auth::redact_query(uri), "refused: origin not allowed");
            return Err(Refusal::Origin);
        }
        let token = match access.auth {
            None => None,
            Some(_) => auth::token_from_request(headers, uri),
        };
        let grant = match access.grant(token.as_deref(), room) {
            Ok(grant) => grant,
            Err(e) => {
                // The reason only: never the token, never the query string.
                info!(path = %auth::redact_query(uri), reason = %e, "refused upgrade");
                return Err(match e {
                    AuthError::Forbidden => Refusal::Forbidden,
                    _ => Refusal::Unauthenticated,
                });
            }
        };
        let permit = ConnPermit::acquire(shared, peer)?;
        Ok((grant, permit))
    }

    /// What `token` grants in `room`: the rule of every surface that reads rooms (right
    /// `read` at least). With auth off, everything, without a token.
    ///
    /// # Errors
    /// Why the token does not grant the room.
    pub(crate) fn grant(&self, token: Option<&str>, room: &str) -> Result<Grant, AuthError> {
        let Some(authenticator) = &self.auth else {
            return Ok(Grant {
                right: Right::Write,
                user: None,
                expires_at: None,
                token: TokenId::default(),
            });
        };
        let claims = authenticator.authorize(token, room, Right::Read)?;
        if self.is_revoked(&claims) {
            return Err(AuthError::Invalid("token revoked"));
        }
        Ok(Grant {
            right: claims.right,
            token: TokenId::of(&claims),
            user: claims.user,
            expires_at: Some(claims.exp.saturating_add(authenticator.leeway_secs())),
        })
    }

    /// Checks an upgrade that carries no room (the Hocuspocus endpoint, whose documents are
    /// authorized one by one inside the socket): origin and connection caps only.
    pub(crate) fn admit_socket(
        shared: &Arc<Shared>,
        headers: &HeaderMap,
        uri: &Uri,
        peer: Option<IpAddr>,
    ) -> Result<ConnPermit, Refusal> {
        if !shared.access.origin_allowed(headers) {
            info!(path = %auth::redact_query(uri), "refused: origin not allowed");
            return Err(Refusal::Origin);
        }
        ConnPermit::acquire(shared, peer)
    }

    /// Browsers always send `Origin` on a WebSocket upgrade; other clients need not, and cannot
    /// be hijacked cross-site, so a missing `Origin` is allowed.
    fn origin_allowed(&self, headers: &HeaderMap) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        let Some(origin) = headers.get(ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        self.allowed_origins.contains(&origin)
    }

    /// Registers a live session for the kick; the guard removes it.
    pub(crate) fn register(
        shared: &Arc<Shared>,
        conn: ConnId,
        room: &str,
        grant: &Grant,
        control: CloseSignal,
    ) -> SessionGuard {
        shared.access.sessions.insert(
            conn,
            Session {
                room: Arc::from(room),
                user: grant.user.clone(),
                token: grant.token.clone(),
                control,
            },
        );
        SessionGuard {
            shared: shared.clone(),
            conn,
        }
    }

    /// Whether a revocation covers the token of `claims`.
    pub(crate) fn is_revoked(&self, claims: &Claims) -> bool {
        let token = TokenId::of(claims);
        let revocations = self.revocations.read().unwrap_or_else(|e| e.into_inner());
        revocations.iter().any(|r| token.revoked_by(r))
    }

    /// Takes the revocations read from the store and closes (4401) every live session they
    /// cover; returns how many it closed.
    pub(crate) fn set_revocations(&self, revocations: Vec<Revocation>) -> usize {
        let mut n = 0;
        for s in self.sessions.iter() {
            if !s.control.is_closed() && revocations.iter().any(|r| s.token.revoked_by(r)) {
                s.control.close(REVOKED);
                n += 1;
            }
        }
        *self.revocations.write().unwrap_or_else(|e| e.into_inner()) = revocations;
        n
    }

    /// Closes (4403) every session that `select` picks; returns how many.
    pub(crate) fn kick(&self, select: impl Fn(&str, Option<&str>) -> bool) -> usize {
        let mut n = 0;
        for s in self.sessions.iter() {
            if select(&s.room, s.user.as_deref()) {
                s.control.close(KICKED);
                n += 1;
            }
        }
        n
    }
}

/// Guards the room HTTP API (`/api/rooms/{room}/...`) with the same tokens as the WebSocket:
/// with auth on, `GET` needs right `read` in the room and other methods `write`, presented
/// as `Authorization: Bearer TOKEN` (401 without a valid token, 403 without the right). With
/// auth off it lets everything through.
pub(crate) fn guard_room_api(
    router: axum::Router<Arc<Shared>>,
    shared: &Arc<Shared>,
) -> axum::Router<Arc<Shared>> {
    router.route_layer(axum::middleware::from_fn_with_state(
        shared.clone(),
        room_api_auth,
    ))
}

async fn room_api_auth(
    axum::extract::State(shared): axum::extract::State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(authenticator) = &shared.access.auth else {
        return next.run(req).await;
    };
    // `/api/rooms/{room}/...`: the room is the third segment, percent-decoded once.
    let room = req
        .uri()
        .path()
        .split('/')
        .nth(3)
        .map(|r| {
            percent_encoding::percent_decode_str(r)
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let need = if req.method() == axum::http::Method::GET {
        Right::Read
    } else {
        Right::Write
    };
    let token = auth::bearer(req.headers());
    match authenticator.authorize(token.as_deref(), &room, need) {
        Ok(claims) if shared.access.is_revoked(&claims) => Refusal::Unauthenticated.into_response(),
        Ok(_) => next.run(req).await,
        Err(AuthError::Forbidden) => Refusal::Forbidden.into_response(),
        Err(_) => Refusal::Unauthenticated.into_response(),
    }
}

/// Holds one connection's place under `--max-connections` and `--max-connections-per-ip`;
/// dropping it frees the place.
#[derive(Debug)]
pub(crate) struct ConnPermit {
    shared: Arc<Shared>,
    peer: Option<IpAddr>,
}

impl ConnPermit {
    fn acquire(shared: &Arc<Shared>, peer: Option<IpAddr>) -> Result<Self, Refusal> {
        let access = &shared.access;
        let n = access.n_connections.fetch_add(1, Ordering::AcqRel);
        if n >= access.max_connections {
            access.n_connections.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::Total);
        }
        if let Some(ip) = peer {
            let mut count = access.per_ip.entry(ip).or_insert(0);
            if *count >= access.max_connections_per_ip {
                drop(count);
                access.n_connections.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::PerIp);
            }
            *count += 1;
        }
        Ok(ConnPermit {
            shared: shared.clone(),
            peer,
        })
    }
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        let access = &self.shared.access;
        if let Some(ip) = self.peer {
            if let Some(mut count) = access.per_ip.get_mut(&ip) {
                *count = count.saturating_sub(1);
            }
            access.per_ip.remove_if(&ip, |_, c| *c == 0);
        }
        access.n_connections.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Removes a session from the registry when the connection ends.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    shared: Arc<Shared>,
    conn: ConnId,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.shared.access.sessions.remove(&self.conn);
    }
}

/// A token bucket: `rate` tokens per second, at most `capacity` saved up.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `n` tokens, going into debt if needed, and returns how long the caller must wait
    /// for the debt to be paid back at `rate` (zero while within the budget).
    fn charge(&mut self, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Takes `n` tokens if there are that many.
    fn take(&mut self, n: f64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// One connection's rules, applied by its reader before anything reaches the room.
#[derive(Debug)]
pub(crate) struct ConnPolicy {
    right: Right,
    user: Option<String>,
    /// A clone of the connection's outbox, for the permission-denied notice only (`try_send`:
    /// the notice is advisory and skipped when the outbox is full). Dropped with the policy.
    outbox: Outbox,
    last_denied: Option<Instant>,
    messages: TokenBucket,
    bytes: TokenBucket,
    awareness: TokenBucket,
    /// Until the first frame arrives: when the handshake deadline passes.
    handshake_deadline: Option<tokio::time::Instant>,
    /// When the token expires, on the tokio clock.
    expires_at: Option<tokio::time::Instant>,
}

impl ConnPolicy {
    pub(crate) fn new(rates: &Rates, grant: &Grant, outbox: Outbox) -> Self {
        let now = Instant::now();
        let expires_at = grant.expires_at.map(|exp| {
            let left = exp.saturating_sub(auth::now_secs());
            tokio::time::Instant::now() + Duration::from_secs(left)
        });
        ConnPolicy {
            right: grant.right,
            user: grant.user.clone(),
            outbox,
            last_denied: None,
            // A large burst: a script importing thousands of edits, or a paste sent keystroke by
            // keystroke, runs at full speed (the room inbox's backpressure still paces it);
            // only a sustained flood is slowed to the rate.
            messages: TokenBucket::new(rates.messages_per_sec, rates.messages_burst, now),
            bytes: TokenBucket::new(rates.bytes_per_sec, rates.bytes_burst, now),
            awareness: TokenBucket::new(
                rates.awareness_per_sec,
                2.0 * rates.awareness_per_sec,
                now,
            ),
            handshake_deadline: Some(tokio::time::Instant::now() + rates.handshake_timeout),
            expires_at,
        }
    }

    /// Completes when the session's token expires; never with auth off.
    pub(crate) fn expiry(&self) -> impl std::future::Future<Output = ()> + 'static {
        let at = self.expires_at;
        async move {
            match at {
                // Boxed: inline, the timer would be part of every connection's task, expiring
                // token or not.
                Some(at) => Box::pin(tokio::time::sleep_until(at)).await,
                None => std::future::pending().await,
            }
        }
    }

    /// The next frame from `stream`, or the handshake-timeout close if the first one does not
    /// arrive in time.
    pub(crate) async fn next_frame<S>(&mut self, stream: &mut S) -> Result<Option<S::Item>, Close>
    where
        S: futures_util::Stream + Unpin,
    {
        use futures_util::StreamExt;
        let Some(deadline) = self.handshake_deadline else {
            return Ok(stream.next().await);
        };
        // Boxed: the deadline is over after the first frame, and an idle connection's reader
        // should not carry its timer's state for the rest of its life.
        match Box::pin(tokio::time::timeout_at(deadline, stream.next())).await {
            Ok(frame) => {
                self.handshake_deadline = None;
                Ok(frame)
            }
            Err(_) => {
                metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "handshake_timeout").increment(1);
                Err(HANDSHAKE_TIMEOUT)
            }
        }
    }

    /// Charges `messages` messages of `len` bytes in all against the message and byte buckets
    /// and returns how long the reader must pause before reading on. Pausing, rather than
    /// closing, throttles a fast sender through TCP flow control: a flood past the burst is
    /// slowed to the configured rate and loses nothing, and cannot take more than its share.
    pub(crate) fn charge(&mut self, messages: usize, len: usize) -> Duration {
        let now = Instant::now();
        let wait = self
            .messages
            .charge(messages as f64, now)
            .max(self.bytes.charge(len as f64, now));
        if !wait.is_zero() {
            metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "rate_limited").increment(1);
        }
        wait
    }

    /// Applies the connection's rules to a decoded message; `None` drops it.
    ///
    /// Read-only connections may sync (step 1), publish awareness and query it; everything
    /// else (updates, step 2, any extension) is refused, with `[2, 0, "read-only"]` at most
    /// once per [`PERMISSION_DENIED_INTERVAL`]. Awareness is rate-limited and stamped with the
    /// verified user.
    pub(crate) fn admit(&mut self, msg: Inbound) -> Option<Inbound> {
        match msg {
            Inbound::Step1(_) | Inbound::QueryAwareness => Some(msg),
            Inbound::Awareness(entries) => {
                if !self.awareness.take(1.0, Instant::now()) {
                    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "awareness_rate")
                        .increment(1);
                    return None;
                }
                let entries: Vec<_> = entries
                    .into_iter()
                    .filter_map(|e| stamp_identity(e, self.user.as_deref()))
                    .collect();
                Some(Inbound::Awareness(entries))
            }
            other => {
                if self.right >= Right::Write {
                    return Some(other);
                }
                metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "read_only").increment(1);
                let now = Instant::now();
                if self
                    .last_denied
                    .is_none_or(|t| now.duration_since(t) >= PERMISSION_DENIED_INTERVAL)
                {
                    self.last_denied = Some(now);
                    let _ = self.outbox.try_send(encode_permission_denied("read-only"));
                }
                None
            }
        }
    }
}

/// Stamps the verified identity into an awareness state: `state.user.name` is set to the
/// token's user and `state.user.verified` to `true`; with no verified user any
/// `user.verified` the client claimed is removed. The rest of the state is kept. Removals
/// (`null`) pass as they are; a state that is not JSON is dropped (`None`).
pub(crate) fn stamp_identity(
    mut entry: AwarenessEntry,
    user: Option<&str>,
) -> Option<AwarenessEntry> {
    if entry.is_removal() || (user.is_none() && !may_name_verified(&entry.state)) {
        return Some(entry);
    }
    // serde_json refuses nesting past 128 levels, so this parse is bounded.
    let mut state: serde_json::Value = serde_json::from_str(&entry.state).ok()?;
    let serde_json::Value::Object(map) = &mut state else {
        return match user {
            None => Some(entry),
            // Not an object: there is nowhere to keep the identity, so replace it.
            Some(name) => {
                entry.state =
                    serde_json::json!({"user": {"name": name, "verified": true}}).to_string();
                Some(entry)
            }
        };
    };
    match user {
        Some(name) => {
            let slot = map
                .entry("user")
                .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
            if !slot.is_object() {
                *slot = serde_json::Value::Object(serde_json::Map::new());
            }
            if let serde_json::Value::Object(u) = slot {
                u.insert("name".into(), name.into());
                u.insert("verified".into(), true.into());
            }
        }
        None => {
            if let Some(serde_json::Value::Object(u)) = map.get_mut("user") {
                u.remove("verified");
            }
        }
    }
    entry.state = state.to_string();
    Some(entry)
}

/// Whether a JSON text may hold a key that reads `verified` once parsed: it holds those bytes,
/// or a `\u` escape, the only escape that can spell a letter (`verifi\u0065d`). Anything
/// else cannot, so the common state of an unverified client is passed on without a parse.
fn may_name_verified(json: &str) -> bool {
    json.contains("verified") || json.contains("\\u")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(state: &str) -> AwarenessEntry {
        AwarenessEntry {
            client: 1,
            clock: 1,
            state: state.into(),
        }
    }

    #[test]
    fn stamps_the_verified_user_and_keeps_the_rest() {
        let e = stamp_identity(
            entry(r#"{"user":{"name":"mallory","color":"red"},"cursor":3}"#),
            Some("ann"),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.state).unwrap();
        assert_eq!(v["user"]["name"], "ann");
        assert_eq!(v["user"]["verified"], true);
        assert_eq!(v["user"]["color"], "red");
        assert_eq!(v["cursor"], 3);
        let e = stamp_identity(entry("{}"), Some("ann")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.state).unwrap();
        assert_eq!(v["user"]["name"], "ann");
        assert_eq!(
            stamp_identity(entry("null"), Some("ann")).unwrap().state,
            "null"
        );
    }

    #[test]
    fn unverified_clients_cannot_claim_verification() {
        let e = stamp_identity(entry(r#"{"user":{"name":"x","verified":true}}"#), None).unwrap();
        let v: serde_json::Value = serde_json::from_str(&e.state).unwrap();
        assert_eq!(v["user"]["name"], "x");
        assert!(v["user"].get("verified").is_none());
        let plain = r#"{"user":{"name":"x"}}"#;
        assert_eq!(stamp_identity(entry(plain), None).unwrap().state, plain);
    }

    /// Issue 13 item 9: a JSON escape spelled the key without the bytes `verified`, and the
    /// check, which looked for those bytes before parsing, passed it on unchanged.
    #[test]
    fn escaped_verification_claims_are_removed_too() {
        for forged in [
            r#"{"user":{"name":"admin","verifi\u0065d":true}}"#,
            r#"{"user":{"name":"admin","\u0076\u0065rified":true}}"#,
            r#"{"\u0075ser":{"name":"admin","verifi\u0065d":true}}"#,
        ] {
            let e = stamp_identity(entry(forged), None).unwrap();
            let v: serde_json::Value = serde_json::from_str(&e.state).unwrap();
            assert_eq!(v["user"]["name"], "admin", "{forged}");
            assert!(
                v["user"].get("verified").is_none(),
                "{forged} -> {}",
                e.state
            );
        }
        // Other escapes cannot spell a letter, so such a state is passed on as it is.
        let quoted = r#"{"user":{"name":"a \"b\" \\ c"}}"#;
        assert!(!may_name_verified(quoted));
        assert_eq!(stamp_identity(entry(quoted), None).unwrap().state, quoted);
    }

    #[test]
    fn token_bucket_refills_at_its_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t);
        for _ in 0..20 {
            assert!(b.take(1.0, t));
        }
        assert!(!b.take(1.0, t));
        assert!(b.take(5.0, t + Duration::from_millis(500)));
        assert!(!b.take(1.0, t + Duration::from_millis(500)));
    }

    #[test]
    fn token_bucket_charges_debt_as_waiting_time() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 2.0, t);
        assert_eq!(b.charge(1.0, t), Duration::ZERO);
        assert_eq!(b.charge(1.0, t), Duration::ZERO);
        // Two tokens in debt at 10 per second: wait 100 ms, then 200 ms.
        assert_eq!(b.charge(1.0, t), Duration::from_millis(100));
        assert_eq!(b.charge(1.0, t), Duration::from_millis(200));
        // Paying back over time.
        assert_eq!(
            b.charge(1.0, t + Duration::from_millis(300)),
            Duration::ZERO
        );
    }
}
