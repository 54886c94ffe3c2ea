//! Compact id indexes and chunked arenas: the memory layout of the books.
//!
//! Accounts and transfers live in [`Arena`]s (fixed-size chunks, so growth
//! never copies and wastes at most one chunk) and are found through an
//! [`IdIndex`]: an open-addressing table of 8-byte slots, each holding a
//! 32-bit hash tag and a 32-bit arena position, probed linearly (eight
//! slots to a cache line). A lookup costs one cache line of index and one
//! of arena, and because the slot's address depends only on the id's hash,
//! the engine can [`IdIndex::prefetch`] it for records further down a batch
//! while it applies the current one. That is what keeps a shard fast when
//! its tables are far larger than the CPU's caches.
//!
//! Neither structure ever removes an entry; iteration is in insertion
//! order, so it is deterministic.

/// Slots per position at most: the table grows when it is 3/4 full.
const LOAD_NUM: usize = 3;
const LOAD_DEN: usize = 4;
/// Most entries an index holds (positions are 32-bit).
pub const INDEX_ENTRIES_MAX: usize = u32::MAX as usize - 1;

/// Maps 64-bit hashes to arena positions.
#[derive(Debug)]
pub struct IdIndex {
    /// 0 = empty; else `tag << 32 | (position + 1)`.
    slots: Vec<u64>,
    len: usize,
}

impl Clone for IdIndex {
    fn clone(&self) -> Self {
        Self { slots: self.slots.clone(), len: self.len }
    }
    /// Reuses this index's memory (no page faults on a repeated copy).
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { slots, len } = source;
        self.slots.clone_from(slots);
        self.len = *len;
    }
}

#[inline]
fn tag_of(hash: u64) -> u64 {
    hash >> 32
}

impl Default for IdIndex {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl IdIndex {
    /// An index with room for `capacity` entries before it grows.
    #[must_use]
    pub fn with_capacity(capacity: usize) -> Self {
        Self { slots: touched_zeros(Self::slots_for(capacity)), len: 0 }
    }

    fn slots_for(capacity: usize) -> usize {
        (capacity * LOAD_DEN / LOAD_NUM + 1).next_power_of_two().max(16)
    }

    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the index is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of slots.
    #[must_use]
    pub fn slots(&self) -> usize {
        self.slots.len()
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    /// Asks the CPU to start loading the slot `hash` starts probing at.
    #[inline]
    pub fn prefetch(&self, hash: u64) {
        let at = (hash as usize) & self.mask();
        prefetch(&self.slots[at]);
    }

    /// The first position whose tag matches `hash`, without checking the
    /// entry: the likely home of the key, to prefetch. Reads only the index.
    #[inline]
    pub fn candidate(&self, hash: u64) -> Option<u32> {
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut at = (hash as usize) & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                return Some((slot as u32) - 1);
            }
            at = (at + 1) & mask;
        }
    }

    /// The position of the entry with this hash for which `is` holds.
    #[inline]
    pub fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        let mask = self.mask();
        let tag = tag_of(hash);
        let mut at = (hash as usize) & mask;
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return None;
            }
            if slot >> 32 == tag {
                let position = (slot as u32) - 1;
                if is(position) {
                    return Some(position);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// Adds an entry known to be absent. `hashes` yields every existing
    /// entry's hash in position order, for when the table must grow.
    #[inline]
    pub fn insert<I: Iterator<Item = u64>>(&mut self, hash: u64, position: u32, hashes: impl FnOnce() -> I) {
        assert!(self.len < INDEX_ENTRIES_MAX, "index full");
        if (self.len + 1) * LOAD_DEN > self.slots.len() * LOAD_NUM {
            self.grow(hashes());
        }
        self.place(hash, position);
        self.len += 1;
    }

    #[inline]
    fn place(&mut self, hash: u64, position: u32) {
        let mask = self.mask();
        let mut at = (hash as usize) & mask;
        while self.slots[at] != 0 {
            at = (at + 1) & mask;
        }
        self.slots[at] = (tag_of(hash) << 32) | u64::from(position + 1);
    }

    #[cold]
    fn grow(&mut self, hashes: impl Iterator<Item = u64>) {
        self.slots = touched_zeros(self.slots.len() * 2);
        let mut n = 0;
        for (position, hash) in hashes.enumerate() {
            self.place(hash, position as u32);
            n += 1;
        }
        assert_eq!(n, self.len, "every entry rehashed");
    }

    /// Bytes the index holds.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<u64>()
    }
}

/// `n` zeros whose pages are already mapped: written explicitly rather than
/// taken from the kernel's lazily zeroed pages, so the page faults happen
/// here, at start-up or growth, not one by one in the middle of a batch.
#[allow(clippy::slow_vector_initialization)] // the point is to touch every page now
fn touched_zeros(n: usize) -> Vec<u64> {
    let mut v = Vec::with_capacity(n);
    v.resize(n, 0);
    v
}

