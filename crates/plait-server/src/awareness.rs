//! The room's awareness table: who is present, with the clock rules of y-protocols.
//!
//! Kept by the room actor alone (no locks). States stay opaque JSON text.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use plait_protocol::AwarenessEntry;

use crate::conn::ConnId;

/// Remote states not renewed for this long are removed, as every y-protocols peer does.
pub(crate) const OUTDATED_TIMEOUT: Duration = Duration::from_secs(30);
/// A client id held by another connection may be claimed once its state has gone this long
/// without renewal (live clients renew every 15 s): a client that reconnected before the server
/// noticed its old socket was dead gets its presence back without waiting for expiry.
pub(crate) const TAKEOVER_AFTER: Duration = Duration::from_secs(16);
/// Most client ids one connection may publish (a provider uses one; a few allow for tabs
/// that relay through one socket). Entries past it are ignored.
pub(crate) const MAX_CLIENTS_PER_CONN: usize = 4;

#[derive(Debug)]
struct Entry {
    clock: u64,
    /// JSON text; `"null"` once removed (the clock is kept to order later updates).
    state: String,
    updated: Instant,
    owner: ConnId,
}

impl Entry {
    /// Whether the owner still holds this client id: a present state renewed within
    /// [`TAKEOVER_AFTER`]. Another connection may neither publish for it nor write document
    /// structs under it.
    fn held(&self, now: Instant) -> bool {
        self.state != "null" && now.duration_since(self.updated) < TAKEOVER_AFTER
    }
}

#[derive(Debug, Default)]
pub(crate) struct Awareness {
    entries: HashMap<u64, Entry>,
}

impl Awareness {
    /// Applies entries sent by `conn` and returns the ones accepted, to broadcast.
    ///
    /// An entry is accepted when its clock is newer, or equal with a removal of a present state
    /// (`applyAwarenessUpdate`). Entries for a client id owned by another connection, and new
    /// ids past [`MAX_CLIENTS_PER_CONN`], are ignored: a connection speaks only for itself.
    /// A removal of a client id nobody here knows is ignored too: there is nothing to remove,
    /// and keeping it would let one connection grow the table (and every member's traffic)
    /// without bound.
    pub(crate) fn apply(
        &mut self,
        conn: ConnId,
        entries: Vec<AwarenessEntry>,
        now: Instant,
    ) -> Vec<AwarenessEntry> {
        self.apply_capped(conn, entries, now, MAX_CLIENTS_PER_CONN)
    }

    /// As [`Awareness::apply`] with another cap on the client ids `conn` may hold: the
    /// pseudo-connection of another process (cluster bus) speaks for all of its clients.
    pub(crate) fn apply_capped(
        &mut self,
        conn: ConnId,
        entries: Vec<AwarenessEntry>,
        now: Instant,
        max_clients: usize,
    ) -> Vec<AwarenessEntry> {
        let mut accepted = Vec::new();
        for e in entries {
            let owned = self.owned_by(conn);
            match self.entries.get_mut(&e.client) {
                Some(cur) if cur.owner != conn && cur.held(now) => continue,
                // Taking over a stale id counts against the cap like a new one.
                Some(cur) if cur.owner != conn && owned >= max_clients => continue,
                Some(cur) => {
                    let newer = e.clock > cur.clock;
                    let removal = e.clock == cur.clock && e.is_removal() && cur.state != "null";
                    if !(newer || removal) {
                        continue;
                    }
                    cur.clock = e.clock;
                    cur.state.clone_from(&e.state);
                    cur.updated = now;
                    cur.owner = conn;
                }
                None => {
                    if e.is_removal() || owned >= max_clients {
                        continue;
                    }
                    self.entries.insert(
                        e.client,
                        Entry {
                            clock: e.clock,
                            state: e.state.clone(),
                            updated: now,
                            owner: conn,
                        },
                    );
                }
            }
            accepted.push(e);
        }
        accepted
    }

    /// The connection that holds `client` (see `Entry::held`): the only one allowed to write
    /// document structs under that client id.
    pub(crate) fn live_owner(&self, client: u64, now: Instant) -> Option<ConnId> {
        self.entries
            .get(&client)
            .filter(|e| e.held(now))
            .map(|e| e.owner)
    }

    /// Entries `conn` owns, removed ones included (they hold a slot until they are purged).
    fn owned_by(&self, conn: ConnId) -> usize {
        self.entries.values().filter(|e| e.owner == conn).count()
    }

