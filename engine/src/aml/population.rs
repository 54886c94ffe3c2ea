//! A second, independently written generator of customer behaviour for
//! measuring the AML model: a Hong Kong retail population with personas,
//! injected anomalies of six kinds at four strengths, and mule patterns.
//!
//! It exists so the model is never tuned on one generator alone: `synth`
//! and this module were written without reading each other or the model.
//! Where `synth` gives each customer its own habits, this one draws them
//! from personas (students, office workers, domestic helpers, retirees,
//! small businesses, gig workers, night-shift workers) with heavy-tailed
//! amounts, a weekly rhythm, Zipf payee preference, monthly salary, rent,
//! bill and remittance cycles, quiet weeks, and legitimate look-alikes of
//! mule behaviour (split dinner bills, market days, payday rent and
//! remittance) that are labelled `Normal`.
//!
//! The history runs `days` days from the first Hong Kong midnight at or
//! after `start_ms`; anomalies and mule patterns happen in the
//! `EVAL_DAYS` after it, while normal life goes on. Strength scales how far
//! an anomaly departs from the account's history: `Full` is clear-cut and
//! each halving roughly halves the multiplier, the number of transfers or
//! the number of deviant features (the `DOSES` table). Mule accounts are
//! funded only by what they receive (plus an opening deposit of at most
//! HK$100); every other sender gets one large `Funding` deposit first.
//!
//! Not used by the switch. Floating point is used only to draw random
//! numbers; every amount is integer HKD cents, only ordered collections
//! are iterated, and the same seed gives the same events on every machine.

use std::collections::{BTreeMap, BTreeSet};

use crate::money::HKD;
use crate::protocol::accounts::{REMITTANCE_OUT, SETTLEMENT_IN};
use crate::protocol::records::Transfer;

use super::synth::Rng;
use super::{DAY_MS, HONG_KONG_OFFSET_MS};

const HOUR_MS: u64 = 3_600_000;
const MINUTE_MS: u64 = 60_000;
/// The deposit every ordinary sender gets before its first payment: far
/// more than it will ever spend.
const FUNDING_CENTS: u64 = 1 << 40;
/// The largest opening deposit a mule account may get (HK$100).
const MULE_OPENING_MAX_CENTS: u64 = 10_000;
/// Days after the history in which anomalies and mule patterns happen.
const EVAL_DAYS: u32 = 7;
/// A dormant mule's history ends this many days before the evaluation
/// window starts (more than three weeks of silence).
const DORMANT_SILENCE_DAYS: u32 = 22;
/// Never a destination: the high-risk list and Hong Kong itself.
const FORBIDDEN_COUNTRIES: [u16; 4] = [408, 364, 104, 344];
/// Countries no customer here remits to in its history.
const NEW_CORRIDORS: [u16; 8] = [566, 458, 116, 784, 643, 826, 840, 36];
/// Where mules send money: common corridors and unusual ones.
const MULE_COUNTRIES: [u16; 8] = [608, 156, 360, 566, 116, 458, 784, 764];
/// Domestic helpers' home countries (Philippines, Indonesia, Thailand, Bangladesh).
const HELPER_CORRIDORS: [(u16, f64); 4] = [(608, 0.55), (360, 0.38), (764, 0.04), (50, 0.03)];
/// Other migrants' and traders' corridors (China, India, Philippines, ...).
const OTHER_CORRIDORS: [(u16, f64); 6] = [(156, 0.4), (356, 0.2), (608, 0.15), (50, 0.1), (360, 0.1), (764, 0.05)];
/// Hours to pick an unused one from, the least likely first.
const ODD_HOURS: [u32; 24] = [3, 4, 2, 5, 1, 0, 6, 23, 22, 7, 14, 15, 10, 16, 11, 9, 13, 12, 8, 21, 17, 20, 18, 19];
/// Days of the month salaries are paid on.
const SALARY_DAYS: [u32; 4] = [1, 7, 25, 28];

/// What to generate.
#[derive(Clone, Debug)]
pub struct PopulationConfig {
    pub seed: u64,
    /// Size of the customer population (mule and fraud accounts come on top).
    pub accounts: usize,
    /// Days of history before the evaluation window.
    pub days: u32,
    /// Share of `accounts` that get one injected anomaly.
    pub anomaly_share: f64,
    /// Number of mule patterns as a share of `accounts`.
    pub mule_share: f64,
    /// The first customer account id; must exceed the system account ids.
    pub first_account: u64,
    /// UTC ms; the history starts at the first Hong Kong midnight at or after it.
    pub start_ms: u64,
}

impl Default for PopulationConfig {
    fn default() -> Self {
        Self {
            seed: 11,
            accounts: 1_000,
            days: 50,
            anomaly_share: 0.2,
            mule_share: 0.05,
            first_account: 500_000,
            // 2026-10-01T00:00 HKT = 2026-09-30T16:00Z, a Thursday.
            start_ms: 1_790_784_000_000,
        }
    }
}

/// The kinds of injected anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// One transfer many times the usual size, to a new payee, at an unused hour.
    Takeover,
    /// A remittance to a country the account never sent to.
    NewCorridor,
    /// Usual-size transfers to many new payees within minutes.
    NewPayeeBurst,
    /// A large share of the account's money to a usual payee at an unused hour.
    Drain,
    /// Growing amounts to one new payee over several days.
    SlowTakeover,
    /// Several medium-large transfers to one or two new payees over a day.
    PartialDrain,
}

impl Kind {
    /// Every kind, in index order.
    pub const ALL: [Kind; 6] =
        [Kind::Takeover, Kind::NewCorridor, Kind::NewPayeeBurst, Kind::Drain, Kind::SlowTakeover, Kind::PartialDrain];
    /// A short name for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        ["takeover", "new_corridor", "new_payee_burst", "drain", "slow_takeover", "partial_drain"][self as usize]
    }
}

/// How far an anomaly departs from the account's habits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Strength {
    Full,
    Half,
    Quarter,
    Eighth,
}

impl Strength {
    /// Every strength, strongest first.
    pub const ALL: [Strength; 4] = [Strength::Full, Strength::Half, Strength::Quarter, Strength::Eighth];
    /// A short name for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        ["full", "half", "quarter", "eighth"][self as usize]
    }
}

/// The kinds of mule pattern.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MuleKind {
    /// A new account collects from many victims and remits most of it abroad.
    FanInRemit,
    /// A chain of new accounts passes the money on, the last remits abroad.
    Chain,
    /// A long-silent account with a normal past collects and forwards.
    Dormant,
}

impl MuleKind {
    /// Every mule kind, in index order.
    pub const ALL: [MuleKind; 3] = [MuleKind::FanInRemit, MuleKind::Chain, MuleKind::Dormant];
    /// A short name for reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        ["fan_in_remit", "chain", "dormant"][self as usize]
    }
}

