//! The mule rule: an account that passes money through.
//!
//! The credit side of every customer-to-customer transfer feeds the payee's
//! [`Inbound`] state: money from senders the account never paid (strangers)
//! adds to a decaying sum and to an episode (its distinct senders, its
//! total, when it began and when money last came in). An outgoing transfer
//! to a payee or corridor the account never used is held for MULE_REVIEW
//! when it carries strangers' money (the account's balance after it is
//! less than what strangers recently paid in: the account's own money does
//! not cover it), at least a fifth of that money has left recently, this
//! transfer included, and either
//!
//! - several (`FAN_IN_SENDERS`) unrelated senders paid in (fan-in), or
//! - the account is too new to have a history and the money came in
//!   within `NEW_ACCOUNT_QUICK_MS` (a link of a chain of new accounts, or a
//!   new account's first remittance of strangers' money),
//!
//! and the strangers' recent money is at least the configured floor. A
//! held account is flagged: its outgoing transfers are held for
//! MULE_REVIEW too until the flag's end, or until an operator passes one.
//!
//! Integer only, O(1) per transfer, driven by the logged clock: a replay
//! decides the same. Amounts are HKD cents at the exact rate of the day.

use super::{DAY_MS, HISTORY_MIN, Reasons, mix64};

/// Half-life of the decaying sums of money in and money out.
pub const HALF_LIFE_MS: u64 = 6 * 3_600_000;
/// An episode of inbound money ends when none came in for this long.
pub const EPISODE_GAP_MS: u64 = DAY_MS;
/// Distinct unrelated senders that make a fan-in.
pub const FAN_IN_SENDERS: u16 = 3;
/// A new account passes money on within this of receiving it.
pub const NEW_ACCOUNT_QUICK_MS: u64 = 2 * 3_600_000;
/// How long a held account stays flagged (every outgoing transfer held).
pub const FLAG_MS: u64 = DAY_MS;
/// At least 1/`PASSED_ON_PARTS` of the strangers' recent money has left.
pub const PASSED_ON_PARTS: u128 = 5;
/// Default floor of strangers' recent money for the rule to look (HK$5,000).
pub const DEFAULT_MIN_INBOUND_HKD_MINOR: u64 = 500_000;

/// One account's inbound state. 64 bytes, one cache line: a credit reads
/// and writes only this line (the payee filter it needs is copied here).
/// Times are 48-bit milliseconds (until the year 10889), packed with the
/// small fields.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Inbound {
    /// Strangers' money in, HKD cents, decaying with `HALF_LIFE_MS` from `at_ms`.
    pub recent_in: u64,
    /// Money sent on since, HKD cents, decaying the same way.
    pub recent_out: u64,
    /// The episode's strangers' money, HKD cents (not decayed).
    pub episode_in: u64,
    /// A copy of the profile's payee filter (whom the account has paid), so
    /// a credit tells a stranger from a friend without the profile's line.
    /// Derived: not in snapshots, rebuilt from the profile.
    pub paid: u64,
    /// `at_ms` (when the decaying sums were last brought up to date) and
    /// `flag_reasons` (why the account was flagged).
    at: u64,
    /// `first_in_ms` (the episode's first stranger's money) and
    /// `sender_count` (distinct senders of the episode: a sender whose bit
    /// was already set counts once, a slight undercount, never an over).
    first: u64,
    /// `last_in_ms` and the low half of `senders`, a Bloom filter (one bit
    /// per sender) of the episode's senders.
    last: u64,
    /// `flagged_until_ms` (every outgoing transfer is held for MULE_REVIEW
    /// before it) and the high half of `senders`.
    flagged: u64,
}

const LOW48: u64 = (1 << 48) - 1;

fn pack(ms: u64, high: u16) -> u64 {
    ms.min(LOW48) | (u64::from(high) << 48)
}

const _: () = assert!(size_of::<Inbound>() == 64);

/// The evidence of a mule case, for the STR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Evidence {
    /// Distinct unrelated senders in the episode.
    pub senders: u16,
    /// What they paid in, HKD cents.
    pub inbound_hkd_minor: u64,
    /// What left the account recently, this transfer included, against the
    /// decayed inbound: per mille of the recent inbound.
    pub passed_on_permille: u32,
    /// When the episode's first and last money came in.
    pub first_in_ms: u64,
    pub last_in_ms: u64,
}

/// The key a sender is known by: the same hash the payee filter uses (its
/// low 12 bits), so a payee's own filter says whether a sender is someone
/// it paid. 40 bits, bit 39 always set so a key is never 0 (a link's
/// CREDIT from a system account names no sender: 0).
#[must_use]
pub fn sender_key(account: u64) -> u64 {
    (mix64(account) & ((1 << 40) - 1)) | (1 << 39)
}

