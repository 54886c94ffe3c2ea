//! Anti-money-laundering: the three levels of contract §6, judged inline on
//! every outgoing transfer, and the cases they leave for the monthly
//! Suspicious Transaction Report.
//!
//! Pure and deterministic, like the engine that calls it: a judgement
//! depends only on the account's [`Profile`], the transfer, the rate table
//! and the logged clock. Nothing here does I/O, allocates or reads a clock;
//! the one part that can wait (an optional remote scorer) lives in
//! [`scorer`], outside the engine, and its verdicts reach the engine through
//! the log so replay decides the same.
//!
//! - Level 1: the account's outgoing total for the Hong Kong day (UTC+8),
//!   each transfer valued in HKD at the exact direct rate when judged, above
//!   the limit (HK$80,000.00) holds for FACE_REVIEW. No direct rate to HKD
//!   holds for MANUAL_REVIEW and counts nothing.
//! - Level 2: a destination on the high-risk list holds for SMS_OTP.
//! - Level 3: a 64-byte per-account behaviour profile scores each transfer
//!   against the account's own history (amount, payee, country, hour,
//!   burst); a score at the threshold starts a cooling-off period. The model
//!   and its parameters are in `docs/aml.md`.

pub mod measure;
pub mod mule;
pub mod payees;
pub mod population;
pub mod report;
pub mod synth;

use crate::fx::RateTable;
use crate::hash::mix64;
use crate::money::{self, CurrencyIndex};
use crate::protocol::records::Holds;

/// A HKD value is kept in units of 10^-12 HKD minor units (10^-14 HKD): a
/// debit amount times a nine-decimal rate, in any currency of up to three
/// minor digits, is an integer in these units, so values and day totals are
/// exact.
pub const HKD_VALUE_SCALE: u128 = 1_000_000_000_000;

/// One Hong Kong day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;
/// Hong Kong time is UTC+8 (no daylight saving).
pub const HONG_KONG_OFFSET_MS: u64 = 8 * 3_600_000;

/// FATF "call for action" list (February 2026): DPRK, Iran, Myanmar.
pub const FATF_CALL_FOR_ACTION: [u16; 3] = [408, 364, 104];

/// FATF "increased monitoring" list as this build knows it (the October
/// 2025 plenary's outcome; compliance confirms each plenary's changes and
/// sets `aml.high_risk_countries` accordingly): Algeria, Angola, Bolivia,
/// Bulgaria, Cameroon, Côte d'Ivoire, DR Congo, Haiti, Kenya, Lao PDR,
/// Lebanon, Monaco, Namibia, Nepal, South Sudan, Syria, Venezuela, Viet Nam,
/// British Virgin Islands, Yemen.
pub const FATF_INCREASED_MONITORING: [u16; 20] =
    [12, 24, 68, 100, 120, 384, 180, 332, 404, 418, 422, 492, 516, 524, 728, 760, 862, 704, 92, 887];

/// A set of ISO 3166-1 numeric codes (all below 1024).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountrySet([u64; 16]);

impl CountrySet {
    /// The empty set.
    pub const EMPTY: CountrySet = CountrySet([0; 16]);

    /// A set of the given codes; codes of 1024 or more are ignored (none is
    /// assigned).
    #[must_use]
    pub fn of(codes: &[u16]) -> Self {
        let mut set = Self::EMPTY;
        for &c in codes {
            set.insert(c);
        }
        set
    }

    /// Adds a code.
    pub fn insert(&mut self, code: u16) {
        if code < 1024 {
            self.0[usize::from(code / 64)] |= 1 << (code % 64);
        }
    }

    /// Whether the set holds `code`.
    #[inline]
    #[must_use]
    pub fn contains(&self, code: u16) -> bool {
        code < 1024 && self.0[usize::from(code / 64)] & (1 << (code % 64)) != 0
    }

    /// The codes, ascending.
    #[must_use]
    pub fn codes(&self) -> Vec<u16> {
        (0..1024u16).filter(|&c| self.contains(c)).collect()
    }
}

/// The settings that decide AML outcomes. Part of the engine's
/// configuration and of the data directory's META: a replay must judge with
/// the same values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AmlConfig {
    /// Whether outgoing transfers are judged at all.
    pub enabled: bool,
    /// Level 1: the day's outgoing total above this (HKD minor units) holds.
    pub daily_limit_hkd_minor: u64,
    /// Level 2: destinations that need SMS_OTP.
    pub high_risk: CountrySet,
    /// Level 3: whether the behaviour model runs.
    pub behaviour: bool,
    /// Level 3: how long an account cools off once tripped.
    pub cooling_off_ms: u64,
    /// Level 3: which model scores (a data directory keeps the one it was
    /// written with).
    pub model: BehaviourModel,
    /// Level 3: the score at which an account trips, in quarter points.
    pub threshold_q: u32,
    /// The mule rule (`mule`): whether it runs (a data directory keeps
    /// what it was created with; one from before it has it off).
    pub mule: bool,
    /// The mule rule looks only at strangers' recent money of at least
    /// this much (HKD minor units).
    pub mule_min_inbound_hkd_minor: u64,
}

/// Level 3's model: its features and weights. Recorded in META, so a log
/// is always replayed by the model that decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BehaviourModel {
    /// The first model: amount, new payee, new country, unused hour and a
    /// burst of transfers, in whole points.
    V1 = 1,
    /// V1's signals in quarter points, the amount scored continuously,
    /// plus a run of new payees measured against how often the account
    /// adds one, and a larger than usual amount to a new payee at an
    /// unused hour as a signal of its own.
    V2 = 2,
    /// V2's signals reweighed so a large payment to a new payee at one of
    /// the account's usual hours does not trip by itself, plus a third
    /// cache line ([`payees::Payees`]): a finer payee filter, money to
    /// payees added this week taken together, and no trip before the
    /// account's history spans four weeks.
    V3 = 3,
}

impl BehaviourModel {
    /// The model a version number names.
    #[must_use]
    pub fn from_version(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::V1),
            2 => Some(Self::V2),
            3 => Some(Self::V3),
            _ => None,
        }
    }

    /// Its version number (META's `aml_behaviour_model`).
    #[must_use]
    pub fn version(self) -> u32 {
        self as u32
    }
}

