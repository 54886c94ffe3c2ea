//! `gen`: a seeded synthetic workload written to a traffic file, and the
//! balances it must leave (`FILE.expected`).
//!
//! Accounts are drawn Zipf-skewed (a few are busy, most are quiet). The mix:
//! same-currency payments, HKD→USD conversions, cross-border remittances
//! (a share to high-risk countries, held for SMS_OTP; half of those are
//! confirmed later), loan disbursements, AUTO_CREDIT payments that draw
//! micro-loans, all in batches. Setup (accounts, rates, credit lines,
//! deposits) comes first.
//!
//! Two profiles ([`Profile`]). **Realistic** (the default): every customer
//! has habits, drawn from its id and the seed: a few usual payees, a usual
//! amount (HK$5 to HK$2,000, each payment within a factor of 1.4 of it),
//! and for one customer in twenty a home country it remits to, 40% of its
//! payments; a small share of customers (`anomaly_share`) have one
//! injected anomaly (30 times the usual amount to a stranger), which AML
//! level 3 should hold (model 2 does; model 3 waits for four weeks of
//! payee memory, more than a load test's switch has), with the customer's
//! payments in the cooling-off after it. So AML holds what the model
//! should, not everything.
//! **Stress**: random payees and amounts at any rate, whose busy payers pass
//! the day limit (and which level 3's model 2 calls mule bursts); for the
//! hold path's cost.
//!
//! Replays may run on many connections. So that the outcome does not
//! depend on how they interleave, every request belongs to a lane, and
//! requests of one lane keep their order:
//! - an account's lane is `mix64(account) % LANES`;
//! - a batch holds transfers of one lane only;
//! - a transfer's or loan's id carries its lane in bits 96..128, so a
//!   confirmation finds the same lane.
//!
//! Payments that draw micro-loans come from accounts that never receive
//! money, so each draws exactly its amount whatever the interleaving.
//! The predicted balances assume AML levels 1 and 3 do not hold anything
//! (the replay tests run the switch so; see `docs/loadtest.md`).

use std::collections::BTreeMap;
use std::io::Write;

use harbour::engine::book::{FX_POSITION, LOAN_FUNDING, REMITTANCE_OUT, SETTLEMENT_IN};
use harbour::fx::{Rate, Side};
use harbour::hash::mix64;
use harbour::money::CurrencyIndex;
use harbour::protocol::kind;
use harbour::protocol::records::*;
use harbour::traffic::TrafficWriter;

/// Lanes requests are ordered within.
pub const LANES: u64 = 64;
/// First customer account id: clear of the ids people type by hand (the
/// README's session uses 1024-1026), so a load test on a switch that
/// already has data neither meets nor rewrites those accounts and lines.
pub const FIRST_ACCOUNT: u64 = 10_000_000;
/// The HKD→USD rate the workload sets (0.128).
pub const HKD_USD_E9: u64 = 128_000_000;
const HKD: u16 = 344;
const USD: u16 = 840;

/// Who pays whom (see the module's doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Profile {
    /// Customers with habits, and a small share of injected anomalies.
    #[default]
    Realistic,
    /// Random payees and amounts.
    Stress,
}

/// A customer's habits in the realistic profile, drawn from its id and
/// the seed (nothing stored).
struct Habit {
    /// The payment (counted from 0) that is this customer's injected
    /// anomaly, if it has one.
    anomaly_at: Option<usize>,
    /// Usual amount, HKD minor units.
    amount: u64,
    payees: [u64; HABIT_PAYEES_MAX],
    payee_count: usize,
    /// The country it remits to, if it does.
    home: Option<u16>,
}

/// Most usual payees a customer has.
const HABIT_PAYEES_MAX: usize = 6;
/// Payments a customer makes before an anomaly may be injected (AML level
/// 3 judges an account once it has a history).
const ANOMALY_AFTER: usize = 12;
/// Countries customers remit to (the Philippines, Indonesia, China, India).
const CORRIDORS: [u16; 4] = [608, 360, 156, 356];

