//! The Hocuspocus endpoint: `@hocuspocus/provider` 2.x, 3.x and 4.x on `/hocuspocus`, in the
//! same rooms as y-websocket clients.
//!
//! One socket carries several documents (`HocuspocusProviderWebsocket`); every frame names its
//! document by an address (see `plait_protocol::hocuspocus`). Each document on the socket is a
//! room membership of its own: its own [`ConnId`], token check, outbox, [`ConnPolicy`] (read-only,
//! awareness identity and rate), kick registration and token expiry. The socket has one reader
//! (this module), one writer (`connection::write_loop`, shared with y-websocket) and one
//! forwarder task per attached document, which re-frames what the room queues for that member:
//!
//! - a y-websocket message `[type, ...]` of type 0 (sync), 1 (awareness) or 3 (query awareness)
//!   carries the same payload in Hocuspocus, so it becomes `varString address ‖ [type, ...]`;
//! - the room's stored marker ([`crate::conn::stored_marker`], asked for with `acks: true`)
//!   becomes `SyncStatus(true)`: the provider's unsynced-changes count drops only once its
//!   edit is durable;
//! - a y-websocket permission denied `[2, 0, reason]` (the room refused an update: document
//!   size limit) becomes `SyncStatus(false)`: to a Hocuspocus provider a permission denied
//!   means "not authenticated", which would be wrong here.
//!
//! What is confirmed follows what the providers count, which every major does alike: with its
//! sync step 1 (on every connect) a provider sets its unsynced count to 1, then adds 1 per
//! update it sends; the updates it queued while offline go out after that step 1 uncounted, and
//! its step 2 (the answer to the server's step 1) carries them again. So the step 2 answering
//! the server's step 1 after the provider's own is confirmed once, when it and everything before
//! it are stored, even if it adds nothing; the updates between that step 1 and that step 2 are
//! never confirmed; every later update is confirmed once, when stored, even if it adds nothing.
//! Hocuspocus confirms every update and step 2, so a provider that reconnects with offline edits
//! gets one confirmation per queued update too many: v2's count ends below 0, v3 and v4 stop at
//! 0. A provider editing between its step 1 and its step 2 (one round trip after connecting)
//! is confirmed those edits only with the step 2, so its count stays above 0 until it resyncs:
//! too few confirmations, never too many.
//!
//! Authentication is checked inline by the reader, which reads the socket in order: the frames
//! a provider sends right after its token (sync step 1, awareness) wait in the socket until the
//! document is authenticated and joined, so no queue is needed and the socket's own flow control
//! is the bound. Nothing of a document reaches the provider before its `Authenticated`, which is
//! queued before the document's forwarder starts.
//!
//! Closing, per the providers' behaviour: a malformed frame closes the socket with 1007. A close
//! decided for one document (kick 4403, token expiry 4401) is a `Close` message for that
//! document to a provider that announced its version (v4); v2 throws on `Close`, and v2 and v3
//! cannot be told apart, so for them the whole socket is closed with the code. Transient closes
//! (slow consumer, store down, shutdown) close the socket, which the provider reconnects and
//! resyncs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::extract::ws::WebSocket;
use bytes::Bytes;
use dashmap::DashMap;
use futures_util::stream::SplitStream;
use futures_util::StreamExt;
use plait_protocol::hocuspocus::{
    self as hp, Address, DecodeError, ProviderFrame, ProviderMessage, Scope,
};
use plait_protocol::SyncMessage;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tracing::{debug, info, Instrument};
use yrs::updates::decoder::Decode;
use yrs::{StateVector, Update};

use crate::access::{Access, ConnPermit, ConnPolicy, Grant, SessionGuard};
use crate::auth::{AuthError, Right};
use crate::bus::Outgoing;
use crate::conn::{Close, ConnId};
use crate::connection::{self, Incoming, WriterConfig, CLOSE_GRACE};
use crate::metrics as m;
use crate::outbox::{self, CloseSignal, Outbox};
use crate::room::{Confirm, Inbound, MemberLink, RoomCmd, RoomHandle};
use crate::room_name::check_room_name;
use crate::Shared;