/// What a transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// A deposit from `SETTLEMENT_IN` that funds an account.
    Funding,
    /// In line with the account's habits, legitimate look-alikes included.
    Normal,
    /// An outgoing transfer of injected anomaly `n`.
    Anomaly { n: usize, kind: Kind, strength: Strength },
    /// A mule account's outgoing transfer in mule pattern `n`.
    Mule { n: usize, kind: MuleKind },
    /// A transfer into the first mule of pattern `n` from a victim.
    Feed { n: usize },
}

/// One transfer at its time, with what it is.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub time_ms: u64,
    pub transfer: Transfer,
    pub label: Label,
}

/// A generated scenario.
#[derive(Clone, Debug)]
pub struct Population {
    /// Every customer account id an event uses, sorted and deduplicated.
    pub accounts: Vec<u64>,
    /// Sorted by (`time_ms`, `transfer_id`); ids are unique, from 1 up.
    pub events: Vec<Event>,
    /// Index n is anomaly n.
    pub anomalies: Vec<(Kind, Strength)>,
    /// Index n is mule pattern n.
    pub mules: Vec<MuleKind>,
}

/// Active-hour patterns: (first local hour, length in hours).
#[derive(Clone, Copy)]
enum Hours {
    Early,
    Day,
    Evening,
    Night,
}

