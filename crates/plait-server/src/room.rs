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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use plait_crdt::{ClientMessage, Op, ReplicaId, ServerMessage, Value, PLAIT_CRDT_MESSAGE};
use plait_protocol::message::encode_custom;
use plait_store::{Snapshot, SnapshotKind};
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::{debug, error, info, warn, Instrument};
use yrs::Update;

use crate::conn::{Close, ConnId};
use crate::metrics as m;
use crate::Shared;

/// Commands a room's inbox accepts before it drains them in one batch.
const MAX_BATCH: usize = 512;
/// A room's log never holds more than this many times `--compact-after-updates` rows.
const MAX_LOG_ROWS_FACTOR: u64 = 16;
/// Capacity of the batch buffer a room keeps between batches.
const BATCH_KEPT: usize = 32;
/// How long one commit may take before it counts as failed. A room does not answer anyone
/// while it waits, so a store that hangs must not hang the room: reads and syncs go on
/// between retries.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long loading a room may take (a big document's snapshot and log). Past it the load
/// counts as failed: the room refuses its connections, which retry.
const LOAD_TIMEOUT: Duration = Duration::from_secs(10);

/// A store call with a deadline: every call a room makes has one, so a stuck database
/// connection or row lock fails the call (to be retried) instead of hanging the room.
async fn deadline<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, plait_store::Error>>,
) -> Result<T, plait_store::Error> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or(Err(plait_store::Error::Timeout(limit)))
}
/// How often a room checks awareness expiry, idleness and retries.
const TICK: Duration = Duration::from_millis(500);

/// The permission-denied reason sent for an update refused by `--max-document-bytes`.
const DOCUMENT_FULL: &str = "document size limit reached";

mod admin;
mod cluster;
mod core;
mod handle;
mod ledger;
#[cfg(test)]
mod sim;

use self::core::{Applied, BusOut, RoomCore};
use crate::bus::Outgoing;

pub(crate) use admin::{AdminOp, DocumentView, Edit, RestoreTarget, RoomError, Written};
pub(crate) use handle::{
    Confirm, Inbound, Joining, MemberLink, RoomCmd, RoomHandle, ValuesError, ValuesReply,
    ValuesRequest, LOADING,
};
use handle::{Queued, INBOX_BYTES, INBOX_CAPACITY};

/// The connection id of changes made through the admin API (no connection has it).
const ADMIN_CONN: ConnId = 0;

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
    /// Everything the room knows and decides; this shell does its I/O.
    core: RoomCore,
    /// The store write of the ledger's batch under way, if any: the room goes on applying the
    /// next batch while the store writes this one.
    inflight: Option<InFlight>,
    last_flush: Instant,
    /// When the last history snapshot was written (or the room loaded).
    last_history: Instant,
    /// The room's side of the cluster bus (`--redis`); `None` for a single process.
    /// Boxed: most servers run without one, and every room would carry its 88 bytes.
    cluster: Option<Box<cluster::Cluster>>,
    /// The room was deleted: the serve loop unloads it after the batch.
    deleted: bool,
}

impl std::fmt::Debug for Room {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Room")
            .field("name", &self.name)
            .field("members", &self.core.members.len())
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
        inbox_bytes: Arc::new(Semaphore::new(INBOX_BYTES)),
        inflight: shared.inflight.clone(),
        n_members: n_members.clone(),
    };
    let span = tracing::info_span!("room", room = %name);
    let tracker = shared.tracker.clone();
    tracker.spawn(run(name, id, shared, rx, n_members).instrument(span));
    handle
}

