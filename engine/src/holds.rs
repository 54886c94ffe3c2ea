//! Holds: what a pending transfer waits for, the windows that bound each
//! wait, and the timer queue that fires them on the logical clock.
//!
//! A pending transfer carries a set of holds. Each hold has an end: a
//! verification window (FACE_REVIEW, SMS_OTP, MANUAL_REVIEW, MULE_REVIEW,
//! CLIENT) whose
//! end voids the transfer if the hold is still open, or a cooling-off period
//! (COOLING_OFF) whose end releases the hold. Timers are ordered by
//! `(due_ms, transfer_id)`, so expiries at the same instant fire in id order
//! on every run and every replay.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::hash::{IdBuildHasher, IdMap};
use crate::transfers::TransferIndex;

pub use crate::protocol::records::Holds;

/// How long each verification may take before the transfer is voided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HoldWindows {
    /// FACE_REVIEW and SMS_OTP (contract default 10 minutes).
    pub step_up_ms: u64,
    /// MANUAL_REVIEW (contract default 24 hours), and MULE_REVIEW.
    pub manual_review_ms: u64,
    /// CLIENT (contract default 7 days).
    pub client_ms: u64,
}

impl Default for HoldWindows {
    fn default() -> Self {
        Self { step_up_ms: 10 * 60_000, manual_review_ms: 24 * 3_600_000, client_ms: 7 * 24 * 3_600_000 }
    }
}

/// Timing of one pending transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingEntry {
    /// Where the transfer is stored.
    pub at: TransferIndex,
    /// Switch time at submission; verification windows run from here.
    pub submitted_ms: u64,
    /// End of the account's cooling-off period if COOLING_OFF holds it.
    pub cooling_until_ms: u64,
    /// When its timer is due: the soonest end among its open holds.
    pub due_ms: u64,
    /// What it added to its account's AML day total (value units), taken
    /// off again if it is voided.
    pub counted: u128,
    /// Its AML case (index into the engine's cases), or `NO_CASE`.
    pub case: u32,
}

/// The due time of a transfer without a timer (IN_FLIGHT).
pub const NEVER: u64 = u64::MAX;

/// `PendingEntry::case` of a transfer AML did not hold.
pub const NO_CASE: u32 = u32::MAX;

impl PendingEntry {
    /// When one hold of this transfer ends.
    #[must_use]
    pub fn end_of(&self, hold: Holds, windows: &HoldWindows) -> u64 {
        let window = match hold {
            Holds::COOLING_OFF => return self.cooling_until_ms,
            Holds::FACE_REVIEW | Holds::SMS_OTP => windows.step_up_ms,
            Holds::MANUAL_REVIEW | Holds::MULE_REVIEW => windows.manual_review_ms,
            Holds::CLIENT => windows.client_ms,
            _ => unreachable!("end_of takes a single hold"),
        };
        self.submitted_ms.saturating_add(window)
    }

    /// The soonest end among `holds` (`hold_until_ms` on the wire), or
    /// `NEVER` for a transfer only IN_FLIGHT holds.
    #[must_use]
    pub fn soonest_end(&self, holds: Holds, windows: &HoldWindows) -> u64 {
        assert!(!holds.is_empty(), "a pending transfer has at least one hold");
        Holds::ALL.iter().filter(|h| holds.contains(**h)).map(|h| self.end_of(*h, windows)).min().unwrap_or(NEVER)
    }
}

/// Every pending transfer of a shard and its timer.
///
/// Timers are a binary min-heap of `(due, id)` with lazy deletion: a
/// transfer that stops pending or moves its timer leaves its old entry in
/// the heap, recognised as stale (its transfer is gone, or due elsewhere)
/// and dropped when it reaches the top, which is kept valid after every
/// change. A heap is one contiguous array: no allocation per timer, and a
/// snapshot copies it with one `memcpy`. The order timers fire in is
/// `(due, id)`, a total order, whatever the heap's layout, so replay fires
/// them the same. Stale entries are compacted away when they outnumber the
/// live ones.
#[derive(Debug, Default)]
pub struct PendingTable {
    entries: IdMap<u128, PendingEntry>,
    timers: BinaryHeap<Reverse<(u64, u128)>>,
}

