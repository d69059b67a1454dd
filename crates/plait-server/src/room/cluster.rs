//! A room's side of the cluster bus ([`crate::bus`]).
//!
//! - After its own commit a room publishes the committed updates with their seqs; if the seqs
//!   the store gave do not follow the last one the room knew, other processes committed in
//!   between and the room catches up from the store (before any compaction uses `last_seq`).
//! - An update from the bus is applied and fanned out to the room's members, never committed
//!   again (it is durable) and never re-published. A gap in seqs means a missed message: catch
//!   up from the store (`load_updates_until(room, last_seq, ..)`).
//! - Awareness from another process is kept under a pseudo-connection per remote process, so
//!   it expires like anyone's when that process stops renewing it (a SIGKILLed process).
//! - A Hocuspocus stateless message from another process goes to the room's Hocuspocus
//!   documents here, as one from a local document would (the room keeps nothing of it; the
//!   endpoint publishes its own documents' messages).
//! - While the bus is down (or after it reconnects, or when a message was dropped) the room
//!   catches up from the store on its tick.

use std::time::{Duration, Instant};

use bytes::Bytes;
use plait_protocol::message::encode_update;
use tokio::sync::mpsc;
use tracing::{debug, warn};
use yrs::updates::decoder::Decode;
use yrs::{ReadTxn, Transact, Update};

use super::{ConnId, Room, COMMIT_TIMEOUT};
use crate::bus::{BusEvent, BusSub, Outgoing};
use crate::metrics as m;

/// Connection ids with this bit are pseudo-connections of other processes (local connection
/// ids count up from 1 and never reach it).
const REMOTE_CONN_BIT: ConnId = 1 << 63;
/// Even with a healthy bus, a room checks the store this often (a message Redis dropped
/// without the bus noticing is found by then at the latest).
const SAFETY_POLL: Duration = Duration::from_secs(30);

/// The pseudo-connection that owns the awareness entries of another process's clients.
fn remote_conn(origin: u64) -> ConnId {
    REMOTE_CONN_BIT | (origin >> 1)
}

pub(super) fn is_remote(conn: ConnId) -> bool {
    conn & REMOTE_CONN_BIT != 0
}

/// A room's bus state.
#[derive(Debug)]
pub(crate) struct Cluster {
    sub: BusSub,
    /// The bus epoch the room last caught up at.
    epoch: u64,
    last_poll: Instant,
    /// A catch-up failed (store error): try again on the next tick.
    retry: bool,
}

impl Cluster {
    pub(crate) fn new(sub: BusSub) -> Self {
        Cluster {
            epoch: sub.bus.epoch(),
            sub,
            last_poll: Instant::now(),
            retry: false,
        }
    }

    /// The receiver of the room's bus messages (once, for the room's loop).
    pub(crate) fn take_rx(&mut self) -> Option<mpsc::Receiver<BusEvent>> {
        self.sub.take_rx()
    }
}