fn decay(v: u64, elapsed: u64) -> u64 {
    super::halve_over(v, elapsed, HALF_LIFE_MS)
}

/// HKD cents of a value in value units (saturating).
#[must_use]
pub fn cents(value: u128) -> u64 {
    u64::try_from(super::minor_units(value)).unwrap_or(u64::MAX)
}

/// What the rule needs of the outgoing transfer and the account's profile.
#[derive(Clone, Copy, Debug)]
pub struct Leaving {
    pub now_ms: u64,
    /// HKD cents.
    pub value: u64,
    /// To a payee (or corridor) the account never used.
    pub new_payee: bool,
    /// The account's learned transfers (level 3's `count`).
    pub history: u16,
    /// The account's balance in the transfer's currency after it, HKD cents
    /// (0 when it would be short).
    pub balance_after: u64,
}

impl Inbound {
    /// When the decaying sums were last brought up to date.
    #[must_use]
    pub fn at_ms(&self) -> u64 {
        self.at & LOW48
    }
    /// Why the account was flagged (reason bits).
    #[must_use]
    pub fn flag_reasons(&self) -> u16 {
        (self.at >> 48) as u16
    }
    /// When the episode's first stranger's money came in (0: no episode).
    #[must_use]
    pub fn first_in_ms(&self) -> u64 {
        self.first & LOW48
    }
    /// Distinct senders of the episode.
    #[must_use]
    pub fn sender_count(&self) -> u16 {
        (self.first >> 48) as u16
    }
    /// When a stranger's money last came in.
    #[must_use]
    pub fn last_in_ms(&self) -> u64 {
        self.last & LOW48
    }
    /// The episode's senders' Bloom filter.
    #[must_use]
    pub fn senders(&self) -> u32 {
        ((self.last >> 48) | ((self.flagged >> 48) << 16)) as u32
    }
    /// Every outgoing transfer is held for MULE_REVIEW before this.
    #[must_use]
    pub fn flagged_until_ms(&self) -> u64 {
        self.flagged & LOW48
    }

    fn set_at(&mut self, at_ms: u64, flag_reasons: u16) {
        self.at = pack(at_ms, flag_reasons);
    }
    fn set_first(&mut self, first_in_ms: u64, sender_count: u16) {
        self.first = pack(first_in_ms, sender_count);
    }
    fn set_last(&mut self, last_in_ms: u64, senders: u32) {
        self.last = pack(last_in_ms, senders as u16);
        self.flagged = pack(self.flagged_until_ms(), (senders >> 16) as u16);
    }
    fn set_flagged(&mut self, until_ms: u64) {
        self.flagged = pack(until_ms, (self.flagged >> 48) as u16);
    }

    /// Whether the account has paid the sender whose `sender_key` is
    /// `key` (the profile's payee filter, copied).
    #[must_use]
    pub fn knows(&self, key: u64) -> bool {
        let bits = super::payee_bits(key);
        self.paid & bits == bits
    }