impl Default for AmlConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            daily_limit_hkd_minor: 8_000_000,
            high_risk: CountrySet::of(&FATF_CALL_FOR_ACTION),
            behaviour: true,
            cooling_off_ms: DAY_MS,
            model: BehaviourModel::V3,
            threshold_q: V3_DEFAULT_THRESHOLD_Q,
            mule: true,
            mule_min_inbound_hkd_minor: mule::DEFAULT_MIN_INBOUND_HKD_MINOR,
        }
    }
}

impl AmlConfig {
    /// Whether the mule rule runs: it reads level 3's learned payees and
    /// history (who the account paid, whether it is new), so it runs only
    /// with AML and level 3 on.
    #[must_use]
    pub fn mule_runs(&self) -> bool {
        self.enabled && self.behaviour && self.mule
    }

    /// Level 1's limit in value units.
    fn limit_value(&self) -> u128 {
        u128::from(self.daily_limit_hkd_minor) * HKD_VALUE_SCALE
    }
}

/// Why AML held a transfer: a bit per rule, kept with its case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reasons(pub u16);

impl Reasons {
    /// Level 1: the day's total passed the limit.
    pub const DAILY_LIMIT: u16 = 1 << 0;
    /// Level 1: no direct rate to HKD (MANUAL_REVIEW).
    pub const NO_HKD_RATE: u16 = 1 << 1;
    /// Level 2: high-risk destination.
    pub const HIGH_RISK_COUNTRY: u16 = 1 << 2;
    /// Level 3: this transfer started a cooling-off period.
    pub const BEHAVIOUR_CHANGE: u16 = 1 << 3;
    /// Level 3: submitted during a cooling-off period.
    pub const COOLING_OFF: u16 = 1 << 4;
    /// Level 3 signal: amount far above the account's usual.
    pub const UNUSUAL_AMOUNT: u16 = 1 << 5;
    /// Level 3 signal: a payee (or corridor) the account never used.
    pub const NEW_PAYEE: u16 = 1 << 6;
    /// Level 3 signal: a destination country the account never used.
    pub const NEW_COUNTRY: u16 = 1 << 7;
    /// Level 3 signal: an hour of the day the account never uses.
    pub const UNUSUAL_HOUR: u16 = 1 << 8;
    /// Level 3 signal: far more transfers in a short time than usual.
    pub const BURST: u16 = 1 << 9;
    /// The remote scorer asked for a manual review.
    pub const REMOTE_SCORER: u16 = 1 << 10;
    /// The check did not finish inside the latency budget (MANUAL_REVIEW).
    pub const BUDGET_FALLBACK: u16 = 1 << 11;
    /// Level 3 signal (model 2): several new payees within minutes.
    pub const NEW_PAYEE_RUN: u16 = 1 << 12;
    /// Level 3 signal (model 2): more than the usual amount to a new payee
    /// at an hour the account never uses.
    pub const ODD_NEW_PAYEE: u16 = 1 << 13;
    /// Mule rule: most of what several unrelated senders paid in is
    /// leaving to a new payee (MULE_REVIEW).
    pub const PASS_THROUGH: u16 = 1 << 14;
    /// Mule rule: an account too new to have a history passes a stranger's
    /// money on to a new payee within hours (MULE_REVIEW).
    pub const NEW_ACCOUNT_PASS_THROUGH: u16 = 1 << 15;

    /// Whether `reason` is one a logged verdict may carry (SUBMIT_JUDGED:
    /// the remote scorer's, or the budget's fallback).
    #[must_use]
    pub const fn is_logged_verdict(reason: u16) -> bool {
        reason == Self::REMOTE_SCORER || reason == Self::BUDGET_FALLBACK
    }

    /// Each rule's name in the report, by bit.
    pub const NAMES: [(u16, &'static str); 16] = [
        (Self::DAILY_LIMIT, "DAILY_LIMIT"),
        (Self::NO_HKD_RATE, "NO_HKD_RATE"),
        (Self::HIGH_RISK_COUNTRY, "HIGH_RISK_COUNTRY"),
        (Self::BEHAVIOUR_CHANGE, "BEHAVIOUR_CHANGE"),
        (Self::COOLING_OFF, "COOLING_OFF"),
        (Self::UNUSUAL_AMOUNT, "UNUSUAL_AMOUNT"),
        (Self::NEW_PAYEE, "NEW_PAYEE"),
        (Self::NEW_COUNTRY, "NEW_COUNTRY"),
        (Self::UNUSUAL_HOUR, "UNUSUAL_HOUR"),
        (Self::BURST, "BURST"),
        (Self::REMOTE_SCORER, "REMOTE_SCORER"),
        (Self::BUDGET_FALLBACK, "BUDGET_FALLBACK"),
        (Self::NEW_PAYEE_RUN, "NEW_PAYEE_RUN"),
        (Self::ODD_NEW_PAYEE, "ODD_NEW_PAYEE"),
        (Self::PASS_THROUGH, "PASS_THROUGH"),
        (Self::NEW_ACCOUNT_PASS_THROUGH, "NEW_ACCOUNT_PASS_THROUGH"),
    ];

    /// Whether a rule's bit is set.
    #[must_use]
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }

    /// The AML levels these reasons belong to, ascending. The remote
    /// scorer and the budget fallback belong to no level: their rule names
    /// say what they are.
    #[must_use]
    pub fn levels(self) -> Vec<u8> {
        let mut levels = Vec::new();
        if self.0 & (Self::DAILY_LIMIT | Self::NO_HKD_RATE) != 0 {
            levels.push(1);
        }
        if self.has(Self::HIGH_RISK_COUNTRY) {
            levels.push(2);
        }
        // The mule rule reads behaviour too: its cases are level 3's.
        if self.0 & (Self::BEHAVIOUR_CHANGE | Self::COOLING_OFF | Self::PASS_THROUGH | Self::NEW_ACCOUNT_PASS_THROUGH)
            != 0
        {
            levels.push(3);
        }
        levels
    }
}

