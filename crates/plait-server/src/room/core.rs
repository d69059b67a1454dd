//! The room's sans-IO core: everything a room knows and decides, with no store, no bus, no
//! timer and no task. The shell ([`super::Room`]) feeds it inputs (joins, messages, leaves,
//! commit outcomes, bus messages, ticks with the time) and carries out what it asks for: the
//! ledger's next store write, the bus messages it queued in `outgoing`, a reload.
//!
//! Members' outboxes are in-memory queues that never block, so the core writes frames to them
//! itself: a full one closes that member as a slow consumer, at once and deterministically.
//! The writer tasks that drain them into sockets are the I/O, and they are the connections'.
//!
//! The rules the simulation (`super::sim`) checks after every step:
//! - with strict durability nothing uncommitted reaches a member or the bus: not an update
//!   frame, not a sync step 2, not a value state;
//! - every committed update reaches every member that stays, in order, or that member is closed;
//! - after a reload the document equals the store's content plus what is uncommitted;
//! - the ledger holds at most `--max-uncommitted-bytes` plus one batch.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use plait_crdt::{encode_state, Hlc, ReplicaId, SystemClock, Value, Values, PLAIT_CRDT_MESSAGE};
use plait_protocol::awareness::encode_entries;
use plait_protocol::message::{
    encode_awareness, encode_custom, encode_permission_denied, encode_sync_step1,
    encode_sync_step2_owned, encode_update,
};
use plait_protocol::AwarenessEntry;
use plait_store::{Snapshot, SnapshotKind, StoredRoom};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, ReadTxn, StateVector, Transact, Update, WriteTxn};

use super::cluster::is_remote;
use super::ledger::{Committed, Ledger};

mod coalesce;
mod delivery;
mod values;

use super::{Confirm, Inbound, Member, MemberLink, ADMIN_CONN, DOCUMENT_FULL, MAX_LOG_ROWS_FACTOR};
use crate::awareness::Awareness;
use crate::config::{Durability, RoomConfig};
use crate::conn::{Close, ConnId};
use crate::docs;
use crate::metrics as m;

/// What the core queued for the bus; the shell publishes it (when there is a bus).
#[derive(Debug)]
pub(crate) enum BusOut {
    /// Awareness changes of this process's own clients.
    Awareness(Vec<AwarenessEntry>),
    /// Full states of values this process changed and stored.
    Values(Vec<(String, Value)>),
}

/// What [`RoomCore::apply_updates`] did.
#[derive(Debug)]
pub(crate) enum Applied {
    /// Nothing new reached the document.
    Nothing,
    /// Updates were applied and recorded in the ledger: the shell starts a store write.
    Recorded,
    /// yrs panicked half-way through a transaction: the document can no longer be trusted.
    /// The shell reloads the room from the store and closes these senders.
    Poisoned(Vec<ConnId>),
}

/// What applying one batch produced inside its transaction.
struct Transaction {
    /// The transaction's own encoding of what it integrated (`00 00` when nothing).
    changes: Vec<u8>,
    /// The updates that applied, with their senders, as they were sent, and whether their
    /// senders are told once they are stored.
    applied: Vec<(ConnId, Bytes, Confirm)>,
    /// Senders whose update yrs refused.
    failed: Vec<ConnId>,
    /// Whether pending updates over the limit were dropped.
    pruned: bool,
    /// Whether updates with missing dependencies were pending before or after the batch.
    involved_pending: bool,
}