/// A hint to load the cache lines holding `value` (its first and last
/// byte: a 48-byte entry can straddle two lines); never faults.
#[inline]
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        let first = std::ptr::from_ref(value).cast::<i8>();
        let last = first.wrapping_add(size_of::<T>().saturating_sub(1));
        // SAFETY: prefetch is a hint; it reads nothing architecturally and
        // both addresses lie inside a live reference.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first);
            _mm_prefetch::<_MM_HINT_T0>(last);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Entries per arena chunk.
const CHUNK_LEN: usize = 1 << 16;

/// An append-only vector in fixed-size chunks.
#[derive(Debug)]
pub struct Arena<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T: Clone> Clone for Arena<T> {
    fn clone(&self) -> Self {
        Self { chunks: self.chunks.clone(), len: self.len }
    }
    /// Reuses this arena's chunks (no page faults on a repeated copy).
    fn clone_from(&mut self, source: &Self) {
        // Every field named, so a new one cannot be left out.
        let Self { chunks, len } = source;
        self.chunks.clone_from(chunks);
        self.len = *len;
    }
}

impl<T> Default for Arena<T> {
    fn default() -> Self {
        Self { chunks: Vec::new(), len: 0 }
    }
}

impl<T: Copy> Arena<T> {
    /// An arena with room for `capacity` entries, its memory mapped up front
    /// (written with `filler` once and emptied), so appending never page
    /// faults below that. This is the static allocation of TigerBeetle's
    /// habit, without its hard limit: past `capacity` the arena still grows.
    #[must_use]
    pub fn with_capacity(capacity: usize, filler: T) -> Self {
        let mut chunks = Vec::new();
        let mut left = capacity;
        while left > 0 {
            // Every chunk gets its full size (so appending never copies one);
            // only the part within `capacity` is mapped now.
            let len = left.min(CHUNK_LEN);
            let mut chunk = Vec::with_capacity(CHUNK_LEN);
            chunk.resize(len, filler);
            chunk.clear();
            chunks.push(chunk);
            left -= len;
        }
        Self { chunks, len: 0 }
    }
}

impl<T> Arena<T> {
    /// Number of entries.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the arena is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends an entry; returns its position.
    #[inline]
    pub fn push(&mut self, value: T) -> u32 {
        assert!(self.len < INDEX_ENTRIES_MAX, "arena full");
        let chunk = self.len / CHUNK_LEN;
        if chunk == self.chunks.len() {
            self.chunks.push(Vec::with_capacity(CHUNK_LEN));
        }
        // Chunks made ahead by `with_capacity` are filled in order.
        self.chunks[chunk].push(value);
        self.len += 1;
        (self.len - 1) as u32
    }

    /// The entry at a position.
    #[inline]
    #[must_use]
    pub fn get(&self, position: u32) -> &T {
        let p = position as usize;
        &self.chunks[p / CHUNK_LEN][p % CHUNK_LEN]
    }

    /// The entry at a position, mutably.
    #[inline]
    pub fn get_mut(&mut self, position: u32) -> &mut T {
        let p = position as usize;
        &mut self.chunks[p / CHUNK_LEN][p % CHUNK_LEN]
    }

    /// Every entry in insertion order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }

    /// Bytes the arena holds.
    #[must_use]
    pub fn allocated_bytes(&self) -> usize {
        self.chunks.iter().map(|c| c.capacity() * size_of::<T>()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix64;

    #[test]
    fn finds_everything_across_growth_and_tag_collisions() {
        let mut keys: Arena<u64> = Arena::default();
        let mut index = IdIndex::with_capacity(4);
        // Every third key shares one tag (the high 32 bits) with the others
        // of its kind, so lookups must compare keys, not trust tags.
        let hash =
            |k: u64| if k.is_multiple_of(3) { 0xDEAD_BEEF_0000_0000 | (mix64(k) & 0xFFFF_FFFF) } else { mix64(k) };
        for k in 0..200_000u64 {
            // The index learns the position before the arena grows, so a
            // rehash sees exactly the entries it already holds.
            let at = keys.len() as u32;
            index.insert(hash(k), at, || keys.iter().map(|k| hash(*k)));
            assert_eq!(keys.push(k), at);
        }
        assert_eq!(index.len(), 200_000);
        for k in (0..200_000u64).step_by(7) {
            let at = index.find(hash(k), |p| *keys.get(p) == k).expect("present");
            assert_eq!(*keys.get(at), k);
        }
        assert_eq!(index.find(mix64(1 << 40), |p| *keys.get(p) == 1 << 40), None);
        assert!(index.allocated_bytes() <= 200_000 * 8 * 3, "load stays above 3/8");
    }
}