    /// Removes every state `conn` published; returns the removals to broadcast.
    pub(crate) fn remove_conn(&mut self, conn: ConnId) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        for (client, e) in self.entries.iter_mut() {
            if e.owner == conn && e.state != "null" {
                removed.push(Self::mark_removed(*client, e));
            }
        }
        self.entries.retain(|_, e| e.owner != conn);
        removed
    }

    /// Removes states not renewed within [`OUTDATED_TIMEOUT`]; returns the removals. Removed
    /// entries are kept that long too (their clock orders late updates), then forgotten: the
    /// pseudo-connections of other processes never leave, so their removals would otherwise
    /// pile up for the life of the room.
    pub(crate) fn expire(&mut self, now: Instant) -> Vec<AwarenessEntry> {
        let mut removed = Vec::new();
        self.entries.retain(|client, e| {
            let old = now.duration_since(e.updated) >= OUTDATED_TIMEOUT;
            if e.state == "null" {
                return !old;
            }
            if old {
                removed.push(Self::mark_removed(*client, e));
                e.updated = now;
            }
            true
        });
        removed
    }

    fn mark_removed(client: u64, e: &mut Entry) -> AwarenessEntry {
        e.clock += 1;
        e.state = "null".into();
        AwarenessEntry {
            client,
            clock: e.clock,
            state: e.state.clone(),
        }
    }

    /// The connection that holds `client`'s entry, if any.
    pub(crate) fn owner(&self, client: u64) -> Option<ConnId> {
        self.entries.get(&client).map(|e| e.owner)
    }

    /// Every present state, for a joining connection or a query.
    pub(crate) fn states(&self) -> Vec<AwarenessEntry> {
        self.entries
            .iter()
            .filter(|(_, e)| e.state != "null")
            .map(|(client, e)| AwarenessEntry {
                client: *client,
                clock: e.clock,
                state: e.state.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: u64, clock: u64, state: &str) -> AwarenessEntry {
        AwarenessEntry {
            client,
            clock,
            state: state.into(),
        }
    }

    #[test]
    fn follows_the_clock_rules() {
        let mut a = Awareness::default();
        let t = Instant::now();
        assert_eq!(a.apply(1, vec![entry(7, 1, "{}")], t).len(), 1);
        // Same clock, not a removal: stale.
        assert!(a.apply(1, vec![entry(7, 1, r#"{"x":1}"#)], t).is_empty());
        // Newer clock wins.
        assert_eq!(a.apply(1, vec![entry(7, 2, r#"{"x":1}"#)], t).len(), 1);
        // Same clock removal wins.
        assert_eq!(a.apply(1, vec![entry(7, 2, "null")], t).len(), 1);
        assert!(a.states().is_empty());
    }

    #[test]
    fn a_connection_cannot_speak_for_another() {
        let mut a = Awareness::default();
        let t = Instant::now();
        a.apply(1, vec![entry(7, 1, "{}")], t);
        assert!(a.apply(2, vec![entry(7, 5, r#"{"evil":1}"#)], t).is_empty());
        assert_eq!(a.states()[0].state, "{}");
        // Once the owner has gone quiet, a reconnected client may claim its id back.
        let later = t + TAKEOVER_AFTER;
        assert_eq!(a.apply(2, vec![entry(7, 5, "{}")], later).len(), 1);
    }

    #[test]
    fn caps_client_ids_per_connection() {
        let mut a = Awareness::default();
        let t = Instant::now();
        let many: Vec<_> = (0..10).map(|c| entry(c, 1, "{}")).collect();
        assert_eq!(a.apply(1, many, t).len(), MAX_CLIENTS_PER_CONN);
    }

    /// Pins issue 13 item 5: removals of unknown client ids were kept (and broadcast) without
    /// the per-connection cap, so one connection could grow the table without bound.
    #[test]
    fn removals_of_unknown_ids_are_not_kept_and_tombstones_are_forgotten() {
        let mut a = Awareness::default();
        let t = Instant::now();
        let flood: Vec<_> = (0..1000).map(|c| entry(c, 1, "null")).collect();
        assert!(a.apply(1, flood, t).is_empty());
        assert_eq!(a.entries.len(), 0);
        // A connection's own removals hold its slots: it cannot cycle through more ids.
        let mine: Vec<_> = (0..MAX_CLIENTS_PER_CONN as u64)
            .map(|c| entry(c, 1, "{}"))
            .collect();
        a.apply(1, mine, t);
        let gone: Vec<_> = (0..MAX_CLIENTS_PER_CONN as u64)
            .map(|c| entry(c, 1, "null"))
            .collect();
        a.apply(1, gone, t);
        assert!(a.apply(1, vec![entry(100, 1, "{}")], t).is_empty());
        // A remote process's pseudo-connection (no cap) leaves tombstones; they are forgotten
        // after the timeout.
        a.apply_capped(
            9,
            (200..300).map(|c| entry(c, 1, "{}")).collect(),
            t,
            usize::MAX,
        );
        a.apply_capped(
            9,
            (200..300).map(|c| entry(c, 2, "null")).collect(),
            t,
            usize::MAX,
        );
        assert_eq!(a.entries.len(), 100 + MAX_CLIENTS_PER_CONN);
        a.expire(t + OUTDATED_TIMEOUT);
        assert_eq!(a.entries.len(), 0);
        // Taking over stale ids counts against the cap too.
        let stale: Vec<_> = (500..510).map(|c| entry(c, 1, "{}")).collect();
        a.apply_capped(2, stale, t, usize::MAX);
        let later = t + TAKEOVER_AFTER;
        let takeover: Vec<_> = (500..510).map(|c| entry(c, 2, "{}")).collect();
        assert_eq!(a.apply(3, takeover, later).len(), MAX_CLIENTS_PER_CONN);
    }

    #[test]
    fn removal_on_close_and_expiry() {
        let mut a = Awareness::default();
        let t = Instant::now();
        a.apply(1, vec![entry(7, 3, "{}")], t);
        a.apply(2, vec![entry(8, 1, "{}")], t);
        let removed = a.remove_conn(1);
        assert_eq!(removed, vec![entry(7, 4, "null")]);
        assert_eq!(a.states().len(), 1);
        assert!(a.expire(t + Duration::from_secs(29)).is_empty());
        assert_eq!(a.expire(t + OUTDATED_TIMEOUT), vec![entry(8, 2, "null")]);
        assert!(a.states().is_empty());
    }
}
