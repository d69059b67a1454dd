//! The durability ledger: what a room has applied to its document but not yet stored, and the
//! frames that wait for it. Sans-IO: it never awaits, never touches a socket or the store, and
//! takes the time as an argument, so its rules are checked by a deterministic simulation
//! (`tests` below) rather than through sockets.
//!
//! The one decision it owns is the durability rule of the whole room:
//! - strict: a frame carrying an update goes out only after the store write holding that update
//!   succeeded, and then to every member, its sender included (the echo is the sender's
//!   confirmation that the edit is stored);
//! - relaxed: a frame goes out at once, and the update is stored within the flush interval.
//!
//! Updates are written in the order they were applied, at most one write under way; a failed
//! write puts its updates and frames back in front of what was applied meanwhile and schedules
//! a retry with exponential backoff. While anything is uncommitted the document holds content
//! the store does not ([`Ledger::is_clean`]): with strict durability nothing may read the
//! document's content then.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::conn::ConnId;

/// First retry delay after a failed write; doubles up to [`MAX_RETRY_DELAY`].
pub(crate) const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
pub(crate) const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

/// A store write the ledger handed out and waits to hear about.
#[derive(Debug)]
struct Batch {
    updates: Vec<Bytes>,
    held: Vec<Bytes>,
    acks: Vec<ConnId>,
    /// Bytes this batch holds: updates and frames.
    bytes: usize,
}

/// What a successful write released.
#[derive(Debug, Default)]
pub(crate) struct Committed {
    /// The updates written, in order (for the bus and the log counters).
    pub(crate) updates: Vec<Bytes>,
    /// The frames that may go out now (strict durability), in order, to every member.
    pub(crate) frames: Vec<Bytes>,
    /// The senders of the updates written, once per update: told "stored" if they asked.
    pub(crate) acks: Vec<ConnId>,
    /// Update bytes written (what the log grew by).
    pub(crate) update_bytes: usize,
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Ledger {
    strict: bool,
    /// Updates applied but not yet handed to a write, oldest first.
    pending: Vec<Bytes>,
    /// Frames waiting for `pending` (strict durability).
    held: Vec<Bytes>,
    /// Senders of `pending`, to be told once it is stored.
    acks: Vec<ConnId>,
    /// Bytes of `pending` and `held`.
    pending_bytes: usize,
    /// The write under way, if any.
    in_flight: Option<Batch>,
    /// When a failed write may be retried; `None` while the store is healthy.
    retry_at: Option<Instant>,
    retry_delay: Duration,
}

impl Ledger {
    pub(crate) fn new(strict: bool) -> Self {
        Ledger {
            strict,
            pending: Vec::new(),
            held: Vec::new(),
            acks: Vec::new(),
            pending_bytes: 0,
            in_flight: None,
            retry_at: None,
            retry_delay: FIRST_RETRY_DELAY,
        }
    }

    /// Records an update applied to the document, the frame that carries it to the members,
    /// and who sent it. Returns the frame and senders when they may be told now (relaxed
    /// durability); with strict durability they wait until the update's write succeeds.
    pub(crate) fn record(
        &mut self,
        update: Bytes,
        frame: Bytes,
        senders: Vec<ConnId>,
    ) -> Option<(Bytes, Vec<ConnId>)> {
        self.pending_bytes += update.len();
        self.pending.push(update);
        if self.strict {
            self.pending_bytes += frame.len();
            self.held.push(frame);
            self.acks.extend(senders);
            None
        } else {
            Some((frame, senders))
        }
    }

    /// Senders to tell "stored" for updates that added nothing to the document (so nothing of
    /// theirs is written), once everything applied before them is stored. Returns them when
    /// that is now (nothing waits, or relaxed durability); otherwise they go with the acks of
    /// the write that stores what is ahead of them.
    pub(crate) fn acknowledge(&mut self, senders: Vec<ConnId>) -> Option<Vec<ConnId>> {
        if !self.strict || self.is_clean() {
            return Some(senders);
        }
        match &mut self.in_flight {
            // Only the write under way is ahead of them.
            Some(batch) if self.pending.is_empty() => batch.acks.extend(senders),
            _ => self.acks.extend(senders),
        }
        None
    }

    /// Bytes the room holds because of uncommitted updates: the updates and their held
    /// frames, pending and in flight. `--max-uncommitted-bytes` bounds this.
    pub(crate) fn held_bytes(&self) -> usize {
        self.pending_bytes + self.in_flight.as_ref().map_or(0, |b| b.bytes)
    }