impl Hours {
    const ALL: [Hours; 4] = [Hours::Early, Hours::Day, Hours::Evening, Hours::Night];
    fn window(self) -> (f64, f64) {
        [(6.0, 7.0), (8.0, 11.0), (17.0, 7.0), (21.0, 10.0)][self as usize]
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Persona {
    Student,
    Office,
    Helper,
    Retiree,
    Business,
    Gig,
    NightShift,
}

/// One persona's habits: the table every per-account draw reads.
struct PersonaSpec {
    persona: Persona,
    /// Share of the population.
    share: f64,
    /// Median routine payment in HKD (each customer scales it).
    typical_hkd: f64,
    /// Routine payments per weekday.
    per_day: f64,
    /// Multipliers of `per_day` on Saturday and Sunday.
    weekend: [f64; 2],
    /// Chance that a routine payment goes to a payee never paid before.
    new_payee: f64,
    /// Weights of the hour patterns Early, Day, Evening, Night.
    hours: [f64; 4],
    /// Daily chance of a large one-off (tuition, a holiday, furniture).
    large_per_day: f64,
    /// Daily chance of collecting a split dinner bill from friends.
    split_per_day: f64,
    /// Monthly salary range in HKD; (0, 0) for none.
    salary_hkd: (f64, f64),
    /// (chance, lo, hi): paying rent to a landlord in the population.
    rent: (f64, f64, f64),
    /// (chance, lo, hi): remitting home monthly.
    remit: (f64, f64, f64),
}

#[rustfmt::skip]
const PERSONAS: [PersonaSpec; 7] = [
    PersonaSpec { persona: Persona::Student, share: 0.15, typical_hkd: 90.0, per_day: 1.3, weekend: [1.3, 1.3],
        new_payee: 0.07, hours: [0.0, 0.15, 0.6, 0.25], large_per_day: 0.02, split_per_day: 0.05,
        salary_hkd: (0.0, 0.0), rent: (0.15, 4_000.0, 6_500.0), remit: (0.0, 0.0, 0.0) },
    PersonaSpec { persona: Persona::Office, share: 0.28, typical_hkd: 260.0, per_day: 1.0, weekend: [1.4, 1.2],
        new_payee: 0.035, hours: [0.0, 0.5, 0.5, 0.0], large_per_day: 0.025, split_per_day: 0.033,
        salary_hkd: (18_000.0, 60_000.0), rent: (0.6, 8_000.0, 20_000.0), remit: (0.12, 3_000.0, 10_000.0) },
    PersonaSpec { persona: Persona::Helper, share: 0.15, typical_hkd: 160.0, per_day: 0.3, weekend: [0.5, 5.0],
        new_payee: 0.025, hours: [0.0, 0.3, 0.7, 0.0], large_per_day: 0.011, split_per_day: 0.016,
        salary_hkd: (5_100.0, 5_700.0), rent: (0.0, 0.0, 0.0), remit: (1.0, 2_500.0, 4_500.0) },
    PersonaSpec { persona: Persona::Retiree, share: 0.12, typical_hkd: 320.0, per_day: 0.35, weekend: [0.8, 0.8],
        new_payee: 0.012, hours: [0.8, 0.2, 0.0, 0.0], large_per_day: 0.016, split_per_day: 0.0,
        salary_hkd: (0.0, 0.0), rent: (0.0, 0.0, 0.0), remit: (0.05, 1_000.0, 4_000.0) },
    PersonaSpec { persona: Persona::Business, share: 0.10, typical_hkd: 1_500.0, per_day: 1.2, weekend: [1.5, 1.5],
        new_payee: 0.04, hours: [0.0, 0.7, 0.3, 0.0], large_per_day: 0.033, split_per_day: 0.0,
        salary_hkd: (0.0, 0.0), rent: (0.3, 20_000.0, 60_000.0), remit: (0.1, 10_000.0, 40_000.0) },
    PersonaSpec { persona: Persona::Gig, share: 0.12, typical_hkd: 120.0, per_day: 1.6, weekend: [1.2, 1.2],
        new_payee: 0.06, hours: [0.0, 0.3, 0.3, 0.4], large_per_day: 0.016, split_per_day: 0.025,
        salary_hkd: (0.0, 0.0), rent: (0.5, 5_000.0, 9_000.0), remit: (0.1, 1_000.0, 3_000.0) },
    PersonaSpec { persona: Persona::NightShift, share: 0.08, typical_hkd: 200.0, per_day: 0.8, weekend: [1.0, 1.0],
        new_payee: 0.03, hours: [0.0, 0.0, 0.0, 1.0], large_per_day: 0.02, split_per_day: 0.016,
        salary_hkd: (15_000.0, 26_000.0), rent: (0.7, 6_000.0, 10_000.0), remit: (0.25, 2_000.0, 6_000.0) },
];
/// The index of the business persona in `PERSONAS`.
const BUSINESS: usize = 4;
const _: () = assert!(matches!(PERSONAS[BUSINESS].persona, Persona::Business));

/// One customer's drawn habits and monthly obligations.
struct Person {
    id: u64,
    spec: &'static PersonaSpec,
    hours: Hours,
    typical_hkd: f64,
    per_day: f64,
    /// Payees in order of preference (Zipf); new ones are appended.
    payees: Vec<u64>,
    /// Billers paid on payday, or a business's suppliers.
    bills: Vec<u64>,
    /// (employer, HKD, day of month).
    salary: Option<(u64, f64, u32)>,
    /// (landlord, HKD, day of month); salaried people pay it on payday.
    rent: Option<(u64, f64, u32)>,
    /// (country, HKD, day of month); salaried people remit after payday.
    remit: Option<(u16, f64, u32)>,
    /// A salaried remittance waiting for the weekend.
    remit_due: bool,
    /// Days [from, to) without outgoing payments (travel, hospital).
    quiet: (u32, u32),
}

struct Pools {
    /// Active non-business customers.
    customers: Vec<u64>,
    businesses: Vec<u64>,
    /// Office workers and retirees: the households that employ helpers.
    households: Vec<u64>,
    landlords: Vec<u64>,
}

/// Per-strength dose of one anomaly kind (see `DOSES`).
struct Dose {
    /// Number of transfers, inclusive range.
    count: (u64, u64),
    /// Multiplier of the typical amount (for `Drain`: share of the history's outflow).
    x: (f64, f64),
    /// Whether it happens at an hour the account never used.
    odd_hour: bool,
}

const fn dose(lo: u64, hi: u64, x_lo: f64, x_hi: f64, odd_hour: bool) -> Dose {
    Dose { count: (lo, hi), x: (x_lo, x_hi), odd_hour }
}

/// Doses by kind (`Kind::ALL` order), then strength (full, half, quarter, eighth).
#[rustfmt::skip]
const DOSES: [[Dose; 4]; 6] = [
    // Takeover: one transfer to a new payee at an unused hour.
    [dose(1, 1, 20.0, 100.0, true), dose(1, 1, 10.0, 30.0, true), dose(1, 1, 6.0, 15.0, true), dose(1, 1, 3.0, 7.0, true)],
    // NewCorridor: one remittance to a new country; only `Full` also at an unused hour.
    [dose(1, 1, 8.0, 30.0, true), dose(1, 1, 5.0, 14.0, false), dose(1, 1, 3.0, 8.0, false), dose(1, 1, 2.0, 5.0, false)],
    // NewPayeeBurst: usual-size transfers to distinct new payees in 15 minutes (eighth: an hour).
    [dose(8, 15, 0.6, 1.6, true), dose(5, 7, 0.6, 1.6, false), dose(2, 3, 0.6, 1.6, false), dose(2, 2, 0.6, 1.6, false)],
    // Drain: a share of the history's total outflow to a usual payee at an unused hour.
    [dose(1, 1, 0.6, 0.9, true), dose(1, 1, 0.3, 0.45, true), dose(1, 1, 0.15, 0.22, true), dose(1, 1, 0.08, 0.11, true)],
    // SlowTakeover: amounts growing from typical to x over 3-7 days, one new payee.
    [dose(6, 8, 30.0, 60.0, false), dose(4, 5, 12.0, 25.0, false), dose(3, 3, 6.0, 10.0, false), dose(2, 3, 3.0, 5.0, false)],
    // PartialDrain: transfers of x times typical to 1-2 new payees over a day at usual hours.
    [dose(5, 7, 8.0, 15.0, false), dose(3, 4, 5.0, 8.0, false), dose(2, 3, 3.0, 5.0, false), dose(2, 2, 2.0, 3.0, false)],
];

/// An account's outgoing history before the evaluation window.
#[derive(Default)]
struct History {
    hours: [u32; 24],
    amounts: Vec<u64>,
    payees: BTreeSet<u64>,
    countries: BTreeSet<u16>,
    total: u64,
}

struct Gen<'a> {
    c: &'a PopulationConfig,
    rng: Rng,
    events: Vec<Event>,
    /// The first Hong Kong midnight at or after `start_ms`.
    origin_ms: u64,
    next_account: u64,
}

/// Generates the population for `c`.
///
/// # Panics
/// If `first_account` is not above the system accounts, or the population
/// is too small to hold the dormant mules `mule_share` asks for.
#[must_use]
pub fn generate(c: &PopulationConfig) -> Population {
    assert!(c.first_account > REMITTANCE_OUT.max(SETTLEMENT_IN), "customer ids must not collide with system ids");
    let into_day = (c.start_ms + HONG_KONG_OFFSET_MS) % DAY_MS;
    let origin_ms = if into_day == 0 { c.start_ms } else { c.start_ms + DAY_MS - into_day };
    let mut g = Gen { c, rng: Rng::new(c.seed), events: Vec::new(), origin_ms, next_account: 0 };
    g.next_account = c.first_account + c.accounts as u64;
    let ids: Vec<u64> = (0..c.accounts as u64).map(|i| c.first_account + i).collect();
    let specs: Vec<usize> = (0..c.accounts).map(|i| if i < 3 { BUSINESS } else { g.persona() }).collect();

    let mules: Vec<MuleKind> =
        (0..(c.accounts as f64 * c.mule_share).round() as usize).map(|i| MuleKind::ALL[i % 3]).collect();
    let mut candidates: Vec<u64> = ids.iter().zip(&specs).filter(|(_, s)| **s != BUSINESS).map(|(id, _)| *id).collect();
    g.shuffle(&mut candidates);
    let need = mules.iter().filter(|k| **k == MuleKind::Dormant).count();
    assert!(need <= candidates.len(), "population too small for {need} dormant mules");
    let dormant: BTreeSet<u64> = candidates[..need].iter().copied().collect();

    let pools = pools(&ids, &specs, &dormant);

    let mut people: Vec<Person> = Vec::new();
    for (&id, &s) in ids.iter().zip(&specs) {
        if !dormant.contains(&id) {
            g.push(c.start_ms, SETTLEMENT_IN, id, FUNDING_CENTS, 0, Label::Funding);
            people.push(g.person(id, &PERSONAS[s], &pools));
        }
    }
    for p in &mut people {
        for day in 0..c.days + EVAL_DAYS {
            g.live(p, day, &pools);
        }
    }
    for &id in &dormant {
        g.dormant_history(id, &pools);
    }

    let mut history = histories(&g.events, g.at(c.days, 0.0));
    let mut targets: Vec<u64> = people
        .iter()
        .map(|p| p.id)
        .filter(|id| history.get(id).is_some_and(|h| h.amounts.len() >= 5 && !h.payees.is_empty()))
        .collect();
    g.shuffle(&mut targets);
    let wanted = (c.accounts as f64 * c.anomaly_share).round() as usize;
    let mut anomalies = Vec::new();
    for (n, &id) in targets.iter().take(wanted).enumerate() {
        let (kind, strength) = (Kind::ALL[n % 6], Strength::ALL[(n / 6) % 4]);
        let mut h = history.remove(&id).expect("target has a history");
        h.amounts.sort_unstable();
        g.inject(n, kind, strength, id, &h, &pools);
        anomalies.push((kind, strength));
    }

    let mut dormant_iter = dormant.iter();
    for (n, &kind) in mules.iter().enumerate() {
        let account = if kind == MuleKind::Dormant { dormant_iter.next().copied() } else { None };
        g.mule(n, kind, account, &pools);
    }

    let mut events = g.events;
    events.sort_by_key(|e| e.time_ms);
    for (i, e) in events.iter_mut().enumerate() {
        e.transfer.transfer_id = i as u128 + 1;
    }
    let mut accounts: Vec<u64> = events
        .iter()
        .flat_map(|e| [e.transfer.debit_account, e.transfer.credit_account])
        .filter(|&a| a != REMITTANCE_OUT && a != SETTLEMENT_IN)
        .collect();
    accounts.sort_unstable();
    accounts.dedup();
    Population { accounts, events, anomalies, mules }
}

/// The pools payees, employers and landlords are drawn from: everyone
/// but the dormant mules, who must stay silent.
fn pools(ids: &[u64], specs: &[usize], dormant: &BTreeSet<u64>) -> Pools {
    let mut pools = Pools { customers: vec![], businesses: vec![], households: vec![], landlords: vec![] };
    for (&id, &s) in ids.iter().zip(specs).filter(|(id, _)| !dormant.contains(id)) {
        match PERSONAS[s].persona {
            Persona::Business => pools.businesses.push(id),
            p => {
                pools.customers.push(id);
                if matches!(p, Persona::Office | Persona::Retiree) {
                    pools.households.push(id);
                }
                if p == Persona::Retiree {
                    pools.landlords.push(id);
                }
            }
        }
    }
    for pool in [&mut pools.households, &mut pools.landlords] {
        if pool.is_empty() {
            pool.clone_from(&pools.businesses);
        }
    }
    pools
}

/// Each account's normal outgoing history before `end_ms`.
fn histories(events: &[Event], end_ms: u64) -> BTreeMap<u64, History> {
    let mut history: BTreeMap<u64, History> = BTreeMap::new();
    for e in events.iter().filter(|e| e.label == Label::Normal && e.time_ms < end_ms) {
        let h = history.entry(e.transfer.debit_account).or_default();
        h.hours[(((e.time_ms + HONG_KONG_OFFSET_MS) % DAY_MS) / HOUR_MS) as usize] += 1;
        h.amounts.push(e.transfer.amount);
        h.total += e.transfer.amount;
        match e.transfer.credit_account {
            REMITTANCE_OUT => h.countries.insert(e.transfer.destination_country),
            to => h.payees.insert(to),
        };
    }
    history
}

impl Gen<'_> {
    fn push(&mut self, time_ms: u64, from: u64, to: u64, amount: u64, country: u16, label: Label) {
        assert!(amount > 0, "transfers move money");
        assert_ne!(from, to, "no transfer to oneself");
        assert!(!FORBIDDEN_COUNTRIES.contains(&country), "forbidden destination {country}");
        let transfer = Transfer {
            debit_account: from,
            credit_account: to,
            amount,
            debit_currency: HKD,
            credit_currency: HKD,
            destination_country: country,
            ..Transfer::default()
        };
        self.events.push(Event { time_ms, transfer, label });
    }