/// The room task: loads the room, then serves its inbox until it unloads.
///
/// Not an `async fn`, and the load boxed: a task's future is as large as its largest state for
/// the whole life of the room, and an async fn keeps its arguments beside the locals they are
/// moved into. Inline, the load's state and those copies made every idle room's task 1.8 KiB;
/// this way it holds the room and its serve loop only.
#[allow(clippy::manual_async_fn)] // An async fn would keep its arguments twice.
fn run(
    name: Arc<str>,
    id: u64,
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<RoomCmd>,
    n_members: Arc<AtomicUsize>,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        let Some(mut room) = Box::pin(load(name, id, shared, &mut rx, n_members)).await else {
            return;
        };
        metrics::gauge!(m::ROOMS_LOADED).increment(1.0);
        room.serve(&mut rx).await;
        metrics::gauge!(m::ROOMS_LOADED).decrement(1.0);
    }
}

/// Loads a room from the store, or, when that fails, refuses every connection queued for it
/// and returns `None`.
async fn load(
    name: Arc<str>,
    id: u64,
    shared: Arc<Shared>,
    rx: &mut mpsc::Receiver<RoomCmd>,
    n_members: Arc<AtomicUsize>,
) -> Option<Room> {
    let started = Instant::now();
    // Subscribe before loading, so nothing committed elsewhere falls between the two: bus
    // messages queue until the room reads them, and those the load covered are skipped by seq.
    let bus_sub = match &shared.bus {
        Some(bus) => Some(bus.subscribe(&name, id).await),
        None => None,
    };
    let loaded = match deadline(LOAD_TIMEOUT, shared.store.load_room(&name)).await {
        Ok(stored) => deadline(LOAD_TIMEOUT, shared.store.load_values(&name))
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
                if let RoomCmd::Join(joining) = cmd {
                    joining.link.control.close(Close::STORE_UNAVAILABLE);
                }
            }
            return None;
        }
    };
    let mut room = Room::new(name, id, shared, n_members.clone());
    n_members.store(0, Ordering::Relaxed);
    room.core.load(stored);
    room.core.load_values(stored_values);
    room.cluster = bus_sub.map(|sub| Box::new(cluster::Cluster::new(sub)));
    room.bus_loaded();
    info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "room loaded"
    );
    Some(room)
}

impl Room {
    fn new(name: Arc<str>, id: u64, shared: Arc<Shared>, n_members: Arc<AtomicUsize>) -> Self {
        Room {
            name,
            id,
            core: RoomCore::new(
                shared.room.clone(),
                shared.instance_id,
                n_members,
                shared.bus.is_some(),
            ),
            inflight: None,
            last_flush: Instant::now(),
            last_history: Instant::now(),
            cluster: None,
            deleted: false,
            shared,
        }
    }

    async fn serve(&mut self, rx: &mut mpsc::Receiver<RoomCmd>) {
        let mut tick = tokio::time::interval(TICK.min(self.shared.room.flush_interval));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let shutdown = self.shared.shutdown.clone();
        // Grown by bursts, released after them: a thousand quiet rooms should not each keep
        // room for MAX_BATCH commands.
        let mut batch = Vec::new();
        let mut bus_rx = self.cluster.as_mut().and_then(|c| c.take_rx());
        loop {
            // While a commit is under way, apply about one more full batch, no more: the
            // frames released together when it ends must fit in the members' outboxes
            // (`--outbox-frames`) next to what they already hold. (Smaller batches cost more:
            // capping them at 128 while pipelining took the automerge-paper ingest from about
            // 140,000 to 90,000 edits/s.)
            let take = match &self.inflight {
                Some(_) if self.core.ledger.n_pending() >= MAX_BATCH / 2 => 0,
                _ => MAX_BATCH,
            };
            // Each arm's work is boxed: inline, the largest (a batch, about 1.5 KiB) would be
            // part of every room's task while it waits, idle or not.
            tokio::select! {
                Some(event) = cluster::recv(&mut bus_rx) => Box::pin(self.on_bus(event)).await,
                output = in_flight(&mut self.inflight), if self.inflight.is_some() => {
                    Box::pin(self.commit_done(output)).await;
                }
                n = rx.recv_many(&mut batch, take), if take > 0 => {
                    if n == 0 {
                        break;
                    }
                    let evict = Box::pin(self.handle_batch(&mut batch)).await;
                    if batch.capacity() > BATCH_KEPT {
                        batch = Vec::new();
                    }
                    if self.deleted {
                        self.publish_outgoing();
                        Box::pin(self.unload(rx)).await;
                        return;
                    }
                    if evict && Box::pin(self.try_unload(rx)).await {
                        return;
                    }
                }
                _ = tick.tick() => {
                    if Box::pin(self.on_tick()).await && Box::pin(self.try_unload(rx)).await {
                        return;
                    }
                }
                () = shutdown.cancelled() => {
                    Box::pin(self.shut_down()).await;
                    return;
                }
            }
            self.publish_outgoing();
        }
    }