    /// Whether every applied update is stored: the document holds nothing the store lacks.
    pub(crate) fn is_clean(&self) -> bool {
        self.pending.is_empty() && self.in_flight.is_none()
    }

    /// Updates applied but not yet handed to a write.
    pub(crate) fn n_pending(&self) -> usize {
        self.pending.len()
    }

    /// Whether the last write failed and its retry has not succeeded yet.
    pub(crate) fn failing(&self) -> bool {
        self.retry_at.is_some()
    }

    /// Whether a failed write's retry is due at `now`.
    pub(crate) fn retry_due(&self, now: Instant) -> bool {
        self.retry_at.is_some_and(|at| now >= at)
    }

    /// How long to wait before the next retry.
    pub(crate) fn retry_delay(&self) -> Duration {
        self.retry_delay
    }

    /// Whether [`Ledger::start`] would hand out a write at `now`.
    pub(crate) fn ready(&self, now: Instant) -> bool {
        self.in_flight.is_none()
            && !self.pending.is_empty()
            && self.retry_at.is_none_or(|at| now >= at)
    }

    /// With strict durability, replaces the pending updates and their frames by the one
    /// update and frame `merge` makes of them (if it can): the write stores one row, and each
    /// member gets one frame per write instead of one per update, which is most of a busy
    /// room's cost. The senders are told "stored" once per update, as before. Relaxed
    /// durability sends frames at once, so there is nothing held to merge.
    pub(crate) fn coalesce(&mut self, merge: impl FnOnce(&[Bytes]) -> Option<(Bytes, Bytes)>) {
        if !self.strict || self.pending.len() < 2 {
            return;
        }
        if let Some((update, frame)) = merge(&self.pending) {
            self.pending_bytes = update.len() + frame.len();
            self.pending = vec![update];
            self.held = vec![frame];
        }
    }

    /// Hands out the next write: everything pending, unless a write is under way or a failed
    /// one waits for its retry time. The caller writes exactly these updates, in order, and
    /// reports the outcome with [`Ledger::committed`] or [`Ledger::failed`].
    pub(crate) fn start(&mut self, now: Instant) -> Option<Vec<Bytes>> {
        if !self.ready(now) {
            return None;
        }
        let batch = Batch {
            updates: std::mem::take(&mut self.pending),
            held: std::mem::take(&mut self.held),
            acks: std::mem::take(&mut self.acks),
            bytes: std::mem::take(&mut self.pending_bytes),
        };
        let updates = batch.updates.clone();
        self.in_flight = Some(batch);
        Some(updates)
    }

    /// The write under way succeeded: returns what it released.
    ///
    /// # Panics
    /// If no write is under way (a bug in the room, not reachable from input).
    pub(crate) fn committed(&mut self) -> Committed {
        let batch = self
            .in_flight
            .take()
            .expect("a write is under way when its outcome arrives");
        self.retry_at = None;
        self.retry_delay = FIRST_RETRY_DELAY;
        let update_bytes = batch.updates.iter().map(Bytes::len).sum();
        Committed {
            updates: batch.updates,
            frames: batch.held,
            acks: batch.acks,
            update_bytes,
        }
    }

    /// The write under way failed (or timed out): its updates and frames go back in front of
    /// what was applied since, and a retry is scheduled.
    ///
    /// # Panics
    /// If no write is under way (a bug in the room, not reachable from input).
    pub(crate) fn failed(&mut self, now: Instant) {
        let batch = self
            .in_flight
            .take()
            .expect("a write is under way when its outcome arrives");
        self.retry_at = Some(now + self.retry_delay);
        self.retry_delay = (self.retry_delay * 2).min(MAX_RETRY_DELAY);
        let mut updates = batch.updates;
        updates.append(&mut self.pending);
        self.pending = updates;
        let mut held = batch.held;
        held.append(&mut self.held);
        self.held = held;
        let mut acks = batch.acks;
        acks.append(&mut self.acks);
        self.acks = acks;
        self.pending_bytes += batch.bytes;
    }