    /// UTC ms of local `hour` (may exceed 24) on history day `day`.
    fn at(&self, day: u32, hour: f64) -> u64 {
        self.origin_ms + u64::from(day) * DAY_MS + (hour * HOUR_MS as f64) as u64
    }

    /// (weekday with Monday 0, day of month) of history day `day`.
    fn calendar(&self, day: u32) -> (u32, u32) {
        let local_days = (self.origin_ms + HONG_KONG_OFFSET_MS) / DAY_MS + u64::from(day);
        (((local_days + 3) % 7) as u32, day_of_month(local_days))
    }

    /// UTC ms of a uniform local hour in [lo, hi) on history day `day`.
    fn at_in(&mut self, day: u32, lo: f64, hi: f64) -> u64 {
        let hour = self.rng.range(lo, hi);
        self.at(day, hour)
    }

    fn cents_in(&mut self, lo: f64, hi: f64) -> u64 {
        let hkd = self.rng.range(lo, hi);
        self.cents(hkd)
    }

    fn minutes(&mut self, lo: f64, hi: f64) -> u64 {
        (self.rng.range(lo, hi) * MINUTE_MS as f64) as u64
    }

    /// A uniform member of `pool` other than `except`.
    fn pick(&mut self, pool: &[u64], except: u64) -> u64 {
        assert!(pool.iter().any(|&a| a != except), "a pool with someone else in it");
        loop {
            let a = pool[self.rng.below(pool.len() as u64) as usize];
            if a != except {
                return a;
            }
        }
    }

