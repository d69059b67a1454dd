//! The room actor: the only owner of a room's document, awareness and members.
//!
//! A room drains its inbox in batches. Per batch: apply every update to the document in one
//! transaction, commit the resulting update to the store (strict durability), then broadcast it
//! and answer everything else in arrival order. So a client never receives an edit that is not
//! yet durable, and the cost of a commit is paid once per batch, not once per update.
//!
//! Beside the document a room keeps its CRDT values ([`plait_crdt::Values`]) and the HLC that
//! stamps them, whose replica id is the server's instance id. Value ops (from opted-in
//! connections and from the HTTP API) are applied per batch too, stored with one
//! `put_values` before their states go out (strict durability; relaxed stores them on the
//! flush timer), and their states are sent only to members that opted in.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plait_crdt::{
    encode_state, Action, ApplyError, ClientMessage, Hlc, Kind, Op, ReplicaId, ServerMessage,
    SystemClock, Value, Values, PLAIT_CRDT_MESSAGE,
};
use plait_protocol::awareness::encode_entries;
use plait_protocol::message::{
    encode_awareness, encode_sync_step1, encode_sync_step2, encode_update,
};
use plait_protocol::message::{encode_custom, encode_permission_denied};
use plait_protocol::AwarenessEntry;
use plait_store::{Snapshot, SnapshotKind, StoredRoom, StoredValue};
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn, Instrument};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update, WriteTxn};

use crate::awareness::Awareness;
use crate::config::Durability;
pub(crate) use crate::conn::{Close, ConnId};
use crate::metrics as m;
use crate::outbox::{CloseSignal, Outbox};
use crate::Shared;

/// Commands a room's inbox accepts before it drains them in one batch.
const MAX_BATCH: usize = 512;
/// A room's log never holds more than this many times `--compact-after-updates` rows.
const MAX_LOG_ROWS_FACTOR: u64 = 16;
/// Capacity of the batch buffer a room keeps between batches.
const BATCH_KEPT: usize = 32;
/// Bound on the inbox. Connection readers `send().await` into it, so a full inbox pushes back
/// on their sockets (TCP flow control reaches the clients) instead of growing memory.
pub(crate) const INBOX_CAPACITY: usize = 1024;
/// Uncommitted update bytes a room holds while its store is failing; past this, writers are
/// closed with 1013 (try again later) and keep their edits for the next connection.
/// (`--max-uncommitted-bytes`, in `RoomConfig`.)
///
/// How long one commit may take before it counts as failed. A room does not answer anyone
/// while it waits, so a store that hangs must not hang the room: reads and syncs go on
/// between retries.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a room checks awareness expiry, idleness and retries.
const TICK: Duration = Duration::from_millis(500);

/// The permission-denied reason sent for an update refused by `--max-document-bytes`.
const DOCUMENT_FULL: &str = "document size limit reached";

/// How a room reaches one member connection.
#[derive(Debug)]
pub(crate) struct MemberLink {
    /// Frames for the connection's writer task. The room sends with `try_send`: a full outbox
    /// marks a slow consumer, which is closed rather than waited for. Dropping it (on leave or
    /// close) ends the writer once it has drained.
    pub(crate) outbox: Outbox,
    /// Capacity 1, shared with the connection's reader: the first close wins, later ones are
    /// dropped by `try_send`.
    pub(crate) control: CloseSignal,
    /// Whether the connection opted in to CRDT values (`?plait-values=1`); only those are
    /// ever sent a [`PLAIT_CRDT_MESSAGE`] frame.
    pub(crate) values: bool,
    /// Whether the connection is told, with a [`crate::conn::stored_marker`] frame, each time
    /// one of its updates is stored (with strict durability; applied, with relaxed). A
    /// y-websocket client needs no such word: the echo of its update is its confirmation. The
    /// Hocuspocus provider's sync status is built from it.
    pub(crate) acks: bool,
}

/// What a connection forwards to its room, already decoded and validated.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// Sync step 1: answer with what the client lacks.
    Step1(StateVector),
    /// Sync step 2 or update (the same thing to the server): decoded, and the bytes as sent.
    Update(Update, Bytes),
    /// Awareness entries the client published.
    Awareness(Vec<AwarenessEntry>),
    /// Answer with every awareness state.
    QueryAwareness,
    /// A CRDT values message from a connection that opted in.
    Value(ClientMessage),
}

mod admin;
mod cluster;
mod ledger;
mod stored;

pub(crate) use admin::{AdminOp, AdminReply, AdminResult, RestoreTarget};

/// The connection id of changes made through the admin API (no connection has it).
const ADMIN_CONN: ConnId = 0;

/// The closed set of messages a room accepts.
#[derive(Debug)]
pub(crate) enum RoomCmd {
    /// A connection joins; `joined` fires once its first frames are queued. If the room is
    /// unloading it drops `joined` instead, and the connection asks the hub again.
    Join {
        conn: ConnId,
        link: MemberLink,
        joined: oneshot::Sender<()>,
    },
    /// A message from a member.
    Inbound { conn: ConnId, msg: Inbound },
    /// A member's socket closed.
    Leave { conn: ConnId },
    /// The hub needs room: unload now if idle.
    Evict,
    /// An administrative request (export, inspect, import, restore, compact).
    Admin {
        op: AdminOp,
        reply: oneshot::Sender<AdminResult>,
    },
    /// A CRDT values request from the HTTP API; answered once any change is stored.
    Values {
        req: ValuesRequest,
        reply: oneshot::Sender<Result<ValuesReply, ValuesError>>,
    },
}

impl RoomCmd {
    /// Whether answering this shows the document's content (not just its state vector).
    fn reads_document(&self) -> bool {
        matches!(
            self,
            RoomCmd::Inbound {
                msg: Inbound::Step1(_),
                ..
            } | RoomCmd::Admin { .. }
        )
    }
}

/// What the HTTP API asks of a room's CRDT values.
#[derive(Debug)]
pub(crate) enum ValuesRequest {
    /// Every value.
    Get,
    /// Adds `add` to the counter `name`. `kind` None means the existing counter's kind, or a
    /// G-Counter for a new name.
    AddToCounter {
        name: String,
        add: i64,
        kind: Option<Kind>,
    },
    /// Writes the register `name`, stamped by the room's clock.
    SetRegister { name: String, value: Json },
}

/// A room's answer to a [`ValuesRequest`]: (name, kind, current value) triples.
#[derive(Debug)]
pub(crate) enum ValuesReply {
    /// Every value, by name.
    All(Vec<(String, Kind, Json)>),
    /// The changed value, after the change.
    One(String, Kind, Json),
}