/// See the module documentation.
pub(crate) struct RoomCore {
    /// Shared by every room of the server: one copy, not one per room.
    pub(super) config: Arc<RoomConfig>,
    /// This process's instance id: the replica id of the room's clock.
    pub(super) instance_id: u64,
    /// Whether the room is on a cluster bus: only then is anything queued in `outgoing`.
    pub(super) clustered: bool,
    pub(super) doc: Doc,
    pub(super) awareness: Awareness,
    pub(super) members: HashMap<ConnId, Member>,
    /// Members right now, shared with the hub (which evicts idle rooms).
    pub(super) n_members: Arc<AtomicUsize>,
    /// The sequence number up to which the document holds every stored update.
    pub(super) last_seq: u64,
    /// Update log entries and bytes since the last snapshot, to decide compaction.
    pub(super) log_updates: u64,
    pub(super) log_bytes: u64,
    /// The document's encoded size for `--max-document-bytes`: exact after a load of a bare
    /// snapshot or a compaction, an upper bound once updates were added on top.
    pub(super) doc_bytes: usize,
    pub(super) doc_bytes_exact: bool,
    /// Size of the newest compaction snapshot, for [`RoomCore::compaction_due`].
    pub(super) snapshot_bytes: usize,
    /// Updates applied to the document but not yet stored, and the frames that wait for them:
    /// the room's one durability decision (see [`super::ledger`]).
    pub(super) ledger: Ledger,
    /// Sync step 1s that arrived while the document held edits the store did not (strict
    /// durability, store failing): answered, newest per connection, once everything is stored.
    pub(super) deferred_syncs: Vec<(ConnId, StateVector)>,
    /// Others committed seqs this room's document lacks (a gap after its own commit, and the
    /// catch-up failed): `last_seq` stays below them, and the room catches up on its tick.
    pub(super) behind: bool,
    pub(super) idle_since: Option<Instant>,
    /// Awareness entries to send at the end of the current batch or tick.
    pub(super) awareness_out: Vec<AwarenessEntry>,
    /// Whether a commit happened since the last history snapshot.
    pub(super) changed_since_history: bool,
    /// The room's CRDT values.
    pub(super) values: Values,
    /// Stamps register writes; its replica id is the server's instance id, and its
    /// high-water mark is restored from the stored values on load.
    pub(super) hlc: Hlc<SystemClock>,
    /// Names of values changed in memory but not yet stored (relaxed durability, or a store
    /// failure while unloading).
    pub(super) dirty_values: BTreeSet<String>,
    /// yrs panicked on an update from another process: reload from the store on the tick.
    pub(super) needs_reload: bool,
    /// Messages for the bus, drained by the shell after every input.
    pub(super) outgoing: Vec<BusOut>,
    /// The update frames the last update broadcast queued (see [`coalesce`]).
    coalescing: coalesce::Coalescing,
}

impl std::fmt::Debug for RoomCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RoomCore")
            .field("members", &self.members.len())
            .field("last_seq", &self.last_seq)
            .finish_non_exhaustive()
    }
}

impl RoomCore {
    pub(super) fn new(
        config: Arc<RoomConfig>,
        instance_id: u64,
        n_members: Arc<AtomicUsize>,
        clustered: bool,
    ) -> Self {
        RoomCore {
            ledger: Ledger::new(config.durability == Durability::Strict),
            config,
            instance_id,
            clustered,
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
            deferred_syncs: Vec::new(),
            behind: false,
            idle_since: Some(Instant::now()),
            awareness_out: Vec::new(),
            changed_since_history: false,
            values: Values::default(),
            hlc: Hlc::new(ReplicaId(instance_id), SystemClock),
            dirty_values: BTreeSet::new(),
            needs_reload: false,
            outgoing: Vec::new(),
            coalescing: coalesce::Coalescing::default(),
        }
    }

    /// The store wrote the ledger's batch: release its frames to every member, tell its
    /// senders, and count the log's growth. Returns the batch (the shell publishes it).
    ///
    /// When more updates already wait for the next write, the frames and acks are held back
    /// for that write's (see [`coalesce`]): one frame per member for both, one write later.
    pub(super) fn commit_succeeded(&mut self) -> Committed {
        let mut done = self.ledger.committed();
        self.changed_since_history = true;
        self.log_updates += done.updates.len() as u64;
        self.log_bytes += done.update_bytes as u64;
        let mut frames = std::mem::take(&mut done.frames);
        let mut acks = std::mem::take(&mut done.acks);
        if let Some(held) = self.coalescing.held.take() {
            frames.splice(..0, held.frames);
            acks.splice(..0, held.acks);
        } else if !self.clustered
            && !frames.is_empty()
            && self.ledger.n_pending() > 0
            // Only what can be merged: a large paste is not delayed for nothing.
            && frames.iter().map(Bytes::len).sum::<usize>() <= MERGE_MAX_BYTES
        {
            self.coalescing.held = Some(coalesce::Held { frames, acks });
            return done;
        }
        self.release(frames, &acks);
        done
    }