    /// Updates applied but not yet stored, in order (for a reload, which rebuilds the document
    /// from the store and applies these again).
    pub(crate) fn uncommitted(&self) -> impl Iterator<Item = &Bytes> {
        self.in_flight
            .iter()
            .flat_map(|b| b.updates.iter())
            .chain(self.pending.iter())
    }
}

#[cfg(test)]
mod tests {
    //! A deterministic simulation of the ledger against a model store: seeded random schedules
    //! of edits from several members, writes that succeed, fail, or stay slow across many
    //! edits, and retries at random times. After every step it checks the rules:
    //! - strict: no frame is released before its update is in the store; every stored update's
    //!   frame is released exactly once, in order;
    //! - the store receives every applied update exactly once, in applied order;
    //! - the counted bytes are the held bytes;
    //! - once the store heals and the room waits out its retry, everything is stored.
    use super::*;
    use crate::room::sim::Rng;

    /// An update and its frame carry the same number, so the checks can match them.
    fn update(n: u32) -> Bytes {
        Bytes::from(n.to_le_bytes().to_vec())
    }
    fn frame(n: u32) -> Bytes {
        Bytes::from([&[0u8, 2][..], &n.to_le_bytes()].concat())
    }
    fn number_of_frame(frame: &Bytes) -> u32 {
        u32::from_le_bytes(frame[2..6].try_into().unwrap())
    }
    fn number_of_update(update: &Bytes) -> u32 {
        u32::from_le_bytes(update[..4].try_into().unwrap())
    }

    /// Runs one seeded schedule and panics with the seed on the first broken rule.
    fn simulate(seed: u64, strict: bool, steps: usize) {
        let mut rng = Rng(seed);
        let mut ledger = Ledger::new(strict);
        let mut now = Instant::now();
        let mut next = 0u32;
        // The model store: every update it holds, in commit order.
        let mut stored: Vec<u32> = Vec::new();
        // The write under way: its updates, and whether the model store will take them.
        let mut writing: Option<Vec<u32>> = None;
        // Frames released, in order.
        let mut released: Vec<u32> = Vec::new();
        let mut healthy = true;
        for step in 0..steps {
            let ctx = || format!("seed {seed}, step {step}");
            match rng.below(10) {
                // An edit.
                0..=3 => {
                    // The sender is named after the update, so acks can be matched too.
                    let sender = u64::from(next);
                    if let Some((now_out, acks)) =
                        ledger.record(update(next), frame(next), vec![sender])
                    {
                        assert!(!strict, "{}: a strict ledger released at once", ctx());
                        assert_eq!(acks, vec![sender], "{}", ctx());
                        released.push(number_of_frame(&now_out));
                    }
                    next += 1;
                }
                // The shell starts a write when it can.
                4 | 5 => {
                    if let Some(updates) = ledger.start(now) {
                        assert!(writing.is_none(), "{}: two writes under way", ctx());
                        assert!(!updates.is_empty(), "{}: an empty write", ctx());
                        writing = Some(updates.iter().map(number_of_update).collect());
                    }
                }
                // The write under way ends (a timeout counts as a failure that stored nothing).
                6 | 7 => {
                    if let Some(numbers) = writing.take() {
                        let ok = healthy && rng.below(4) != 0;
                        if ok {
                            stored.extend(&numbers);
                        }
                        if ok {
                            let done = ledger.committed();
                            let written: Vec<u32> =
                                done.updates.iter().map(number_of_update).collect();
                            assert_eq!(written, numbers, "{}", ctx());
                            let acked: Vec<u32> = done.acks.iter().map(|a| *a as u32).collect();
                            // Relaxed: senders were told when their update was applied.
                            let expected = if strict { numbers.clone() } else { Vec::new() };
                            assert_eq!(acked, expected, "{}: acks are the stored updates'", ctx());
                            released.extend(done.frames.iter().map(number_of_frame));
                        } else {
                            ledger.failed(now);
                            assert!(ledger.failing(), "{}", ctx());
                        }
                    }
                }
                // Time passes; the store goes down or comes back.
                8 => now += Duration::from_millis(rng.below(3_000)),
                _ => healthy = rng.below(3) != 0,
            }
            // The rules, after every step.
            if strict {
                for n in &released {
                    assert!(
                        stored.contains(n),
                        "{}: frame {n} released before its update was stored",
                        ctx()
                    );
                }
            }
            assert!(
                stored.windows(2).all(|w| w[0] + 1 == w[1])
                    && stored.first().is_none_or(|f| *f == 0),
                "{}: the store did not get every update once, in order: {stored:?}",
                ctx()
            );
            assert!(
                released.windows(2).all(|w| w[0] + 1 == w[1]),
                "{}: frames released out of order or twice",
                ctx()
            );
            let unstored = next as usize - stored.len() - writing.as_ref().map_or(0, Vec::len);
            assert_eq!(ledger.n_pending(), unstored, "{}: pending count", ctx());
            let per_update = 4 + if strict { 6 } else { 0 };
            assert_eq!(
                ledger.held_bytes(),
                (next as usize - stored.len()) * per_update,
                "{}: counted bytes are not the held bytes",
                ctx()
            );
            assert_eq!(
                ledger.is_clean(),
                stored.len() == next as usize,
                "{}",
                ctx()
            );
        }
        // The store heals: waiting out the retry, every update gets stored and released.
        if let Some(numbers) = writing.take() {
            stored.extend(&numbers);
            released.extend(ledger.committed().frames.iter().map(number_of_frame));
        }
        now += MAX_RETRY_DELAY;
        if let Some(updates) = ledger.start(now) {
            stored.extend(updates.iter().map(number_of_update));
            released.extend(ledger.committed().frames.iter().map(number_of_frame));
        }
        assert!(
            ledger.is_clean(),
            "seed {seed}: still uncommitted after healing"
        );
        assert_eq!(ledger.held_bytes(), 0, "seed {seed}");
        assert_eq!(stored, (0..next).collect::<Vec<_>>(), "seed {seed}");
        assert_eq!(released, (0..next).collect::<Vec<_>>(), "seed {seed}");
    }

