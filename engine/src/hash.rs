//! A fast, deterministic hasher for integer keys (account and transfer ids).
//!
//! Ids are chosen by channels, often sequentially, so the hasher must spread
//! them: it runs each word through the murmur3 64-bit finaliser. It is not
//! DoS-resistant (a channel is authenticated and rate-limited, and ids are
//! bounded per batch); SipHash costs more than the rest of a transfer.
//! Hash-map iteration order never decides an outcome anywhere in Harbour, so
//! the fixed seed costs no determinism.

use std::hash::{BuildHasher, Hasher};

/// Builds [`IdHasher`]s.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdBuildHasher;

impl BuildHasher for IdBuildHasher {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

/// Hashes integer keys with a murmur3-style finaliser.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

/// The murmur3 64-bit finaliser: every input bit affects every output bit.
#[inline]
#[must_use]
pub const fn mix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^= x >> 33;
    x
}

/// Hash of a 128-bit id.
#[inline]
#[must_use]
pub const fn hash_u128(id: u128) -> u64 {
    mix64((id as u64) ^ mix64((id >> 64) as u64 ^ 0x9e37_79b9_7f4a_7c15))
}

impl Hasher for IdHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.write_u64(u64::from(x));
    }
    #[inline]
    fn write_u16(&mut self, x: u16) {
        self.write_u64(u64::from(x));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.0 = mix64(self.0.rotate_left(5) ^ x);
    }
    #[inline]
    fn write_u128(&mut self, x: u128) {
        self.0 = hash_u128(x) ^ self.0.rotate_left(5);
    }
}

/// A `HashMap` keyed by ids, with [`IdBuildHasher`].
pub type IdMap<K, V> = std::collections::HashMap<K, V, IdBuildHasher>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_spread_over_buckets() {
        // 1,024 sequential ids over 64 buckets: each bucket gets 16 on average;
        // a weak hash piles them up.
        let mut buckets = [0u32; 64];
        for id in 0..1024u64 {
            buckets[(mix64(id) & 63) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| (4..=32).contains(&n)), "{buckets:?}");
        assert_ne!(hash_u128(1), hash_u128(1 << 64));
    }
}
