//! Model 3's memory of an account's payees, the third cache line of its
//! AML state: a 256-bit filter of whom it has paid, the payees it added in
//! the last week with what it has sent each since, and the Hong Kong day it
//! first sent money.
//!
//! - The profile's 64-bit filter (two bits per payee) takes half of the new
//!   payees of an account with forty payees for known ones; this one (three
//!   bits per payee in 256) about one in twenty.
//! - A payee added this week is remembered by a 16-bit tag in one of four
//!   slots (the oldest makes room): money to it adds up, so several
//!   payments that each look ordinary but together are far above the
//!   account's usual (a partial drain, a takeover that grows over days)
//!   are seen as what they are together.
//! - The first day bounds level 3: nothing trips until an account's
//!   history spans `HISTORY_MIN_DAYS`, a month's cycle of rent, bills and
//!   remittances.
//!
//! Integer only, driven by the logged clock: a replay decides the same.

use super::log2_q8;

/// Days a newly added payee stays recent.
pub const RECENT_DAYS: u16 = 7;
/// Days an account's history must span before level 3 (model 3) trips.
pub const HISTORY_MIN_DAYS: u16 = 28;
const SLOTS: usize = 4;

/// One account's payee memory. 64 bytes with padding, one cache line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Payees {
    /// Bloom filter, three bits per payee key.
    filter: [u64; 4],
    /// Tags of the payees added within `RECENT_DAYS` (0: an empty slot; a
    /// key whose tag would be 0 is tagged 1).
    tags: [u16; SLOTS],
    /// The HK day (days since 1970) each was added.
    days: [u16; SLOTS],
    /// Log2 (Q8) of the HKD minor value sent to each since it was added.
    sums: [u16; SLOTS],
    /// The HK day of the first transfer learned (0: none yet).
    since_day: u16,
}

/// The three filter bits of a payee key (already mixed): word, bit.
fn bits(key: u64) -> [(usize, u64); 3] {
    [16, 24, 32].map(|shift| {
        let b = (key >> shift) & 255;
        ((b >> 6) as usize, 1 << (b & 63))
    })
}

fn tag(key: u64) -> u16 {
    ((key >> 48) as u16).max(1)
}

/// 2^(x/256) for a Q8 log2 (the inverse of `log2_q8`, linear between
/// powers of two like it).
fn exp2_q8(x: i32) -> u128 {
    let x = x.clamp(0, 100 * 256) as u32;
    (u128::from(256 + (x & 255)) << (x >> 8)) >> 8
}

impl Payees {
    /// Whether the account has paid `key` (a payee or corridor key).
    #[must_use]
    pub fn knows(&self, key: u64) -> bool {
        bits(key).iter().all(|&(w, b)| self.filter[w] & b != 0)
    }

    /// Days from the first transfer learned to `today` (0 before one).
    #[must_use]
    pub fn days_known(&self, today: u16) -> u16 {
        if self.since_day == 0 { 0 } else { today.saturating_sub(self.since_day) }
    }

    fn recent_slot(&self, key: u64, today: u16) -> Option<usize> {
        let t = tag(key);
        (0..SLOTS).find(|&i| self.tags[i] == t && today.saturating_sub(self.days[i]) < RECENT_DAYS)
    }

    /// For a payee the account added within `RECENT_DAYS` (not the payment
    /// that added it): log2 (Q8) of what it has sent the payee since,
    /// `x` (this payment's log2 value) included.
    #[must_use]
    pub fn sent_to_recent(&self, key: u64, today: u16, x: i32) -> Option<i32> {
        self.recent_slot(key, today).map(|i| log2_q8(exp2_q8(i32::from(self.sums[i])) + exp2_q8(x)))
    }

    /// Takes a payment into the memory: `new` when the payee was not known
    /// (it takes a slot: an empty or expired one, else the oldest), else
    /// its value adds to its slot if the payee is recent. `sent` is what
    /// [`Payees::sent_to_recent`] answered for this payment, if the caller
    /// asked (the slot's new sum, not worked out twice).
    pub fn learn(&mut self, key: u64, x: Option<i32>, today: u16, new: bool, sent: Option<i32>) {
        if self.since_day == 0 {
            self.since_day = today.max(1);
        }
        let x = x.unwrap_or(0);
        if new {
            let free = (0..SLOTS).find(|&i| self.tags[i] == 0 || today.saturating_sub(self.days[i]) >= RECENT_DAYS);
            let i = free.unwrap_or_else(|| (0..SLOTS).min_by_key(|&i| self.days[i]).expect("slots"));
            self.tags[i] = tag(key);
            self.days[i] = today;
            self.sums[i] = x.clamp(0, i32::from(u16::MAX)) as u16;
        } else if let Some(i) = self.recent_slot(key, today) {
            let sum = sent.unwrap_or_else(|| log2_q8(exp2_q8(i32::from(self.sums[i])) + exp2_q8(x)));
            self.sums[i] = sum.clamp(0, i32::from(u16::MAX)) as u16;
        }
        // Only an unknown payee's bits are stored: a payment to an old payee
        // leaves this line clean (no write-back to memory).
        if !self.knows(key) {
            for (w, b) in bits(key) {
                self.filter[w] |= b;
            }
        }
    }

