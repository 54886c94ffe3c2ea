//! A seeded generator of account behaviour for measuring AML level 3:
//! normal customers with their own habits, and injected anomalies of known
//! kinds, each transfer labelled with what it is.
//!
//! Not used by the switch. Tests measure the behaviour model's detection
//! and false-positive rates on it (`docs/aml.md`), and the load tester can
//! draw AML-tripping traffic from it. Floating point is used only to draw
//! random numbers; every amount it emits is integer minor units, and the
//! same seed gives the same scenario on every machine.

use crate::money::HKD;
use crate::protocol::accounts::{REMITTANCE_OUT, SETTLEMENT_IN};
use crate::protocol::records::Transfer;

use super::population::{MuleKind, Strength};
use super::{DAY_MS, HONG_KONG_OFFSET_MS};

/// A small, fast, seeded generator (SplitMix64).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(seed ^ 0x6a09_e667_f3bc_c909)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    /// Exponential with the given mean.
    pub fn exp(&mut self, mean: f64) -> f64 {
        -mean * self.unit().max(1e-12).ln()
    }
}

/// The kinds of injected anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anomaly {
    /// Account takeover: 20-100 times the usual amount, to a new payee, at
    /// an hour the account never uses.
    Takeover,
    /// A remittance to a country the account never sent to, 8-30 times the
    /// usual amount.
    NewCorridor,
    /// A money-mule burst: 8-15 transfers of usual size within 15 minutes,
    /// each to a new payee.
    MuleBurst,
    /// A dormant account drained: 40-150 times the usual amount to a usual
    /// payee, at an hour the account never uses.
    Drain,
}

impl Anomaly {
    /// Every kind.
    pub const ALL: [Anomaly; 4] = [Self::Takeover, Self::NewCorridor, Self::MuleBurst, Self::Drain];

    /// Its name in reports.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Takeover => "takeover",
            Self::NewCorridor => "new corridor",
            Self::MuleBurst => "new-payee burst",
            Self::Drain => "drain",
        }
    }
}

/// What a generated transfer is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Label {
    /// Deposits that fund the accounts (not outgoing).
    Funding,
    /// In line with the account's habits.
    Normal,
    /// Part of injected anomaly number `n`, of a kind and strength.
    Anomaly(usize, Anomaly, Strength),
    /// A mule account's outgoing transfer in mule pattern `n`.
    Mule(usize, MuleKind),
    /// A victim's payment into mule pattern `n`.
    Feed(usize),
}

/// One generated transfer at its time.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub time_ms: u64,
    pub transfer: Transfer,
    pub label: Label,
}

/// A generated population and its traffic, in time order.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// Customer account ids (create these first).
    pub accounts: Vec<u64>,
    pub events: Vec<Event>,
    /// Number of injected anomalies.
    pub anomalies: usize,
    /// Index n is mule pattern n.
    pub mules: Vec<MuleKind>,
}

/// The shape of a scenario.
#[derive(Clone, Copy, Debug)]
pub struct SynthConfig {
    pub seed: u64,
    pub accounts: usize,
    /// Days of normal history before anomalies are injected.
    pub days: u32,
    /// Share of accounts that get one anomaly after their history.
    pub anomaly_share: f64,
    /// Whether anomalies come in four strengths (full, half, quarter,
    /// eighth, in turn) or all at full strength.
    pub strengths: bool,
    /// Mule patterns as a share of `accounts` (their kinds in turn).
    pub mule_share: f64,
    /// First account id.
    pub first_account: u64,
    /// Time of the first day's HK midnight.
    pub start_ms: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            accounts: 1_000,
            days: 60,
            anomaly_share: 0.25,
            strengths: true,
            mule_share: 0.03,
            first_account: 100_000,
            // 2026-09-01T00:00 HKT.
            start_ms: 1_788_192_000_000 - HONG_KONG_OFFSET_MS,
        }
    }
}

/// Remittance corridors common from Hong Kong (Philippines, Indonesia,
/// mainland China, India, Thailand, Nepal is monitored so left out).
const CORRIDORS: [u16; 5] = [608, 360, 156, 356, 764];
/// Countries a new-corridor anomaly sends to (none on the call-for-action
/// list, so level 2 is not what catches them).
const NEW_COUNTRIES: [u16; 6] = [566, 458, 116, 50, 784, 643];

/// One customer's habits.
struct Persona {
    id: u64,
    /// Median amount, HKD minor units.
    median: f64,
    /// Spread of ln(amount).
    sigma: f64,
    payees: Vec<u64>,
    /// First active hour (HKT) and window length.
    hour_start: u64,
    hour_len: u64,
    /// Mean transfers per day.
    rate: f64,
    corridor: Option<u16>,
}