    fn shuffle(&mut self, v: &mut [u64]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.rng.below(i as u64 + 1) as usize);
        }
    }

    fn lognormal(&mut self, sigma: f64) -> f64 {
        (self.rng.normal() * sigma).exp()
    }

    /// Cents for `hkd`, rounded the way people type amounts.
    fn cents(&mut self, hkd: f64) -> u64 {
        let c = (hkd.max(0.01) * 100.0) as u64;
        match self.rng.unit() {
            r if r < 0.4 => c.max(1),
            r if r < 0.8 || c < 100_000 => (c / 100 * 100).max(100),
            _ => c / 10_000 * 10_000,
        }
    }

    fn persona(&mut self) -> usize {
        let weights: Vec<f64> = PERSONAS.iter().map(|s| s.share).collect();
        self.weighted(&weights)
    }

    fn weighted(&mut self, weights: &[f64]) -> usize {
        let mut x = self.rng.unit() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            x -= w;
            if x < 0.0 {
                return i;
            }
        }
        weights.len() - 1
    }

    fn corridor(&mut self, choices: &[(u16, f64)]) -> u16 {
        let weights: Vec<f64> = choices.iter().map(|c| c.1).collect();
        choices[self.weighted(&weights)].0
    }

    /// Zipf-like preference: rank r is chosen with weight 1 / (r + 1)^1.1.
    fn zipf(&mut self, n: usize) -> usize {
        let weights: Vec<f64> = (0..n).map(|r| 1.0 / ((r + 1) as f64).powf(1.1)).collect();
        self.weighted(&weights)
    }

    fn new_account(&mut self) -> u64 {
        self.next_account += 1;
        self.next_account - 1
    }

    /// Draws one customer's habits from its persona.
    fn person(&mut self, id: u64, spec: &'static PersonaSpec, pools: &Pools) -> Person {
        let hours = Hours::ALL[self.weighted(&spec.hours)];
        let mut payees = Vec::new();
        for _ in 0..3 + self.rng.below(8) {
            let pool = if self.rng.unit() < 0.3 { &pools.businesses } else { &pools.customers };
            let to = self.pick(pool, id);
            if !payees.contains(&to) {
                payees.push(to);
            }
        }
        let bills = (0..3 + self.rng.below(4)).map(|_| self.pick(&pools.businesses, id)).collect();
        let salary = (spec.salary_hkd.1 > 0.0).then(|| {
            let employer = if spec.persona == Persona::Helper { &pools.households } else { &pools.businesses };
            let employer = self.pick(employer, id);
            let dom = SALARY_DAYS[self.rng.below(4) as usize];
            (employer, self.rng.range(spec.salary_hkd.0, spec.salary_hkd.1).round(), dom)
        });
        let pay_dom = salary.map_or(1 + self.rng.below(28) as u32, |s| s.2);
        let rent = (self.rng.unit() < spec.rent.0).then(|| {
            let landlord = if self.rng.unit() < 0.6 { &pools.landlords } else { &pools.businesses };
            (self.pick(landlord, id), self.rng.range(spec.rent.1, spec.rent.2).round(), pay_dom)
        });
        let remit = (self.rng.unit() < spec.remit.0).then(|| {
            let choices: &[(u16, f64)] =
                if spec.persona == Persona::Helper { &HELPER_CORRIDORS } else { &OTHER_CORRIDORS };
            (self.corridor(choices), self.rng.range(spec.remit.1, spec.remit.2), 1 + self.rng.below(28) as u32)
        });
        let quiet = if self.rng.unit() < 0.12 {
            let from = self.rng.below(u64::from(self.c.days)) as u32;
            (from, from + 14 + self.rng.below(22) as u32)
        } else {
            (0, 0)
        };
        Person {
            id,
            spec,
            hours,
            typical_hkd: spec.typical_hkd * self.lognormal(0.5),
            per_day: spec.per_day * self.lognormal(0.4),
            payees,
            bills,
            salary,
            rent,
            remit,
            remit_due: false,
            quiet,
        }
    }

    /// A time on `day` (weekday `dow`) for one of `p`'s own payments.
    fn when(&mut self, p: &Person, day: u32, dow: u32) -> u64 {
        if self.rng.unit() < 0.03 {
            return self.at_in(day, 7.0, 23.0);
        }
        let hours = match (p.spec.persona, dow) {
            (Persona::Helper, 6) => Hours::Day,
            (Persona::Office | Persona::Student, 5 | 6) if self.rng.unit() < 0.5 => Hours::Day,
            _ => p.hours,
        };
        let (start, len) = hours.window();
        let hour = start + len * (self.rng.unit() + self.rng.unit()) / 2.0;
        self.at(day, hour)
    }

    /// A payee by preference, or sometimes a new one who joins the list.
    fn payee(&mut self, p: &mut Person, pools: &Pools) -> u64 {
        if p.payees.is_empty() || self.rng.unit() < p.spec.new_payee {
            let pool = if self.rng.unit() < 0.35 { &pools.businesses } else { &pools.customers };
            let to = self.pick(pool, p.id);
            p.payees.push(to);
            return to;
        }
        let rank = self.zipf(p.payees.len());
        p.payees[rank]
    }

    /// One day of `p`'s life: income, then (unless on a quiet stretch)
    /// monthly obligations, routine payments and the occasional event.
    fn live(&mut self, p: &mut Person, day: u32, pools: &Pools) {
        let (dow, dom) = self.calendar(day);
        let payday = self.income(p, day, dom, pools);
        if (p.quiet.0..p.quiet.1).contains(&day) {
            return;
        }
        self.obligations(p, day, dow, dom, payday);
        self.routine(p, day, dow, pools);
        if p.spec.persona == Persona::Business {
            self.trade(p, day, dow, pools);
        }
    }

    /// A salary on payday (returns its time) or a gig platform's payout.
    fn income(&mut self, p: &Person, day: u32, dom: u32, pools: &Pools) -> Option<u64> {
        if p.spec.persona == Persona::Gig && self.rng.unit() < 0.6 {
            let (platform, t) = (pools.businesses[0], self.at_in(day, 0.5, 23.5));
            let amount = self.cents_in(150.0, 900.0);
            self.push(t, platform, p.id, amount, 0, Label::Normal);
        }
        let (employer, hkd, pay_dom) = p.salary?;
        (dom == pay_dom).then(|| {
            let t = self.at_in(day, 9.0, 11.5);
            self.push(t, employer, p.id, (hkd * 100.0) as u64, 0, Label::Normal);
            t
        })
    }

    /// Payday bills within minutes, rent and the remittance home within
    /// hours of the salary; for others, rent and remittance on their day.
    fn obligations(&mut self, p: &mut Person, day: u32, dow: u32, dom: u32, payday: Option<u64>) {
        if let Some(t_pay) = payday {
            let mut t = t_pay + self.minutes(15.0, 300.0);
            for i in 0..p.bills.len() {
                t += self.minutes(0.3, 2.5);
                let amount = self.cents_in(100.0, 1_500.0);
                self.push(t, p.id, p.bills[i], amount, 0, Label::Normal);
            }
            if let Some((landlord, hkd, _)) = p.rent {
                t += self.minutes(2.0, 90.0);
                self.push(t, p.id, landlord, (hkd * 100.0) as u64, 0, Label::Normal);
            }
            if let Some((country, hkd, _)) = p.remit {
                if self.rng.unit() < 0.5 {
                    t += self.minutes(5.0, 180.0);
                    let amount = self.cents(hkd);
                    self.push(t, p.id, REMITTANCE_OUT, amount, country, Label::Normal);
                } else {
                    p.remit_due = true;
                }
            }
        }
        if let Some((landlord, hkd, rent_dom)) = p.rent
            && p.salary.is_none()
            && dom == rent_dom
        {
            let t = self.when(p, day, dow);
            self.push(t, p.id, landlord, (hkd * 100.0) as u64, 0, Label::Normal);
        }
        if let Some((country, hkd, remit_dom)) = p.remit
            && ((p.remit_due && dow >= 5) || (p.salary.is_none() && dom == remit_dom))
        {
            p.remit_due = false;
            let t = self.when(p, day, dow);
            let amount = self.cents(hkd);
            self.push(t, p.id, REMITTANCE_OUT, amount, country, Label::Normal);
        }
    }

    /// Everyday payments (Poisson, weekday-dependent), a rare large one,
    /// and sometimes a dinner bill split with friends.
    fn routine(&mut self, p: &mut Person, day: u32, dow: u32, pools: &Pools) {
        let mean = p.per_day * if dow >= 5 { p.spec.weekend[dow as usize - 5] } else { 1.0 };
        let mut arrivals = self.rng.exp(1.0);
        while arrivals < mean {
            arrivals += self.rng.exp(1.0);
            let (to, t) = (self.payee(p, pools), self.when(p, day, dow));
            let hkd = p.typical_hkd * self.lognormal(0.8);
            let amount = self.cents(hkd);
            self.push(t, p.id, to, amount, 0, Label::Normal);
        }
        if self.rng.unit() < p.spec.large_per_day {
            let to = if self.rng.unit() < 0.7 { self.pick(&pools.businesses, p.id) } else { self.payee(p, pools) };
            let (t, hkd) = (self.when(p, day, dow), p.typical_hkd * 25.0 * self.lognormal(0.5));
            let amount = self.cents(hkd);
            self.push(t, p.id, to, amount, 0, Label::Normal);
        }
        if self.rng.unit() < p.spec.split_per_day {
            // Friends pay their share of dinner; the organiser pays the restaurant.
            let share = self.rng.range(120.0, 450.0).round();
            let (t0, k) = (self.at_in(day, 19.0, 21.5), 3 + self.rng.below(4));
            let (total, t) = self.fan_in(p.id, k, t0, 0.7, |_| share, &pools.customers, Label::Normal);
            let (restaurant, late) = (self.pick(&pools.businesses, p.id), self.minutes(5.0, 55.0));
            self.push(t + late, p.id, restaurant, total + total / k, 0, Label::Normal);
        }
    }

    /// A business's weekly supplier payment, and now and then a market day:
    /// many customers pay the stall, which pays a supplier most of the takings.
    fn trade(&mut self, p: &Person, day: u32, dow: u32, pools: &Pools) {
        if p.bills.is_empty() {
            return;
        }
        if u64::from(dow) == p.id % 7 {
            let (to, t) = (p.bills[0], self.when(p, day, dow));
            let hkd = p.typical_hkd * 6.0 * self.lognormal(0.5);
            let amount = self.cents(hkd);
            self.push(t, p.id, to, amount, 0, Label::Normal);
        }
        if self.rng.unit() < 1.0 / 15.0 {
            let (t0, k, span_h) = (self.at_in(day, 10.0, 14.0), 6 + self.rng.below(10), self.rng.range(1.0, 4.0));
            let takings = |g: &mut Self| g.rng.range(50.0, 800.0);
            let (total, t) = self.fan_in(p.id, k, t0, span_h, takings, &pools.customers, Label::Normal);
            let to = p.bills[self.rng.below(p.bills.len() as u64) as usize];
            let amount = (total as f64 * self.rng.range(0.6, 0.9)) as u64;
            let t = t + self.minutes(30.0, 120.0);
            self.push(t, p.id, to, amount.max(1), 0, Label::Normal);
        }
    }

    /// `k` distinct senders from `pool` pay `to` over `span_h` hours from
    /// `t0`; returns the total and the time of the last payment.
    #[allow(clippy::too_many_arguments)]
    fn fan_in(
        &mut self,
        to: u64,
        k: u64,
        t0: u64,
        span_h: f64,
        mut hkd: impl FnMut(&mut Self) -> f64,
        pool: &[u64],
        label: Label,
    ) -> (u64, u64) {
        let mut offsets: Vec<u64> = (0..k).map(|_| (self.rng.unit() * span_h * HOUR_MS as f64) as u64).collect();
        offsets.sort_unstable();
        let (mut senders, mut total, mut last) = (Vec::new(), 0, t0);
        for off in offsets {
            let from = if matches!(label, Label::Feed { .. }) && self.rng.unit() < 0.35 {
                // A victim whose account is new to the bank, funded before paying.
                let id = self.new_account();
                let funded = t0.saturating_sub(self.minutes(120.0, 4_320.0)).max(self.c.start_ms);
                self.push(funded, SETTLEMENT_IN, id, FUNDING_CENTS, 0, Label::Funding);
                id
            } else {
                let mut from = self.pick(pool, to);
                for _ in 0..10 {
                    if !senders.contains(&from) {
                        break;
                    }
                    from = self.pick(pool, to);
                }
                from
            };
            senders.push(from);
            let amount = hkd(self);
            let amount = self.cents(amount);
            self.push(t0 + off, from, to, amount, 0, label);
            total += amount;
            last = t0 + off;
        }
        (total, last)
    }

    /// A dormant mule's past: a part-time wage and sparse spending, paid
    /// only from what came in, ending well before the evaluation window.
    fn dormant_history(&mut self, id: u64, pools: &Pools) {
        let opening = 5_000 + self.rng.below(MULE_OPENING_MAX_CENTS - 5_000);
        self.push(self.c.start_ms, SETTLEMENT_IN, id, opening, 0, Label::Funding);
        let (employer, wage) = (self.pick(&pools.businesses, id), self.cents_in(3_000.0, 6_000.0));
        let payees: Vec<u64> = (0..3 + self.rng.below(3)).map(|_| self.pick(&pools.customers, id)).collect();
        let (mut balance, first) = (opening, self.rng.below(3) as u32);
        for day in first..self.c.days.saturating_sub(DORMANT_SILENCE_DAYS).max(first + 2) {
            if (day - first) % 14 == 0 {
                let t = self.at_in(day, 10.0, 12.0);
                self.push(t, employer, id, wage, 0, Label::Normal);
                balance += wage;
            }
            if self.rng.unit() < 0.3 {
                let to = payees[self.zipf(payees.len())];
                let hkd = 150.0 * self.lognormal(0.8);
                let amount = self.cents(hkd);
                if amount <= balance {
                    let t = self.at_in(day, 17.0, 23.9);
                    self.push(t, id, to, amount, 0, Label::Normal);
                    balance -= amount;
                }
            }
        }
    }

    /// The least likely hour the account never used (or used least).
    fn odd_hour(&mut self, h: &History) -> f64 {
        let unused: Vec<u32> = ODD_HOURS.iter().copied().filter(|&x| h.hours[x as usize] == 0).collect();
        let hour = if unused.is_empty() {
            (0..24).min_by_key(|&x| h.hours[x as usize]).expect("24 hours")
        } else {
            unused[self.rng.below(unused.len().min(3) as u64) as usize]
        };
        f64::from(hour) + self.rng.unit()
    }

    /// An hour drawn from the account's own hour histogram.
    fn usual_hour(&mut self, h: &History) -> f64 {
        let weights: Vec<f64> = h.hours.iter().map(|&n| f64::from(n)).collect();
        self.weighted(&weights) as f64 + self.rng.unit()
    }

    /// A payee the account never paid: a fresh account or another customer.
    fn stranger(&mut self, id: u64, h: &History, pools: &Pools) -> u64 {
        if self.rng.unit() < 0.5 {
            return self.new_account();
        }
        let to = self.pick(&pools.customers, id);
        if h.payees.contains(&to) { self.new_account() } else { to }
    }

    /// Injects anomaly `n` into account `id`, whose history is `h` (amounts sorted).
    fn inject(&mut self, n: usize, kind: Kind, strength: Strength, id: u64, h: &History, pools: &Pools) {
        let dose = &DOSES[kind as usize][strength as usize];
        let label = Label::Anomaly { n, kind, strength };
        let typical = h.amounts[h.amounts.len() / 2] as f64;
        let count = dose.count.0 + self.rng.below(dose.count.1 - dose.count.0 + 1);
        let day = self.c.days + self.rng.below(u64::from(EVAL_DAYS - 1)) as u32;
        let hour = if dose.odd_hour { self.odd_hour(h) } else { self.usual_hour(h) };
        let t0 = self.at(day, hour);
        let x = self.rng.range(dose.x.0, dose.x.1);
        match kind {
            Kind::Takeover => {
                let to = self.stranger(id, h, pools);
                self.push(t0, id, to, (typical * x) as u64, 0, label);
            }
            Kind::NewCorridor => {
                let fresh: Vec<u16> = NEW_CORRIDORS.iter().copied().filter(|c| !h.countries.contains(c)).collect();
                let country = fresh[self.rng.below(fresh.len() as u64) as usize];
                self.push(t0, id, REMITTANCE_OUT, (typical * x) as u64, country, label);
            }
            Kind::NewPayeeBurst => {
                let window = if strength == Strength::Eighth { HOUR_MS } else { 15 * MINUTE_MS };
                for i in 0..count {
                    let to = self.stranger(id, h, pools);
                    let t = t0 + window * i / count + self.rng.below(window / count / 2);
                    let amount = (typical * self.rng.range(dose.x.0, dose.x.1)) as u64;
                    self.push(t, id, to, amount.max(1), 0, label);
                }
            }
            Kind::Drain => {
                let to = *h.payees.iter().nth(self.rng.below(h.payees.len() as u64) as usize).expect("has payees");
                self.push(t0, id, to, (h.total as f64 * x) as u64, 0, label);
            }
            Kind::SlowTakeover => {
                let (to, span_days) = (self.stranger(id, h, pools), 3.0 + self.rng.range(0.0, 4.0));
                for i in 0..count {
                    let frac = i as f64 / (count - 1) as f64;
                    let day_i = day + (span_days * frac) as u32;
                    let hour = self.usual_hour(h);
                    let t = self.at(day_i, hour);
                    self.push(t, id, to, (typical * x.powf(frac)).max(1.0) as u64, 0, label);
                }
            }
            Kind::PartialDrain => {
                let payees = [self.stranger(id, h, pools), self.stranger(id, h, pools)];
                let spread = 1 + self.rng.below(2) as usize;
                for i in 0..count {
                    let hour = self.usual_hour(h);
                    let t = self.at(day, hour);
                    let amount = (typical * self.rng.range(dose.x.0, dose.x.1)) as u64;
                    self.push(t, id, payees[i as usize % spread], amount.max(1), 0, label);
                }
            }
        }
    }

    /// A new mule account opened a few days before `t`, maybe with a tiny deposit.
    fn open_mule(&mut self, t: u64) -> u64 {
        let id = self.new_account();
        if self.rng.unit() < 0.6 {
            let opened = t.saturating_sub((self.rng.range(1.0, 5.0) * DAY_MS as f64) as u64).max(self.c.start_ms);
            let deposit = 2_000 + self.rng.below(MULE_OPENING_MAX_CENTS - 2_000);
            self.push(opened, SETTLEMENT_IN, id, deposit, 0, Label::Funding);
        }
        id
    }

    /// Sends `total` from `from` in `parts` transfers a few minutes apart,
    /// each abroad or to a fresh account; returns the time of the last.
    fn cash_out(&mut self, from: u64, total: u64, parts: u64, abroad: f64, mut t: u64, label: Label) -> u64 {
        let weights: Vec<f64> = (0..parts).map(|_| self.rng.range(0.5, 1.5)).collect();
        let sum: f64 = weights.iter().sum();
        let (country, mut cash_account) = (MULE_COUNTRIES[self.rng.below(8) as usize], None);
        for w in weights {
            let amount = ((total as f64 * w / sum) as u64).min(total).max(1);
            if self.rng.unit() < abroad {
                self.push(t, from, REMITTANCE_OUT, amount, country, label);
            } else {
                let to = match cash_account {
                    Some(a) if self.rng.unit() < 0.5 => a,
                    _ => self.new_account(),
                };
                cash_account = Some(to);
                self.push(t, from, to, amount, 0, label);
            }
            t += self.minutes(1.0, 10.0);
        }
        t
    }

    /// Mule pattern `n`; `dormant` is the silent account a `Dormant` pattern wakes.
    fn mule(&mut self, n: usize, kind: MuleKind, dormant: Option<u64>, pools: &Pools) {
        let (label, feed) = (Label::Mule { n, kind }, Label::Feed { n });
        let day = self.c.days + self.rng.below(u64::from(EVAL_DAYS)) as u32;
        let t0 = self.at_in(day, 9.0, 19.0);
        let first = match dormant {
            Some(id) => id,
            None => self.open_mule(t0),
        };
        let (k, span_h) = match kind {
            MuleKind::FanInRemit => (4 + self.rng.below(9), self.rng.range(1.0, 5.0)),
            MuleKind::Chain => (3 + self.rng.below(6), self.rng.range(1.0, 3.0)),
            MuleKind::Dormant => (4 + self.rng.below(7), self.rng.range(1.0, 6.0)),
        };
        let victim_hkd = |g: &mut Self| (6_000.0 * g.lognormal(0.9)).clamp(300.0, 200_000.0);
        let (held, t) = self.fan_in(first, k, t0, span_h, victim_hkd, &pools.customers, feed);
        match kind {
            MuleKind::FanInRemit => {
                let out = (held as f64 * self.rng.range(0.6, 0.95)) as u64;
                let abroad = if self.rng.unit() < 0.7 { 1.0 } else { 0.0 };
                let t = t + self.minutes(3.0, 60.0);
                let parts = 1 + self.rng.below(3);
                self.cash_out(first, out, parts, abroad, t, label);
            }
            MuleKind::Chain => {
                // 2-4 new accounts in a row; each passes most of what it got on.
                let (mut from, mut held, mut t) = (first, held, t);
                for _ in 1..2 + self.rng.below(3) {
                    t += self.minutes(2.0, 20.0);
                    let pass = (held as f64 * self.rng.range(0.85, 0.98)) as u64;
                    let next = self.open_mule(t);
                    self.push(t, from, next, pass, 0, label);
                    (from, held) = (next, pass);
                }
                t += self.minutes(2.0, 20.0);
                let pass = (held as f64 * self.rng.range(0.85, 0.98)) as u64;
                let parts = 1 + self.rng.below(2);
                self.cash_out(from, pass, parts, 1.0, t, label);
            }
            MuleKind::Dormant => {
                let out = (held as f64 * self.rng.range(0.7, 0.95)) as u64;
                let t = t + self.minutes(10.0, 240.0);
                let parts = 1 + self.rng.below(3);
                self.cash_out(first, out, parts, 0.5, t, label);
            }
        }
    }
}