/// Why a [`ValuesRequest`] was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValuesError {
    /// The op broke a rule of the values (kind, bounds, overflow, clock).
    #[error(transparent)]
    Refused(#[from] ApplyError),
    /// A negative add to a G-Counter.
    #[error("{name:?} is a gcounter, which only grows: add must be 0 or more (use kind \"pncounter\" for a counter that goes down)")]
    NegativeGCounter { name: String },
    /// The store did not commit the change (strict durability); it was undone.
    #[error("storage unavailable: try again later")]
    StoreUnavailable,
    /// The room could not be loaded (room cap, shutdown, or a store failure while loading).
    #[error("room unavailable: try again later")]
    RoomUnavailable,
}

/// Who asked for a value op, and so who hears how it went.
#[derive(Debug)]
enum ValueSource {
    /// A member connection: refusals go back to it alone as a rejected message.
    Conn(ConnId),
    /// The HTTP API, waiting for the outcome.
    Api(oneshot::Sender<Result<ValuesReply, ValuesError>>),
}

/// The replica id that stamps register writes made at a connection's own clock: derived from
/// the server's instance id and the connection id (a splitmix64 finalizer), never chosen by
/// the client.
pub(crate) fn conn_replica(instance_id: u64, conn: ConnId) -> ReplicaId {
    let mut z = instance_id ^ conn.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    ReplicaId(z ^ (z >> 31))
}

/// Frames a values message for the socket: `varuint 100 ‖ varbytes payload`.
fn values_frame(message: &ServerMessage) -> Bytes {
    encode_custom(PLAIT_CRDT_MESSAGE, &message.encode())
}

/// A cheap handle to a room; cloned into every connection of the room.
#[derive(Debug, Clone)]
pub(crate) struct RoomHandle {
    /// Unique per loaded instance, so an unloading room removes only its own registry entry.
    pub(crate) id: u64,
    pub(crate) tx: mpsc::Sender<RoomCmd>,
    /// Members right now, or [`LOADING`]; read by the hub to find idle rooms to evict.
    pub(crate) n_members: Arc<AtomicUsize>,
}

/// `n_members` of a room still loading: the joins that made it load are queued, not counted,
/// so it must not look idle to the hub.
pub(crate) const LOADING: usize = usize::MAX;

/// What applying one batch produced.
struct Applied {
    /// The transaction's own encoding of what it integrated (`00 00` when nothing).
    changes: Vec<u8>,
    /// The updates that applied, with their senders, as they were sent.
    applied: Vec<(ConnId, Bytes)>,
    /// Senders whose update yrs refused.
    failed: Vec<ConnId>,
    /// Whether pending updates over the limit were dropped.
    pruned: bool,
    /// Whether updates with missing dependencies were pending before or after the batch.
    involved_pending: bool,
}

#[derive(Debug)]
struct Member {
    link: MemberLink,
}

/// What a store write returns: the seq of its last update.
type CommitOutput = Result<u64, plait_store::Error>;

/// The store write of the ledger's batch under way, while the room applies the next batch.
/// Its updates are applied to the document; its frames go out only when it succeeds.
struct InFlight {
    write: std::pin::Pin<Box<dyn std::future::Future<Output = CommitOutput> + Send>>,
    started: Instant,
}

/// A room's state, owned by its task.
pub(crate) struct Room {
    name: Arc<str>,
    id: u64,
    shared: Arc<Shared>,
    doc: Doc,
    awareness: Awareness,
    members: HashMap<ConnId, Member>,
    n_members: Arc<AtomicUsize>,
    /// The sequence number of the newest committed update.
    last_seq: u64,
    /// Update log entries and bytes since the last snapshot, to decide compaction.
    log_updates: u64,
    log_bytes: u64,
    /// The document's encoded size for `--max-document-bytes`: exact after a load of a bare
    /// snapshot or a compaction, an upper bound once updates were added on top.
    doc_bytes: usize,
    doc_bytes_exact: bool,
    /// Size of the newest compaction snapshot, for [`Room::compaction_due`].
    snapshot_bytes: usize,
    /// Updates applied to the document but not yet stored, and the frames that wait for them:
    /// the room's one durability decision (see [`ledger`]).
    ledger: ledger::Ledger,
    /// The store write of the ledger's batch under way, if any: the room goes on applying the
    /// next batch while the store writes this one.
    inflight: Option<InFlight>,
    /// Sync step 1s that arrived while the document held edits the store did not (strict
    /// durability, store failing): answered, newest per connection, once everything is stored.
    deferred_syncs: Vec<(ConnId, StateVector)>,
    /// Others committed seqs this room's document lacks (a gap after its own commit, and the
    /// catch-up failed): `last_seq` stays below them, and the room catches up on its tick.
    behind: bool,
    last_flush: Instant,
    idle_since: Option<Instant>,
    /// Awareness entries to send at the end of the current batch or tick.
    awareness_out: Vec<AwarenessEntry>,
    /// When the last history snapshot was written (or the room loaded), and whether a commit
    /// happened since.
    last_history: Instant,
    changed_since_history: bool,
    /// The room's CRDT values; touched only by this task.
    values: Values,
    /// Stamps register writes; its replica id is the server's instance id, and its
    /// high-water mark is restored from the stored values on load.
    hlc: Hlc<SystemClock>,
    /// Names of values changed in memory but not yet stored (relaxed durability, or a store
    /// failure while unloading); written by [`Room::store_values`].
    dirty_values: BTreeSet<String>,
    /// The room's side of the cluster bus (`--redis`); `None` for a single process.
    cluster: Option<cluster::Cluster>,
    /// yrs panicked on an update from another process: reload from the store on the tick.
    needs_reload: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("members", &self.members.len())
            .finish_non_exhaustive()
    }
}

/// Starts the task of a room and returns its handle. The task loads the room from the store
/// before it reads its inbox, so nothing is answered from an empty document.
pub(crate) fn spawn(name: Arc<str>, id: u64, shared: Arc<Shared>) -> RoomHandle {
    let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
    let n_members = Arc::new(AtomicUsize::new(LOADING));
    let handle = RoomHandle {
        id,
        tx,
        n_members: n_members.clone(),
    };
    let span = tracing::info_span!("room", room = %name);
    let tracker = shared.tracker.clone();
    tracker.spawn(run(name, id, shared, rx, n_members).instrument(span));
    handle
}