    /// The seeds CI runs. A failure found by a long search (see README, "Simulation") is added
    /// here with the seed it printed.
    const SEEDS: std::ops::Range<u64> = 0..300;

    #[test]
    fn strict_ledger_releases_nothing_before_it_is_stored() {
        for seed in SEEDS {
            simulate(seed, true, 400);
        }
    }

    #[test]
    fn relaxed_ledger_stores_everything_once_in_order() {
        for seed in SEEDS {
            simulate(seed, false, 400);
        }
    }

    /// A long, unseeded search: `PLAIT_SIM_RUNS=100000 cargo test -p plait-server ledger -- --ignored`.
    #[test]
    #[ignore = "a long search; run by hand"]
    fn ledger_search() {
        let runs: u64 = std::env::var("PLAIT_SIM_RUNS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        let base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        for i in 0..runs {
            let seed = base.wrapping_add(i);
            simulate(seed, true, 2_000);
            simulate(seed, false, 2_000);
        }
    }

    /// A sender whose update added nothing is told "stored" only once what was applied before
    /// it is stored: not at once while a write or pending updates are ahead of it, and with a
    /// failed write's acks when that write is retried.
    #[test]
    fn an_update_that_added_nothing_is_confirmed_after_what_is_ahead_of_it() {
        let t = Instant::now();
        let mut ledger = Ledger::new(true);
        assert_eq!(ledger.acknowledge(vec![7]), Some(vec![7]), "nothing ahead");
        ledger.record(update(0), frame(0), vec![1]);
        assert_eq!(ledger.acknowledge(vec![7]), None, "a pending update ahead");
        ledger.start(t).unwrap();
        assert_eq!(
            ledger.acknowledge(vec![8]),
            None,
            "the write under way ahead"
        );
        ledger.failed(t);
        ledger.start(t + MAX_RETRY_DELAY).unwrap();
        assert_eq!(ledger.committed().acks, vec![1, 7, 8]);
        assert_eq!(ledger.acknowledge(vec![9]), Some(vec![9]), "clean again");
        let mut relaxed = Ledger::new(false);
        relaxed.record(update(0), frame(0), vec![1]);
        assert_eq!(relaxed.acknowledge(vec![7]), Some(vec![7]));
    }

    #[test]
    fn a_failed_write_is_retried_after_its_backoff() {
        let mut ledger = Ledger::new(true);
        let t = Instant::now();
        ledger.record(update(0), frame(0), vec![1]);
        assert!(ledger.start(t).is_some());
        ledger.failed(t);
        assert!(ledger.failing());
        assert!(ledger.start(t).is_none(), "retried before its backoff");
        assert!(!ledger.retry_due(t));
        let later = t + FIRST_RETRY_DELAY;
        assert!(ledger.retry_due(later));
        assert_eq!(ledger.start(later).map(|u| u.len()), Some(1));
        assert_eq!(ledger.committed().frames.len(), 1);
        assert!(!ledger.failing() && ledger.is_clean());
    }
}