/// Day of the month of `days` days after 1970-01-01 (Hinnant's civil-from-days).
fn day_of_month(days: u64) -> u32 {
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    (doy - (153 * mp + 2) / 5 + 1) as u32
}

#[cfg(test)]
mod tests {
    use std::sync::OnceLock;

    use super::*;

    /// The default population, generated once for the tests that read it.
    fn population() -> &'static Population {
        static POPULATION: OnceLock<Population> = OnceLock::new();
        POPULATION.get_or_init(|| generate(&PopulationConfig::default()))
    }

    fn timeline(p: &Population) -> Vec<(u64, Transfer, Label)> {
        p.events.iter().map(|e| (e.time_ms, e.transfer, e.label)).collect()
    }

    #[test]
    fn day_zero_is_thursday_the_first_of_october() {
        let c = PopulationConfig::default();
        let g = Gen { c: &c, rng: Rng::new(0), events: vec![], origin_ms: c.start_ms, next_account: 0 };
        assert_eq!(g.calendar(0), (3, 1));
        assert_eq!(g.calendar(31), (6, 1), "1 November 2026 is a Sunday");
        assert_eq!(((g.at(0, 3.5) + HONG_KONG_OFFSET_MS) % DAY_MS) / HOUR_MS, 3);
    }

    #[test]
    fn the_same_seed_gives_the_same_events() {
        let c = PopulationConfig { accounts: 300, days: 40, ..PopulationConfig::default() };
        let first = timeline(&generate(&c));
        assert_eq!(first, timeline(&generate(&c)));
        assert_ne!(first, timeline(&generate(&PopulationConfig { seed: 12, ..c })));
    }

    #[test]
    fn events_are_sorted_with_unique_ids_and_valid_transfers() {
        let (c, p) = (PopulationConfig::default(), population());
        for (i, e) in p.events.iter().enumerate() {
            let t = &e.transfer;
            assert_eq!(t.transfer_id, i as u128 + 1);
            assert!(i == 0 || p.events[i - 1].time_ms <= e.time_ms, "event {i} out of order");
            assert!(e.time_ms >= c.start_ms);
            assert!(t.amount > 0);
            assert_eq!((t.debit_currency, t.credit_currency), (HKD, HKD));
            assert!(![408, 364, 104, 344].contains(&t.destination_country), "event {i}");
            assert_eq!(t.destination_country != 0, t.credit_account == REMITTANCE_OUT, "event {i}");
            assert_eq!(t.debit_account == SETTLEMENT_IN, e.label == Label::Funding, "event {i}");
            assert_ne!(t.debit_account, t.credit_account, "event {i}");
        }
        assert!(p.accounts.windows(2).all(|w| w[0] < w[1]));
        assert!(p.accounts.iter().all(|&a| a >= c.first_account));
    }

    #[test]
    fn every_anomaly_and_mule_kind_is_present() {
        let p = population();
        let mut seen: BTreeMap<(Kind, Strength), BTreeSet<usize>> = BTreeMap::new();
        let mut mules: BTreeMap<usize, (usize, usize)> = BTreeMap::new();
        for e in &p.events {
            match e.label {
                Label::Anomaly { n, kind, strength } => {
                    assert_eq!(p.anomalies[n], (kind, strength));
                    seen.entry((kind, strength)).or_default().insert(n);
                }
                Label::Mule { n, kind } => {
                    assert_eq!(p.mules[n], kind);
                    mules.entry(n).or_default().1 += 1;
                }
                Label::Feed { n } => mules.entry(n).or_default().0 += 1,
                _ => {}
            }
        }
        for kind in Kind::ALL {
            for strength in Strength::ALL {
                let count = seen.get(&(kind, strength)).map_or(0, BTreeSet::len);
                assert!(count >= 5, "{} {}: {count}", kind.name(), strength.name());
            }
        }
        assert_eq!(seen.values().map(BTreeSet::len).sum::<usize>(), p.anomalies.len());
        for kind in MuleKind::ALL {
            assert!(p.mules.iter().filter(|&&m| m == kind).count() >= 10, "{}", kind.name());
        }
        for n in 0..p.mules.len() {
            let (feeds, outs) = mules.get(&n).copied().unwrap_or_default();
            assert!(feeds >= 3 && outs >= 1, "mule {n}: {feeds} feeds, {outs} out");
        }
    }

    #[test]
    fn no_account_goes_negative_and_mules_pay_only_from_what_they_got() {
        let p = population();
        let mut balance: BTreeMap<u64, i128> = BTreeMap::new();
        let (mut funded, mut got, mut sent) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        let mut last_normal: BTreeMap<u64, u64> = BTreeMap::new();
        let mut first_feed: BTreeMap<u64, u64> = BTreeMap::new();
        for e in &p.events {
            let (t, amount) = (&e.transfer, i128::from(e.transfer.amount));
            if t.debit_account != SETTLEMENT_IN {
                let b = balance.entry(t.debit_account).or_default();
                *b -= amount;
                assert!(*b >= 0, "account {} overdrawn by transfer {}", t.debit_account, t.transfer_id);
            }
            if t.credit_account != REMITTANCE_OUT {
                *balance.entry(t.credit_account).or_default() += amount;
            }
            match e.label {
                Label::Funding => *funded.entry(t.credit_account).or_insert(0) += amount,
                Label::Feed { .. } => {
                    *got.entry(t.credit_account).or_insert(0) += amount;
                    first_feed.entry(t.credit_account).or_insert(e.time_ms);
                }
                Label::Mule { .. } => {
                    *got.entry(t.credit_account).or_insert(0) += amount;
                    *sent.entry(t.debit_account).or_insert(0) += amount;
                }
                Label::Normal => {
                    last_normal.insert(t.debit_account, e.time_ms);
                    last_normal.insert(t.credit_account, e.time_ms);
                }
                Label::Anomaly { .. } => {}
            }
        }
        assert!(!sent.is_empty());
        for (mule, &out) in &sent {
            let funding = funded.get(mule).copied().unwrap_or(0);
            assert!(funding <= i128::from(MULE_OPENING_MAX_CENTS), "mule {mule} funded with {funding}");
            assert!(out < got[mule] + funding.max(1), "mule {mule} sent {out} of {}", got[mule]);
            assert!(out <= got[mule], "mule {mule} spent its own money");
            if let (Some(&quiet), Some(&fed)) = (last_normal.get(mule), first_feed.get(mule)) {
                assert!(fed - quiet > 21 * DAY_MS, "dormant mule {mule} was not silent for three weeks");
            }
        }
    }
}