    /// The store write under way failed: frames held back from the write before it are
    /// stored, so they go now rather than wait for the retry.
    pub(super) fn commit_failed(&mut self, now: Instant) {
        self.ledger.failed(now);
        self.release_held();
    }

    /// Sends the frames held back from the last write, if any.
    pub(super) fn release_held(&mut self) {
        if let Some(held) = self.coalescing.held.take() {
            self.release(held.frames, &held.acks);
        }
    }

    /// Sends stored updates' frames (merged into one when there are several) and tells their
    /// senders.
    fn release(&mut self, frames: Vec<Bytes>, acks: &[ConnId]) {
        match coalesce::merge_frames(&frames) {
            Some(frame) => self.broadcast_update(&frame),
            None => {
                for frame in &frames {
                    self.broadcast_update(frame);
                }
            }
        }
        self.ack(acks);
    }

    /// After a commit and whatever catch-up followed it: once everything is stored, the
    /// sync step 1s that waited are answered.
    pub(super) fn settled(&mut self) {
        if self.ledger.is_clean() {
            self.answer_deferred_syncs();
        }
    }

    /// Rebuilds the document from the store (after yrs panicked), applies again what was
    /// applied but not stored, and sends the members what the store held that they lacked:
    /// other processes' updates the room had not relayed yet would otherwise never reach them
    /// (their seqs are now covered, so the bus and catch-ups skip them).
    pub(super) fn reload(&mut self, stored: StoredRoom) {
        self.release_held();
        let before = self.doc.transact().state_vector();
        self.load(stored);
        {
            let mut txn = self.doc.transact_mut();
            for data in self.ledger.uncommitted() {
                // Validated when it arrived.
                if let Ok(u) = Update::decode_v1(data) {
                    let _ = catch_unwind(AssertUnwindSafe(|| txn.apply_update(u)));
                }
            }
        }
        // Only stored content: the uncommitted is in `before` too.
        let missed = self.doc.transact().encode_state_as_update_v1(&before);
        if missed.len() > 2 {
            self.broadcast(&encode_update(&missed), None);
        }
    }

    /// The room's tick: lets go of update frames kept for merging that no broadcast has
    /// sent since the tick before (see [`coalesce`]).
    pub(super) fn forget_old_frames(&mut self) {
        self.coalescing.tick();
    }

    /// Removes the awareness states not renewed in time and queues their removal.
    pub(super) fn expire_awareness(&mut self, now: Instant) {
        let expired = self.awareness.expire(now);
        self.broadcast_awareness(&expired);
    }

    /// The room was deleted from the store: forget its content, its values and what it held
    /// for the store, and close every member with 4404.
    pub(super) fn delete(&mut self) {
        self.close_all(Close::DELETED);
        self.ledger = Ledger::new(self.config.durability == Durability::Strict);
        self.deferred_syncs.clear();
        self.dirty_values.clear();
        self.values = Values::default();
        self.doc = Doc::new();
        self.last_seq = 0;
        self.log_updates = 0;
        self.log_bytes = 0;
        self.doc_bytes = 0;
        self.doc_bytes_exact = true;
        self.snapshot_bytes = 0;
    }

    /// Removes every member for shutdown, telling each to go away; their awareness removals
    /// are queued for the bus (other processes would otherwise show them for 30 s).
    pub(super) fn close_all(&mut self, reason: Close) {
        let mut removed = Vec::new();
        for (conn, member) in self.members.drain() {
            member.link.control.close(reason);
            removed.extend(self.awareness.remove_conn(conn));
        }
        self.bus_awareness(&removed);
        self.n_members.store(0, Ordering::Relaxed);
    }