async fn run(
    name: Arc<str>,
    id: u64,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<RoomCmd>,
    n_members: Arc<AtomicUsize>,
) {
    let started = Instant::now();
    // Subscribe before loading, so nothing committed elsewhere falls between the two: bus
    // messages queue until the room reads them, and those the load covered are skipped by seq.
    let bus_sub = match &shared.bus {
        Some(bus) => Some(bus.subscribe(&name, id).await),
        None => None,
    };
    let loaded = match shared.store.load_room(&name).await {
        Ok(stored) => shared
            .store
            .load_values(&name)
            .await
            .map(|values| (stored, values)),
        Err(e) => Err(e),
    };
    let (stored, stored_values) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            error!(error = %e, "could not load room; refusing its connections");
            shared.set_store_healthy(false);
            shared.hub.remove(&name, id);
            rx.close();
            while let Some(cmd) = rx.recv().await {
                if let RoomCmd::Join { link, .. } = cmd {
                    link.control.close(Close::STORE_UNAVAILABLE);
                }
            }
            return;
        }
    };
    let mut room = Room::new(name, id, shared, n_members.clone());
    n_members.store(0, Ordering::Relaxed);
    room.load(stored);
    room.load_values(stored_values);
    room.cluster = bus_sub.map(cluster::Cluster::new);
    room.bus_loaded();
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "room loaded"
    );
    metrics::gauge!(m::ROOMS_LOADED).increment(1.0);
    room.serve(&mut rx).await;
    metrics::gauge!(m::ROOMS_LOADED).decrement(1.0);
}

impl Room {
    fn new(name: Arc<str>, id: u64, shared: Arc<Shared>, n_members: Arc<AtomicUsize>) -> Self {
        Room {
            name,
            id,
            doc: Doc::new(),
            awareness: Awareness::default(),
            members: HashMap::new(),
            n_members,
            last_seq: 0,
            log_updates: 0,
            log_bytes: 0,
            doc_bytes: 0,
            doc_bytes_exact: true,
            snapshot_bytes: 0,
            ledger: ledger::Ledger::new(shared.room.durability == Durability::Strict),
            inflight: None,
            deferred_syncs: Vec::new(),
            behind: false,
            last_flush: Instant::now(),
            idle_since: Some(Instant::now()),
            awareness_out: Vec::new(),
            last_history: Instant::now(),
            changed_since_history: false,
            values: Values::default(),
            hlc: Hlc::new(ReplicaId(shared.instance_id), SystemClock),
            dirty_values: BTreeSet::new(),
            cluster: None,
            needs_reload: false,
            shared,
        }
    }