mod forward;

use forward::{address_prefix, forward, Forwarder};

/// The endpoint's path. Only this exact path: a y-websocket room named `hocuspocus` is
/// reached as `/%68ocuspocus` (any percent-encoding of it), which the router does not match
/// here and the room rule decodes to `hocuspocus`.
pub(crate) const PATH: &str = "/hocuspocus";

const MALFORMED: Close = Close {
    code: 1007,
    reason: "malformed message",
};
/// A y-websocket frame parses as an empty document name; say where such a client belongs.
const Y_WEBSOCKET_HERE: Close = Close {
    code: 1007,
    reason: "this is the Hocuspocus endpoint; the y-websocket room \"hocuspocus\" is /%68ocuspocus",
};
const AUTH_FLOOD: Close = Close {
    code: 1008,
    reason: "too many authentication attempts",
};

/// Authentications (tokens and tokenless attaches) one socket may start per [`AUTH_WINDOW`],
/// beyond `--max-documents-per-connection`: every one costs a signature check and maybe a
/// room load, so a provider re-sending tokens in a loop is closed rather than served.
const AUTH_SLACK: usize = 16;
const AUTH_WINDOW: Duration = Duration::from_secs(10);
/// Refused authentications one socket may collect before it is closed.
const MAX_AUTH_FAILURES: usize = 32;

/// Bytes of message framing (type, sub-type, length) around an update besides the address.
const FRAME_HEADER_SLACK: usize = 16;

// === Stateless relay ===

/// The Hocuspocus documents attached on this process, by room: where a stateless message
/// from one provider goes (y-websocket clients have no such message), and one from another
/// process through the bus (its room delivers it here).
#[derive(Debug, Default)]
pub(crate) struct Registry {
    rooms: DashMap<Arc<str>, Vec<Listener>>,
}

#[derive(Debug)]
struct Listener {
    conn: ConnId,
    address: Arc<str>,
    /// The socket's outbox and close signal (not the document's: stateless bypasses the
    /// room, so it is framed here).
    outbox: Outbox,
    control: CloseSignal,
    /// The document's own close: a document closed by a kick or its token's expiry hears
    /// nothing more, though its socket (and its entry here, until the reader notices) stays.
    document: CloseSignal,
}

impl Registry {
    fn add(&self, room: Arc<str>, listener: Listener) {
        self.rooms.entry(room).or_default().push(listener);
    }

    fn remove(&self, room: &str, conn: ConnId) {
        if let Some(mut listeners) = self.rooms.get_mut(room) {
            listeners.retain(|l| l.conn != conn);
        }
        self.rooms
            .remove_if(room, |_, listeners| listeners.is_empty());
    }

    /// Sends `payload` to every document of `room` but `from`'s (a pseudo-connection of the
    /// origin process for a message from the bus); returns how many got it. A socket whose
    /// outbox is full is closed as slow, as the room does: a message is never skipped for
    /// someone who stays.
    pub(crate) fn relay(&self, room: &str, from: ConnId, payload: &str) -> usize {
        let Some(listeners) = self.rooms.get(room) else {
            return 0;
        };
        let mut n = 0;
        for l in listeners
            .iter()
            .filter(|l| l.conn != from && !l.document.is_closed())
        {
            match l.outbox.try_send(hp::encode_stateless(&l.address, payload)) {
                Ok(()) => n += 1,
                Err(TrySendError::Full(_)) => l.control.close(Close::SLOW_CONSUMER),
                Err(TrySendError::Closed(_)) => {}
            }
        }
        n
    }
}

/// Removes a document from the [`Registry`] when it is detached.
#[derive(Debug)]
struct Listening {
    shared: Arc<Shared>,
    room: Arc<str>,
    conn: ConnId,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.shared.hocuspocus.remove(&self.room, self.conn);
    }
}

// === The socket ===