impl Habit {
    /// `account`'s habits; its usual amount at most `amount_max` (so a
    /// customer's day stays under AML level 1's limit however many payments
    /// the run gives it).
    fn of(seed: u64, account: u64, receivers: &[u64], amount_max: u64, anomaly_share: f64) -> Habit {
        let h = |i: u64| mix64(seed ^ account.wrapping_mul(0x9e37_79b9) ^ i.wrapping_mul(0x5851_f42d_4c95_7f2d));
        // Log-uniform from HK$5 to HK$2,000.
        let u = (h(1) >> 11) as f64 / (1u64 << 53) as f64;
        let amount = ((500.0 * 400f64.powf(u)) as u64).min(amount_max).max(100);
        let payee_count = 2 + (h(2) % (HABIT_PAYEES_MAX as u64 - 1)) as usize;
        let mut payees = [0; HABIT_PAYEES_MAX];
        for (i, p) in payees.iter_mut().enumerate().take(payee_count) {
            let mut at = (h(10 + i as u64) % receivers.len() as u64) as usize;
            if receivers[at] == account {
                at = (at + 1) % receivers.len();
            }
            *p = receivers[at];
        }
        let home = (h(3) % 20 == 0).then(|| CORRIDORS[(h(4) % CORRIDORS.len() as u64) as usize]);
        let unit = |i: u64| (h(i) >> 11) as f64 / (1u64 << 53) as f64;
        let anomaly_at = (unit(5) < anomaly_share).then(|| ANOMALY_AFTER + (h(6) % 20) as usize);
        Habit { anomaly_at, amount, payees, payee_count, home }
    }
}

/// The shape of a workload.
#[derive(Clone, Debug)]
pub struct GenConfig {
    /// Who pays whom.
    pub profile: Profile,
    /// Realistic profile: share of customers with one injected anomaly
    /// (after their 12th to 31st payment).
    pub anomaly_share: f64,
    pub seed: u64,
    pub accounts: u64,
    pub transfers: u64,
    /// Records per request.
    pub batch: u64,
    /// Records per second the offsets pace (the recorded rate).
    pub rate: f64,
    /// Zipf exponent of account activity (0: uniform).
    pub zipf: f64,
    /// Share of transfers that are cross-currency (HKD→USD).
    pub cross_share: f64,
    /// Share that are remittances.
    pub remittance_share: f64,
    /// Share of remittances to a high-risk country (AML level 2).
    pub aml_share: f64,
    /// Share of operations that are loan disbursements.
    pub loan_share: f64,
    /// Share that are AUTO_CREDIT payments drawing a micro-loan.
    pub auto_credit_share: f64,
}

impl Default for GenConfig {
    fn default() -> Self {
        Self {
            profile: Profile::Realistic,
            anomaly_share: 0.005,
            seed: 1,
            accounts: 10_000,
            transfers: 100_000,
            batch: 1_000,
            rate: 200_000.0,
            zipf: 1.0,
            cross_share: 0.15,
            remittance_share: 0.05,
            aml_share: 0.1,
            loan_share: 0.002,
            auto_credit_share: 0.002,
        }
    }
}

/// The lane of an account.
#[must_use]
pub fn lane(account: u64) -> u64 {
    mix64(account) % LANES
}

/// An id in a lane.
fn id_in(lane: u64, seq: u64) -> u128 {
    (u128::from(lane) << 96) | u128::from(seq)
}

/// The CDF of a Zipf distribution over ranks 0..n with exponent `s`: a
/// uniform `u` picks rank `cdf.partition_point(|&c| c < u)`.
#[must_use]
pub fn zipf_table(n: u64, s: f64) -> Vec<f64> {
    let mut cdf = Vec::with_capacity(n as usize);
    let mut sum = 0.0;
    for k in 1..=n {
        sum += 1.0 / (k as f64).powf(s);
        cdf.push(sum);
    }
    for c in &mut cdf {
        *c /= sum;
    }
    cdf
}

struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    fn new(n: u64, s: f64) -> Self {
        Self { cdf: zipf_table(n, s) }
    }
    fn sample(&self, u: f64) -> u64 {
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1) as u64
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// What a generated workload must leave: posted balance per (account,
/// currency code), plus counts.
#[derive(Clone, Debug, Default)]
pub struct Expected {
    pub balances: BTreeMap<(u64, u16), i128>,
    /// HKD each paying account spends or has held, in all (what its
    /// deposit must cover whatever order its credits arrive in).
    pub spent: BTreeMap<u64, u64>,
    pub transfers: u64,
    pub requests: u64,
}

impl Expected {
    fn add(&mut self, account: u64, currency: u16, delta: i128) {
        *self.balances.entry((account, currency)).or_default() += delta;
    }

    /// Writes `account currency posted` lines.
    pub fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for ((account, currency), v) in &self.balances {
            writeln!(out, "{account} {currency} {v}")?;
        }
        Ok(())
    }

    /// Reads what `write` wrote.
    pub fn read(text: &str) -> Result<BTreeMap<(u64, u16), i128>, String> {
        text.lines()
            .map(|l| {
                let parts: Vec<&str> = l.split_whitespace().collect();
                let bad = || format!("expected-balances line {l:?}");
                if parts.len() != 3 {
                    return Err(bad());
                }
                Ok((
                    (parts[0].parse().map_err(|_| bad())?, parts[1].parse().map_err(|_| bad())?),
                    parts[2].parse().map_err(|_| bad())?,
                ))
            })
            .collect()
    }
}

/// Least deposit of a paying account: HK$1,000,000.00.
const DEPOSIT_HKD_MIN: u64 = 100_000_000;

/// Writes the workload to `out`; returns what it must leave.
///
/// Two passes with the same seed: the first (written nowhere) learns what
/// each account spends, so the second deposits enough for it: no payment
/// can be refused for funds, whatever the Zipf skew and the interleaving.
pub fn generate<W: Write>(c: &GenConfig, out: W, created_unix_ms: u64) -> std::io::Result<Expected> {
    let first = emit(c, std::io::sink(), created_unix_ms, None)?;
    emit(c, out, created_unix_ms, Some(&first.spent))
}