    /// Rebuilds the document from a snapshot and the log after it. A row that does not decode
    /// is skipped and reported, never allowed to stop the room from loading.
    fn load(&mut self, stored: StoredRoom) {
        self.doc = Doc::new();
        let mut txn = self.doc.transact_mut();
        let snapshot = stored.snapshot.as_ref().map(|s| (0u64, &s.data));
        let log = stored.updates.iter().map(|u| (u.seq, &u.data));
        for (seq, data) in snapshot.into_iter().chain(log) {
            let applied = Update::decode_v1(data)
                .map_err(|e| e.to_string())
                .and_then(|u| {
                    catch_unwind(AssertUnwindSafe(|| txn.apply_update(u)))
                        .map_err(|_| "panic while applying".to_owned())?
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = applied {
                error!(seq, error = %e, "skipping stored update that does not apply (seq 0 is the snapshot)");
                metrics::counter!(m::STORED_UPDATES_SKIPPED).increment(1);
            }
        }
        drop(txn);
        self.last_seq = stored.last_seq;
        self.log_updates = stored.updates.len() as u64;
        self.log_bytes = stored.updates.iter().map(|u| u.data.len() as u64).sum();
        self.doc_bytes =
            stored.snapshot.as_ref().map_or(0, |s| s.data.len()) + self.log_bytes as usize;
        self.doc_bytes_exact = stored.updates.is_empty();
        self.snapshot_bytes = stored.snapshot.as_ref().map_or(0, |s| s.data.len());
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<RoomCmd>) {
        let mut tick = tokio::time::interval(TICK.min(self.shared.room.flush_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shared.shutdown.clone();
        // Grown by bursts, released after them: a thousand quiet rooms should not each keep
        // room for MAX_BATCH commands.
        let mut batch = Vec::new();
        let mut bus_rx = self.cluster.as_mut().and_then(cluster::Cluster::take_rx);
        loop {
            // While a commit is under way, apply about one more full batch, no more: the
            // frames released together when it ends must fit in the members' outboxes
            // (`--outbox-frames`) next to what they already hold. (Smaller batches cost more:
            // capping them at 128 while pipelining took the automerge-paper ingest from about
            // 140,000 to 90,000 edits/s.)
            let take = match &self.inflight {
                Some(_) if self.ledger.n_pending() >= MAX_BATCH / 2 => 0,
                _ => MAX_BATCH,
            };
            tokio::select! {
                Some(event) = cluster::recv(&mut bus_rx) => self.on_bus(event).await,
                output = in_flight(&mut self.inflight), if self.inflight.is_some() => {
                    self.commit_done(output).await;
                }
                n = rx.recv_many(&mut batch, take), if take > 0 => {
                    if n == 0 {
                        break;
                    }
                    let evict = self.handle_batch(&mut batch).await;
                    if batch.capacity() > BATCH_KEPT {
                        batch = Vec::new();
                    }
                    if evict && self.try_unload(rx).await {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if self.on_tick().await && self.try_unload(rx).await {
                        return;
                    }
                }
                () = shutdown.cancelled() => {
                    self.shut_down().await;
                    return;
                }
            }
        }
    }

    /// Processes one batch; returns whether an eviction was asked for.
    async fn handle_batch(&mut self, batch: &mut Vec<RoomCmd>) -> bool {
        let mut updates = Vec::new();
        let mut value_ops = Vec::new();
        let mut rest = Vec::with_capacity(batch.len());
        for cmd in batch.drain(..) {
            match cmd {
                RoomCmd::Inbound {
                    conn,
                    msg: Inbound::Update(u, raw),
                } => updates.push((conn, u, raw)),
                RoomCmd::Inbound {
                    conn,
                    msg: Inbound::Value(ClientMessage::Op(op)),
                } => value_ops.push((ValueSource::Conn(conn), op)),
                RoomCmd::Values { req, reply } => match self.values_request(req) {
                    Ok(op) => value_ops.push((ValueSource::Api(reply), op)),
                    Err(answer) => {
                        let _ = reply.send(answer);
                    }
                },
                other => rest.push(other),
            }
        }
        if !updates.is_empty() {
            self.apply_updates(updates).await;
        }
        if !value_ops.is_empty() {
            self.apply_value_ops(value_ops).await;
        }
        // Strict durability: nobody may read an update before it is committed, so a sync
        // step 2 or an export waits for the commit under way (and what was applied since). If
        // the store is failing, they wait longer (see `inbound` and `admin`).
        if self.strict() && !self.ledger.is_clean() && rest.iter().any(RoomCmd::reads_document) {
            self.commit().await;
        }
        let mut evict = false;
        for cmd in rest {
            match cmd {
                RoomCmd::Join { conn, link, joined } => self.join(conn, link, joined),
                RoomCmd::Inbound { conn, msg } => self.inbound(conn, msg),
                RoomCmd::Leave { conn } => self.leave(conn),
                RoomCmd::Evict => evict = true,
                RoomCmd::Admin { op, reply } => self.admin(op, reply).await,
                RoomCmd::Values { .. } => unreachable!("values requests are handled per batch"),
            }
        }
        self.flush_awareness();
        evict
    }

    /// Applies a batch of updates in one transaction, then commits and broadcasts them.
    ///
    /// What is stored and relayed are the bytes the clients sent, not yrs's re-encoding:
    /// yrs keeps JSON objects in hash maps, so its encoding loses their key order, which
    /// clients can observe. Only when updates with missing dependencies are involved is the
    /// transaction's own encoding used, since it holds what was integrated from earlier
    /// batches' pending updates.
    async fn apply_updates(&mut self, mut updates: Vec<(ConnId, Update, Bytes)>) {
        // A connection that was closed (kicked, malformed input, slow) is no member: what its
        // reader still forwarded during the close grace is not applied.
        updates.retain(|(conn, ..)| *conn == ADMIN_CONN || self.members.contains_key(conn));
        let mut senders: Vec<ConnId> = updates.iter().map(|(c, ..)| *c).collect();
        senders.sort_unstable();
        senders.dedup();
        if self.ledger.held_bytes() > self.shared.room.max_uncommitted_bytes {
            // The store has been failing for a while: apply nothing more, and let the writers
            // keep their edits until they reconnect to a healthy server.
            for conn in senders {
                self.close(conn, Close::STORE_UNAVAILABLE);
            }
            return;
        }
        let updates = self.admit_updates(updates);
        if updates.is_empty() {
            return;
        }
        let max_pending = self.shared.room.max_pending_bytes;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            let has_pending = |t: &yrs::TransactionMut<'_>| {
                t.store().pending_update().is_some() || t.store().pending_ds().is_some()
            };
            let pending_before = has_pending(&txn);
            let mut applied = Vec::with_capacity(updates.len());
            let mut failed = Vec::new();
            for (conn, update, raw) in updates {
                match txn.apply_update(update) {
                    Ok(()) => applied.push((conn, raw)),
                    Err(e) => {
                        debug!(conn, error = %e, "update did not apply");
                        failed.push(conn);
                    }
                }
            }
            let pending_bytes = txn
                .store()
                .pending_update()
                .map_or(0, |p| p.update.encode_v1().len());
            let pruned = pending_bytes > max_pending;
            if pruned {
                txn.prune_pending();
            }
            let involved_pending = pending_before || has_pending(&txn) || pruned;
            Applied {
                changes: txn.encode_update_v1(),
                applied,
                failed,
                pruned,
                involved_pending,
            }
        }));
        let Ok(outcome) = outcome else {
            // yrs panicked half-way through a transaction; the document can no longer be
            // trusted. Rebuild it from what is durable, and close whoever sent the batch.
            error!("applying updates panicked; reloading the room from the store");
            metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "apply_panic").increment(1);
            self.reload().await;
            for conn in senders {
                self.close(conn, Close::BAD_UPDATE);
            }
            return;
        };
        for conn in outcome.failed {
            metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "apply_failed").increment(1);
            self.close(conn, Close::BAD_UPDATE);
        }
        if outcome.pruned {
            // Updates whose dependencies never arrived: drop them and ask their senders for a
            // fresh sync, which sends what they have in an order that applies.
            warn!("pending updates over the limit were dropped; asking senders to resync");
            metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "pending_overflow").increment(1);
            let sv = self.doc.transact().state_vector().encode_v1();
            let step1 = encode_sync_step1(&sv);
            for conn in &senders {
                self.send(*conn, step1.clone());
            }
        }
        // Nothing integrated (known content, or only pending): nothing to store or relay.
        if outcome.changes.len() <= 2 {
            return;
        }
        let entries: Vec<(Bytes, Vec<ConnId>)> = if outcome.involved_pending {
            let mut applied: Vec<ConnId> = outcome.applied.iter().map(|(c, _)| *c).collect();
            applied.dedup();
            vec![(Bytes::from(outcome.changes), applied)]
        } else {
            let applied = outcome.applied.into_iter();
            applied.map(|(conn, raw)| (raw, vec![conn])).collect()
        };
        for (update, senders) in entries {
            self.record(update, senders);
        }
        if self.strict() {
            // Pipelined: the room goes on with the next batch while the store writes this
            // one; the frames wait in the ledger.
            self.start_commit();
        } else if self.ledger.held_bytes() > self.shared.room.max_uncommitted_bytes / 4 {
            self.commit().await;
        }
    }

    fn strict(&self) -> bool {
        self.shared.room.durability == Durability::Strict
    }

    /// Records an update applied to the document in the ledger, and sends its frame to every
    /// member, the sender included, when the ledger allows: at once (relaxed), or once it is
    /// stored (strict). The sender's echo is its confirmation, so it means "stored" exactly
    /// when durability is strict.
    fn record(&mut self, update: Bytes, senders: Vec<ConnId>) {
        let frame = encode_update(&update);
        self.doc_bytes += update.len();
        self.doc_bytes_exact = false;
        if let Some((frame, senders)) = self.ledger.record(update, frame, senders) {
            self.broadcast(&frame, None);
            self.ack(&senders);
        }
    }

    /// Tells the senders that asked for it that their updates are stored.
    fn ack(&mut self, senders: &[ConnId]) {
        for conn in senders {
            if self.members.get(conn).is_some_and(|m| m.link.acks) {
                self.send(*conn, crate::conn::stored_marker());
            }
        }
    }

    /// Drops the updates a room must refuse before yrs sees them, and tells their senders:
    /// - an update that writes new structs under a client id whose awareness another live
    ///   connection holds (squatting it would make that user's next edits look applied, so
    ///   they would be dropped as duplicates): the sender is closed with 1013;
    /// - an update that would grow the document past `--max-document-bytes`: the sender gets
    ///   a permission-denied message and stays connected.
    fn admit_updates(
        &mut self,
        updates: Vec<(ConnId, Update, Bytes)>,
    ) -> Vec<(ConnId, Update, Bytes)> {
        let now = Instant::now();
        let max_doc = self.shared.room.max_document_bytes;
        let bind = self.shared.room.bind_client_ids;
        let mut sv: Option<StateVector> = None;
        let mut projected = self.doc_bytes;
        let mut admitted = Vec::with_capacity(updates.len());
        for (conn, update, raw) in updates {
            if bind && conn != ADMIN_CONN {
                let sv = sv.get_or_insert_with(|| self.doc.transact().state_vector());
                let insertions = update.insertions(true);
                let squatted = insertions.iter().find_map(|(client, ranges)| {
                    let end = ranges.iter().map(|r| r.end).max().unwrap_or(0);
                    let taken = end > sv.get(client)
                        && self
                            .awareness
                            .live_owner(client.get(), now)
                            .is_some_and(|owner| owner != conn);
                    taken.then_some(client.get())
                });
                if let Some(client) = squatted {
                    warn!(
                        conn,
                        client,
                        "update writes under another connection's client id; closing its sender"
                    );
                    metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "client_id_in_use")
                        .increment(1);
                    self.close(conn, Close::CLIENT_ID_IN_USE);
                    continue;
                }
            }
            if projected + raw.len() > max_doc && !self.doc_bytes_exact {
                // The estimate counts every update on top of the last snapshot; measure once
                // before refusing anything (deletions and GC may have shrunk the document).
                let exact = self
                    .doc
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default())
                    .len();
                projected = projected - self.doc_bytes + exact;
                self.doc_bytes = exact;
                self.doc_bytes_exact = true;
            }
            if projected + raw.len() > max_doc {
                debug!(
                    conn,
                    doc_bytes = projected,
                    update_bytes = raw.len(),
                    "update refused: document size limit"
                );
                metrics::counter!(m::PROTOCOL_ERRORS, "reason" => "document_too_large")
                    .increment(1);
                self.send(conn, encode_permission_denied(DOCUMENT_FULL));
                continue;
            }
            projected += raw.len();
            admitted.push((conn, update, raw));
        }
        admitted
    }

    /// Commits everything applied so far, waiting for it: the commit under way, then the
    /// rest. On success held frames are released and the log maybe compacted; returns whether
    /// nothing is left uncommitted.
    async fn commit(&mut self) -> bool {
        loop {
            if !self.settle_commit().await {
                return false;
            }
            if self.ledger.is_clean() {
                if self.compaction_due() {
                    self.compact().await;
                }
                return true;
            }
            if !self.start_commit() {
                return false;
            }
        }
    }

    /// Starts writing what the ledger holds unless a commit is under way (it starts the next
    /// one when it ends) or a failed one waits for its retry. Returns whether one is under way.
    fn start_commit(&mut self) -> bool {
        if self.inflight.is_some() {
            return true;
        }
        // While the store is failing, only the retry timer tries again; new updates are held.
        let Some(updates) = self.ledger.start(Instant::now()) else {
            return false;
        };
        let store = self.shared.store.clone();
        let name = self.name.clone();
        let write = async move {
            match tokio::time::timeout(COMMIT_TIMEOUT, store.append_updates(&name, &updates)).await
            {
                Ok(result) => result,
                Err(_) => Err(plait_store::Error::Timeout(COMMIT_TIMEOUT)),
            }
        };
        self.inflight = Some(InFlight {
            write: Box::pin(write),
            started: Instant::now(),
        });
        true
    }

    /// Waits for the commit under way, if any, and settles it; returns whether nothing
    /// failed.
    async fn settle_commit(&mut self) -> bool {
        let Some(mut inflight) = self.inflight.take() else {
            return true;
        };
        let output = inflight.write.as_mut().await;
        self.finish_commit(inflight, output).await
    }

    /// The serve loop saw the commit under way end: settle it, start the next one with what
    /// was applied meanwhile, and compact when that is due (which waits for the rest).
    async fn commit_done(&mut self, output: CommitOutput) {
        let Some(inflight) = self.inflight.take() else {
            return;
        };
        if self.finish_commit(inflight, output).await {
            // Deferred syncs wait for everything to be stored: finish the rest now rather
            // than let a steady stream of edits keep them waiting.
            if self.compaction_due() || !self.deferred_syncs.is_empty() {
                self.commit().await;
            } else {
                self.start_commit();
            }
        }
    }

    /// Settles the commit under way with its store write's outcome: on success releases its
    /// frames and publishes its updates; on failure puts them back in front of what was
    /// applied since, to be retried. Returns whether it succeeded.
    async fn finish_commit(&mut self, inflight: InFlight, result: CommitOutput) -> bool {
        m::hot()
            .commit_seconds
            .record(inflight.started.elapsed().as_secs_f64());
        self.last_flush = Instant::now();
        match result {
            Ok(seq) => {
                let done = self.ledger.committed();
                self.shared.set_store_healthy(true);
                self.changed_since_history = true;
                self.log_updates += done.updates.len() as u64;
                self.log_bytes += done.update_bytes as u64;
                for frame in &done.frames {
                    self.broadcast(frame, None);
                }
                self.ack(&done.acks);
                // Publish, and catch up if other processes committed in between (before
                // compaction trusts `last_seq`).
                self.committed_seqs(seq, &done.updates).await;
                if self.ledger.is_clean() {
                    self.answer_deferred_syncs();
                }
                true
            }
            Err(e) => {
                self.ledger.failed(Instant::now());
                warn!(error = %e, retry_in_ms = self.ledger.retry_delay().as_millis() as u64,
                    held = self.ledger.n_pending(),
                    "commit failed; holding updates and retrying");
                metrics::counter!(m::COMMIT_FAILURES).increment(1);
                self.shared.set_store_healthy(false);
                false
            }
        }
    }

    /// Answers the sync step 1s that waited for everything to be stored.
    fn answer_deferred_syncs(&mut self) {
        for (conn, sv) in std::mem::take(&mut self.deferred_syncs) {
            self.answer_sync_step1(conn, &sv);
        }
    }

    fn answer_sync_step1(&mut self, conn: ConnId, sv: &StateVector) {
        let diff = self.doc.transact().encode_state_as_update_v1(sv);
        self.send(conn, encode_sync_step2(&diff));
    }

    /// Whether the log should be merged into a snapshot now. A snapshot re-encodes the whole
    /// document, so besides `--compact-after-updates` the log must have grown to half the last
    /// snapshot's size: ingesting a long document then costs linear work, not quadratic (it
    /// was 15% of the server's CPU replaying the automerge-paper trace). The byte bound
    /// `--compact-after-bytes` applies regardless, and so does a row count of
    /// [`MAX_LOG_ROWS_FACTOR`] times `--compact-after-updates`, which bounds what a load after a
    /// crash replays when a big document receives many tiny edits.
    fn compaction_due(&self) -> bool {
        let room = &self.shared.room;
        let log = room.compact_after_updates;
        !self.behind
            && ((self.log_updates >= log
                && self.log_bytes.saturating_mul(2) >= self.snapshot_bytes as u64)
                || self.log_bytes >= room.compact_after_bytes
                || self.log_updates >= log.saturating_mul(MAX_LOG_ROWS_FACTOR))
    }

    /// Merges the log into one snapshot. The store deletes the covered log rows in the same
    /// transaction, so a crash leaves either the old log or the new snapshot.
    /// Returns the snapshot written, for a caller that wants the same state kept as a
    /// restore point without encoding the document again.
    async fn compact(&mut self) -> Option<Snapshot> {
        let snapshot = self.snapshot(SnapshotKind::Compaction);
        let up_to_seq = snapshot.up_to_seq;
        match self
            .shared
            .store
            .write_snapshot(&self.name, &snapshot)
            .await
        {
            Ok(()) => {
                debug!(
                    up_to_seq,
                    bytes = snapshot.data.len(),
                    merged = self.log_updates,
                    "compacted"
                );
                metrics::counter!(m::COMPACTIONS).increment(1);
                self.log_updates = 0;
                self.log_bytes = 0;
                self.doc_bytes = snapshot.data.len();
                self.doc_bytes_exact = true;
                self.snapshot_bytes = snapshot.data.len();
                Some(snapshot)
            }
            Err(e) => {
                warn!(error = %e, "compaction failed; the log stays as it is");
                None
            }
        }
    }

    /// The document as a snapshot covering the log up to the last committed update.
    fn snapshot(&self, kind: SnapshotKind) -> Snapshot {
        let txn = self.doc.transact();
        Snapshot {
            up_to_seq: self.last_seq,
            kind,
            data: Bytes::from(txn.encode_state_as_update_v1(&StateVector::default())),
            state_vector: Bytes::from(txn.state_vector().encode_v1()),
            created_at_ms: plait_store::now_ms(),
            values: Some(Bytes::from(crate::snapshot_file::encode_values(
                self.values.iter(),
            ))),
        }
    }

    async fn reload(&mut self) {
        // What is being written is part of what gets re-applied if the write fails.
        self.settle_commit().await;
        match self.shared.store.load_room(&self.name).await {
            Ok(stored) => self.load(stored),
            Err(e) => error!(error = %e, "reload failed; keeping an empty document until retry"),
        }
        // What was applied but not committed is re-applied; it was validated before.
        let mut txn = self.doc.transact_mut();
        for data in self.ledger.uncommitted() {
            if let Ok(u) = Update::decode_v1(data) {
                let _ = catch_unwind(AssertUnwindSafe(|| txn.apply_update(u)));
            }
        }
        drop(txn);
        // ...and written: it was applied meanwhile, and its frames wait for it.
        self.start_commit();
    }

    fn join(&mut self, conn: ConnId, link: MemberLink, joined: oneshot::Sender<()>) {
        let sv = self.doc.transact().state_vector().encode_v1();
        let _ = link.outbox.try_send(encode_sync_step1(&sv));
        let states = self.awareness.states();
        if !states.is_empty() {
            let _ = link
                .outbox
                .try_send(encode_awareness(&encode_entries(states.iter())));
        }
        let wants_values = link.values;
        self.members.insert(conn, Member { link });
        if wants_values {
            // Every current value, after sync step 1; a full outbox closes it as slow.
            let frames: Vec<Bytes> = self
                .values
                .iter()
                .map(|(name, value)| encode_custom(PLAIT_CRDT_MESSAGE, &encode_state(name, value)))
                .collect();
            for frame in frames {
                self.send(conn, frame);
                if !self.members.contains_key(&conn) {
                    // Closed as slow. Still answer the join: a dropped `joined` means "room
                    // unloading, ask again", and the connection would retry without end
                    // instead of ending with the close it was given.
                    let _ = joined.send(());
                    return;
                }
            }
        }
        self.n_members.store(self.members.len(), Ordering::Relaxed);
        self.idle_since = None;
        debug!(conn, members = self.members.len(), "joined");
        let _ = joined.send(());
    }

    fn inbound(&mut self, conn: ConnId, msg: Inbound) {
        if !self.members.contains_key(&conn) {
            return;
        }
        match msg {
            Inbound::Step1(sv) if self.strict() && !self.ledger.is_clean() => {
                // The store is failing: the document holds edits the store lacks, which must
                // not leave the room. Answer once they are stored; a newer step 1 from the same
                // connection replaces an older one.
                self.deferred_syncs.retain(|(c, _)| *c != conn);
                self.deferred_syncs.push((conn, sv));
            }
            Inbound::Step1(sv) => self.answer_sync_step1(conn, &sv),
            Inbound::Awareness(entries) => {
                let accepted = self.awareness.apply(conn, entries, Instant::now());
                self.broadcast_awareness(&accepted);
            }
            Inbound::QueryAwareness => {
                let states = self.awareness.states();
                self.send(conn, encode_awareness(&encode_entries(states.iter())));
            }
            Inbound::Update(..) | Inbound::Value(..) => {
                unreachable!("updates and value ops are applied per batch")
            }
        }
    }

    fn leave(&mut self, conn: ConnId) {
        self.deferred_syncs.retain(|(c, _)| *c != conn);
        if self.members.remove(&conn).is_some() {
            debug!(conn, members = self.members.len(), "left");
        }
        self.after_removal(conn);
    }

    fn after_removal(&mut self, conn: ConnId) {
        self.n_members.store(self.members.len(), Ordering::Relaxed);
        let removed = self.awareness.remove_conn(conn);
        self.broadcast_awareness(&removed);
        if self.members.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Queues awareness entries for [`Room::flush_awareness`], which sends them as one frame:
    /// N members changing presence in one batch cost N frames per member, not N².
    fn broadcast_awareness(&mut self, entries: &[AwarenessEntry]) {
        for e in entries {
            // A later entry for the same client supersedes an earlier one in this batch.
            self.awareness_out
                .retain(|q: &AwarenessEntry| q.client != e.client);
            self.awareness_out.push(e.clone());
        }
    }

    /// Sends the queued awareness entries to everyone, the senders included: the echo is what
    /// keeps a lone client's 30 s watchdog from firing.
    fn flush_awareness(&mut self) {
        while !self.awareness_out.is_empty() {
            let entries = std::mem::take(&mut self.awareness_out);
            self.bus_awareness(&entries);
            let frame = encode_awareness(&encode_entries(entries.iter()));
            // Closing a slow consumer below may queue its removal: loop until quiet.
            self.broadcast(&frame, None);
        }
    }

    /// Sends one frame to one member; a full outbox closes it as a slow consumer.
    fn send(&mut self, conn: ConnId, frame: Bytes) {
        let Some(member) = self.members.get(&conn) else {
            return;
        };
        let len = frame.len();
        match member.link.outbox.try_send(frame) {
            Ok(()) => {
                m::hot().messages_out.increment(1);
                m::hot().bytes_out.increment(len as u64);
            }
            Err(mpsc::error::TrySendError::Full(_)) => self.drop_slow(vec![conn]),
            Err(mpsc::error::TrySendError::Closed(_)) => self.leave(conn),
        }
    }

    /// Sends the same bytes to every member but `skip`. Members whose outbox is full are
    /// closed: an update is never skipped silently for anyone who stays connected.
    fn broadcast(&mut self, frame: &Bytes, skip: Option<ConnId>) {
        self.broadcast_where(frame, |conn, _| Some(conn) != skip);
    }

    /// As [`Room::broadcast`], to the members for which `to` holds.
    fn broadcast_where(&mut self, frame: &Bytes, to: impl Fn(ConnId, &Member) -> bool) {
        let mut slow = Vec::new();
        let mut gone = Vec::new();
        let mut sent = 0u64;
        for (conn, member) in &self.members {
            if !to(*conn, member) {
                continue;
            }
            match member.link.outbox.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => slow.push(*conn),
                Err(mpsc::error::TrySendError::Closed(_)) => gone.push(*conn),
            }
        }
        m::hot().messages_out.increment(sent);
        m::hot().bytes_out.increment(sent * frame.len() as u64);
        for conn in gone {
            self.leave(conn);
        }
        if !slow.is_empty() {
            self.drop_slow(slow);
        }
    }

    fn drop_slow(&mut self, conns: Vec<ConnId>) {
        for conn in conns {
            info!(conn, "closing slow consumer");
            metrics::counter!(m::SLOW_CONSUMER_CLOSES).increment(1);
            self.close(conn, Close::SLOW_CONSUMER);
        }
    }

    /// Removes a member and tells its connection to close with `reason`.
    fn close(&mut self, conn: ConnId, reason: Close) {
        if let Some(member) = self.members.remove(&conn) {
            member.link.control.close(reason);
            self.after_removal(conn);
        }
    }

    /// Periodic work; returns whether the room is idle long enough to unload.
    async fn on_tick(&mut self) -> bool {
        let now = Instant::now();
        let expired = self.awareness.expire(now);
        self.broadcast_awareness(&expired);
        self.bus_tick(now).await;
        self.flush_awareness();
        let retry_due = self.ledger.retry_due(now);
        let flush_due = !self.strict()
            && now.duration_since(self.last_flush) >= self.shared.room.flush_interval;
        if retry_due || (flush_due && !self.ledger.failing()) {
            // The serve loop settles it; a strict room goes on serving meanwhile.
            self.start_commit();
        }
        if !self.dirty_values.is_empty() && (retry_due || flush_due) {
            self.store_values().await;
        }
        self.history_tick(now, false, None).await;
        self.idle_since
            .is_some_and(|since| now.duration_since(since) >= self.shared.room.idle_grace)
    }

    /// Unloads the room if it is idle and flushed: leaves the registry, refuses late joins
    /// (their connections ask the hub again and load a fresh instance), and ends the task.
    async fn try_unload(&mut self, rx: &mut mpsc::Receiver<RoomCmd>) -> bool {
        if !self.members.is_empty() || !self.commit().await || !self.store_values().await {
            return false;
        }
        // The next load then reads one row instead of up to half a document of updates.
        let compacted = if self.log_updates > 0 {
            self.compact().await
        } else {
            None
        };
        // The state a room is left in is a restore point too (the same encoding, if any).
        self.history_tick(Instant::now(), true, compacted).await;
        self.shared.hub.remove(&self.name, self.id);
        rx.close();
        while let Some(cmd) = rx.recv().await {
            // Dropping a Join's `joined` sender tells the connection to retry elsewhere.
            drop(cmd);
        }
        info!("room unloaded");
        true
    }

    async fn shut_down(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(self.shared.shutdown_timeout_ms);
        while !(self.commit().await && self.store_values().await) {
            if Instant::now() >= deadline {
                error!(
                    lost = self.ledger.n_pending(),
                    "shutdown deadline passed with uncommitted updates; their senders still hold them"
                );
                break;
            }
            tokio::time::sleep(self.ledger.retry_delay()).await;
        }
        // Other processes keep these clients' cursors until told they left (30 s otherwise).
        let mut removed = Vec::new();
        for (conn, member) in self.members.drain() {
            member.link.control.close(Close::GOING_AWAY);
            removed.extend(self.awareness.remove_conn(conn));
        }
        self.bus_awareness(&removed);
        // A restart then loads one row per room (the cold sync step 2 of a big document).
        if self.ledger.is_clean() && self.log_updates > 0 {
            self.compact().await;
        }
        self.n_members.store(0, Ordering::Relaxed);
        self.shared.hub.remove(&self.name, self.id);
        info!("room flushed and closed for shutdown");
    }
}