/// One attached document.
struct Active {
    conn: ConnId,
    room: RoomHandle,
    room_name: Arc<str>,
    scope: Scope,
    /// Read-only refusal is done here, before the policy (see [`Socket::dispatch`]); the
    /// policy stamps and rate-limits awareness.
    policy: ConnPolicy,
    /// The document's own close: set by its room, a kick, or its token's expiry.
    control: CloseSignal,
    /// The provider sent its sync step 1 and not yet the step 2 that answers the server's:
    /// its updates now are not confirmed, that step 2 is (see [`Socket::dispatch`]).
    awaiting_step2: bool,
    forwarder: JoinHandle<()>,
    _session: SessionGuard,
    _listening: Listening,
}

impl Active {
    /// Whether the room tells the provider once this step 2 or update of its is stored. What
    /// the provider counts (every major alike): its step 1 set its count to 1, each update
    /// since adds 1, except those it queued while offline and sends after that step 1 (counted
    /// before the reset, and carried again by its step 2). So the step 2 answering the
    /// server's step 1 is the one change the reset stands for and covers everything sent
    /// before it; the updates between are not confirmed; every later update is. Hocuspocus
    /// confirms each of them, which sends v2's count below 0 (v3 and v4 stop at 0).
    fn confirm(&mut self, is_step2: bool) -> Confirm {
        match (is_step2, self.awaiting_step2) {
            (true, true) => {
                self.awaiting_step2 = false;
                Confirm::Once
            }
            // A step 2 answering a later step 1 of the server's (not counted), or an update
            // before the awaited step 2 (covered by its confirmation).
            (true, false) | (false, true) => Confirm::Never,
            (false, false) => Confirm::Once,
        }
    }
}

/// What the socket knows about one address.
enum Doc {
    /// Refused or closed: its frames are dropped until the provider sends a new token.
    Detached,
    Active(Box<Active>),
}

struct Socket {
    shared: Arc<Shared>,
    /// The reader's clone of the socket's outbox.
    outbox: Outbox,
    control: CloseSignal,
    keepalive_frame: Arc<OnceLock<Bytes>>,
    /// By address, exactly as the provider sent it (a v4 session key included).
    docs: HashMap<Arc<str>, Doc>,
    /// A provider announced its version (v4): it may be sent `Close` and `Ping`.
    v4: bool,
    auth_window_start: Instant,
    auth_window_count: usize,
    auth_failures: usize,
}

/// Serves one upgraded socket of the Hocuspocus endpoint until either side closes it. Not an
/// `async fn`, for the reason given at [`connection::serve`]: the future keeps what the socket
/// uses while it lives, not the whole socket nor a second copy of the arguments.
pub(crate) fn serve(
    socket: WebSocket,
    shared: Arc<Shared>,
    permit: ConnPermit,
) -> impl std::future::Future<Output = ()> + Send {
    let id = connection::next_conn_id();
    let span = tracing::info_span!("hocuspocus", socket = id);
    let (sink, stream) = socket.split();
    let (outbox_tx, outbox_rx) = outbox::channel(shared.outbox_frames, shared.max_outbox_bytes);
    let control = CloseSignal::default();
    let epoch = Instant::now();
    let last_heard = Arc::new(AtomicU64::new(0));
    let keepalive_frame = Arc::new(OnceLock::new());
    let mut writer = tokio::spawn(
        connection::write_loop(
            sink,
            outbox_rx,
            control.clone(),
            WriterConfig::new(&shared, epoch, last_heard.clone(), keepalive_frame.clone()),
        )
        .instrument(span.clone()),
    );
    async move {
        let _permit = &permit;
        metrics::gauge!(m::CONNECTIONS).increment(1.0);
        metrics::gauge!(m::HOCUSPOCUS_CONNECTIONS).increment(1.0);
        let writer_finished = AtomicBool::new(false);
        {
            let writer_done = async {
                let _ = (&mut writer).await;
                writer_finished.store(true, Ordering::Relaxed);
                Box::pin(tokio::time::sleep(CLOSE_GRACE)).await;
            };
            tokio::pin!(writer_done);
            // The socket's own policy: handshake deadline and the rate limits, which so count
            // every document of the socket together. It never sees a document message.
            let socket_grant = Grant {
                right: Right::Read,
                user: None,
                expires_at: None,
                token: Default::default(),
            };
            let mut policy =
                ConnPolicy::new(&shared.access.rates, &socket_grant, outbox_tx.clone());
            let mut socket = Socket {
                shared: shared.clone(),
                outbox: outbox_tx,
                control: control.clone(),
                keepalive_frame,
                docs: HashMap::new(),
                v4: false,
                auth_window_start: Instant::now(),
                auth_window_count: 0,
                auth_failures: 0,
            };
            debug!("connected");
            tokio::select! {
                () = socket.read_loop(stream, &mut policy, epoch, &last_heard) => {}
                () = &mut writer_done => {}
                // A socket with no document has no room to close it on shutdown.
                () = shared.shutdown.cancelled() => control.close(Close::GOING_AWAY),
            }
            Box::pin(socket.detach_all()).await;
        }
        drop(control);
        if !writer_finished.load(Ordering::Relaxed) {
            let abort = writer.abort_handle();
            if tokio::time::timeout(CLOSE_GRACE, writer).await.is_err() {
                abort.abort();
            }
        }
        metrics::gauge!(m::HOCUSPOCUS_CONNECTIONS).decrement(1.0);
        metrics::gauge!(m::CONNECTIONS).decrement(1.0);
        debug!("disconnected");
    }
    .instrument(span)
}