/// How a case ended (contract §6: passed, failed, expired, cancelled, still
/// pending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Still held.
    Pending = 0,
    /// Every hold passed (or cooling-off ended): the transfer posted.
    Passed = 1,
    /// A verification or review failed: voided.
    Failed = 2,
    /// A window closed with its hold open: voided.
    Expired = 3,
    /// The customer cancelled it (or the client voided its own hold).
    Cancelled = 4,
}

impl Outcome {
    /// From its byte (snapshots).
    #[must_use]
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Pending,
            1 => Self::Passed,
            2 => Self::Failed,
            3 => Self::Expired,
            4 => Self::Cancelled,
            _ => return None,
        })
    }

    /// Its name in the report.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
        }
    }
}

/// One transfer AML held: a row of the month's report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    pub transfer_id: u128,
    /// Switch time at submission; the case belongs to this HK month.
    pub submitted_ms: u64,
    /// Switch time the case closed (posted or voided); 0 while pending.
    pub closed_ms: u64,
    /// The transfer's HKD value when judged (value units), 0 without a rate.
    pub hkd_value: u128,
    /// The account's day total including this transfer (value units).
    pub day_total: u128,
    pub reasons: Reasons,
    /// The AML holds it got.
    pub holds: u8,
    pub outcome: Outcome,
    /// A mule case's evidence (zeros for others).
    pub mule: mule::Evidence,
}

const _: () = assert!(size_of::<Case>() == 112);

/// What AML decided for one outgoing transfer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Judgement {
    /// Holds to add (none: the transfer posts, unless the client holds it).
    pub holds: Holds,
    /// End of the cooling-off period when `holds` has COOLING_OFF.
    pub cooling_until_ms: u64,
    pub reasons: Reasons,
    /// What the transfer added to the day total (value units), to take off
    /// again if it is voided on the same day.
    pub counted: u128,
    /// Its HKD value (value units), 0 without a rate.
    pub hkd_value: u128,
    /// The day total after it.
    pub day_total: u128,
    /// The mule rule's evidence, when it held the transfer.
    pub mule: mule::Evidence,
}

/// The part of an outgoing transfer AML looks at.
#[derive(Clone, Copy, Debug)]
pub struct Outgoing {
    pub now_ms: u64,
    pub debit_currency: CurrencyIndex,
    pub debit_amount: u64,
    pub credit_account: u64,
    pub credit_currency: CurrencyIndex,
    pub destination_country: u16,
}

/// The HK calendar day number of a time (days since 1970-01-01 HKT).
#[must_use]
pub fn hk_day(now_ms: u64) -> u32 {
    (now_ms.saturating_add(HONG_KONG_OFFSET_MS) / DAY_MS) as u32
}

/// The HK hour of day (0..24) of a time.
#[must_use]
pub fn hk_hour(now_ms: u64) -> u32 {
    ((now_ms.saturating_add(HONG_KONG_OFFSET_MS) % DAY_MS) / 3_600_000) as u32
}

/// The HK calendar (year, month 1..=12) of a time.
#[must_use]
pub fn hk_month(now_ms: u64) -> (u32, u32) {
    let (y, m, _) = civil_from_days(i64::from(hk_day(now_ms)));
    (y as u32, m)
}

