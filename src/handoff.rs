//! The bookkeeping of every handoff between threads: what lets a full queue
//! answer BUSY instead of waiting, what bounds the queues between shards,
//! and what lets a stopping switch know nothing is left in flight.
//!
//! The queues themselves are bounded crossbeam channels; these types decide
//! what may be put in them. Each is small enough for loom to check every
//! interleaving (`tests/loom.rs`, `cargo test --features loom --test
//! loom`), through the `crate::sync` shim.
//!
//! - [`Admission`]: network → shards. Many connection tasks admit request
//!   bytes at once; admitted bytes never exceed the bound, and a refusal
//!   (BUSY) leaves the count as it was.
//! - [`Windows`]: shard → shard. Only shard `a` sends to shard `b` on the
//!   pair `(a, b)`, and only `b` takes from it, so a sender that finds room
//!   keeps it: a link queue sized for every peer's window never refuses a
//!   message and a shard never waits on another (no deadlock between two
//!   shards sending to each other).
//! - [`Settled`]: stopping. A shard stops only once every shard has
//!   published that it has nothing in flight.
//!
//! The log writer is each shard's own thread (no handoff); snapshots are
//! handed to a helper thread by value and come back through its join.

use crate::sync::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Bytes of requests admitted into the shards' queues and not yet applied.
#[derive(Debug)]
pub struct Admission {
    queued: AtomicU64,
    max: u64,
}

impl Admission {
    /// Nothing admitted; at most `max` bytes at a time.
    #[must_use]
    pub fn new(max: u64) -> Self {
        Self { queued: AtomicU64::new(0), max }
    }

    /// Admits `bytes` if they fit under the bound; `false` (nothing
    /// admitted) if not. With `wait` the bytes are admitted whatever the
    /// count (a caller that waits for room in the queue itself).
    pub fn admit(&self, bytes: u64, wait: bool) -> bool {
        let before = self.queued.fetch_add(bytes, Ordering::AcqRel);
        if !wait && before + bytes > self.max {
            self.queued.fetch_sub(bytes, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Whether `bytes` more would fit now (a check before a scatter; the
    /// admission itself may still refuse).
    #[must_use]
    pub fn has_room(&self, bytes: u64) -> bool {
        self.queued.load(Ordering::Acquire) + bytes <= self.max
    }

    /// Gives back bytes applied (or never sent).
    pub fn release(&self, bytes: u64) {
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        assert!(before >= bytes, "released {bytes} of {before} admitted bytes");
    }

    /// Bytes admitted now.
    #[must_use]
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Acquire)
    }
}

/// Per ordered pair of shards, the link messages queued and not yet taken.
#[derive(Debug)]
pub struct Windows {
    shards: usize,
    max: u32,
    queued: Vec<AtomicU32>,
}

impl Windows {
    /// `shards × shards` empty windows of `max` messages each.
    #[must_use]
    pub fn new(shards: usize, max: u32) -> Self {
        Self { shards, max, queued: (0..shards * shards).map(|_| AtomicU32::new(0)).collect() }
    }

    /// The capacity a shard's link queue needs so that sending within the
    /// windows never finds it full.
    #[must_use]
    pub fn queue_capacity(&self) -> usize {
        self.shards * self.max as usize
    }

    fn at(&self, from: usize, to: usize) -> &AtomicU32 {
        &self.queued[from * self.shards + to]
    }

    /// Called by `from`'s thread only: takes a place in the window to `to`
    /// if there is one. Only `to` frees places, so one found stays found.
    pub fn try_take(&self, from: usize, to: usize) -> bool {
        let w = self.at(from, to);
        if w.load(Ordering::Acquire) >= self.max {
            return false;
        }
        w.fetch_add(1, Ordering::AcqRel);
        true
    }

    /// Called by `to`'s thread when it takes a message from `from` (or by
    /// `from` for a message it took a place for but could not send).
    pub fn give_back(&self, from: usize, to: usize) {
        let before = self.at(from, to).fetch_sub(1, Ordering::AcqRel);
        assert!(before > 0, "a window gave back a place it did not have");
    }

    /// Messages from `from` queued for `to` now.
    #[must_use]
    pub fn queued(&self, from: usize, to: usize) -> u32 {
        self.at(from, to).load(Ordering::Acquire)
    }
}

/// Per shard: whether it has nothing in flight (no unacknowledged entry, no
/// answer waiting for another shard, nothing it could not send yet).
#[derive(Debug)]
pub struct Settled {
    flags: Vec<AtomicBool>,
    /// Per shard: whether it has taken its stop (takes no more requests).
    stopping: Vec<AtomicBool>,
    /// The switch failed to start: stop at once, settle nothing.
    abandoned: AtomicBool,
}

impl Settled {
    /// No shard settled yet.
    #[must_use]
    pub fn new(shards: usize) -> Self {
        Self {
            flags: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            stopping: (0..shards).map(|_| AtomicBool::new(false)).collect(),
            abandoned: AtomicBool::new(false),
        }
    }

    /// Shard `me` took its stop.
    pub fn stopping(&self, me: usize) {
        self.stopping[me].store(true, Ordering::Release);
    }

    /// Whether every shard has taken its stop (the drain's time limit runs
    /// from then: one shard may still be applying a full queue before it).
    #[must_use]
    pub fn all_stopping(&self) -> bool {
        self.stopping.iter().all(|f| f.load(Ordering::Acquire))
    }

    /// The switch is given up (a shard did not recover): shards stop
    /// without settling; the next start resends what is in flight.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::Release);
    }

    /// Whether the switch was given up.
    #[must_use]
    pub fn abandoned(&self) -> bool {
        self.abandoned.load(Ordering::Acquire)
    }

    /// Publishes shard `me`'s state, after its sends of the step: settled
    /// only once it is stopping (takes no more requests) and has nothing
    /// in flight.
    pub fn publish(&self, me: usize, settled: bool) {
        self.flags[me].store(settled, Ordering::Release);
    }

    /// Whether every shard has published that it is settled. While
    /// stopping, a shard creates entries only in answer to another's
    /// unacknowledged ones (no requests, no timers), so once all flags are
    /// seen set nothing is left in flight anywhere.
    #[must_use]
    pub fn all(&self) -> bool {
        self.flags.iter().all(|f| f.load(Ordering::Acquire))
    }
}