fn count_in(kind: &'static str) {
    metrics::counter!(m::HOCUSPOCUS_MESSAGES_IN, "type" => kind).increment(1);
}

/// Counts a Hocuspocus frame over the message limit.
fn too_big() {
    protocol_error("too_big");
}

fn protocol_error(reason: &'static str) {
    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => reason, "protocol" => "hocuspocus")
        .increment(1);
}

/// The permission-denied reason for a refused token.
fn denial_reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "a token is required",
        AuthError::Expired => "token expired",
        AuthError::Invalid(_) => "invalid token",
        AuthError::Forbidden => "the token does not grant this document",
    }
}

impl Socket {
    async fn read_loop(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        policy: &mut ConnPolicy,
        epoch: Instant,
        last_heard: &AtomicU64,
    ) {
        let mut first = true;
        loop {
            let next = connection::next_data(&mut stream, policy, epoch, last_heard, too_big);
            let data = match next.await {
                Incoming::Data(data) => data,
                Incoming::Ignored => continue,
                Incoming::Ended => return,
                Incoming::Failed(close) => {
                    self.control.close(close);
                    return;
                }
            };
            // A closing socket forwards nothing more; its frames are read so the peer's
            // close reply completes the handshake.
            if self.control.is_closed() {
                continue;
            }
            let decoded = match ProviderFrame::decode(&data, &self.shared.limits) {
                Ok(decoded) => decoded,
                Err(e) => {
                    protocol_error("malformed");
                    let close = if first && e == DecodeError::EmptyDocumentName {
                        Y_WEBSOCKET_HERE
                    } else {
                        MALFORMED
                    };
                    info!(error = %e, "malformed message; closing connection");
                    self.control.close(close);
                    return;
                }
            };
            first = false;
            match decoded {
                ProviderFrame::Pong => count_in("pong"),
                ProviderFrame::Document { address, message } => {
                    if let Err(close) = Box::pin(self.handle(address, message, data.len())).await {
                        info!(reason = close.reason, "closing connection");
                        self.control.close(close);
                        return;
                    }
                }
            }
        }
    }