/// The switch time at which a HK calendar month starts.
#[must_use]
pub fn hk_month_start_ms(year: u32, month: u32) -> u64 {
    let days = days_from_civil(i64::from(year), month, 1);
    (days.max(0) as u64 * DAY_MS).saturating_sub(HONG_KONG_OFFSET_MS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
#[must_use]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day number since 1970-01-01.
#[must_use]
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// A debit amount's HKD value when judged, in value units: exact, never
/// rounded. HKD is at 1; another currency needs a direct rate to HKD.
#[must_use]
pub fn hkd_value(amount: u64, currency: CurrencyIndex, rates: &RateTable) -> Option<u128> {
    let rate_e9 = if currency == CurrencyIndex::HKD {
        crate::fx::RATE_SCALE
    } else {
        rates.direct(currency, CurrencyIndex::HKD)?
    };
    // HKD minor = amount / 10^d × rate_e9 / 10^9 × 10^2, so in value units
    // (× 10^12): amount × rate_e9 × 10^(5 - d), d ≤ 3.
    let digits = u32::from(currency.currency().minor_units);
    let scale = 10u128.pow(5 - digits);
    // Past u128 the value is far over any limit; it saturates (and is
    // counted and uncounted as saturated, so totals stay consistent).
    Some((u128::from(amount) * u128::from(rate_e9)).saturating_mul(scale))
}

// ---- level 3: the behaviour profile ---------------------------------------

/// Transfers an account must have made before its behaviour can trip.
pub const HISTORY_MIN: u16 = 10;
/// Score at which model 1 trips, in whole points.
pub const TRIP_SCORE: u32 = 4;
/// Quarter points in a point (scores and thresholds are in quarters).
pub const QUARTER: u32 = 4;
/// Model 2's default threshold: 4 points, model 1's. On the first
/// synthetic population it holds 0.27% of normal transfers (model 1:
/// 0.41%) and catches 97% of full-strength and 91-92% of half-strength
/// anomalies; on the second, whose normal life is noisier, it holds 5.6%
/// and catches 65% of full strength (`docs/aml.md`).
pub const V2_DEFAULT_THRESHOLD_Q: u32 = 16;

/// Model 2's operating points: (false-hold budget in basis points, the
/// lowest threshold in quarter points whose false holds, averaged over the
/// two synthetic populations `aml::synth` and `aml::population` (two seeds
/// of 6,000 and 3,000 customers), stayed inside it). Measured with
/// `harbour-loadtest aml-curve` (`docs/aml.md`, "Operating points"). A
/// bank's own traffic is the better calibration.
pub const V2_OPERATING_POINTS: [(u32, u32); 6] = [(30, 32), (35, 28), (50, 24), (100, 22), (150, 20), (200, 17)];

/// The false-hold budget a bank allowed (basis points): 0.3%.
pub const DEFAULT_FALSE_HOLD_BUDGET_BP: u32 = 30;

/// Model 3's default threshold: its operating point for the default
/// budget (4 points). On both synthetic populations (6,000 and 3,000
/// customers, seeds 1 and 2) it holds 0.03-0.05% and 0.38-0.42% of normal
/// transfers and catches 99% / 97-98% and 96-97% / 89-90% of full- and
/// half-strength anomalies (`docs/aml.md`).
pub const V3_DEFAULT_THRESHOLD_Q: u32 = 16;

/// Model 3's operating points, measured the way model 2's were (false
/// holds averaged over the two populations and seeds 1 and 2 of 6,000 and
/// 3,000 customers; `harbour-loadtest aml-curve --model 3`).
pub const V3_OPERATING_POINTS: [(u32, u32); 7] =
    [(10, 20), (15, 18), (20, 17), (30, 16), (50, 15), (100, 13), (150, 12)];

/// The threshold (quarter points) of `model` (2 or 3) for a false-hold
/// budget in basis points: the operating point with the largest budget
/// not above it (the strictest point when the budget is below every one).
/// Model 1 has none.
#[must_use]
pub fn threshold_for_budget(model: BehaviourModel, budget_bp: u32) -> Option<u32> {
    let points: &[(u32, u32)] = match model {
        BehaviourModel::V1 => return None,
        BehaviourModel::V2 => &V2_OPERATING_POINTS,
        BehaviourModel::V3 => &V3_OPERATING_POINTS,
    };
    Some(points.iter().rev().find(|(bp, _)| *bp <= budget_bp).unwrap_or(&points[0]).1)
}

/// Half-life of the burst counter (and model 2's run of new payees).
pub const BURST_HALF_LIFE_MS: u64 = 10 * 60_000;
/// Model 2: an account adds a new payee rarely below this share of its
/// transfers (Q16: 1/8).
const FRESH_RARE_Q16: u32 = 8192;
/// Model 2: the share of new payees a profile starts from (Q16: 1/4).
const FRESH_START_Q16: u16 = 16384;
/// Model 2: EWMA weight of the new-payee share: 1/16.
const FRESH_EWMA_SHIFT: u32 = 4;
/// Model 2: how far the largest amount learned sinks per transfer learned
/// (Q8: 1/128 of a doubling).
const HIGH_SINK: i32 = 2;
/// Model 3: how far the largest amount learned sinks per HK day (Q8:
/// 1/128 of a doubling), so a busy account's mark lasts as a quiet one's.
const HIGH_SINK_PER_DAY: i32 = 2;
/// A burst counts only from this many recent transfers (Q4: 16 = one).
const BURST_MIN_Q4: u32 = 6 * 16;
/// ... and from this many times the account's usual level.
const BURST_FACTOR: u32 = 4;
/// The usual level never counts as less than 1.5 transfers (Q4).
const BURST_USUAL_FLOOR_Q4: u32 = 24;
/// EWMA weight of a new amount: 1/8.
const EWMA_SHIFT: u32 = 3;
/// EWMA weight of a new burst level: 1/32, so a burst in progress barely
/// moves what is usual for the account.
const BURST_EWMA_SHIFT: u32 = 5;
/// Log2 amounts are Q8: 256 is one doubling.
const DOUBLING: i32 = 256;
/// The spread never counts as less than half a doubling.
const SPREAD_FLOOR: i32 = DOUBLING / 2;

/// Models 2 and 3's weights, in quarter points.
struct Weights {
    /// The most the amount scores short of tripping alone.
    amount_max_q: u32,
    /// Past the high-water mark by a doubling, and by two.
    high_once_q: u32,
    high_twice_q: u32,
    /// A remittance to a new country.
    new_country_q: u32,
    /// A run of new payees, per new payee before this one, for an account
    /// that rarely adds one, and for others.
    run_rare_q: u32,
    run_q: u32,
    /// Whether money to payees added this week adds up (model 3).
    to_recent: bool,
    /// Whether an amount trips alone only past the high-water mark by two
    /// doublings too (model 3).
    alone_past_high: bool,
}

/// Model 2's weights.
const V2_WEIGHTS: Weights = Weights {
    amount_max_q: 12,
    high_once_q: 4,
    high_twice_q: 4,
    new_country_q: 8,
    run_rare_q: 8,
    run_q: 5,
    to_recent: false,
    alone_past_high: false,
};

/// Model 3's: a large payment to a new payee at a usual hour (a purchase
/// from a new shop) scores at most 2.5 points from its amount, short of
/// the default threshold (4), unless it is also two doublings past
/// anything the account ever paid (2 points more); a remittance to a new
/// country scores 4 points, so at the default it trips alone once the
/// account's payee memory spans four weeks; each new payee added in the
/// minutes before this one adds 3 points for an account that rarely adds
/// one (2 for others): four weeks of history leave few of either in
/// ordinary life.
const V3_WEIGHTS: Weights = Weights {
    amount_max_q: 10,
    high_once_q: 0,
    high_twice_q: 8,
    new_country_q: 16,
    run_rare_q: 12,
    run_q: 8,
    to_recent: true,
    alone_past_high: true,
};

/// Model 3: what a payment to a payee added this week scores on top of
/// the amount score of what the payee was sent since (1.5 points) ...
const RECENT_PAYEE_Q: u32 = 6;
/// ... which is at most 5 points here (1 at two doublings past the
/// account's mean, 1.5 more per doubling).
const RECENT_AMOUNT_MAX_Q: u32 = 20;

/// One account's AML state: its HK day total (level 1) and its behaviour
/// profile (level 3). 64 bytes, one cache line, updated in O(1) per
/// transfer, driven only by the logged clock. Model 3 keeps more in
/// [`payees::Payees`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    /// Outgoing total of `day`, value units, as two words (8-byte aligned).
    day_total_lo: u64,
    day_total_hi: u64,
    /// End of the cooling-off period; in one while `now < cooling_until_ms`.
    pub cooling_until_ms: u64,
    /// Time of the last outgoing transfer (for the burst counter): its
    /// low 32 bits and the next 16 (48 bits of milliseconds last until the
    /// year 10889).
    last_lo: u32,
    last_hi: u16,
    /// Model 2: log2 of the largest amount learned (Q8), sinking by 1/128
    /// of a doubling with each transfer learned.
    pub amount_high: u16,
    /// Bloom filter (two bits per key) of payees: accounts, or corridors
    /// (country, currency) for remittances.
    pub payees: u64,
    /// Bit h: the account has sent money at HK hour h.
    pub hours: u32,
    /// Bloom filter (one bit per key) of cross-border destinations.
    pub countries: u32,
    /// Transfers learned from (saturating).
    pub count: u16,
    /// Model 2: EWMA of the share of the account's transfers that went to
    /// a new payee, Q16.
    pub fresh_usual: u16,
    /// HK day number of `day_total` (days since 1970: fits until 2149).
    pub day: u16,
    /// Model 2: recent transfers to new payees, decaying like `burst`, Q4.
    pub fresh: u16,
    /// EWMA of log2(HKD minor value), Q8.
    pub amount_mean: u16,
    /// EWMA of |log2 value − mean|, Q8.
    pub amount_spread: u16,
    /// Recent transfers, decaying with `BURST_HALF_LIFE_MS`, Q4.
    pub burst: u16,
    /// EWMA of `burst` at the account's transfers, Q4.
    pub burst_usual: u16,
}

/// An account's whole AML state: level 3's profile, the mule rule's
/// inbound state and model 3's payee memory, three adjacent cache lines
/// (a credit touches only the inbound line; an outgoing transfer the
/// profile's, and model 3's memory, and with the mule rule the inbound
/// line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct AmlState {
    pub profile: Profile,
    pub inbound: mule::Inbound,
    pub payees: payees::Payees,
}

