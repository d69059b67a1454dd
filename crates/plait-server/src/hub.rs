//! The registry of loaded rooms: the only map shared between tasks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::room::{self, RoomCmd, RoomHandle};
use crate::Shared;

/// Rooms by name. `get_or_spawn` goes through `entry()` so a room never loads twice, and an
/// unloading room removes its entry only if the entry is still its own (`remove_if` on id).
#[derive(Debug)]
pub(crate) struct Hub {
    rooms: DashMap<Arc<str>, RoomHandle>,
    next_id: AtomicU64,
    max_rooms: usize,
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
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.rooms.len()
    }

    /// The handle of a loaded room, loading it if needed.
    pub(crate) fn get_or_spawn(
        &self,
        name: &str,
        shared: &Arc<Shared>,
    ) -> Result<RoomHandle, HubError> {
        if let Some(h) = self.rooms.get(name) {
            return Ok(h.clone());
        }
        if self.rooms.len() >= self.max_rooms && !self.evict_one() {
            return Err(HubError::Full);
        }
        if shared.shutdown.is_cancelled() {
            return Err(HubError::ShuttingDown);
        }
        let name: Arc<str> = Arc::from(name);
        match self.rooms.entry(name.clone()) {
            Entry::Occupied(e) => Ok(e.get().clone()),
            Entry::Vacant(e) => {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let handle = room::spawn(name, id, shared.clone());
                e.insert(handle.clone());
                Ok(handle)
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