    /// One document message. `Err` closes the whole socket.
    async fn handle(
        &mut self,
        address: Address,
        message: ProviderMessage,
        frame_len: usize,
    ) -> Result<(), Close> {
        let key = address.as_str();
        // A document its room, a kick or its token's expiry closed stays detached: its
        // forwarder already told the provider (or closed the socket).
        if matches!(self.docs.get(key), Some(Doc::Active(a)) if a.control.is_closed()) {
            self.detach(key, true).await;
        }
        match message {
            ProviderMessage::Close => {
                count_in("close");
                debug!(address = %address, "provider closed a document");
                self.detach(key, false).await;
                Ok(())
            }
            ProviderMessage::Token {
                token,
                provider_version,
            } => {
                count_in("token");
                if provider_version.is_some() {
                    self.v4 = true;
                }
                match self.docs.get(key) {
                    // Hocuspocus ignores it too: the document is authenticated for its
                    // session, and plait never asks for a fresh token.
                    Some(Doc::Active(_)) => {
                        debug!(address = %address, "token for an attached document; ignored");
                        return Ok(());
                    }
                    Some(Doc::Detached) => {}
                    None if self.docs.len() >= self.shared.max_documents_per_connection => {
                        self.charge_auth(true)?;
                        protocol_error("too_many_documents");
                        self.deny(&address, "too many documents on this connection", false);
                        return Ok(());
                    }
                    None => {}
                }
                let token = (!token.is_empty()).then_some(token);
                self.authenticate(&address, token.as_deref()).await
            }
            other => match self.docs.get(key) {
                Some(Doc::Active(_)) => self.dispatch(&address, other, frame_len).await,
                Some(Doc::Detached) => Ok(()),
                // Frames of a document over the cap, after its denial: dropped.
                None if self.docs.len() >= self.shared.max_documents_per_connection => Ok(()),
                None => {
                    // A first frame that is not a token: a v2 provider configured without
                    // one. With auth off it is attached as is; with auth on it is refused.
                    if self.shared.access.auth.is_some() {
                        self.charge_auth(true)?;
                        metrics::counter!(m::HOCUSPOCUS_AUTH, "result" => "no_token").increment(1);
                        self.deny(&address, denial_reason(&AuthError::Missing), true);
                        return Ok(());
                    }
                    self.authenticate(&address, None).await?;
                    if matches!(self.docs.get(key), Some(Doc::Active(_))) {
                        self.dispatch(&address, other, frame_len).await?;
                    }
                    Ok(())
                }
            },
        }
    }

    /// Counts one authentication attempt (and a failure) against the socket's budget.
    fn charge_auth(&mut self, failed: bool) -> Result<(), Close> {
        let now = Instant::now();
        if now.duration_since(self.auth_window_start) >= AUTH_WINDOW {
            self.auth_window_start = now;
            self.auth_window_count = 0;
        }
        self.auth_window_count += 1;
        if failed {
            self.auth_failures += 1;
        }
        if self.auth_window_count > self.shared.max_documents_per_connection + AUTH_SLACK
            || self.auth_failures > MAX_AUTH_FAILURES
        {
            protocol_error("auth_flood");
            return Err(AUTH_FLOOD);
        }
        Ok(())
    }

    /// Checks the document name and the token, then attaches the document or denies it.
    async fn authenticate(&mut self, address: &Address, token: Option<&str>) -> Result<(), Close> {
        let document = address.document();
        let checked = check_room_name(document, self.shared.max_room_name_bytes)
            .map_err(|e| e.status().1)
            .and_then(|()| {
                self.shared
                    .access
                    .grant(token, document)
                    .map_err(|e| denial_reason(&e))
            });
        match checked {
            Ok(grant) => {
                self.charge_auth(false)?;
                self.attach(address, grant).await
            }
            Err(reason) => {
                self.charge_auth(true)?;
                metrics::counter!(m::HOCUSPOCUS_AUTH, "result" => "denied").increment(1);
                info!(address = %address, reason, "document refused");
                self.deny(address, reason, true);
                Ok(())
            }
        }
    }

    /// Tells the provider the document is refused; `remember` keeps the address (detached)
    /// so the frames it sent after its token are dropped without another denial.
    fn deny(&mut self, address: &Address, reason: &str, remember: bool) {
        self.send(hp::encode_permission_denied(address.as_str(), reason));
        if remember {
            self.docs.insert(Arc::from(address.as_str()), Doc::Detached);
        }
    }

