//! AML level 3 measured on synthetic behaviour (`aml::synth`): the share of
//! injected anomalies caught and the share of normal transfers held.
//!
//! `AML_SYNTH_ACCOUNTS` and `AML_SYNTH_SEED` scale and vary the run; the
//! figures in docs/aml.md come from
//! `AML_SYNTH_ACCOUNTS=20000 cargo test --release --test aml_synth -- --nocapture`.

use std::collections::{BTreeMap, BTreeSet};

use harbour::aml::synth::{self, Anomaly, Label, SynthConfig};
use harbour::aml::{AmlConfig, Reasons};
use harbour::engine::{Engine, EngineConfig};
use harbour::protocol::kind;
use harbour::protocol::records::*;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn behaviour_model_catches_anomalies_and_spares_normal_customers() {
    let config = SynthConfig {
        seed: env("AML_SYNTH_SEED", 7),
        accounts: env("AML_SYNTH_ACCOUNTS", 2_000) as usize,
        ..SynthConfig::default()
    };
    let scenario = synth::generate(&config);
    // Level 3 alone decides what this test measures; levels 1 and 2 stay
    // on (their holds are not counted as level 3's).
    let engine_config = EngineConfig {
        manual_clock: true,
        accounts_capacity: scenario.accounts.len() + 16,
        transfers_capacity: scenario.events.len() + 16,
        aml: AmlConfig::default(),
        ..EngineConfig::default()
    };
    let mut e = Engine::new(engine_config, config.start_ms);
    let mut out = Vec::new();
    let accounts: Vec<Account> = scenario
        .accounts
        .iter()
        .map(|&id| Account { account_id: id, kind: 1, home_country: 344, ..Account::default() })
        .collect();
    for chunk in accounts.chunks(8_000) {
        out.clear();
        e.apply(kind::CREATE_ACCOUNTS, &encode_all(chunk), config.start_ms, &mut out).unwrap();
        assert!(decode_all::<RecordResult>(&out).all(|r| r.code == 0));
    }
    let mut normal = 0u64;
    let mut normal_held = 0u64;
    let mut caught = BTreeSet::new();
    let mut by_kind: BTreeMap<Anomaly, (u64, u64)> = BTreeMap::new();
    let mut anomaly_of: BTreeMap<u128, (usize, Anomaly)> = BTreeMap::new();
    for ev in &scenario.events {
        out.clear();
        e.apply(kind::SUBMIT_TRANSFERS, &encode_all(&[ev.transfer]), ev.time_ms, &mut out).unwrap();
        let r = TransferResult::decode(&out);
        assert_eq!(r.code, 0, "{:?}", ev);
        let cooling = r.holds & 4 != 0;
        match ev.label {
            Label::Funding => assert!(!cooling),
            Label::Normal => {
                normal += 1;
                normal_held += u64::from(cooling);
            }
            Label::Anomaly(n, kind) => {
                anomaly_of.insert(ev.transfer.transfer_id, (n, kind));
            }
        }
    }
    // An anomaly is caught when one of its own transfers tripped the model
    // (not when an earlier false alarm happened to be cooling the account).
    for case in e.cases() {
        if case.reasons.has(Reasons::BEHAVIOUR_CHANGE)
            && let Some(&(n, _)) = anomaly_of.get(&case.transfer_id)
        {
            caught.insert(n);
        }
    }
    // What the false alarms were made of.
    let mut false_trips: BTreeMap<Vec<&str>, u64> = BTreeMap::new();
    for case in e.cases() {
        if case.reasons.has(Reasons::BEHAVIOUR_CHANGE) && !anomaly_of.contains_key(&case.transfer_id) {
            let signals = Reasons::NAMES
                .iter()
                .filter(|(bit, _)| *bit > Reasons::COOLING_OFF && case.reasons.has(*bit))
                .map(|(_, n)| *n)
                .collect();
            *false_trips.entry(signals).or_default() += 1;
        }
    }
    let mut seen = BTreeSet::new();
    for &(n, kind) in anomaly_of.values() {
        if seen.insert(n) {
            let entry = by_kind.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += u64::from(caught.contains(&n));
        }
    }
    e.audit().unwrap();
    let detection = caught.len() as f64 / scenario.anomalies as f64;
    let false_positive = normal_held as f64 / normal as f64;
    println!(
        "accounts {}, normal transfers {normal}, anomalies {}: caught {} ({:.2}%), normal held {normal_held} ({:.3}%)",
        config.accounts,
        scenario.anomalies,
        caught.len(),
        100.0 * detection,
        100.0 * false_positive
    );
    println!("  false alarms (trips on normal transfers): {}", false_trips.values().sum::<u64>());
    for (signals, n) in &false_trips {
        println!("    {}: {n}", signals.join("+"));
    }
    for (kind, (n, c)) in &by_kind {
        println!("  {kind:?}: {c}/{n} ({:.1}%)", 100.0 * *c as f64 / *n as f64);
    }
    assert!(scenario.anomalies >= 100, "enough anomalies to measure");
    assert!(detection >= 0.95, "detection {detection}");
    assert!(false_positive <= 0.005, "false positives {false_positive}");
}