// === impl Room: CRDT values ===

impl Room {
    /// Merges the stored values and restores the clock's high-water mark from them, so new
    /// timestamps are greater than every stored one. A row that does not decode is skipped and
    /// reported, never allowed to stop the room from loading.
    fn load_values(&mut self, stored: Vec<StoredValue>) {
        for row in stored {
            let merged = Value::decode(&row.state)
                .map_err(|e| e.to_string())
                .and_then(|value| {
                    if value.kind().as_str() != row.kind {
                        return Err(format!(
                            "stored as {} but holds a {}",
                            row.kind,
                            value.kind()
                        ));
                    }
                    let update = plait_crdt::Update {
                        name: row.name.clone(),
                        value,
                    };
                    self.values.merge(&update).map_err(|e| e.to_string())
                });
            if let Err(e) = merged {
                error!(name = %row.name, error = %e, "skipping stored value that does not load");
                metrics::counter!(m::STORED_UPDATES_SKIPPED).increment(1);
            }
        }
        if let Some(high_water) = self.values.max_timestamp() {
            let fresh = Hlc::new(ReplicaId(self.shared.instance_id), SystemClock);
            self.hlc = std::mem::replace(&mut self.hlc, fresh).with_high_water(high_water);
        }
    }

    /// Turns an HTTP API request into the op to apply, or `Err` with the answer to give now.
    fn values_request(&self, req: ValuesRequest) -> Result<Op, Result<ValuesReply, ValuesError>> {
        match req {
            ValuesRequest::Get => Err(Ok(ValuesReply::All(
                self.values
                    .iter()
                    .map(|(name, value)| (name.to_owned(), value.kind(), current(value)))
                    .collect(),
            ))),
            ValuesRequest::AddToCounter { name, add, kind } => {
                let existing = self.values.get(&name).map(Value::kind);
                let kind = kind
                    .or(existing.filter(|k| *k == Kind::PnCounter))
                    .unwrap_or(Kind::GCounter);
                let action = match kind {
                    Kind::PnCounter => Action::Add(add),
                    _ if add < 0 => return Err(Err(ValuesError::NegativeGCounter { name })),
                    _ => Action::Increment(add.unsigned_abs()),
                };
                Ok(Op { name, action })
            }
            ValuesRequest::SetRegister { name, value } => Ok(Op {
                name,
                action: Action::Set(value),
            }),
        }
    }