    /// Joins the document's room as a member of its own, then says `Authenticated` and starts
    /// the forwarder, in that order.
    async fn attach(&mut self, address: &Address, grant: Grant) -> Result<(), Close> {
        let shared = self.shared.clone();
        let conn = connection::next_conn_id();
        let room_name: Arc<str> = Arc::from(address.document());
        let (doc_tx, doc_rx) = outbox::channel(shared.outbox_frames, shared.max_outbox_bytes);
        let control = CloseSignal::default();
        let mut link = Some(MemberLink {
            outbox: doc_tx.clone(),
            control: control.clone(),
            values: false,
            // The provider's sync status: confirmed when stored, not when echoed.
            acks: true,
        });
        let room = match connection::join(&shared, &room_name, conn, &mut link).await {
            Ok(room) => room,
            Err(close) => {
                metrics::counter!(m::REFUSED, "reason" => close.reason).increment(1);
                // Rooms full or shutting down: transient, so the socket is closed and the
                // provider retries, rather than a denial that v2 would not retry.
                return Err(close);
            }
        };
        drop(link);
        let scope = if grant.right >= Right::Write {
            Scope::ReadWrite
        } else {
            Scope::ReadOnly
        };
        metrics::counter!(m::HOCUSPOCUS_AUTH, "result" => scope.as_str()).increment(1);
        info!(address = %address, conn, scope = scope.as_str(), "document attached");
        self.send(hp::encode_authenticated(address.as_str(), scope));
        // From now on the socket may be sent something when idle: the v4 heartbeat, or for
        // v2 and v3 (which close a socket silent for 30 s, WebSocket pings not counting) an
        // empty awareness update of this document, which changes nothing.
        let _ = self.keepalive_frame.set(if self.v4 {
            hp::encode_ping()
        } else {
            hp::encode_awareness(address.as_str(), &[0])
        });
        let key: Arc<str> = Arc::from(address.as_str());
        let policy = ConnPolicy::new(&shared.access.rates, &grant, doc_tx);
        let session = Access::register(&shared, conn, &room_name, &grant, control.clone());
        shared.hocuspocus.add(
            room_name.clone(),
            Listener {
                conn,
                address: key.clone(),
                outbox: self.outbox.clone(),
                control: self.control.clone(),
                document: control.clone(),
            },
        );
        let listening = Listening {
            shared: shared.clone(),
            room: room_name.clone(),
            conn,
        };
        let forwarder = tokio::spawn(
            forward(Forwarder {
                rx: doc_rx,
                address: key.clone(),
                prefix: address_prefix(&key),
                socket: self.outbox.clone(),
                socket_control: self.control.clone(),
                doc_control: control.clone(),
                v4: self.v4,
                expiry: Box::pin(policy.expiry()),
                room: room.clone(),
                conn,
            })
            .in_current_span(),
        );
        metrics::gauge!(m::HOCUSPOCUS_DOCUMENTS).increment(1.0);
        self.docs.insert(
            key,
            Doc::Active(Box::new(Active {
                conn,
                room,
                room_name,
                scope,
                policy,
                control,
                awaiting_step2: false,
                forwarder,
                _session: session,
                _listening: listening,
            })),
        );
        Ok(())
    }