const _: () = assert!(size_of::<AmlState>() == 192);

impl AmlState {
    /// Judges one outgoing transfer that will be accepted, and records it:
    /// its value joins the day total, and if it is in line with the
    /// account's history level 3 learns from it.
    pub fn judge(&mut self, cfg: &AmlConfig, rates: &RateTable, o: &Outgoing) -> Judgement {
        let value = hkd_value(o.debit_amount, o.debit_currency, rates);
        self.judge_learning(cfg, value, o, true)
    }

    /// [`AmlState::judge`] of a transfer whose HKD value (`hkd_value`, none
    /// without a rate) the caller has, learning from an in-line transfer
    /// only if `learn` (the mule rule holds one: it is learned if an
    /// operator passes it, as a cooled-off one is).
    pub fn judge_learning(&mut self, cfg: &AmlConfig, value: Option<u128>, o: &Outgoing, learn: bool) -> Judgement {
        self.profile.judge_learning(&mut self.payees, cfg, value, o, learn)
    }

    /// See [`Profile::confirm`].
    pub fn confirm(&mut self, cfg: &AmlConfig, o: &Outgoing, hkd_value: u128) {
        self.profile.confirm(&mut self.payees, cfg, o, hkd_value);
    }
}

/// Bytes of one profile.
pub const PROFILE_SIZE: usize = size_of::<Profile>();
const _: () = assert!(PROFILE_SIZE == 64);

/// Log2 of `x` in Q8 (x ≥ 1): whole part from the top bit, fraction from
/// the next eight bits (linear between powers of two).
#[must_use]
pub fn log2_q8(x: u128) -> i32 {
    let x = x.max(1);
    let top = 127 - x.leading_zeros();
    let fraction = if top >= 8 { (x >> (top - 8)) & 0xFF } else { (x << (8 - top)) & 0xFF };
    (top * 256) as i32 + fraction as i32
}

fn payee_key(o: &Outgoing) -> u64 {
    if o.credit_account == crate::protocol::accounts::REMITTANCE_OUT {
        // A remittance's payee is its corridor: where and in what currency.
        mix64((1 << 63) | (u64::from(o.destination_country) << 8) | u64::from(o.credit_currency.raw()))
    } else {
        mix64(o.credit_account)
    }
}

fn payee_bits(key: u64) -> u64 {
    (1 << (key & 63)) | (1 << ((key >> 6) & 63))
}

fn country_bit(country: u16) -> u32 {
    1 << (mix64(u64::from(country)) & 31)
}

/// An hour's bit with the hours either side of it (around midnight too).
fn around(hour_bit: u32) -> u32 {
    const DAY: u32 = (1 << 24) - 1;
    (hour_bit | (hour_bit << 1) | (hour_bit >> 1) | (hour_bit << 23) | (hour_bit >> 23)) & DAY
}

fn is_cross_border(country: u16) -> bool {
    country != 0 && country != money::HONG_KONG
}

/// Decays a Q4 burst counter over `elapsed` milliseconds (`halve_over`
/// with `BURST_HALF_LIFE_MS`).
fn decay(burst: u16, elapsed: u64) -> u32 {
    halve_over(u64::from(burst), elapsed, BURST_HALF_LIFE_MS) as u32
}

/// `v` after `elapsed` milliseconds of halving every `half_life`: whole
/// halvings by shifting, linearly in between (at most 1/2 off at the next
/// one). Integer only, so a replay decays alike.
fn halve_over(v: u64, elapsed: u64, half_life: u64) -> u64 {
    let halvings = elapsed / half_life;
    if halvings >= 64 {
        return 0;
    }
    let v = v >> halvings;
    let rest = elapsed % half_life;
    // In 64 bits when the product fits (always for the counters, nearly
    // always for sums of money): a 128-bit division is a library call.
    let part = match v.checked_mul(rest) {
        Some(p) => p / (2 * half_life),
        None => u64::try_from(u128::from(v) * u128::from(rest) / u128::from(2 * half_life)).expect("less than v"),
    };
    v - part
}

/// A value in HKD minor units: `value / HKD_VALUE_SCALE`, in 64-bit
/// arithmetic when it fits (10^12 is 2^12 · 5^12, and floor division by
/// 2^12 first, then by 5^12, is exact), since a 128-bit division is a
/// library call on every judged transfer.
#[must_use]
#[inline]
pub fn minor_units(value: u128) -> u128 {
    const FIVES: u64 = 244_140_625;
    let shifted = value >> 12;
    match u64::try_from(shifted) {
        Ok(s) => u128::from(s / FIVES),
        Err(_) => shifted / u128::from(FIVES),
    }
}