impl Clone for PendingTable {
    fn clone(&self) -> Self {
        Self { entries: self.entries.clone(), timers: self.timers.clone() }
    }
    /// Reuses the table's memory (the snapshot copy).
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { entries, timers } = source;
        self.entries.clone_from(entries);
        self.timers.clone_from(timers);
    }
}

impl PendingTable {
    /// An empty table.
    #[must_use]
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// An empty table with room for `capacity` pending transfers, so it
    /// never rehashes (a stop of the shard proportional to its size) below
    /// that.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: IdMap::with_capacity_and_hasher(capacity, IdBuildHasher),
            timers: BinaryHeap::with_capacity(capacity),
        }
    }

    fn is_live(&self, due: u64, id: u128) -> bool {
        self.entries.get(&id).is_some_and(|e| e.due_ms == due)
    }

    /// Drops stale timers from the top, so the top is always live; and
    /// rebuilds the heap when stale entries outnumber live ones.
    fn tidy(&mut self) {
        while let Some(&Reverse((due, id))) = self.timers.peek() {
            if self.is_live(due, id) {
                break;
            }
            self.timers.pop();
        }
        if self.timers.len() > 2 * self.entries.len() + 1024 {
            let live: Vec<Reverse<(u64, u128)>> = self
                .entries
                .iter()
                .filter(|(_, e)| e.due_ms != NEVER)
                .map(|(id, e)| Reverse((e.due_ms, *id)))
                .collect();
            self.timers = BinaryHeap::from(live);
        }
    }

    /// Adds a pending transfer with its timer.
    pub fn insert(&mut self, id: u128, entry: PendingEntry) {
        assert!(self.entries.insert(id, entry).is_none(), "transfer {id} pending twice");
        if entry.due_ms != NEVER {
            self.timers.push(Reverse((entry.due_ms, id)));
        }
    }

    /// A pending transfer's timing.
    #[must_use]
    pub fn get(&self, id: u128) -> Option<&PendingEntry> {
        self.entries.get(&id)
    }

    /// Moves a pending transfer's timer (never earlier: releasing a hold
    /// can only leave later ends).
    pub fn reschedule(&mut self, id: u128, due_ms: u64) {
        let entry = self.entries.get_mut(&id).expect("rescheduled transfer is pending");
        assert!(due_ms >= entry.due_ms, "timer of {id} moved earlier");
        if due_ms == entry.due_ms {
            return;
        }
        entry.due_ms = due_ms;
        if due_ms != NEVER {
            self.timers.push(Reverse((due_ms, id)));
        }
        self.tidy();
    }

    /// Removes a transfer that is no longer pending.
    pub fn remove(&mut self, id: u128) -> PendingEntry {
        let entry = self.entries.remove(&id).expect("removed transfer is pending");
        self.tidy();
        entry
    }

    /// The earliest timer due at or before `now_ms`, if any.
    #[must_use]
    pub fn next_due(&self, now_ms: u64) -> Option<u128> {
        self.timers.peek().filter(|Reverse((due, _))| *due <= now_ms).map(|Reverse((_, id))| *id)
    }

    /// When the earliest timer is due.
    #[must_use]
    pub fn earliest_due(&self) -> Option<u64> {
        self.timers.peek().map(|Reverse((due, _))| *due)
    }

    /// Number of pending transfers.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is pending.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every pending transfer, sorted by id.
    #[must_use]
    pub fn sorted(&self) -> Vec<(u128, PendingEntry)> {
        let mut all: Vec<_> = self.entries.iter().map(|(id, e)| (*id, *e)).collect();
        all.sort_unstable_by_key(|(id, _)| *id);
        all
    }

    /// Whether every entry has exactly one live timer and the top is live.
    #[must_use]
    pub fn timers_consistent(&self) -> bool {
        let mut live: Vec<(u64, u128)> =
            self.timers.iter().map(|Reverse(t)| *t).filter(|(due, id)| self.is_live(*due, *id)).collect();
        live.sort_unstable();
        let unique = live.windows(2).all(|w| w[0] != w[1]);
        let top_live = self.timers.peek().is_none_or(|Reverse((due, id))| self.is_live(*due, *id));
        let timed = self.entries.values().filter(|e| e.due_ms != NEVER).count();
        unique && top_live && live.len() == timed
    }
}