    /// Rebuilds the document from a snapshot and the log after it. A row that does not decode
    /// is skipped and reported, never allowed to stop the room from loading.
    pub(super) fn load(&mut self, stored: StoredRoom) {
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

    pub(super) fn strict(&self) -> bool {
        self.config.durability == Durability::Strict
    }

    pub(super) fn join(&mut self, conn: ConnId, link: MemberLink, joined: oneshot::Sender<()>) {
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

    pub(super) fn inbound(&mut self, conn: ConnId, msg: Inbound) {
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

    pub(super) fn leave(&mut self, conn: ConnId) {
        self.deferred_syncs.retain(|(c, _)| *c != conn);
        if self.members.remove(&conn).is_some() {
            debug!(conn, members = self.members.len(), "left");
        }
        self.after_removal(conn);
    }

    pub(super) fn after_removal(&mut self, conn: ConnId) {
        self.n_members.store(self.members.len(), Ordering::Relaxed);
        let removed = self.awareness.remove_conn(conn);
        self.broadcast_awareness(&removed);
        if self.members.is_empty() && self.idle_since.is_none() {
            self.idle_since = Some(Instant::now());
        }
    }

    /// Applies a batch of updates in one transaction and records them in the ledger (which
    /// sends their frames now or once stored).
    ///
    /// Each update marked [`Confirm::Once`] is confirmed to its sender exactly once, whatever
    /// the batch it falls in: with the write that stores it, or, if it added nothing, once
    /// everything applied before it is stored. An update marked [`Confirm::Never`] is stored
    /// and relayed like any other, and never confirmed.
    ///
    /// What is stored and relayed are the bytes the clients sent, not yrs's re-encoding: those
    /// are what the writer wrote by definition (yrs 0.28.1's encoding changed bigints, -0 and
    /// object key order; the vendored yrs encodes them back as written, which sync step 2 and
    /// snapshots rely on). Only when updates with missing dependencies are involved is the
    /// transaction's own encoding used, since it holds what was integrated from earlier
    /// batches' pending updates.
    pub(super) fn apply_updates(
        &mut self,
        mut updates: Vec<(ConnId, Update, Bytes, Confirm)>,
    ) -> Applied {
        // A connection that was closed (kicked, malformed input, slow) is no member: what its
        // reader still forwarded during the close grace is not applied.
        updates.retain(|(conn, ..)| *conn == ADMIN_CONN || self.members.contains_key(conn));
        let mut senders: Vec<ConnId> = updates.iter().map(|(c, ..)| *c).collect();
        senders.sort_unstable();
        senders.dedup();
        if self.ledger.held_bytes() > self.config.max_uncommitted_bytes {
            // The store has been failing for a while: apply nothing more, and let the writers
            // keep their edits until they reconnect to a healthy server.
            for conn in senders {
                self.close(conn, Close::STORE_UNAVAILABLE);
            }
            return Applied::Nothing;
        }
        let updates = self.admit_updates(updates);
        if updates.is_empty() {
            return Applied::Nothing;
        }
        let max_pending = self.config.max_pending_bytes;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            let has_pending = |t: &yrs::TransactionMut<'_>| {
                t.store().pending_update().is_some() || t.store().pending_ds().is_some()
            };
            let pending_before = has_pending(&txn);
            let mut applied = Vec::with_capacity(updates.len());
            let mut failed = Vec::new();
            for (conn, update, raw, confirm) in updates {
                match txn.apply_update(update) {
                    Ok(()) => applied.push((conn, raw, confirm)),
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
            Transaction {
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
            return Applied::Poisoned(senders);
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
        let confirmed = |applied: &[(ConnId, Bytes, Confirm)]| -> Vec<ConnId> {
            applied
                .iter()
                .filter(|(_, _, confirm)| *confirm == Confirm::Once)
                .map(|(conn, ..)| *conn)
                .collect()
        };
        // Nothing integrated (known content, or only pending): nothing to store or relay. The
        // senders that count these updates are told once what is ahead of them is stored.
        if outcome.changes.len() <= 2 {
            let senders = confirmed(&outcome.applied);
            if !senders.is_empty() {
                if let Some(now) = self.ledger.acknowledge(senders) {
                    self.ack(&now);
                }
            }
            return Applied::Nothing;
        }
        let entries: Vec<(Bytes, Vec<ConnId>)> = if outcome.involved_pending {
            // One confirmation per update to confirm, not per sender.
            let senders = confirmed(&outcome.applied);
            vec![(Bytes::from(outcome.changes), senders)]
        } else if !self.strict() && outcome.applied.len() > 1 {
            // Relaxed durability sends each batch at once: one merged update for the batch,
            // one frame per member (strict durability merges what waits for each write).
            let raws: Vec<Bytes> = outcome
                .applied
                .iter()
                .map(|(_, raw, _)| raw.clone())
                .collect();
            match merge_small(&raws) {
                Some(merged) => vec![(merged, confirmed(&outcome.applied))],
                None => one_by_one(outcome.applied),
            }
        } else {
            one_by_one(outcome.applied)
        };
        for (update, senders) in entries {
            self.record(update, senders);
        }
        Applied::Recorded
    }

    /// Drops the updates a room must refuse before yrs sees them, and tells their senders:
    /// - an update that writes new structs under a client id whose awareness another live
    ///   connection holds (squatting it would make that user's next edits look applied, so
    ///   they would be dropped as duplicates): the sender is closed with 1013;
    /// - an update that would grow the document past `--max-document-bytes`: the sender gets
    ///   a permission-denied message and stays connected.
    pub(super) fn admit_updates(
        &mut self,
        updates: Vec<(ConnId, Update, Bytes, Confirm)>,
    ) -> Vec<(ConnId, Update, Bytes, Confirm)> {
        let now = Instant::now();
        let max_doc = self.config.max_document_bytes;
        let bind = self.config.bind_client_ids;
        let mut sv: Option<StateVector> = None;
        let mut projected = self.doc_bytes;
        let mut admitted = Vec::with_capacity(updates.len());
        for (conn, update, raw, confirm) in updates {
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
            admitted.push((conn, update, raw, confirm));
        }
        admitted
    }

    /// Hands out the next store write (see [`Ledger::start`]), the pending updates merged
    /// into one first ([`Ledger::coalesce`]).
    pub(super) fn start_write(&mut self, now: Instant) -> Option<Vec<Bytes>> {
        if self.ledger.ready(now) {
            self.ledger.coalesce(|updates| {
                let merged = merge_small(updates)?;
                let frame = encode_update(&merged);
                Some((merged, frame))
            });
        }
        self.ledger.start(now)
    }

    /// Records an update applied to the document in the ledger, and sends its frame to every
    /// member, the sender included, when the ledger allows: at once (relaxed), or once it is
    /// stored (strict). The sender's echo is its confirmation, so it means "stored" exactly
    /// when durability is strict.
    pub(super) fn record(&mut self, update: Bytes, senders: Vec<ConnId>) {
        let frame = encode_update(&update);
        self.doc_bytes += update.len();
        self.doc_bytes_exact = false;
        if let Some((frame, senders)) = self.ledger.record(update, frame, senders) {
            self.broadcast_update(&frame);
            self.ack(&senders);
        }
    }

    /// Tells the senders that asked for it that their updates are stored.
    pub(super) fn ack(&mut self, senders: &[ConnId]) {
        for conn in senders {
            if self.members.get(conn).is_some_and(|m| m.link.acks) {
                self.send(*conn, crate::conn::stored_marker());
            }
        }
    }

    /// Answers the sync step 1s that waited for everything to be stored.
    pub(super) fn answer_deferred_syncs(&mut self) {
        for (conn, sv) in std::mem::take(&mut self.deferred_syncs) {
            self.answer_sync_step1(conn, &sv);
        }
    }

    pub(super) fn answer_sync_step1(&mut self, conn: ConnId, sv: &StateVector) {
        let diff = self.doc.transact().encode_state_as_update_v1(sv);
        self.send(conn, encode_sync_step2_owned(diff));
    }

    /// Whether the log should be merged into a snapshot now. A snapshot re-encodes the whole
    /// document, so the log must have grown to half the last snapshot's size besides
    /// `--compact-after-updates` or `--compact-after-bytes`: ingesting a long document then
    /// costs linear work, not quadratic (it was 15% of the server's CPU replaying the
    /// automerge-paper trace), and a 50 MB document is not rewritten for every 5 MiB paste
    /// (the next paste waited for it: 150 ms at 5 MB, 490 ms at 50 MB). A row count of
    /// [`MAX_LOG_ROWS_FACTOR`] times `--compact-after-updates` applies regardless, which bounds
    /// what a load after a crash replays when a big document receives many tiny edits.
    pub(super) fn compaction_due(&self) -> bool {
        let room = &self.config;
        let log = room.compact_after_updates;
        let half_the_snapshot = self.log_bytes.saturating_mul(2) >= self.snapshot_bytes as u64;
        !self.behind
            && ((half_the_snapshot
                && (self.log_updates >= log || self.log_bytes >= room.compact_after_bytes))
                || self.log_updates >= log.saturating_mul(MAX_LOG_ROWS_FACTOR))
    }

    /// The document as a snapshot covering the log up to the last committed update.
    pub(super) fn snapshot(&self, kind: SnapshotKind) -> Snapshot {
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

    /// Queues awareness entries for [`Room::flush_awareness`], which sends them as one frame:
    /// N members changing presence in one batch cost N frames per member, not N².
    pub(super) fn broadcast_awareness(&mut self, entries: &[AwarenessEntry]) {
        for e in entries {
            // A later entry for the same client supersedes an earlier one in this batch.
            self.awareness_out
                .retain(|q: &AwarenessEntry| q.client != e.client);
            self.awareness_out.push(e.clone());
        }
    }

    /// Sends the queued awareness entries to everyone, the senders included: the echo is what
    /// keeps a lone client's 30 s watchdog from firing.
    pub(super) fn flush_awareness(&mut self) {
        while !self.awareness_out.is_empty() {
            let entries = std::mem::take(&mut self.awareness_out);
            self.bus_awareness(&entries);
            let frame = encode_awareness(&encode_entries(entries.iter()));
            // Closing a slow consumer below may queue its removal: loop until quiet.
            self.broadcast(&frame, None);
        }
    }

    /// Queues for the bus the awareness changes of this process's own clients.
    pub(super) fn bus_awareness(&mut self, entries: &[AwarenessEntry]) {
        if !self.clustered {
            return;
        }
        let own: Vec<AwarenessEntry> = entries
            .iter()
            .filter(|e| !self.awareness.owner(e.client).is_some_and(is_remote))
            .cloned()
            .collect();
        if !own.is_empty() {
            self.outgoing.push(BusOut::Awareness(own));
        }
    }

    /// Queues for the bus every state of this process's own clients.
    pub(super) fn announce_awareness(&mut self) {
        let states = self.awareness.states();
        self.bus_awareness(&states);
    }

    pub(super) fn fan_out_awareness(&mut self, entries: &[AwarenessEntry]) {
        if entries.is_empty() {
            return;
        }
        let frame = encode_awareness(&encode_entries(entries.iter()));
        self.broadcast(&frame, None);
    }

    /// Applies durable updates from elsewhere in one transaction and relays them to every
    /// member as they were sent. Returns false if yrs panicked (the room is reloaded then).
    pub(super) fn apply_remote(&mut self, updates: Vec<(Update, Bytes)>) -> bool {
        if updates.is_empty() {
            return true;
        }
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            let mut applied = Vec::with_capacity(updates.len());
            for (update, raw) in updates {
                match txn.apply_update(update) {
                    Ok(()) => applied.push(raw),
                    Err(e) => {
                        debug!(error = %e, "bus update did not apply");
                        metrics::counter!(m::BUS_INVALID).increment(1);
                    }
                }
            }
            applied
        }));
        match outcome {
            Ok(applied) => {
                for raw in applied {
                    self.broadcast_update(&encode_update(&raw));
                }
                true
            }
            Err(_) => {
                metrics::counter!(m::BUS_INVALID).increment(1);
                warn!("applying bus updates panicked; the room reloads from the store");
                self.needs_reload = true;
                false
            }
        }
    }
}

/// One ledger entry per applied update, as its sender sent it.
fn one_by_one(applied: Vec<(ConnId, Bytes, Confirm)>) -> Vec<(Bytes, Vec<ConnId>)> {
    applied
        .into_iter()
        .map(|(conn, raw, confirm)| match confirm {
            Confirm::Once => (raw, vec![conn]),
            Confirm::Never => (raw, Vec::new()),
        })
        .collect()
}

/// Updates are merged only while they total at most this: merging re-decodes every update on
/// the room's task, and what it saves (a frame per update per member) matters for many small
/// edits, not for a few large ones (an offline client's 30 MiB step 2 goes as it came).
const MERGE_MAX_BYTES: usize = 1 << 20;

/// [`docs::merge_updates`] of updates totalling at most [`MERGE_MAX_BYTES`].
fn merge_small(updates: &[Bytes]) -> Option<Bytes> {
    if updates.iter().map(Bytes::len).sum::<usize>() > MERGE_MAX_BYTES {
        return None;
    }
    docs::merge_updates(updates)
}