impl Persona {
    fn amount(&self, rng: &mut Rng, times: f64) -> u64 {
        ((self.median * (self.sigma * rng.normal()).exp() * times).round() as u64).max(100)
    }

    /// A time on `day` inside the account's active window (95%) or at any
    /// hour (5%).
    fn time(&self, rng: &mut Rng, start_ms: u64, day: u64) -> u64 {
        let hour = if rng.unit() < 0.95 { self.hour_start + rng.below(self.hour_len) } else { rng.below(24) };
        start_ms + day * DAY_MS + (hour % 24) * 3_600_000 + rng.below(3_600_000)
    }

    /// An hour the account's window never covers.
    fn odd_hour(&self, rng: &mut Rng) -> u64 {
        let outside = 24 - self.hour_len;
        (self.hour_start + self.hour_len + rng.below(outside)) % 24
    }
}

/// Builds a scenario.
#[must_use]
// Long by design: one pass that draws each customer's history, then
// each labelled change, in the order a reader checks them against docs/aml.md.
pub fn generate(c: &SynthConfig) -> Scenario {
    let mut rng = Rng::new(c.seed);
    let accounts: Vec<u64> = (0..c.accounts as u64).map(|i| c.first_account + i).collect();
    let personas: Vec<Persona> = accounts
        .iter()
        .map(|&id| {
            let n_payees = 2 + rng.below(7) as usize;
            Persona {
                id,
                median: rng.range(4.0, 8.5).exp() * 100.0, // HK$55 to HK$4,900, in cents
                sigma: rng.range(0.25, 0.9),
                payees: (0..n_payees)
                    .map(|k| {
                        accounts[((id - c.first_account) as usize
                            + 1
                            + k
                            + rng.below(accounts.len() as u64 - 1) as usize)
                            % accounts.len()]
                    })
                    .filter(|&to| to != id)
                    .chain(std::iter::once(accounts[((id - c.first_account) as usize + 1) % accounts.len()]))
                    .collect(),
                hour_start: 7 + rng.below(5),
                hour_len: 8 + rng.below(7),
                rate: rng.range(0.3, 3.0),
                corridor: (rng.unit() < 0.2).then(|| CORRIDORS[rng.below(CORRIDORS.len() as u64) as usize]),
            }
        })
        .collect();
    let mut events = Vec::new();
    let mut next_id: u128 = 1;
    let mut push =
        |events: &mut Vec<Event>, time_ms: u64, debit: u64, credit: u64, amount: u64, country: u16, label| {
            let transfer = hkd_transfer(next_id, debit, credit, amount, country);
            next_id += 1;
            events.push(Event { time_ms, transfer, label });
        };
    for p in &personas {
        // Enough money for everything, in one deposit before day 0.
        push(&mut events, c.start_ms, SETTLEMENT_IN, p.id, 1 << 40, 0, Label::Funding);
    }
    let history_end = c.start_ms + u64::from(c.days) * DAY_MS;
    let mut anomalies = 0;
    // Customers without an anomaly: the mule patterns' victims, so a
    // victim's payment never stands in an anomaly's way.
    let mut unchanged = Vec::new();
    for p in &personas {
        let mut rng = Rng::new(c.seed ^ p.id.wrapping_mul(0x9e37_79b9));
        let mut payees = p.payees.clone();
        for day in 0..u64::from(c.days) {
            // A Poisson number of transfers per day.
            let mut t = rng.exp(1.0);
            while t < 1.0 {
                t += rng.exp(1.0 / p.rate);
                let time = p.time(&mut rng, c.start_ms, day);
                if rng.unit() < 0.03 {
                    // Now and then, someone new.
                    payees.push(accounts[rng.below(accounts.len() as u64) as usize]);
                }
                let to = payees[(rng.below(payees.len() as u64) as usize).min(rng.below(payees.len() as u64) as usize)];
                if to != p.id {
                    let amount = p.amount(&mut rng, 1.0);
                    push(&mut events, time, p.id, to, amount, 0, Label::Normal);
                }
            }
            // A monthly bill run: 3-5 payments within minutes.
            if day % 30 == 7 {
                let time = p.time(&mut rng, c.start_ms, day);
                for k in 0..3 + rng.below(3) {
                    let to = payees[k as usize % payees.len()];
                    if to != p.id {
                        let amount = p.amount(&mut rng, 1.0);
                        push(&mut events, time + k * 40_000, p.id, to, amount, 0, Label::Normal);
                    }
                }
            }
            // A monthly remittance home.
            if let Some(country) = p.corridor
                && day % 30 == 14
            {
                let time = p.time(&mut rng, c.start_ms, day);
                let amount = p.amount(&mut rng, 3.0);
                push(&mut events, time, p.id, REMITTANCE_OUT, amount, country, Label::Normal);
            }
        }
        if rng.unit() >= c.anomaly_share {
            unchanged.push(p.id);
            continue;
        }
        let kind = Anomaly::ALL[anomalies % Anomaly::ALL.len()];
        let strength = if c.strengths {
            Strength::ALL[anomalies / Anomaly::ALL.len() % Strength::ALL.len()]
        } else {
            Strength::Full
        };
        // Full strength is this generator's first calibration; each step
        // halves how far the anomaly is from the account's habits.
        let scale = match strength {
            Strength::Full => 1.0,
            Strength::Half => 0.5,
            Strength::Quarter => 0.25,
            Strength::Eighth => 0.125,
        };
        let label = Label::Anomaly(anomalies, kind, strength);
        anomalies += 1;
        let day_start = history_end + rng.below(5) * DAY_MS;
        let at_hour = |hour: u64, rng: &mut Rng| day_start + hour * 3_600_000 + rng.below(3_600_000);
        let stranger = |rng: &mut Rng| c.first_account + c.accounts as u64 + 1_000_000 + rng.below(1 << 30);
        match kind {
            Anomaly::Takeover => {
                let hour = p.odd_hour(&mut rng);
                let time = at_hour(hour, &mut rng);
                let times = (rng.range(20.0, 100.0) * scale).max(1.5);
                let amount = p.amount(&mut rng, times);
                let to = stranger(&mut rng);
                push(&mut events, time, p.id, to, amount, 0, label);
            }
            Anomaly::NewCorridor => {
                let hour = p.hour_start + rng.below(p.hour_len);
                let time = at_hour(hour % 24, &mut rng);
                let times = (rng.range(8.0, 30.0) * scale).max(1.5);
                let amount = p.amount(&mut rng, times);
                let country = NEW_COUNTRIES[rng.below(NEW_COUNTRIES.len() as u64) as usize];
                push(&mut events, time, p.id, REMITTANCE_OUT, amount, country, label);
            }
            Anomaly::MuleBurst => {
                let hour = p.hour_start + rng.below(p.hour_len);
                let mut time = at_hour(hour % 24, &mut rng);
                let count = match strength {
                    Strength::Full => 8 + rng.below(8),
                    Strength::Half => 4 + rng.below(4),
                    Strength::Quarter => 2 + rng.below(2),
                    Strength::Eighth => 1 + rng.below(2),
                };
                for _ in 0..count {
                    let to = stranger(&mut rng);
                    let amount = p.amount(&mut rng, 1.0);
                    push(&mut events, time, p.id, to, amount, 0, label);
                    time += 30_000 + rng.below(60_000);
                }
            }
            Anomaly::Drain => {
                let hour = p.odd_hour(&mut rng);
                let time = at_hour(hour, &mut rng);
                let times = (rng.range(40.0, 150.0) * scale).max(1.5);
                let amount = p.amount(&mut rng, times);
                let to = p.payees[0];
                push(&mut events, time, p.id, to, amount, 0, label);
            }
        }
    }
    let mules = inject_mules(c, &unchanged, history_end, &mut events, &mut next_id);
    // Strangers the anomalies pay must exist: they are listed as accounts.
    let mut all_accounts = accounts;
    for e in &events {
        let to = e.transfer.credit_account;
        if to >= c.first_account + c.accounts as u64 {
            all_accounts.push(to);
        }
    }
    all_accounts.sort_unstable();
    all_accounts.dedup();
    events.sort_by_key(|e| (e.time_ms, e.transfer.transfer_id));
    Scenario { accounts: all_accounts, events, anomalies, mules }
}