    /// Processes one batch; returns whether an eviction was asked for.
    async fn handle_batch(&mut self, batch: &mut Vec<RoomCmd>) -> bool {
        let mut updates = Vec::new();
        let mut value_ops = Vec::new();
        let mut rest = Vec::with_capacity(batch.len());
        for cmd in batch.drain(..) {
            match cmd {
                RoomCmd::Inbound(queued) => match *queued {
                    Queued {
                        conn,
                        msg: Inbound::Update(u, raw, confirm),
                        ..
                    } => updates.push((conn, u, raw, confirm)),
                    Queued {
                        conn,
                        msg: Inbound::Value(ClientMessage::Op(op)),
                        ..
                    } => value_ops.push((ValueSource::Conn(conn), op)),
                    other => rest.push(RoomCmd::Inbound(Box::new(other))),
                },
                RoomCmd::Values { req, reply } => match self.core.values_request(*req) {
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
        if self.core.strict()
            && !self.core.ledger.is_clean()
            && rest.iter().any(RoomCmd::reads_document)
        {
            self.commit().await;
        }
        let mut evict = false;
        for cmd in rest {
            match cmd {
                RoomCmd::Join(joining) => {
                    let Joining { conn, link, joined } = *joining;
                    self.core.join(conn, link, joined);
                }
                RoomCmd::Inbound(queued) => self.core.inbound(queued.conn, queued.msg),
                RoomCmd::Leave { conn } => self.core.leave(conn),
                RoomCmd::Evict => evict = true,
                RoomCmd::Admin(op) => self.admin(*op).await,
                RoomCmd::Values { .. } => unreachable!("values requests are handled per batch"),
            }
        }
        self.core.flush_awareness();
        evict
    }

    /// Applies a batch of updates (see [`RoomCore::apply_updates`]) and starts storing them.
    async fn apply_updates(&mut self, updates: Vec<(ConnId, Update, Bytes, Confirm)>) {
        match self.core.apply_updates(updates) {
            Applied::Nothing => {}
            Applied::Recorded if self.core.strict() => {
                // Pipelined: the room goes on with the next batch while the store writes
                // this one; the frames wait in the ledger.
                self.start_commit();
            }
            Applied::Recorded => {
                if self.core.ledger.held_bytes() > self.shared.room.max_uncommitted_bytes / 4 {
                    self.commit().await;
                }
            }
            Applied::Poisoned(senders) => {
                // Rebuild the document from what is durable, and close whoever sent the batch.
                self.reload().await;
                for conn in senders {
                    self.core.close(conn, Close::BAD_UPDATE);
                }
            }
        }
    }

    /// Applies a batch of value ops; with strict durability they are stored before anyone
    /// hears of them, and a failed store undoes the whole batch.
    async fn apply_value_ops(&mut self, ops: Vec<(ValueSource, Op)>) {
        let Some(batch) = self.core.apply_value_ops(ops) else {
            return;
        };
        let stored = !self.core.strict() || self.store_values().await;
        self.core.finish_value_ops(batch, stored);
    }

    /// Publishes what the core queued for the bus.
    fn publish_outgoing(&mut self) {
        for out in std::mem::take(&mut self.core.outgoing) {
            match out {
                BusOut::Awareness(entries) => self.publish(&Outgoing::Awareness(&entries)),
                BusOut::Values(states) => self.publish(&Outgoing::Values(states)),
            }
        }
    }

    /// Commits everything applied so far, waiting for it: the commit under way, then the
    /// rest. On success held frames are released and the log maybe compacted; returns whether
    /// nothing is left uncommitted.
    async fn commit(&mut self) -> bool {
        loop {
            if !self.settle_commit().await {
                return false;
            }
            if self.core.ledger.is_clean() {
                if self.core.compaction_due() {
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
        let Some(updates) = self.core.start_write(Instant::now()) else {
            return false;
        };
        let store = self.shared.store.clone();
        let name = self.name.clone();
        let write =
            async move { deadline(COMMIT_TIMEOUT, store.append_updates(&name, &updates)).await };
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
            if self.core.compaction_due() || !self.core.deferred_syncs.is_empty() {
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
                let done = self.core.commit_succeeded();
                self.shared.set_store_healthy(true);
                // Publish, and catch up if other processes committed in between (before
                // compaction trusts `last_seq`).
                self.committed_seqs(seq, &done.updates).await;
                self.core.settled();
                true
            }
            Err(e) => {
                self.core.commit_failed(Instant::now());
                warn!(error = %e, retry_in_ms = self.core.ledger.retry_delay().as_millis() as u64,
                    held = self.core.ledger.n_pending(),
                    "commit failed; holding updates and retrying");
                metrics::counter!(m::COMMIT_FAILURES).increment(1);
                self.shared.set_store_healthy(false);
                false
            }
        }
    }

    /// Merges the log into one snapshot. The store deletes the covered log rows in the same
    /// transaction, so a crash leaves either the old log or the new snapshot.
    /// Returns the snapshot written, for a caller that wants the same state kept as a
    /// restore point without encoding the document again.
    async fn compact(&mut self) -> Option<Snapshot> {
        let snapshot = self.core.snapshot(SnapshotKind::Compaction);
        let up_to_seq = snapshot.up_to_seq;
        let write = self.shared.store.write_snapshot(&self.name, &snapshot);
        match deadline(COMMIT_TIMEOUT, write).await {
            Ok(()) => {
                debug!(
                    up_to_seq,
                    bytes = snapshot.data.len(),
                    merged = self.core.log_updates,
                    "compacted"
                );
                metrics::counter!(m::COMPACTIONS).increment(1);
                self.core.log_updates = 0;
                self.core.log_bytes = 0;
                self.core.doc_bytes = snapshot.data.len();
                self.core.doc_bytes_exact = true;
                self.core.snapshot_bytes = snapshot.data.len();
                Some(snapshot)
            }
            Err(e) => {
                warn!(error = %e, "compaction failed; the log stays as it is");
                None
            }
        }
    }

    async fn reload(&mut self) {
        // What is being written is part of what gets re-applied if the write fails.
        self.settle_commit().await;
        match deadline(LOAD_TIMEOUT, self.shared.store.load_room(&self.name)).await {
            Ok(stored) => self.core.reload(stored),
            Err(e) => {
                error!(error = %e, "reload failed; keeping the document and retrying");
                self.core.needs_reload = true;
            }
        }
        // What was applied meanwhile is written: its frames wait for it.
        self.start_commit();
    }

    /// Periodic work; returns whether the room is idle long enough to unload.
    async fn on_tick(&mut self) -> bool {
        let now = Instant::now();
        self.core.forget_old_frames();
        self.core.expire_awareness(now);
        self.bus_tick(now).await;
        self.core.flush_awareness();
        let retry_due = self.core.ledger.retry_due(now);
        let flush_due = !self.core.strict()
            && now.duration_since(self.last_flush) >= self.shared.room.flush_interval;
        if retry_due || (flush_due && !self.core.ledger.failing()) {
            // The serve loop settles it; a strict room goes on serving meanwhile.
            self.start_commit();
        }
        if !self.core.dirty_values.is_empty() && (retry_due || flush_due) {
            self.store_values().await;
        }
        self.history_tick(now, false, None).await;
        self.core
            .idle_since
            .is_some_and(|since| now.duration_since(since) >= self.shared.room.idle_grace)
    }

    /// Unloads the room if it is idle and flushed: leaves the registry, refuses late joins
    /// (their connections ask the hub again and load a fresh instance), and ends the task.
    async fn try_unload(&mut self, rx: &mut mpsc::Receiver<RoomCmd>) -> bool {
        if !self.core.members.is_empty() || !self.commit().await || !self.store_values().await {
            return false;
        }
        // The next load then reads one row instead of up to half a document of updates.
        let compacted = if self.core.log_updates > 0 {
            self.compact().await
        } else {
            None
        };
        // The state a room is left in is a restore point too (the same encoding, if any).
        self.history_tick(Instant::now(), true, compacted).await;
        self.unload(rx).await;
        true
    }

    /// Leaves the registry and refuses what is still queued: joins among it retry, and load a
    /// fresh instance.
    async fn unload(&mut self, rx: &mut mpsc::Receiver<RoomCmd>) {
        self.shared.hub.remove(&self.name, self.id);
        rx.close();
        while let Some(cmd) = rx.recv().await {
            // Dropping a Join's `joined` sender tells the connection to retry elsewhere.
            drop(cmd);
        }
        info!("room unloaded");
    }

    async fn shut_down(&mut self) {
        let deadline = Instant::now() + Duration::from_millis(self.shared.shutdown_timeout_ms);
        while !(self.commit().await && self.store_values().await) {
            if Instant::now() >= deadline {
                error!(
                    lost = self.core.ledger.n_pending(),
                    "shutdown deadline passed with uncommitted updates; their senders still hold them"
                );
                break;
            }
            tokio::time::sleep(self.core.ledger.retry_delay()).await;
        }
        // Other processes keep these clients' cursors until told they left (30 s otherwise).
        self.core.close_all(Close::GOING_AWAY);
        self.publish_outgoing();
        // A restart then loads one row per room (the cold sync step 2 of a big document).
        if self.core.ledger.is_clean() && self.core.log_updates > 0 {
            self.compact().await;
        }
        self.shared.hub.remove(&self.name, self.id);
        info!("room flushed and closed for shutdown");
    }
}

// === impl Room: CRDT values ===

impl Room {
    /// Stores the full state of every changed value in one `put_values`, which merges it with
    /// what is stored (another process may have stored the same value meanwhile); returns
    /// whether nothing is left unstored.
    async fn store_values(&mut self) -> bool {
        if self.core.dirty_values.is_empty() {
            return true;
        }
        let rows = self.core.dirty_rows();
        let started = Instant::now();
        let put =
            self.shared
                .store
                .put_values(&self.name, &rows, &crate::stored_values::merge_stored);
        let result = deadline(COMMIT_TIMEOUT, put).await;
        m::hot()
            .commit_seconds
            .record(started.elapsed().as_secs_f64());
        match result {
            Ok(stored) => {
                self.shared.set_store_healthy(true);
                self.core.values_stored(stored);
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

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, Fut>(_: F) -> usize
    where
        F: FnOnce(Arc<str>, u64, Arc<Shared>, mpsc::Receiver<RoomCmd>, Arc<AtomicUsize>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// Every loaded room's task is allocated at its future's largest size for the room's whole
    /// life. It was 1,784 bytes: the load's state and async-fn argument copies next to the
    /// room and its serve loop, which are all an idle room needs.
    #[test]
    fn a_room_task_holds_only_the_room_and_its_serve_loop() {
        let size = future_size(run);
        eprintln!("room task future: {size} bytes");
        let needed = std::mem::size_of::<Room>() + 512;
        assert!(
            size <= needed,
            "a room's task future is {size} bytes, over {needed}"
        );
    }

    #[test]
    fn connection_replicas_differ_by_connection_and_instance() {
        let a = conn_replica(1, 1);
        assert_ne!(a, conn_replica(1, 2));
        assert_ne!(a, conn_replica(2, 1));
        assert_eq!(a, conn_replica(1, 1));
    }
}