    /// A message of an attached document.
    async fn dispatch(
        &mut self,
        address: &Address,
        message: ProviderMessage,
        frame_len: usize,
    ) -> Result<(), Close> {
        let Some(Doc::Active(doc)) = self.docs.get_mut(address.as_str()) else {
            return Ok(());
        };
        let inbound = match message {
            // SyncReply is what Hocuspocus servers send each other; they accept it from
            // anyone, and the room answers a step 1 with a step 2 only either way.
            ProviderMessage::Sync(sync) | ProviderMessage::SyncReply(sync) => {
                let is_step2 = matches!(sync, SyncMessage::Step2(_));
                match sync {
                    SyncMessage::Step1(sv) => {
                        count_in("sync_step1");
                        let sv = StateVector::decode_v1(&sv).map_err(|_| MALFORMED)?;
                        // The provider set its unsynced count to 1 as it sent this, forgetting the
                        // updates it had counted: those it queued while offline go out next.
                        doc.awaiting_step2 = true;
                        Inbound::Step1(sv)
                    }
                    SyncMessage::Step2(u) | SyncMessage::Update(u) => {
                        count_in("update");
                        let update = Update::decode_v1(&u).map_err(|_| MALFORMED)?;
                        let confirm = doc.confirm(is_step2);
                        if doc.scope == Scope::ReadOnly {
                            // As Hocuspocus: a read-only step 2 with nothing new is fine, anything
                            // else is refused. Only the counted step 2 says "saved".
                            let known = is_step2 && update.insertions(true).is_empty();
                            if !known {
                                protocol_error("read_only");
                            }
                            if !known || confirm == Confirm::Once {
                                queue(
                                    &self.outbox,
                                    &self.control,
                                    hp::encode_sync_status(address.as_str(), known),
                                );
                            }
                            return Ok(());
                        }
                        // An empty update changes nothing: dropped, unless it is to be
                        // confirmed (in order, once what is ahead of it is stored).
                        if update.is_empty() && confirm == Confirm::Never {
                            return Ok(());
                        }
                        // The room counts the update's length while it holds it; a slice of a
                        // frame padded after the message would hold more than it counts.
                        let held =
                            if u.len() + address.as_str().len() + FRAME_HEADER_SLACK < frame_len {
                                Bytes::copy_from_slice(&u)
                            } else {
                                u
                            };
                        Inbound::Update(update, held, confirm)
                    }
                }
            }
            ProviderMessage::Awareness(update) => {
                count_in("awareness");
                Inbound::Awareness(update.entries)
            }
            ProviderMessage::QueryAwareness => {
                count_in("query_awareness");
                Inbound::QueryAwareness
            }
            ProviderMessage::Stateless(payload) => {
                count_in("stateless");
                let n = self
                    .shared
                    .hocuspocus
                    .relay(&doc.room_name, doc.conn, &payload);
                // And to the room's documents on the other processes, fire and forget like
                // awareness: a bus that is down loses it.
                if let Some(bus) = &self.shared.bus {
                    bus.publish(&doc.room_name, &Outgoing::Stateless(&payload));
                }
                debug!(address = %address, relayed = n, "stateless");
                return Ok(());
            }
            ProviderMessage::Token { .. } | ProviderMessage::Close => return Ok(()),
        };
        let Some(inbound) = doc.policy.admit(inbound) else {
            return Ok(());
        };
        let send = doc.room.send_inbound(doc.conn, inbound);
        // Raced against closes, as the y-websocket reader does: a close decided while the
        // room's inbox is full drops the message.
        tokio::select! {
            biased;
            _ = self.control.closed() => {}
            _ = doc.control.closed() => {}
            sent = send => if sent.is_err() {
                doc.control.close(Close::GOING_AWAY);
            },
        }
        Ok(())
    }

    /// Leaves the room of `key` (if attached) and forgets it, or keeps it detached.
    async fn detach(&mut self, key: &str, keep: bool) {
        let entry = if keep {
            self.docs
                .get_mut(key)
                .map(|d| std::mem::replace(d, Doc::Detached))
        } else {
            self.docs.remove(key)
        };
        if let Some(Doc::Active(doc)) = entry {
            leave(*doc).await;
        }
    }

    async fn detach_all(&mut self) {
        for (_, doc) in self.docs.drain() {
            if let Doc::Active(doc) = doc {
                leave(*doc).await;
            }
        }
    }

    /// Queues a frame of the reader's (auth answers, sync status); a full outbox closes the
    /// socket as slow.
    fn send(&self, frame: Bytes) {
        queue(&self.outbox, &self.control, frame);
    }
}

/// [`Socket::send`], for callers that hold another field of the socket borrowed.
fn queue(outbox: &Outbox, control: &CloseSignal, frame: Bytes) {
    if let Err(TrySendError::Full(_)) = outbox.try_send(frame) {
        control.close(Close::SLOW_CONSUMER);
    }
}

async fn leave(doc: Active) {
    let _ = doc.room.tx.send(RoomCmd::Leave { conn: doc.conn }).await;
    // The forwarder has nothing left to do once the membership is gone; it must not outlive
    // the socket holding a clone of its outbox.
    doc.forwarder.abort();
    metrics::gauge!(m::HOCUSPOCUS_DOCUMENTS).decrement(1.0);
    debug!(conn = doc.conn, "document detached");
}