    fn bring_to(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.at_ms());
        if elapsed > 0 {
            self.recent_in = decay(self.recent_in, elapsed);
            self.recent_out = decay(self.recent_out, elapsed);
            self.set_at(now_ms, self.flag_reasons());
        }
    }

    /// A stranger's money came in: `key` is the sender's `sender_key`.
    pub fn credit(&mut self, now_ms: u64, key: u64, value_cents: u64) {
        let (mut senders, mut count) = (self.senders(), self.sender_count());
        let mut first = self.first_in_ms();
        if now_ms.saturating_sub(self.last_in_ms()) >= EPISODE_GAP_MS || first == 0 {
            self.episode_in = 0;
            (senders, count, first) = (0, 0, now_ms);
            self.recent_out = 0;
        }
        self.bring_to(now_ms);
        self.recent_in = self.recent_in.saturating_add(value_cents);
        self.episode_in = self.episode_in.saturating_add(value_cents);
        let bit = 1u32 << ((key >> 12) & 31);
        if senders & bit == 0 {
            senders |= bit;
            count = count.saturating_add(1);
        }
        self.set_first(first, count);
        self.set_last(now_ms, senders);
    }

    /// Judges an outgoing transfer and records it as money sent on: the
    /// reason bits to hold it for MULE_REVIEW with (0: not held), and the
    /// evidence (zeros when not held).
    pub fn judge(&mut self, floor_cents: u64, l: &Leaving) -> (u16, Evidence) {
        self.bring_to(l.now_ms);
        self.recent_out = self.recent_out.saturating_add(l.value);
        if l.now_ms < self.flagged_until_ms() {
            return (self.flag_reasons(), self.evidence());
        }
        let recent = l.now_ms.saturating_sub(self.last_in_ms()) < EPISODE_GAP_MS && self.first_in_ms() != 0;
        let passing = recent
            && l.new_payee
            && self.recent_in >= floor_cents.max(1)
            && l.balance_after < self.recent_in
            && u128::from(self.recent_out) * PASSED_ON_PARTS >= u128::from(self.recent_in);
        if !passing {
            return (0, Evidence::default());
        }
        let reasons = if self.sender_count() >= FAN_IN_SENDERS {
            Reasons::PASS_THROUGH
        } else if l.history < HISTORY_MIN && l.now_ms.saturating_sub(self.last_in_ms()) <= NEW_ACCOUNT_QUICK_MS {
            Reasons::NEW_ACCOUNT_PASS_THROUGH
        } else {
            return (0, Evidence::default());
        };
        self.set_flagged(l.now_ms.saturating_add(FLAG_MS));
        self.set_at(self.at_ms(), reasons);
        (reasons, self.evidence())
    }

    /// What a held transfer's case records (computed only for one).
    fn evidence(&self) -> Evidence {
        Evidence {
            senders: self.sender_count(),
            inbound_hkd_minor: self.episode_in,
            passed_on_permille: u32::try_from(u128::from(self.recent_out) * 1000 / u128::from(self.recent_in.max(1)))
                .unwrap_or(u32::MAX),
            first_in_ms: self.first_in_ms(),
            last_in_ms: self.last_in_ms(),
        }
    }

    /// An operator passed a MULE_REVIEW: the account is not a mule. What
    /// came in so far was looked at: it does not count again.
    pub fn clear_flag(&mut self) {
        *self = Self { paid: self.paid, ..Self::default() };
    }

    /// An operator passed a MULE_REVIEW of a transfer submitted at
    /// `submitted_ms`: if it belongs to the flag in force (submitted since
    /// it was set), the flag and the episode are cleared; a late pass of an
    /// older hold changes nothing else (a newer flag stands).
    pub fn passed(&mut self, submitted_ms: u64, now_ms: u64) {
        let until = self.flagged_until_ms();
        if now_ms < until && submitted_ms.saturating_add(FLAG_MS) >= until {
            self.clear_flag();
        }
    }

    /// A transfer judged at `submitted_ms` was voided: what it counted as
    /// sent on is taken back, as much of it as is still in the sum (decayed
    /// since), and only if it was counted in this episode (an episode's
    /// start, and an operator's pass, reset the sum).
    pub fn take_back(&mut self, cents: u64, submitted_ms: u64, now_ms: u64) {
        if self.first_in_ms() == 0 || submitted_ms < self.first_in_ms() {
            return;
        }
        self.bring_to(now_ms);
        let left = decay(cents, now_ms.saturating_sub(submitted_ms));
        self.recent_out -= left.min(self.recent_out);
    }

    /// The state as eight words (snapshots). `paid` is written as 0: it
    /// is the profile's, copied.
    #[must_use]
    pub fn to_words(&self) -> [u64; 8] {
        [self.recent_in, self.recent_out, self.episode_in, 0, self.at, self.first, self.last, self.flagged]
    }

    /// The state from [`Inbound::to_words`] and the account's payee filter.
    #[must_use]
    pub fn from_words(w: [u64; 8], paid: u64) -> Self {
        Self {
            recent_in: w[0],
            recent_out: w[1],
            episode_in: w[2],
            paid,
            at: w[4],
            first: w[5],
            last: w[6],
            flagged: w[7],
        }
    }

    /// Whether there is nothing to keep (a snapshot leaves it out).
    #[must_use]
    pub fn is_blank(&self) -> bool {
        Self { paid: 0, ..*self } == Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3_600_000;
    const T0: u64 = 1_790_000_000_000;

    /// An account with no money of its own.
    fn leaving(now_ms: u64, value: u64, new_payee: bool, history: u16) -> Leaving {
        Leaving { now_ms, value, new_payee, history, balance_after: 0 }
    }

    #[test]
    fn fan_in_then_most_of_it_out_to_a_new_payee_is_held() {
        let mut a = Inbound::default();
        for i in 0..4 {
            a.credit(T0 + i * 20 * 60_000, sender_key(5_000 + i), 300_000);
        }
        assert_eq!(a.sender_count(), 4);
        let (reasons, e) = a.judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + 2 * HOUR, 900_000, true, 40));
        assert_eq!(reasons, Reasons::PASS_THROUGH);
        assert_eq!((e.senders, e.inbound_hkd_minor, e.first_in_ms, e.last_in_ms), (4, 1_200_000, T0, T0 + HOUR));
        assert!(e.passed_on_permille > 750, "{}", e.passed_on_permille);
        // Flagged: the next transfer, even to a usual payee, is held too.
        assert_eq!(a.judge(0, &leaving(T0 + 3 * HOUR, 100, false, 40)).0, Reasons::PASS_THROUGH);
        a.clear_flag();
        assert_eq!(a.judge(0, &leaving(T0 + 3 * HOUR, 100, true, 40)).0, 0);
    }

    #[test]
    fn what_the_rule_lets_through() {
        let fed = || {
            let mut a = Inbound::default();
            for i in 0..5 {
                a.credit(T0 + i * 60_000, sender_key(9_000 + i), 200_000);
            }
            a
        };
        // To a payee it knows (the market stall paying its supplier).
        assert_eq!(fed().judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + HOUR, 900_000, false, 40)).0, 0);
        // Less than a fifth of it.
        assert_eq!(fed().judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + HOUR, 150_000, true, 40)).0, 0);
        // The account's own money covers it.
        let own = Leaving { balance_after: 1_000_000, ..leaving(T0 + HOUR, 900_000, true, 40) };
        assert_eq!(fed().judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &own).0, 0);
        // Under the floor.
        assert_eq!(fed().judge(2_000_000, &leaving(T0 + HOUR, 900_000, true, 40)).0, 0);
        // A day after the money came in, the episode is over.
        assert_eq!(fed().judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + 25 * HOUR, 900_000, true, 40)).0, 0);
        // Two senders to an account with a history: not a fan-in.
        let mut two = Inbound::default();
        two.credit(T0, sender_key(1), 500_000);
        two.credit(T0, sender_key(2), 500_000);
        assert_eq!(two.judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + HOUR, 900_000, true, 40)).0, 0);
    }

    #[test]
    fn a_new_account_passing_one_senders_money_on_at_once_is_held() {
        let mut a = Inbound::default();
        a.credit(T0, sender_key(77), 2_000_000);
        let quick = leaving(T0 + 10 * 60_000, 1_900_000, true, 0);
        let judge = |mut a: Inbound, l: &Leaving| a.judge(DEFAULT_MIN_INBOUND_HKD_MINOR, l).0;
        assert_eq!(judge(a, &quick), Reasons::NEW_ACCOUNT_PASS_THROUGH);
        // Hours later, or from an account with a history: not this rule.
        assert_eq!(judge(a, &leaving(T0 + 3 * HOUR, 1_900_000, true, 0)), 0);
        assert_eq!(a.judge(DEFAULT_MIN_INBOUND_HKD_MINOR, &leaving(T0 + 60_000, 1_900_000, true, 40)).0, 0);
    }

    #[test]
    fn a_void_takes_back_only_what_it_still_counts_in_this_episode() {
        let mut a = Inbound::default();
        // Judged before the episode began: its share was reset with it.
        let _ = a.judge(0, &leaving(T0, 500_000, false, 40));
        a.credit(T0 + HOUR, sender_key(1), 1_000_000);
        let _ = a.judge(0, &leaving(T0 + HOUR, 150_000, true, 40));
        a.take_back(500_000, T0, T0 + HOUR);
        assert_eq!(a.recent_out, 150_000, "the earlier void takes nothing back");
        // Judged in the episode, voided a half-life later: half of it.
        let _ = a.judge(0, &leaving(T0 + HOUR, 200_000, true, 40));
        a.take_back(200_000, T0 + HOUR, T0 + HOUR + HALF_LIFE_MS);
        assert_eq!(a.recent_out, (350_000 / 2) - 100_000);
    }

    #[test]
    fn sums_halve_per_half_life_and_words_round_trip() {
        assert_eq!(decay(1_000, HALF_LIFE_MS), 500);
        assert_eq!(decay(1_000, HALF_LIFE_MS / 2), 750);
        assert_eq!(decay(u64::MAX, 70 * HALF_LIFE_MS), 0);
        let mut a = Inbound::default();
        a.credit(T0, sender_key(3), 123_456);
        let _ = a.judge(0, &leaving(T0 + HOUR, 1_000, true, 0));
        a.paid = 77;
        assert_eq!(Inbound::from_words(a.to_words(), 77), a);
        assert!(!a.is_blank() && Inbound { paid: 5, ..Inbound::default() }.is_blank());
        a.clear_flag();
        assert_eq!(a, Inbound { paid: 77, ..Inbound::default() });
    }
}