/// What level 3 sees of one transfer.
struct Seen {
    /// log2 of its HKD value (Q8), without a rate none.
    x: Option<i32>,
    /// Its payee's (or corridor's) key.
    key: u64,
    /// Its HK day.
    today: u16,
    /// HK days since the account's last outgoing transfer.
    days_since: u32,
    /// Its payee (or corridor) is not in the account's filter (model 3's
    /// own filter for model 3).
    new_payee: bool,
    hour_bit: u32,
    /// Its destination, when cross-border.
    country: Option<u16>,
    /// The account's recent transfers, this one included (Q4).
    burst: u32,
    /// Model 2: recent transfers to new payees, this one included (Q4).
    fresh: u32,
    /// Model 3: to a payee added this week, log2 (Q8) of what the account
    /// sent it since, this transfer included.
    to_recent: Option<i32>,
}

impl Profile {
    /// Time of the last outgoing transfer.
    #[must_use]
    pub fn last_ms(&self) -> u64 {
        u64::from(self.last_lo) | (u64::from(self.last_hi) << 32)
    }

    fn set_last_ms(&mut self, ms: u64) {
        let ms = ms.min((1 << 48) - 1);
        self.last_lo = ms as u32;
        self.last_hi = (ms >> 32) as u16;
    }

    /// The day total, value units.
    #[must_use]
    pub fn day_total(&self) -> u128 {
        u128::from(self.day_total_lo) | (u128::from(self.day_total_hi) << 64)
    }

    fn set_day_total(&mut self, v: u128) {
        self.day_total_lo = v as u64;
        self.day_total_hi = (v >> 64) as u64;
    }

    /// Whether `o` goes to a payee (or corridor) the account never paid.
    #[must_use]
    pub fn is_new_payee(&self, o: &Outgoing) -> bool {
        let bits = payee_bits(payee_key(o));
        self.payees & bits != bits
    }

    /// Level 1, 2 and 3's judgement of one outgoing transfer that will be
    /// accepted (see [`AmlState::judge_learning`]); model 3 reads and
    /// teaches `payees`.
    fn judge_learning(
        &mut self,
        payees: &mut payees::Payees,
        cfg: &AmlConfig,
        value: Option<u128>,
        o: &Outgoing,
        learn: bool,
    ) -> Judgement {
        let mut j = Judgement::default();
        // Level 1.
        let today = hk_day(o.now_ms) as u16;
        if self.day != today {
            self.day = today;
            self.set_day_total(0);
        }
        match value {
            Some(v) => {
                let before = self.day_total();
                let total = before.saturating_add(v);
                self.set_day_total(total);
                // What was really added (less than `v` once the total
                // saturates), so a void takes back exactly that.
                j.counted = total - before;
                j.hkd_value = v;
                if total > cfg.limit_value() {
                    j.holds = j.holds.with(Holds::FACE_REVIEW);
                    j.reasons.0 |= Reasons::DAILY_LIMIT;
                }
            }
            None => {
                j.holds = j.holds.with(Holds::MANUAL_REVIEW);
                j.reasons.0 |= Reasons::NO_HKD_RATE;
            }
        }
        j.day_total = self.day_total();
        // Level 2.
        if cfg.high_risk.contains(o.destination_country) {
            j.holds = j.holds.with(Holds::SMS_OTP);
            j.reasons.0 |= Reasons::HIGH_RISK_COUNTRY;
        }
        // Level 3.
        if cfg.behaviour {
            self.behaviour(payees, cfg, o, value, &mut j, learn);
        }
        j
    }

    fn behaviour(
        &mut self,
        payees: &mut payees::Payees,
        cfg: &AmlConfig,
        o: &Outgoing,
        value: Option<u128>,
        j: &mut Judgement,
        learn: bool,
    ) {
        let elapsed = o.now_ms.saturating_sub(self.last_ms());
        let burst = (decay(self.burst, elapsed) + 16).min(u32::from(u16::MAX));
        self.burst = burst as u16;
        self.set_last_ms(o.now_ms);
        let seen = self.seen(payees, o, value, burst, elapsed, cfg.model);
        // Model 2's run of new payees counts every one, held or not.
        if cfg.model != BehaviourModel::V1 {
            self.fresh = seen.fresh.min(u32::from(u16::MAX)) as u16;
        }
        if o.now_ms < self.cooling_until_ms {
            j.holds = j.holds.with(Holds::COOLING_OFF);
            j.cooling_until_ms = self.cooling_until_ms;
            j.reasons.0 |= Reasons::COOLING_OFF;
            return;
        }
        let (score_q, signals) = match cfg.model {
            BehaviourModel::V1 => {
                let (points, signals) = self.score_v1(&seen);
                (points * QUARTER, signals)
            }
            BehaviourModel::V2 => self.score_v2(&seen, cfg.threshold_q, &V2_WEIGHTS),
            BehaviourModel::V3 => self.score_v2(&seen, cfg.threshold_q, &V3_WEIGHTS),
        };
        // Model 3 also waits for a history that spans a month's cycle.
        let grown = cfg.model != BehaviourModel::V3 || payees.days_known(seen.today) >= payees::HISTORY_MIN_DAYS;
        if self.count >= HISTORY_MIN && grown && score_q >= cfg.threshold_q {
            self.cooling_until_ms = o.now_ms.saturating_add(cfg.cooling_off_ms);
            j.holds = j.holds.with(Holds::COOLING_OFF);
            j.cooling_until_ms = self.cooling_until_ms;
            j.reasons.0 |= Reasons::BEHAVIOUR_CHANGE | signals;
            return;
        }
        // In line with the account's history (or too new to judge): learn.
        if !learn {
            return;
        }
        let usual = i32::from(self.burst_usual);
        self.burst_usual = (usual + ((burst as i32 - usual) >> BURST_EWMA_SHIFT)).max(0) as u16;
        self.learn(payees, cfg.model, &seen);
    }