/// An HKD transfer of this generator.
fn hkd_transfer(id: u128, debit: u64, credit: u64, amount: u64, country: u16) -> Transfer {
    Transfer {
        transfer_id: id,
        debit_account: debit,
        credit_account: credit,
        amount,
        debit_currency: HKD,
        credit_currency: HKD,
        destination_country: country,
        ..Transfer::default()
    }
}

/// Mule patterns after the history, this generator's own way: victims
/// (customers of the population) pay what a scammer asks, HK$800 to
/// HK$40,000, into a mule, which sends most of it on within hours.
/// Fan-in: a new, unfunded account remits 75-98% abroad in 1-3 parts.
/// Chain: the first new account passes 90-99% through 1-4 more new
/// accounts, minutes apart; the last remits abroad. Dormant: an account
/// with three weeks of small evening spending, silent for a month, then
/// collects and pays 80-95% on to new domestic payees in 2-4 parts.
fn inject_mules(
    c: &SynthConfig,
    victims: &[u64],
    history_end: u64,
    events: &mut Vec<Event>,
    next_id: &mut u128,
) -> Vec<MuleKind> {
    let mut rng = Rng::new(c.seed ^ 0x6d75_6c65);
    let mut push = |events: &mut Vec<Event>, time_ms: u64, debit: u64, credit: u64, amount: u64, country, label| {
        let transfer = hkd_transfer(*next_id, debit, credit, amount, country);
        *next_id += 1;
        events.push(Event { time_ms, transfer, label });
    };
    let mut next_mule = c.first_account + c.accounts as u64 + 500_000;
    let mut fresh = || {
        next_mule += 1;
        next_mule
    };
    let n_patterns = (c.accounts as f64 * c.mule_share).round() as usize;
    let mut kinds = Vec::with_capacity(n_patterns);
    for n in 0..n_patterns {
        let kind = MuleKind::ALL[n % MuleKind::ALL.len()];
        kinds.push(kind);
        let label = Label::Mule(n, kind);
        let mule = fresh();
        if kind == MuleKind::Dormant {
            // Three weeks of small evening spending from a modest deposit.
            let payees: Vec<u64> =
                (0..2 + rng.below(2)).map(|_| victims[rng.below(victims.len() as u64) as usize]).collect();
            push(events, c.start_ms, SETTLEMENT_IN, mule, 2_000_000, 0, Label::Funding);
            for k in 0..12 + rng.below(8) {
                let day = k * 21 / 20;
                let time = c.start_ms + day * DAY_MS + (18 + rng.below(4)) * 3_600_000 + rng.below(3_600_000);
                let to = payees[rng.below(payees.len() as u64) as usize];
                push(events, time, mule, to, 10_000 + rng.below(50_000), 0, Label::Normal);
            }
        }
        // The scam: victims pay over 30 minutes to 8 hours.
        let paying = match kind {
            MuleKind::FanInRemit => 5 + rng.below(14),
            MuleKind::Chain => 3 + rng.below(6),
            MuleKind::Dormant => 4 + rng.below(8),
        };
        let start = history_end + rng.below(5) * DAY_MS + (8 + rng.below(10)) * 3_600_000;
        let span = 1_800_000 + rng.below(7 * 3_600_000);
        let mut last = start;
        let mut held = 0;
        for _ in 0..paying {
            let victim = victims[rng.below(victims.len() as u64) as usize];
            let time = start + rng.below(span);
            let amount = ((rng.range(6.7, 10.6).exp() * 100.0) as u64).max(100);
            push(events, time, victim, mule, amount, 0, Label::Feed(n));
            last = last.max(time);
            held += amount;
        }
        let mut time = last + 60_000 + rng.below(3 * 3_600_000);
        // The mule's transfers: (time, from, to, amount, country).
        let mut out: Vec<(u64, u64, u64, u64, u16)> = Vec::new();
        let abroad = |rng: &mut Rng| {
            let all = [CORRIDORS.as_slice(), NEW_COUNTRIES.as_slice()].concat();
            (REMITTANCE_OUT, all[rng.below(all.len() as u64) as usize])
        };
        match kind {
            MuleKind::FanInRemit => {
                let total = (held as f64 * rng.range(0.75, 0.98)) as u64;
                let n_parts = 1 + rng.below(3);
                split(&mut out, &mut rng, (mule, total, n_parts, time), abroad);
            }
            MuleKind::Chain => {
                let (mut from, mut amount) = (mule, held);
                for _ in 0..1 + rng.below(4) {
                    let next = fresh();
                    amount = (amount as f64 * rng.range(0.90, 0.99)) as u64;
                    out.push((time, from, next, amount.max(1), 0));
                    from = next;
                    time += 60_000 + rng.below(30 * 60_000);
                }
                amount = (amount as f64 * rng.range(0.90, 0.99)) as u64;
                split(&mut out, &mut rng, (from, amount, 1, time), abroad);
            }
            MuleKind::Dormant => {
                let total = (held as f64 * rng.range(0.80, 0.95)) as u64;
                let first = c.first_account + c.accounts as u64 + 2_000_000;
                let n_parts = 2 + rng.below(3);
                split(&mut out, &mut rng, (mule, total, n_parts, time), |rng| (first + rng.below(1 << 30), 0));
            }
        }
        for (time, from, to, amount, country) in out {
            push(events, time, from, to, amount, country, label);
        }
    }
    kinds
}

/// `total` from `from` in `n` parts a few minutes apart from `time`, each
/// to where `to` says.
fn split(
    out: &mut Vec<(u64, u64, u64, u64, u16)>,
    rng: &mut Rng,
    (from, total, n, time): (u64, u64, u64, u64),
    mut to: impl FnMut(&mut Rng) -> (u64, u16),
) {
    let mut t = time;
    for k in 0..n {
        let amount = total / n + if k == 0 { total % n } else { 0 };
        let (credit, country) = to(rng);
        out.push((t, from, credit, amount.max(1), country));
        t += 60_000 + rng.below(20 * 60_000);
    }
}