// Long by design: one arm per kind of request in the mix, read as a
// table of the traffic.
fn emit<W: Write>(
    c: &GenConfig,
    out: W,
    created_unix_ms: u64,
    spent: Option<&BTreeMap<u64, u64>>,
) -> std::io::Result<Expected> {
    let mut w = TrafficWriter::new(out, created_unix_ms)?;
    let mut rng = Rng(c.seed);
    let mut ex = Expected::default();
    let n = c.accounts.max(4);
    let accounts: Vec<u64> = (0..n).map(|i| FIRST_ACCOUNT + i).collect();
    // The last 1% (at least one) pay with micro-credit and never receive;
    // the first 1% borrow by disbursement; both enough that no line needs
    // more than 1,000 active loans (the switch allows 1,024 a line).
    let loans_each = |share: f64| ((c.transfers as f64 * share / 1_000.0).ceil() as u64 + 1).min(n / 4).max(1);
    let payers = (n / 100).max(loans_each(c.auto_credit_share));
    let borrowers = (n / 100).max(loans_each(c.loan_share));
    let (receivers, auto_payers) = accounts.split_at((n - payers) as usize);
    let borrowers = &accounts[..borrowers as usize];
    let zipf = (c.zipf > 0.0).then(|| Zipf::new(receivers.len() as u64, c.zipf));
    // Zipf ranks map to accounts through a fixed shuffle, so the busy ones
    // are spread over lanes.
    let pick = |rng: &mut Rng| -> u64 {
        let k = match &zipf {
            Some(z) => z.sample(rng.unit()),
            None => rng.below(receivers.len() as u64),
        };
        receivers[(mix64(k ^ 0x5eed) % receivers.len() as u64) as usize]
    };
    let write = |w: &mut TrafficWriter<W>, ex: &mut Expected, offset: u64, kind: u16, body: Vec<u8>, size: usize| {
        ex.requests += 1;
        w.write(offset, kind, (body.len() / size) as u32, &body)
    };
    // ---- setup ------------------------------------------------------------
    for chunk in accounts.chunks(c.batch as usize) {
        let body = encode_all(
            &chunk
                .iter()
                .map(|&a| Account {
                    account_id: a,
                    kind: ACCOUNT_KIND_CUSTOMER,
                    home_country: 344,
                    customer_ref: a,
                    ..Account::default()
                })
                .collect::<Vec<_>>(),
        );
        write(&mut w, &mut ex, 0, kind::CREATE_ACCOUNTS, body, Account::SIZE)?;
    }
    let rates = [FxRate { from: HKD, to: USD, rate_e9: HKD_USD_E9 }];
    write(&mut w, &mut ex, 0, kind::SET_FX_RATES, encode_all(&rates), FxRate::SIZE)?;
    let mut lines: Vec<CreditLine> = borrowers
        .iter()
        .map(|&a| CreditLine {
            account_id: a,
            currency: HKD,
            flags: 0,
            apr_bps: 1_000,
            limit: 1 << 40,
            micro_credit_max: 0,
        })
        .collect();
    lines.extend(auto_payers.iter().map(|&a| CreditLine {
        account_id: a,
        currency: HKD,
        flags: CREDIT_AUTO_MICRO_CREDIT,
        apr_bps: 3_650,
        limit: 1 << 40,
        micro_credit_max: 1 << 30,
    }));
    for chunk in lines.chunks(c.batch as usize) {
        write(&mut w, &mut ex, 0, kind::SET_CREDIT_LINES, encode_all(chunk), CreditLine::SIZE)?;
    }
    // HK$1,000,000.00 and US$100,000.00 for every account that pays.
    let mut seq = 1u64;
    let deposits: Vec<Transfer> = receivers
        .iter()
        .flat_map(|&a| {
            let need = spent.and_then(|s| s.get(&a)).copied().unwrap_or(0);
            [(a, HKD, DEPOSIT_HKD_MIN.max(need)), (a, USD, 10_000_000)]
        })
        .map(|(a, currency, amount)| {
            seq += 1;
            ex.add(a, currency, i128::from(amount));
            ex.add(SETTLEMENT_IN, currency, -i128::from(amount));
            Transfer {
                transfer_id: id_in(LANES, seq),
                debit_account: SETTLEMENT_IN,
                credit_account: a,
                amount,
                debit_currency: currency,
                credit_currency: currency,
                ..Transfer::default()
            }
        })
        .collect();
    for chunk in deposits.chunks(c.batch as usize) {
        write(&mut w, &mut ex, 0, kind::SUBMIT_TRANSFERS, encode_all(chunk), Transfer::SIZE)?;
    }
    // ---- traffic ----------------------------------------------------------
    let hkd = CurrencyIndex::HKD;
    let usd = CurrencyIndex::of(USD).expect("USD");
    let mut pending: Vec<Vec<Transfer>> = vec![Vec::new(); LANES as usize];
    let mut loans: Vec<Vec<Disburse>> = vec![Vec::new(); LANES as usize];
    let mut held: Vec<Vec<u128>> = vec![Vec::new(); LANES as usize];
    let mut sent = 0u64;
    // Payments each account has made (the realistic profile's habits).
    let mut payments = vec![0u32; accounts.len()];
    // A customer's usual amount, at most: 60% of AML level 1's day limit
    // (HK$80,000) over the payments the run gives each payer.
    let per_payer = (c.transfers as f64 / receivers.len() as f64).max(1.0);
    let usual_amount_max = (0.6 * 8_000_000.0 / per_payer) as u64;
    let ns_per_record = 1e9 / c.rate.max(1.0);
    let mut lane_seq = vec![1u64; LANES as usize + 1];
    let mut next_id = |lane: u64| {
        lane_seq[lane as usize] += 1;
        id_in(lane, lane_seq[lane as usize])
    };
    while ex.transfers < c.transfers {
        let offset = (sent as f64 * ns_per_record) as u64;
        let roll = rng.unit();
        if roll < c.loan_share {
            let a = borrowers[rng.below(borrowers.len() as u64) as usize];
            let l = lane(a);
            let principal = 10_000 + rng.below(1_000_000);
            loans[l as usize].push(Disburse {
                loan_id: next_id(l),
                account_id: a,
                currency: HKD,
                term_days: 30,
                principal,
            });
            ex.add(a, HKD, i128::from(principal));
            ex.add(LOAN_FUNDING, HKD, -i128::from(principal));
            if loans[l as usize].len() as u64 >= c.batch.min(100) {
                let body = encode_all(&std::mem::take(&mut loans[l as usize]));
                write(&mut w, &mut ex, offset, kind::DISBURSE_LOANS, body, Disburse::SIZE)?;
            }
            sent += 1;
            continue;
        }
        let (debit, t) = if roll < c.loan_share + c.auto_credit_share {
            // A payer with nothing: the whole amount is lent.
            let payer = auto_payers[rng.below(auto_payers.len() as u64) as usize];
            let to = pick(&mut rng);
            let amount = 100 + rng.below(50_000);
            ex.add(LOAN_FUNDING, HKD, -i128::from(amount));
            ex.add(to, HKD, i128::from(amount));
            let t = Transfer {
                debit_account: payer,
                credit_account: to,
                amount,
                debit_currency: HKD,
                credit_currency: HKD,
                flags: TRANSFER_AUTO_CREDIT,
                ..Transfer::default()
            };
            (payer, t)
        } else {
            // Stress: payers Zipf-skewed, any amount to anyone. Realistic:
            // every customer pays alike often, with its own habits, or now and then an injected anomaly. A
            // customer's first payments go to each of its usual payees in
            // turn (after its first remittance home, if it remits), as a
            // history is built; anomalies come only once it has one.
            let realistic = c.profile == Profile::Realistic;
            let from = if realistic { receivers[rng.below(receivers.len() as u64) as usize] } else { pick(&mut rng) };
            let habit = realistic.then(|| Habit::of(c.seed, from, receivers, usual_amount_max, c.anomaly_share));
            let seen = {
                let n = &mut payments[(from - FIRST_ACCOUNT) as usize];
                *n = n.saturating_add(1);
                *n - 1
            } as usize;
            let anomaly = habit.as_ref().is_some_and(|h| h.anomaly_at == Some(seen));
            let amount = match &habit {
                None => 100 + rng.below(20_000),
                Some(h) if anomaly => h.amount * 30,
                Some(h) => (h.amount as f64 * (0.75 + 0.6 * rng.unit())) as u64,
            };
            let remitter = habit.as_ref().is_some_and(|h| h.home.is_some());
            let usual_payee = |rng: &mut Rng| {
                habit.as_ref().map(|h| {
                    let turn = seen.checked_sub(usize::from(remitter)).filter(|&t| t < h.payee_count);
                    h.payees[turn.unwrap_or_else(|| rng.below(h.payee_count as u64) as usize)]
                })
            };
            let kind_roll = rng.unit();
            let remits = match &habit {
                None => kind_roll < c.remittance_share,
                Some(h) => {
                    let learning = seen <= h.payee_count;
                    remitter && !anomaly && (seen == 0 || (!learning && kind_roll < 0.4))
                }
            };
            let mut t = Transfer {
                debit_account: from,
                amount,
                debit_currency: HKD,
                credit_currency: HKD,
                ..Transfer::default()
            };
            if remits {
                t.credit_account = REMITTANCE_OUT;
                let risky = rng.unit() < c.aml_share;
                let home = habit.as_ref().and_then(|h| h.home);
                t.destination_country = match home {
                    _ if risky => 408,
                    Some(country) => country,
                    None => CORRIDORS[rng.below(4) as usize],
                };
                // Held or not, its funds are reserved: they count as spent.
                *ex.spent.entry(from).or_default() += amount;
                if !risky {
                    ex.add(from, HKD, -i128::from(amount));
                    ex.add(REMITTANCE_OUT, HKD, i128::from(amount));
                }
            } else if match &habit {
                // The stress profile's draws as they always were.
                None => kind_roll < c.remittance_share + c.cross_share,
                Some(_) => rng.unit() < c.cross_share,
            } {
                let mut to =
                    if anomaly { pick(&mut rng) } else { usual_payee(&mut rng).unwrap_or_else(|| pick(&mut rng)) };
                if to == from {
                    to = receivers[(receivers.iter().position(|&a| a == from).unwrap_or(0) + 1) % receivers.len()];
                }
                t.credit_account = to;
                t.credit_currency = USD;
                let (d, credited) = harbour::fx::convert(amount, Side::Debit, hkd, usd, Rate::direct(HKD_USD_E9))
                    .expect("HK$1 or more converts");
                ex.add(from, HKD, -i128::from(d));
                *ex.spent.entry(from).or_default() += d;
                ex.add(FX_POSITION, HKD, i128::from(d));
                ex.add(FX_POSITION, USD, -i128::from(credited));
                ex.add(to, USD, i128::from(credited));
            } else {
                let mut to =
                    if anomaly { pick(&mut rng) } else { usual_payee(&mut rng).unwrap_or_else(|| pick(&mut rng)) };
                if to == from {
                    to = receivers[(receivers.iter().position(|&a| a == from).unwrap_or(0) + 1) % receivers.len()];
                }
                t.credit_account = to;
                ex.add(from, HKD, -i128::from(amount));
                ex.add(to, HKD, i128::from(amount));
                *ex.spent.entry(from).or_default() += amount;
            }
            (from, t)
        };
        let l = lane(debit);
        let t = Transfer { transfer_id: next_id(l), ..t };
        if t.destination_country == 408 {
            held[l as usize].push(t.transfer_id);
        }
        ex.transfers += 1;
        sent += 1;
        pending[l as usize].push(t);
        if pending[l as usize].len() as u64 >= c.batch {
            let batch = std::mem::take(&mut pending[l as usize]);
            write(&mut w, &mut ex, offset, kind::SUBMIT_TRANSFERS, encode_all(&batch), Transfer::SIZE)?;
            // Half of this lane's held remittances are confirmed (their
            // customers passed the SMS check), after the batch that made them.
            let ids = std::mem::take(&mut held[l as usize]);
            let confirms: Vec<StepUp> = ids
                .iter()
                .enumerate()
                .filter(|(i, _)| i % 2 == 0)
                .map(|(_, &id)| StepUp { transfer_id: id, method: METHOD_SMS_OTP, outcome: OUTCOME_PASS })
                .collect();
            for t in batch.iter().filter(|t| t.destination_country == 408) {
                if confirms.iter().any(|s| s.transfer_id == t.transfer_id) {
                    ex.add(t.debit_account, HKD, -i128::from(t.amount));
                    ex.add(REMITTANCE_OUT, HKD, i128::from(t.amount));
                }
            }
            if !confirms.is_empty() {
                write(&mut w, &mut ex, offset, kind::CONFIRM_STEP_UP, encode_all(&confirms), StepUp::SIZE)?;
            }
        }
    }
    // What is left in each lane.
    let end = (sent as f64 * ns_per_record) as u64;
    for l in 0..LANES as usize {
        if !loans[l].is_empty() {
            write(&mut w, &mut ex, end, kind::DISBURSE_LOANS, encode_all(&loans[l]), Disburse::SIZE)?;
        }
        if !pending[l].is_empty() {
            write(&mut w, &mut ex, end, kind::SUBMIT_TRANSFERS, encode_all(&pending[l]), Transfer::SIZE)?;
        }
    }
    w.finish()?;
    Ok(ex)
}