/// The next bus message, or never when there is no bus.
pub(crate) async fn recv(rx: &mut Option<mpsc::Receiver<BusEvent>>) -> Option<BusEvent> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl Room {
    pub(super) fn publish(&self, msg: &Outgoing<'_>) {
        if let Some(c) = &self.cluster {
            c.sub.bus.publish(&self.name, msg);
        }
    }

    /// Called right after loading: asks the other processes for their clients' awareness.
    pub(crate) fn bus_loaded(&mut self) {
        self.publish(&Outgoing::AwarenessQuery);
    }

    /// After a successful commit of `updates`, which the store gave seqs
    /// `last - len + 1 ..= last`: publish them, and catch up if others committed in between
    /// (with or without a bus: several processes may share a store). Leaves `last_seq` at the
    /// newest seq up to which the document holds every update, so a compaction at `last_seq`
    /// never deletes rows the document lacks; while a gap stays, the room is `behind` and
    /// does not compact.
    pub(crate) async fn committed_seqs(&mut self, last: u64, updates: &[Bytes]) {
        let Some(first) = (last + 1).checked_sub(updates.len() as u64) else {
            return;
        };
        if updates.is_empty() {
            return;
        }
        self.publish(&Outgoing::Updates {
            first_seq: first,
            last_seq: last,
            updates,
        });
        if last <= self.core.last_seq {
            // A catch-up read these rows back while they were being written.
        } else if first == self.core.last_seq + 1 {
            self.core.last_seq = last;
        } else {
            self.core.behind = true;
            if self.catch_up(Some((first, last))).await {
                self.core.behind = false;
            }
        }
    }

    /// Handles one message from another process.
    pub(crate) async fn on_bus(&mut self, event: BusEvent) {
        match event {
            BusEvent::Updates {
                first_seq,
                last_seq,
                updates,
            } => {
                if last_seq <= self.core.last_seq {
                    return;
                }
                if first_seq > self.core.last_seq + 1 {
                    debug!(
                        have = self.core.last_seq,
                        first_seq, "gap in bus seqs; catching up from the store"
                    );
                    self.catch_up(None).await;
                    return;
                }
                let skip = (self.core.last_seq + 1 - first_seq) as usize;
                if self
                    .core
                    .apply_remote(updates.into_iter().skip(skip).collect())
                {
                    self.core.last_seq = last_seq;
                }
            }
            BusEvent::Awareness { origin, entries } => {
                let accepted = self.core.awareness.apply_capped(
                    remote_conn(origin),
                    entries,
                    Instant::now(),
                    usize::MAX,
                );
                self.core.fan_out_awareness(&accepted);
            }
            BusEvent::AwarenessQuery => self.core.announce_awareness(),
            BusEvent::Stateless { origin, payload } => {
                let n = self
                    .shared
                    .hocuspocus
                    .relay(&self.name, remote_conn(origin), &payload);
                debug!(relayed = n, "stateless from another process");
            }
            BusEvent::Values(updates) => {
                for update in updates {
                    match self.core.values.merge_durable(&update, &mut self.core.hlc) {
                        Ok(()) => self.core.fan_out_value(&update.name),
                        Err(e) => {
                            debug!(name = %update.name, error = %e, "bus value refused");
                            metrics::counter!(m::BUS_INVALID).increment(1);
                        }
                    }
                }
            }
        }
    }

    /// Reads the store's log after `last_seq` and applies what the room lacks (skipping the
    /// room's own just-committed seqs in `skip`). If compaction removed rows the room still
    /// needs, merges the whole stored room instead. Returns whether it succeeded.
    async fn catch_up(&mut self, skip: Option<(u64, u64)>) -> bool {
        metrics::counter!(m::BUS_CATCH_UPS).increment(1);
        let after = self.core.last_seq;
        let rows = tokio::time::timeout(
            COMMIT_TIMEOUT,
            self.shared
                .store
                .load_updates_until(&self.name, after, i64::MAX),
        )
        .await;
        let rows = match rows {
            Ok(Ok(rows)) => rows,
            other => {
                if let Ok(Err(e)) = other {
                    warn!(error = %e, "catching up from the store failed; retrying");
                }
                self.set_retry();
                return false;
            }
        };
        let Some(first) = rows.first() else {
            return true;
        };
        if first.seq > after + 1 {
            return self.catch_up_whole().await;
        }
        let mut last = after;
        let mut fresh = Vec::with_capacity(rows.len());
        for row in rows {
            last = last.max(row.seq);
            if skip.is_some_and(|(a, b)| (a..=b).contains(&row.seq)) {
                continue;
            }
            match Update::decode_v1(&row.data) {
                Ok(u) => fresh.push((u, row.data)),
                Err(e) => {
                    warn!(seq = row.seq, error = %e, "skipping stored update that does not decode");
                    metrics::counter!(m::STORED_UPDATES_SKIPPED).increment(1);
                }
            }
        }
        if self.core.apply_remote(fresh) {
            self.core.last_seq = last;
        }
        true
    }

    /// Merges the stored snapshot and log into the document and relays the difference.
    async fn catch_up_whole(&mut self) -> bool {
        let loaded =
            tokio::time::timeout(COMMIT_TIMEOUT, self.shared.store.load_room(&self.name)).await;
        let Ok(Ok(stored)) = loaded else {
            self.set_retry();
            return false;
        };
        let before = self.core.doc.transact().state_vector();
        let mut rows: Vec<(Update, Bytes)> = Vec::new();
        let snapshot = stored.snapshot.as_ref().map(|s| s.data.clone());
        for data in snapshot
            .into_iter()
            .chain(stored.updates.iter().map(|u| u.data.clone()))
        {
            if let Ok(u) = Update::decode_v1(&data) {
                rows.push((u, data));
            }
        }
        let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut txn = self.core.doc.transact_mut();
            for (u, _) in rows {
                let _ = txn.apply_update(u);
            }
        }));
        if applied.is_err() {
            self.core.needs_reload = true;
            return false;
        }
        let diff = self.core.doc.transact().encode_state_as_update_v1(&before);
        if diff.len() > 2 {
            self.core.broadcast_update(&encode_update(&diff));
        }
        self.core.last_seq = self.core.last_seq.max(stored.last_seq);
        true
    }

    /// Merges the stored CRDT values (while the bus is down, their states travel only through
    /// the store; while it is up, a lost message is found here) and relays the ones that
    /// changed.
    async fn catch_up_values(&mut self) {
        let Ok(Ok(rows)) =
            tokio::time::timeout(COMMIT_TIMEOUT, self.shared.store.load_values(&self.name)).await
        else {
            return;
        };
        for row in rows {
            let Ok(value) = plait_crdt::Value::decode(&row.state) else {
                continue;
            };
            let before = self
                .core
                .values
                .get(&row.name)
                .map(plait_crdt::Value::encode);
            let update = plait_crdt::Update {
                name: row.name,
                value,
            };
            if self
                .core
                .values
                .merge_durable(&update, &mut self.core.hlc)
                .is_ok()
                && self
                    .core
                    .values
                    .get(&update.name)
                    .map(plait_crdt::Value::encode)
                    != before
            {
                self.core.fan_out_value(&update.name);
            }
        }
    }

    fn set_retry(&mut self) {
        if let Some(c) = &mut self.cluster {
            c.retry = true;
        }
    }

    /// On the room's tick: catch up from the store when the bus is down (every
    /// `--bus-fallback-poll-ms`), after it reconnected, after a dropped message or a failed
    /// catch-up, and every [`SAFETY_POLL`] regardless.
    pub(crate) async fn bus_tick(&mut self, now: Instant) {
        if self.core.needs_reload {
            self.core.needs_reload = false;
            self.reload().await;
        }
        if self.core.behind && self.catch_up(None).await {
            self.core.behind = false;
        }
        let Some(c) = &mut self.cluster else {
            return;
        };
        let bus = c.sub.bus.clone();
        let epoch = bus.epoch();
        let up = bus.is_up();
        let since = now.saturating_duration_since(c.last_poll);
        let reconnected = epoch != c.epoch;
        let due = c.sub.take_missed()
            || c.retry
            || reconnected
            || (!up && since >= bus.fallback_poll)
            || since >= SAFETY_POLL;
        if !due {
            return;
        }
        c.epoch = epoch;
        c.last_poll = now;
        c.retry = false;
        self.catch_up(None).await;
        // Values too, on every catch-up: a values message the bus lost (or one refused before
        // it was stored here) is otherwise never seen while the bus stays up.
        self.catch_up_values().await;
        if reconnected {
            // Whatever awareness went missing while the bus was down.
            self.core.announce_awareness();
            self.publish(&Outgoing::AwarenessQuery);
        }
    }
}
