//! Level 3 (and the mule rule) measured on a labelled population: each
//! generated transfer applied to a fresh engine in time order, then what
//! the model held compared with what each transfer is.
//!
//! Used by `tests/aml_synth.rs` (the CI targets) and by the load tester's
//! `aml-curve` (detection against false holds as the threshold moves,
//! `docs/aml.md`). Both generators, [`super::synth`] and
//! [`super::population`], are read through [`Trial`], so every figure is
//! taken the same way on both.

use std::collections::BTreeMap;

use crate::protocol::kind;
use crate::protocol::records::{
    Account, Holds, Record as _, RecordResult, Transfer, TransferResult, decode_all, encode_all,
};
use crate::{Engine, EngineConfig};

use super::population::{self, Strength};
use super::synth;
use super::{AmlConfig, Reasons};

/// What a generated transfer truly is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// Money into the population (not judged).
    Funding,
    /// In line with the account's habits: holding it is a false hold.
    Normal,
    /// Part of injected anomaly `n`.
    Anomaly { n: usize, kind: &'static str, strength: Strength },
    /// A mule's outgoing transfer, part of mule pattern `n`.
    Mule { n: usize, kind: &'static str },
    /// Money paid into a mule (neither normal nor an anomaly of its sender).
    Feed,
}

/// A labelled population, from either generator.
#[derive(Clone, Debug)]
pub struct Trial {
    /// The generator's name.
    pub name: &'static str,
    pub accounts: Vec<u64>,
    /// In time order.
    pub events: Vec<(u64, Transfer, Truth)>,
    pub start_ms: u64,
}

impl Trial {
    /// The first generator's scenario.
    #[must_use]
    pub fn from_synth(s: &synth::Scenario, start_ms: u64) -> Self {
        let truth = |l: synth::Label| match l {
            synth::Label::Funding => Truth::Funding,
            synth::Label::Normal => Truth::Normal,
            synth::Label::Anomaly(n, kind, strength) => Truth::Anomaly { n, kind: kind.name(), strength },
            synth::Label::Mule(n, kind) => Truth::Mule { n, kind: kind.name() },
            synth::Label::Feed(_) => Truth::Feed,
        };
        Self {
            name: "synth",
            accounts: s.accounts.clone(),
            events: s.events.iter().map(|e| (e.time_ms, e.transfer, truth(e.label))).collect(),
            start_ms,
        }
    }

    /// The second generator's population.
    #[must_use]
    pub fn from_population(p: &population::Population, start_ms: u64) -> Self {
        let truth = |l: population::Label| match l {
            population::Label::Funding => Truth::Funding,
            population::Label::Normal => Truth::Normal,
            population::Label::Anomaly { n, kind, strength } => Truth::Anomaly { n, kind: kind.name(), strength },
            population::Label::Mule { n, kind } => Truth::Mule { n, kind: kind.name() },
            population::Label::Feed { .. } => Truth::Feed,
        };
        Self {
            name: "population",
            accounts: p.accounts.clone(),
            events: p.events.iter().map(|e| (e.time_ms, e.transfer, truth(e.label))).collect(),
            start_ms,
        }
    }
}

/// Caught out of injected, for one kind (and strength).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub injected: u64,
    pub caught: u64,
}

impl Tally {
    /// The share caught (0 when nothing was injected).
    #[must_use]
    pub fn rate(&self) -> f64 {
        if self.injected == 0 { 0.0 } else { self.caught as f64 / self.injected as f64 }
    }
}

/// What the rules did to a trial.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Normal transfers judged.
    pub normal: u64,
    /// Normal transfers held by level 3 (cooling off) or the mule rule
    /// because of a false alarm: a trip on a normal transfer, or the
    /// cooling-off period it started (the account's other transfers wait
    /// for its end), or a mule hold.
    pub normal_held: u64,
    /// Normal transfers held in a cooling-off period that a true detection
    /// started (an anomaly's transfer tripped; contract §6 holds every
    /// outgoing transfer until the period ends). The cost of catching
    /// something, not a false alarm; reported beside the false holds.
    pub normal_held_after_true: u64,
    /// Of those, held by the mule rule.
    pub normal_held_mule: u64,
    /// Normal transfers refused for money held upstream (not judged).
    pub normal_refused: u64,
    /// Anomalies by (kind, strength).
    pub anomalies: BTreeMap<(&'static str, Strength), Tally>,
    /// Mule patterns by kind: caught when holds stopped at least half of
    /// the money its mules sent on (held, or refused because the money
    /// that would have paid it was held upstream).
    pub mules: BTreeMap<&'static str, Tally>,
    /// The signals of the trips on normal transfers, by their reason bits.
    pub false_trips: BTreeMap<u16, u64>,
}

impl Measured {
    /// Normal transfers held, as a share.
    #[must_use]
    pub fn false_hold_rate(&self) -> f64 {
        if self.normal == 0 { 0.0 } else { self.normal_held as f64 / self.normal as f64 }
    }

    /// All anomalies of one strength.
    #[must_use]
    pub fn strength(&self, s: Strength) -> Tally {
        self.anomalies.iter().filter(|((_, st), _)| *st == s).fold(Tally::default(), |a, (_, t)| Tally {
            injected: a.injected + t.injected,
            caught: a.caught + t.caught,
        })
    }