    /// What level 3 sees of `o`: `burst` recent transfers, this one
    /// included, `elapsed` ms after the last.
    fn seen(
        &self,
        payees: &payees::Payees,
        o: &Outgoing,
        value: Option<u128>,
        burst: u32,
        elapsed: u64,
        model: BehaviourModel,
    ) -> Seen {
        let key = payee_key(o);
        let today = hk_day(o.now_ms) as u16;
        let x = value.map(|v| log2_q8(minor_units(v)));
        let new_payee = match model {
            BehaviourModel::V3 => !payees.knows(key),
            _ => self.payees & payee_bits(key) != payee_bits(key),
        };
        let fresh = match model {
            BehaviourModel::V1 => 0,
            _ => decay(self.fresh, elapsed) + if new_payee { 16 } else { 0 },
        };
        let to_recent = match (model, x) {
            (BehaviourModel::V3, Some(x)) if !new_payee => payees.sent_to_recent(key, today, x),
            _ => None,
        };
        let days_since = hk_day(o.now_ms) - hk_day(o.now_ms.saturating_sub(elapsed));
        Seen {
            x,
            key,
            today,
            days_since,
            new_payee,
            hour_bit: 1u32 << hk_hour(o.now_ms),
            country: is_cross_border(o.destination_country).then_some(o.destination_country),
            burst,
            fresh,
            to_recent,
        }
    }

    /// Takes a transfer into the account's habits: its amount, payee, hour
    /// and country.
    fn learn(&mut self, payees: &mut payees::Payees, model: BehaviourModel, seen: &Seen) {
        if let Some(x) = seen.x {
            if self.count == 0 {
                self.amount_mean = x as u16;
                self.amount_spread = DOUBLING as u16;
            } else {
                let mean = i32::from(self.amount_mean);
                let spread = i32::from(self.amount_spread);
                self.amount_mean = (mean + ((x - mean) >> EWMA_SHIFT)) as u16;
                self.amount_spread = (spread + (((x - mean).abs() - spread) >> EWMA_SHIFT)).max(0) as u16;
            }
        }
        if model != BehaviourModel::V1 {
            if let Some(x) = seen.x {
                // Model 2 sinks per transfer, model 3 per day (a busy
                // account's mark would sink in hours).
                let sink = match model {
                    BehaviourModel::V3 => (seen.days_since.min(1 << 16) as i32) * HIGH_SINK_PER_DAY,
                    _ => HIGH_SINK,
                };
                self.amount_high = (i32::from(self.amount_high) - sink).max(x).clamp(0, i32::from(u16::MAX)) as u16;
            }
            let share = if self.count == 0 { i32::from(FRESH_START_Q16) } else { i32::from(self.fresh_usual) };
            let now = if seen.new_payee { i32::from(u16::MAX) } else { 0 };
            self.fresh_usual = (share + ((now - share) >> FRESH_EWMA_SHIFT)).clamp(0, i32::from(u16::MAX)) as u16;
        }
        if model == BehaviourModel::V3 {
            payees.learn(seen.key, seen.x, seen.today, seen.new_payee, seen.to_recent);
        }
        self.payees |= payee_bits(seen.key);
        self.hours |= seen.hour_bit;
        if let Some(c) = seen.country {
            self.countries |= country_bit(c);
        }
        self.count = self.count.saturating_add(1);
    }

    /// Models 2 and 3: a transfer held COOLING_OFF whose period ended
    /// without the customer cancelling it was the customer's after all (a
    /// new landlord, this month's billers): the account learns it, so next
    /// month's rent or bill run is in line with its history. `o.now_ms` is
    /// when it was submitted; `hkd_value` its value when judged (0 without
    /// a rate). Model 1 never learns from a held transfer.
    fn confirm(&mut self, payees: &mut payees::Payees, cfg: &AmlConfig, o: &Outgoing, hkd_value: u128) {
        if cfg.model == BehaviourModel::V1 || !cfg.behaviour {
            return;
        }
        let value = (hkd_value > 0).then_some(hkd_value);
        let seen = Seen { burst: 0, fresh: 0, ..self.seen(payees, o, value, 0, 0, cfg.model) };
        self.learn(payees, cfg.model, &seen);
    }

    /// Model 1's score of a transfer, in whole points, and the signals that
    /// made it.
    fn score_v1(&self, s: &Seen) -> (u32, u16) {
        let mut score = 0;
        let mut signals = 0;
        if let Some(x) = s.x {
            let excess = x - i32::from(self.amount_mean) - self.band();
            let points = if excess >= 3 * DOUBLING {
                // So far outside the account's range it trips by itself.
                TRIP_SCORE
            } else if excess >= 2 * DOUBLING {
                3
            } else if excess >= DOUBLING {
                2
            } else {
                u32::from(excess >= DOUBLING / 2)
            };
            if points > 0 {
                score += points;
                signals |= Reasons::UNUSUAL_AMOUNT;
            }
        }
        if s.new_payee {
            score += 1;
            signals |= Reasons::NEW_PAYEE;
        }
        if let Some(c) = s.country
            && self.countries & country_bit(c) == 0
        {
            score += 2;
            signals |= Reasons::NEW_COUNTRY;
        }
        if self.hours & s.hour_bit == 0 {
            score += 1;
            signals |= Reasons::UNUSUAL_HOUR;
        }
        if self.is_burst(s.burst) {
            score += 3;
            signals |= Reasons::BURST;
        }
        (score, signals)
    }