    /// Applies a batch of value ops, stores the changed values (strict durability: before
    /// anyone hears of them, and a failed store undoes the whole batch), then sends their
    /// states to the members that opted in and answers the HTTP API. Refusals go back to
    /// their sender alone.
    async fn apply_value_ops(&mut self, ops: Vec<(ValueSource, Op)>) {
        let mut before: BTreeMap<String, Option<Value>> = BTreeMap::new();
        let mut frames = Vec::new();
        let mut done = Vec::new();
        for (source, op) in ops {
            let writer = match &source {
                ValueSource::Conn(conn) => {
                    if !self.members.get(conn).is_some_and(|m| m.link.values) {
                        continue;
                    }
                    conn_replica(self.shared.instance_id, *conn)
                }
                ValueSource::Api(_) => self.hlc.replica(),
            };
            if !before.contains_key(&op.name) {
                before.insert(op.name.clone(), self.values.get(&op.name).cloned());
            }
            match self.values.apply_from(&op, &mut self.hlc, writer) {
                Ok(update) => {
                    self.dirty_values.insert(op.name.clone());
                    frames.push(values_frame(&ServerMessage::State(update)));
                    done.push((source, op.name));
                }
                Err(e) => {
                    debug!(name = %op.name, error = %e, "value op refused");
                    self.answer_value_op(source, &op.name, Err(e.into()));
                }
            }
        }
        if done.is_empty() {
            return;
        }
        if self.shared.room.durability == Durability::Strict && !self.store_values().await {
            for (name, value) in before {
                self.values.restore(&name, value);
                self.dirty_values.remove(&name);
            }
            for (source, name) in done {
                self.answer_value_op(source, &name, Err(ValuesError::StoreUnavailable));
            }
            return;
        }
        for frame in &frames {
            self.broadcast_where(frame, |_, member| member.link.values);
        }
        self.bus_values(done.iter().map(|(_, name)| name));
        for (source, name) in done {
            self.answer_value_op(source, &name, Ok(()));
        }
    }