    /// Whether nothing was learned.
    #[must_use]
    pub fn is_blank(&self) -> bool {
        *self == Self::default()
    }

    /// The memory's words, for snapshots (canonical order).
    #[must_use]
    pub fn to_words(&self) -> [u64; 8] {
        let pack = |v: [u16; SLOTS]| v.iter().rev().fold(0u64, |w, &x| (w << 16) | u64::from(x));
        [
            self.filter[0],
            self.filter[1],
            self.filter[2],
            self.filter[3],
            pack(self.tags),
            pack(self.days),
            pack(self.sums),
            u64::from(self.since_day),
        ]
    }

    /// The inverse of [`Payees::to_words`]; `None` for words it never writes.
    #[must_use]
    pub fn from_words(w: [u64; 8]) -> Option<Self> {
        if w[7] > u64::from(u16::MAX) {
            return None;
        }
        let unpack = |x: u64| std::array::from_fn(|i| (x >> (16 * i)) as u16);
        Some(Self {
            filter: [w[0], w[1], w[2], w[3]],
            tags: unpack(w[4]),
            days: unpack(w[5]),
            sums: unpack(w[6]),
            since_day: w[7] as u16,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::mix64;

    const DAY: u16 = 20_800;

    #[test]
    fn a_payee_once_paid_is_known_and_others_mostly_not() {
        let mut p = Payees::default();
        for k in 0..40 {
            p.learn(mix64(k), Some(3000), DAY, true, None);
        }
        assert!((0..40).all(|k| p.knows(mix64(k))), "a filter never forgets");
        let mistaken = (1_000..3_000).filter(|&k| p.knows(mix64(k))).count();
        assert!(mistaken < 2_000 / 10, "{mistaken} of 2000 new payees taken for known");
    }

    #[test]
    fn money_to_a_payee_added_this_week_adds_up_until_the_week_is_over() {
        let mut p = Payees::default();
        let (shop, x) = (mix64(7), 10 * 256); // HK$10.24 in minor units: 2^10
        p.learn(shop, Some(x), DAY, true, None);
        // The next payment: 2^10 + 2^10 = 2^11.
        assert_eq!(p.sent_to_recent(shop, DAY + 1, x), Some(11 * 256));
        p.learn(shop, Some(x), DAY + 1, false, None);
        assert_eq!(p.sent_to_recent(shop, DAY + 2, 11 * 256), Some(12 * 256));
        assert_eq!(p.sent_to_recent(shop, DAY + RECENT_DAYS, x), None, "a week on, no longer recent");
        assert_eq!(p.sent_to_recent(mix64(8), DAY + 1, x), None, "never added");
        assert_eq!(p.days_known(DAY + 30), 30);
        assert_eq!(Payees::default().days_known(DAY), 0);
    }

    #[test]
    fn learning_with_the_sum_already_worked_out_learns_the_same() {
        let (shop, mut told, mut alone) = (mix64(7), Payees::default(), Payees::default());
        for (day, x) in [(0, 2560), (1, 3000), (2, 2900), (3, 3100)] {
            let new = !told.knows(shop);
            let sent = if new { None } else { told.sent_to_recent(shop, DAY + day, x) };
            told.learn(shop, Some(x), DAY + day, new, sent);
            alone.learn(shop, Some(x), DAY + day, new, None);
            assert_eq!(told, alone, "day {day}");
        }
    }

    #[test]
    fn the_oldest_recent_payee_makes_room() {
        let mut p = Payees::default();
        for k in 0..5u16 {
            p.learn(mix64(u64::from(k)), Some(256), DAY + k / 2, true, None);
        }
        assert_eq!(p.sent_to_recent(mix64(0), DAY + 3, 256), None, "the first one made room for the fifth");
        assert!((1..5).all(|k| p.sent_to_recent(mix64(k), DAY + 3, 256).is_some()));
    }

    #[test]
    fn words_round_trip() {
        let mut p = Payees::default();
        p.learn(mix64(1), Some(4000), DAY, true, None);
        p.learn(mix64(2), None, DAY + 2, true, None);
        p.learn(mix64(1), Some(4100), DAY + 3, false, None);
        assert_eq!(Payees::from_words(p.to_words()), Some(p));
        let mut w = p.to_words();
        w[7] = 1 << 16;
        assert_eq!(Payees::from_words(w), None);
    }
}