    /// Model 2's score of a transfer, in quarter points, and the signals
    /// that made it. Model 1's signals, reweighed where model 1 erred on
    /// both synthetic populations, plus two of its own:
    /// - the amount scored continuously: from half a doubling past the
    ///   account's band, 1 point and 1.5 more per doubling, at most 3 (a
    ///   large payment alone is common in normal life: rent, tuition); only
    ///   5 doublings past the band (32 times) trips alone;
    /// - a new payee is 1.25 points for an account that rarely adds one, 1
    ///   for others; a remittance to a new country scores the country (2),
    ///   not also its corridor;
    /// - an unused hour is a point (half a point next to a used hour), and
    ///   a second one when it is far from every used hour and the amount
    ///   is unusual too (`ODD_NEW_PAYEE` when the payee is new as well);
    /// - a run of new payees (`fresh`, decaying like the burst counter)
    ///   adds 2 points per new payee before this one for an account that
    ///   rarely adds one, 1.25 for others (`NEW_PAYEE_RUN`).
    ///
    /// Model 3 scores the same signals with its own [`Weights`] and adds
    /// money to payees added this week taken together (`to_recent`).
    fn score_v2(&self, s: &Seen, threshold_q: u32, w: &Weights) -> (u32, u16) {
        let mut score = 0;
        let mut signals = 0;
        let mut amount_q = 0;
        if let Some(x) = s.x {
            let excess = x - i32::from(self.amount_mean) - self.band();
            let high = i32::from(self.amount_high);
            amount_q = if excess >= 5 * DOUBLING && (!w.alone_past_high || x >= high + 2 * DOUBLING) {
                threshold_q
            } else if excess >= DOUBLING / 2 {
                (QUARTER + ((excess - DOUBLING / 2) * 6 / DOUBLING) as u32).min(w.amount_max_q)
            } else {
                0
            };
            // Past anything the account ever paid (its high-water mark,
            // confirmed one-offs included) by a doubling: a point more
            // (model 3: two past it by two doublings).
            if amount_q > 0 && amount_q < threshold_q {
                if x >= high + 2 * DOUBLING {
                    amount_q += w.high_twice_q;
                } else if x >= high + DOUBLING {
                    amount_q += w.high_once_q;
                }
            }
            if amount_q > 0 {
                score += amount_q;
                signals |= Reasons::UNUSUAL_AMOUNT;
            }
        }
        let rare = u32::from(self.fresh_usual) < FRESH_RARE_Q16;
        let new_country = s.country.is_some_and(|c| self.countries & country_bit(c) == 0);
        if new_country {
            score += w.new_country_q;
            signals |= Reasons::NEW_COUNTRY;
        } else if s.new_payee {
            score += if rare { 5 } else { 4 };
            signals |= Reasons::NEW_PAYEE;
        }
        if s.new_payee {
            // The run: new payees before this one, fractions as they decay.
            let before = s.fresh.saturating_sub(16);
            if before >= 8 {
                score += before * if rare { w.run_rare_q } else { w.run_q } / 16;
                signals |= Reasons::NEW_PAYEE_RUN;
            }
        }
        // An unused hour next to one the account uses is half as unusual:
        // a habit of 9 to 18 o'clock with no payment yet at 17 covers 17.
        let far = self.hours & around(s.hour_bit) == 0;
        if self.hours & s.hour_bit == 0 {
            score += if far { QUARTER } else { QUARTER / 2 };
            signals |= Reasons::UNUSUAL_HOUR;
            if amount_q > 0 && far {
                score += QUARTER;
                if s.new_payee {
                    signals |= Reasons::ODD_NEW_PAYEE;
                }
            }
        }
        if self.is_burst(s.burst) {
            score += 3 * QUARTER;
            signals |= Reasons::BURST;
        }
        // Model 3: money to a payee added this week, this payment included,
        // taken together (several payments that each look ordinary), scored
        // as one payment of the sum to a new payee, from two doublings past
        // the account's mean.
        if let Some(sum) = s.to_recent.filter(|_| w.to_recent) {
            let over = sum - i32::from(self.amount_mean);
            if over >= 2 * DOUBLING {
                let q =
                    RECENT_PAYEE_Q + (QUARTER + ((over - 2 * DOUBLING) * 6 / DOUBLING) as u32).min(RECENT_AMOUNT_MAX_Q);
                if q > score {
                    score = q;
                    signals |= Reasons::UNUSUAL_AMOUNT | Reasons::NEW_PAYEE;
                }
            }
        }
        (score, signals)
    }

    /// The amount band: twice the spread, never less than one doubling.
    fn band(&self) -> i32 {
        2 * i32::from(self.amount_spread).max(SPREAD_FLOOR)
    }

    /// Whether `burst` recent transfers are a burst for this account.
    fn is_burst(&self, burst: u32) -> bool {
        let usual = u32::from(self.burst_usual).max(BURST_USUAL_FLOOR_Q4);
        burst >= BURST_MIN_Q4 && burst >= BURST_FACTOR * usual
    }

    /// Takes a voided transfer's value off the day total, if it was counted
    /// on the day the total is for.
    pub fn uncount(&mut self, submitted_ms: u64, counted: u128) {
        if counted > 0 && u32::from(self.day) == hk_day(submitted_ms) {
            let total = self.day_total().checked_sub(counted).expect("a counted value is in its day's total");
            self.set_day_total(total);
        }
    }

    /// The profile's words, for snapshots (canonical order).
    #[must_use]
    pub fn to_words(&self) -> [u64; 8] {
        [
            self.day_total_lo,
            self.day_total_hi,
            self.cooling_until_ms,
            self.last_ms() | (u64::from(self.amount_high) << 48),
            self.payees,
            u64::from(self.hours) | (u64::from(self.countries) << 32),
            u64::from(self.count)
                | (u64::from(self.fresh_usual) << 16)
                | (u64::from(self.day) << 32)
                | (u64::from(self.fresh) << 48),
            u64::from(self.amount_mean)
                | (u64::from(self.amount_spread) << 16)
                | (u64::from(self.burst) << 32)
                | (u64::from(self.burst_usual) << 48),
        ]
    }

    /// The inverse of [`Profile::to_words`].
    #[must_use]
    pub fn from_words(w: [u64; 8]) -> Self {
        Self {
            day_total_lo: w[0],
            day_total_hi: w[1],
            cooling_until_ms: w[2],
            last_lo: w[3] as u32,
            last_hi: (w[3] >> 32) as u16,
            amount_high: (w[3] >> 48) as u16,
            payees: w[4],
            hours: w[5] as u32,
            countries: (w[5] >> 32) as u32,
            count: w[6] as u16,
            fresh_usual: (w[6] >> 16) as u16,
            day: (w[6] >> 32) as u16,
            fresh: (w[6] >> 48) as u16,
            amount_mean: w[7] as u16,
            amount_spread: (w[7] >> 16) as u16,
            burst: (w[7] >> 32) as u16,
            burst_usual: (w[7] >> 48) as u16,
        }
    }
}

#[cfg(test)]
mod tests;
