//! The registry of loaded rooms: the only map shared between tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::room::{self, RoomCmd, RoomHandle};
use crate::Shared;

/// How long a new room waits for an idle one to unload when the hub is full.
const EVICTION_WAIT: Duration = Duration::from_secs(2);
/// How often it looks again meanwhile.
const EVICTION_POLL: Duration = Duration::from_millis(5);

/// Rooms by name. `get_or_spawn` goes through `entry()` so a room never loads twice, and an
/// unloading room removes its entry only if the entry is still its own (`remove_if` on id).
#[derive(Debug)]
pub(crate) struct Hub {
    rooms: DashMap<Arc<str>, RoomHandle>,
    next_id: AtomicU64,
    max_rooms: usize,
    /// Held while deciding to load a room, so two loads cannot both take the last place.
    loading: Mutex<()>,
}

/// Why a room could not be had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HubError {
    /// The loaded-room cap is reached and no room is idle.
    Full,
    /// The server is shutting down.
    ShuttingDown,
}

impl Hub {
    pub(crate) fn new(max_rooms: usize) -> Self {
        Hub {
            rooms: DashMap::new(),
            next_id: AtomicU64::new(1),
            max_rooms,
            loading: Mutex::new(()),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// The handle of a loaded room, loading it if needed. When `--max-rooms` are loaded, an
    /// idle room is asked to unload and the new one loads once it has gone (the cap is never
    /// passed, not even for a moment: a room picked as idle may have a join queued and stay).
    pub(crate) async fn get_or_spawn(
        &self,
        name: &str,
        shared: &Arc<Shared>,
    ) -> Result<RoomHandle, HubError> {
        let deadline = tokio::time::Instant::now() + EVICTION_WAIT;
        loop {
            match self.try_get_or_spawn(name, shared)? {
                Some(handle) => return Ok(handle),
                None if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(EVICTION_POLL).await;
                }
                None => return Err(HubError::Full),
            }
        }
    }

    /// `None`: the hub is full and an idle room was asked to unload; try again shortly.
    fn try_get_or_spawn(
        &self,
        name: &str,
        shared: &Arc<Shared>,
    ) -> Result<Option<RoomHandle>, HubError> {
        if let Some(h) = self.rooms.get(name) {
            return Ok(Some(h.clone()));
        }
        if shared.shutdown.is_cancelled() {
            return Err(HubError::ShuttingDown);
        }
        let _deciding = self.loading.lock().unwrap_or_else(|e| e.into_inner());
        if self.rooms.len() >= self.max_rooms && !self.rooms.contains_key(name) {
            return if self.evict_one() {
                Ok(None)
            } else {
                Err(HubError::Full)
            };
        }
        let name: Arc<str> = Arc::from(name);
        match self.rooms.entry(name.clone()) {
            Entry::Occupied(e) => Ok(Some(e.get().clone())),
            Entry::Vacant(e) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let handle = room::spawn(name, id, shared.clone());
                e.insert(handle.clone());
                Ok(Some(handle))
            }
        }
    }

    /// Connections of `name` if it is loaded (0 otherwise); never loads it.
    pub(crate) fn members(&self, name: &str) -> usize {
        self.rooms
            .get(name)
            .map_or(0, |h| match h.n_members.load(Ordering::Relaxed) {
                room::LOADING => 0,
                n => n,
            })
    }

    /// Asks one idle room to unload; returns whether one was found.
    fn evict_one(&self) -> bool {
        for h in self.rooms.iter() {
            if h.n_members.load(Ordering::Relaxed) == 0 && h.tx.try_send(RoomCmd::Evict).is_ok() {
                return true;
            }
        }
        false
    }

    /// Removes `name` if it is still the instance `id`.
    pub(crate) fn remove(&self, name: &str, id: u64) {
        self.rooms.remove_if(name, |_, h| h.id == id);
    }
}
