//! An in-process store for tests: the same contract as the SQL stores, nothing durable.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;

use crate::{
    in_lock_order, merged_row, now_ms, Error, LoggedUpdate, MergeValue, Revocation, RoomSummary,
    Snapshot, SnapshotInfo, SnapshotKind, Store, StoredRoom, StoredValue,
};

#[derive(Debug, Default)]
struct Room {
    last_seq: u64,
    updated_at_ms: i64,
    log: Vec<LoggedUpdate>,
    snapshots: Vec<Snapshot>,
    values: BTreeMap<String, StoredValue>,
}

/// Rooms kept in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    /// A std mutex: every section is short and never awaits.
    rooms: Mutex<BTreeMap<String, Room>>,
    revocations: Mutex<Vec<Revocation>>,
    /// Webhook cursors by (target, room).
    cursors: Mutex<BTreeMap<(String, String), u64>>,
    /// Leases by name: (holder, expires at ms).
    leases: Mutex<BTreeMap<String, (String, i64)>>,
}

impl MemoryStore {
    fn rooms(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Room>> {
        // A panic while holding the lock leaves plain data behind; keep using it.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn load_room(&self, room: &str) -> Result<StoredRoom, Error> {
        let rooms = self.rooms();
        let Some(r) = rooms.get(room) else {
            return Ok(StoredRoom::default());
        };
        let snapshot = r.snapshots.iter().max_by_key(|s| s.up_to_seq).cloned();
        let after = snapshot.as_ref().map_or(0, |s| s.up_to_seq);
        Ok(StoredRoom {
            snapshot,
            updates: r.log.iter().filter(|u| u.seq > after).cloned().collect(),
            last_seq: r.last_seq,
        })
    }

    async fn append_updates(&self, room: &str, updates: &[Bytes]) -> Result<u64, Error> {
        if updates.is_empty() {
            return Err(Error::Corrupt("append of no updates".into()));
        }
        let mut rooms = self.rooms();
        let r = rooms.entry(room.to_owned()).or_default();
        for data in updates {
            r.last_seq += 1;
            r.log.push(LoggedUpdate {
                seq: r.last_seq,
                data: data.clone(),
            });
        }
        r.updated_at_ms = now_ms();
        Ok(r.last_seq)
    }

    async fn write_snapshot(&self, room: &str, snapshot: &Snapshot) -> Result<(), Error> {
        let mut rooms = self.rooms();
        let r = rooms.entry(room.to_owned()).or_default();
        r.last_seq = r.last_seq.max(snapshot.up_to_seq);
        if snapshot.kind == SnapshotKind::Compaction {
            // Never move the snapshot backwards (see the SQL stores).
            let newest = r
                .snapshots
                .iter()
                .filter(|s| s.kind == SnapshotKind::Compaction)
                .map(|s| s.up_to_seq)
                .max();
            if newest.is_some_and(|seq| seq >= snapshot.up_to_seq) {
                return Ok(());
            }
            r.log.retain(|u| u.seq > snapshot.up_to_seq);
            r.snapshots.retain(|s| s.kind != SnapshotKind::Compaction);
        }
        r.snapshots.push(snapshot.clone());
        Ok(())
    }

    async fn list_snapshots(&self, room: &str) -> Result<Vec<SnapshotInfo>, Error> {
        Ok(self.rooms().get(room).map_or_else(Vec::new, |r| {
            r.snapshots
                .iter()
                .enumerate()
                .map(|(i, s)| SnapshotInfo {
                    id: s.created_at_ms.wrapping_mul(1000) + i as i64,
                    up_to_seq: s.up_to_seq,
                    kind: s.kind,
                    created_at_ms: s.created_at_ms,
                    bytes: s.data.len() as u64,
                })
                .collect()
        }))
    }

    async fn load_snapshot(&self, room: &str, id: i64) -> Result<Option<Snapshot>, Error> {
        let snapshots = self.list_snapshots(room).await?;
        let index = snapshots.iter().position(|s| s.id == id);
        Ok(index.and_then(|i| self.rooms().get(room).map(|r| r.snapshots[i].clone())))
    }

    async fn load_updates_until(
        &self,
        room: &str,
        after_seq: u64,
        _until_ms: i64,
    ) -> Result<Vec<LoggedUpdate>, Error> {
        // The memory store keeps no write times: every entry counts as written before.
        Ok(self.rooms().get(room).map_or_else(Vec::new, |r| {
            r.log
                .iter()
                .filter(|u| u.seq > after_seq)
                .cloned()
                .collect()
        }))
    }

    async fn prune_history(&self, room: &str, before_ms: i64) -> Result<u64, Error> {
        let mut rooms = self.rooms();
        let Some(r) = rooms.get_mut(room) else {
            return Ok(0);
        };
        let newest = r
            .snapshots
            .iter()
            .filter(|s| s.kind == SnapshotKind::History)
            .map(|s| s.created_at_ms)
            .max();
        let before = r.snapshots.len();
        r.snapshots.retain(|s| {
            s.kind != SnapshotKind::History
                || s.created_at_ms >= before_ms
                || Some(s.created_at_ms) == newest
        });
        Ok((before - r.snapshots.len()) as u64)
    }

    async fn load_values(&self, room: &str) -> Result<Vec<StoredValue>, Error> {
        Ok(self
            .rooms()
            .get(room)
            .map(|r| r.values.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn put_values(
        &self,
        room: &str,
        values: &[StoredValue],
        merge: &MergeValue,
    ) -> Result<Vec<StoredValue>, Error> {
        let mut rooms = self.rooms();
        let r = rooms.entry(room.to_owned()).or_default();
        // Merge into a copy and swap it in at the end: a refused merge writes nothing.
        let mut next = r.values.clone();
        let mut written = Vec::with_capacity(values.len());
        for new in in_lock_order(values) {
            let row = merged_row(next.get(&new.name).cloned(), new, merge)?;
            next.insert(row.name.clone(), row.clone());
            written.push(row);
        }
        r.values = next;
        Ok(written)
    }

    async fn delete_room(&self, room: &str) -> Result<bool, Error> {
        Ok(self.rooms().remove(room).is_some())
    }

    async fn add_revocation(&self, revocation: &Revocation) -> Result<(), Error> {
        self.revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(revocation.clone());
        Ok(())
    }

    async fn list_revocations(&self) -> Result<Vec<Revocation>, Error> {
        Ok(self
            .revocations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone())
    }

    async fn webhook_cursors(&self, target: &str) -> Result<Vec<(String, u64)>, Error> {
        let cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        Ok(cursors
            .iter()
            .filter(|((t, _), _)| t == target)
            .map(|((_, room), seq)| (room.clone(), *seq))
            .collect())
    }

    async fn set_webhook_cursor(
        &self,
        target: &str,
        room: &str,
        seq: Option<u64>,
    ) -> Result<(), Error> {
        let mut cursors = self.cursors.lock().unwrap_or_else(|e| e.into_inner());
        let key = (target.to_owned(), room.to_owned());
        match seq {
            Some(seq) => cursors.insert(key, seq),
            None => cursors.remove(&key),
        };
        Ok(())
    }

    async fn claim_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<bool, Error> {
        let now = crate::now_ms();
        let mut leases = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        let free = leases
            .get(name)
            .is_none_or(|(h, expires)| h == holder || *expires < now);
        if free {
            leases.insert(name.to_owned(), (holder.to_owned(), now + ttl_ms));
        }
        Ok(free)
    }

    async fn list_rooms(&self) -> Result<Vec<RoomSummary>, Error> {
        Ok(self
            .rooms()
            .iter()
            .map(|(name, r)| RoomSummary {
                name: name.clone(),
                last_seq: r.last_seq,
                n_updates: r.log.len() as u64,
                stored_bytes: r.log.iter().map(|u| u.data.len() as u64).sum::<u64>()
                    + r.snapshots
                        .iter()
                        .max_by_key(|s| s.up_to_seq)
                        .map_or(0, |s| s.data.len() as u64),
                updated_at_ms: r.updated_at_ms,
            })
            .collect())
    }

    async fn ping(&self) -> Result<(), Error> {
        Ok(())
    }
}