    /// All mule patterns.
    #[must_use]
    pub fn all_mules(&self) -> Tally {
        self.mules
            .values()
            .fold(Tally::default(), |a, t| Tally { injected: a.injected + t.injected, caught: a.caught + t.caught })
    }
}

/// The holds that count as the behaviour rules' (level 3 and mules).
fn behaviour_hold(holds: u8) -> bool {
    holds & (Holds::COOLING_OFF.bits() | Holds::MULE_REVIEW.bits()) != 0
}

/// Runs a trial through a fresh engine under `aml`.
///
/// # Panics
/// If the trial's own transfers are refused (a generator's bug).
#[must_use]
pub fn measure(trial: &Trial, aml: AmlConfig) -> Measured {
    let cooling_off_ms = aml.cooling_off_ms;
    let config = EngineConfig {
        manual_clock: true,
        accounts_capacity: trial.accounts.len() + 16,
        transfers_capacity: trial.events.len() + 16,
        aml,
        ..EngineConfig::default()
    };
    let mut e = Engine::new(config, trial.start_ms);
    let mut out = Vec::new();
    let accounts: Vec<Account> = trial
        .accounts
        .iter()
        .map(|&id| Account { account_id: id, kind: 1, home_country: 344, ..Account::default() })
        .collect();
    for chunk in accounts.chunks(8_000) {
        out.clear();
        e.apply(kind::CREATE_ACCOUNTS, &encode_all(chunk), trial.start_ms, &mut out).expect("accounts");
        assert!(decode_all::<RecordResult>(&out).all(|r| r.code == 0), "{}: accounts refused", trial.name);
    }
    let mut m = Measured::default();
    // Anomaly n: caught when one of its own transfers tripped the rules
    // (not when an earlier false alarm happened to be cooling the account).
    let mut anomaly: BTreeMap<usize, (&'static str, Strength, bool)> = BTreeMap::new();
    // Mule pattern n: (kind, amount sent on, amount held).
    let mut mule: BTreeMap<usize, (&'static str, u128, u128)> = BTreeMap::new();
    // Per account, its cooling-off period's end and whether a true
    // detection (not a normal transfer) started it.
    let mut cooling: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
    for (time, transfer, truth) in &trial.events {
        out.clear();
        e.apply(kind::SUBMIT_TRANSFERS, &encode_all(std::slice::from_ref(transfer)), *time, &mut out)
            .expect("a transfer applies");
        let r = TransferResult::decode(&out);
        // A transfer is refused only when money it counted on was held
        // upstream (a mule's feed held, a dinner host's friends cooling
        // off): the generators keep every balance whole otherwise.
        let refused = r.code != 0;
        assert!(!refused || *truth != Truth::Funding, "{}: funding refused: {transfer:?}", trial.name);
        let held = refused || behaviour_hold(r.holds);
        let mut after_true = false;
        if r.holds & Holds::COOLING_OFF.bits() != 0 {
            let account = transfer.debit_account;
            match cooling.get(&account) {
                Some(&(until, truly)) if *time < until => after_true = truly,
                // This transfer tripped: the period is its.
                _ => {
                    cooling.insert(account, (time + cooling_off_ms, !matches!(truth, Truth::Normal)));
                }
            }
        }
        match *truth {
            Truth::Funding | Truth::Feed => {}
            Truth::Normal if refused => m.normal_refused += 1,
            Truth::Normal => {
                m.normal += 1;
                let mule_held = r.holds & Holds::MULE_REVIEW.bits() != 0;
                if held && after_true && !mule_held {
                    m.normal_held_after_true += 1;
                } else {
                    m.normal_held += u64::from(held);
                }
                m.normal_held_mule += u64::from(mule_held);
            }
            Truth::Anomaly { n, kind, strength } => {
                anomaly.entry(n).or_insert((kind, strength, false));
            }
            Truth::Mule { n, kind } => {
                let entry = mule.entry(n).or_insert((kind, 0, 0));
                entry.1 += u128::from(transfer.amount);
                if held {
                    entry.2 += u128::from(transfer.amount);
                }
            }
        }
    }
    let truth_of: BTreeMap<u128, Truth> = trial.events.iter().map(|(_, t, truth)| (t.transfer_id, *truth)).collect();
    for case in e.cases() {
        let mule = case.holds & Holds::MULE_REVIEW.bits() != 0;
        if !case.reasons.has(Reasons::BEHAVIOUR_CHANGE) && !mule {
            continue;
        }
        match truth_of.get(&case.transfer_id) {
            Some(Truth::Anomaly { n, .. }) => {
                if let Some(a) = anomaly.get_mut(n) {
                    a.2 = true;
                }
            }
            Some(Truth::Normal) => *m.false_trips.entry(case.reasons.0).or_default() += 1,
            _ => {}
        }
    }
    for (kind, strength, caught) in anomaly.into_values() {
        let t = m.anomalies.entry((kind, strength)).or_default();
        t.injected += 1;
        t.caught += u64::from(caught);
    }
    for (kind, sent, held) in mule.into_values() {
        let t = m.mules.entry(kind).or_default();
        t.injected += 1;
        t.caught += u64::from(2 * held >= sent && sent > 0);
    }
    m
}