    /// Tells the source of an op how it went: the HTTP API gets the value or the error; a
    /// connection only hears of a refusal (its change reaches it as a state, like everyone's).
    fn answer_value_op(
        &mut self,
        source: ValueSource,
        name: &str,
        outcome: Result<(), ValuesError>,
    ) {
        match (source, outcome) {
            (ValueSource::Api(reply), Ok(())) => {
                let answer = match self.values.get(name) {
                    Some(v) => Ok(ValuesReply::One(name.to_owned(), v.kind(), current(v))),
                    None => Err(ValuesError::StoreUnavailable),
                };
                let _ = reply.send(answer);
            }
            (ValueSource::Api(reply), Err(e)) => {
                let _ = reply.send(Err(e));
            }
            (ValueSource::Conn(_), Ok(())) => {}
            (ValueSource::Conn(conn), Err(e)) => {
                let rejected = ServerMessage::Rejected {
                    name: name.to_owned(),
                    reason: e.to_string(),
                };
                self.send(conn, values_frame(&rejected));
            }
        }
    }

    /// Stores the full state of every changed value in one `put_values`, which merges it with
    /// what is stored (another process may have stored the same value meanwhile); returns
    /// whether nothing is left unstored.
    async fn store_values(&mut self) -> bool {
        if self.dirty_values.is_empty() {
            return true;
        }
        let rows: Vec<StoredValue> = self
            .dirty_values
            .iter()
            .filter_map(|name| {
                self.values.get(name).map(|v| StoredValue {
                    name: name.clone(),
                    kind: v.kind().as_str().to_owned(),
                    state: Bytes::from(v.encode()),
                })
            })
            .collect();
        let started = Instant::now();
        let result = self
            .shared
            .store
            .put_values(&self.name, &rows, &crate::stored_values::merge_stored)
            .await;
        m::hot()
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(stored) => {
                self.dirty_values.clear();
                self.shared.set_store_healthy(true);
                self.changed_since_history = true;
                // What is stored now may hold other processes' changes too.
                self.adopt_stored(stored);
                true
            }
            Err(e) => {
                warn!(error = %e, n_values = rows.len(), "storing values failed");
                metrics::counter!(m::COMMIT_FAILURES).increment(1);
                self.shared.set_store_healthy(false);
                false
            }
        }
    }
}

/// Waits for the commit under way; the serve loop polls it only when there is one.
async fn in_flight(inflight: &mut Option<InFlight>) -> CommitOutput {
    match inflight {
        Some(inflight) => inflight.write.as_mut().await,
        None => std::future::pending().await,
    }
}

/// A value's current JSON (a counter whose sum does not fit reads as null).
fn current(value: &Value) -> Json {
    value.current().unwrap_or(Json::Null)
}

#[cfg(test)]
mod values_tests {
    use super::*;

    #[test]
    fn connection_replicas_differ_by_connection_and_instance() {
        let a = conn_replica(1, 1);
        assert_ne!(a, conn_replica(1, 2));
        assert_ne!(a, conn_replica(2, 1));
        assert_eq!(a, conn_replica(1, 1));
    }
}
