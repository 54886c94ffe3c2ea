//! AML level 3 measured on two independently written synthetic
//! populations (`aml::synth`, `aml::population`): anomalies caught by kind
//! and strength, mule patterns caught by kind, and the share of normal
//! transfers held, at the default configuration.
//!
//! `AML_SYNTH_ACCOUNTS` and `AML_SYNTH_SEED` scale and vary the run; the
//! figures in docs/aml.md come from
//! `AML_SYNTH_ACCOUNTS=10000 cargo test --release --test aml_synth -- --nocapture`
//! and, for the curve, `harbour-loadtest aml-curve`.

use harbour::aml::measure::{self, Measured, Trial};
use harbour::aml::population::{self, PopulationConfig, Strength};
use harbour::aml::synth::{self, SynthConfig};
use harbour::aml::{AmlConfig, BehaviourModel, Reasons};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn trials() -> [Trial; 2] {
    let accounts = env("AML_SYNTH_ACCOUNTS", 2_000) as usize;
    let seed = env("AML_SYNTH_SEED", 7);
    let s = SynthConfig { seed, accounts, ..SynthConfig::default() };
    // As many customers in each: at half as many the second population's
    // false holds are a few dozen trips, too few to read 0.5% from.
    let p = PopulationConfig { seed: seed + 4, accounts, ..PopulationConfig::default() };
    [Trial::from_synth(&synth::generate(&s), s.start_ms), Trial::from_population(&population::generate(&p), p.start_ms)]
}

fn report(name: &str, m: &Measured) {
    println!(
        "{name}: normal transfers {}, held by false alarms {} ({:.3}%), held after true detections {}, \
         refused for money held upstream {}",
        m.normal,
        m.normal_held,
        100.0 * m.false_hold_rate(),
        m.normal_held_after_true,
        m.normal_refused
    );
    for s in Strength::ALL {
        let t = m.strength(s);
        println!("  {:8} {}/{} ({:.1}%)", s.name(), t.caught, t.injected, 100.0 * t.rate());
    }
    for ((kind, s), t) in &m.anomalies {
        println!("    {kind} {}: {}/{} ({:.1}%)", s.name(), t.caught, t.injected, 100.0 * t.rate());
    }
    for (kind, t) in &m.mules {
        println!("  mule {kind}: {}/{} ({:.1}%)", t.caught, t.injected, 100.0 * t.rate());
    }
    let mut trips: Vec<_> = m.false_trips.iter().collect();
    trips.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
    for (reasons, n) in trips.iter().take(12) {
        let names: Vec<&str> = Reasons::NAMES
            .iter()
            .filter(|(bit, _)| *bit > Reasons::COOLING_OFF && **reasons & bit != 0)
            .map(|(_, n)| *n)
            .collect();
        println!("    false trip {}: {n}", names.join("+"));
    }
}

/// Model 1 at the lowest threshold (from its default up) whose false holds
/// stay within `rate`: the model 1 a bank would run at model 3's budget.
fn model_1_within(trial: &Trial, rate: f64) -> (u32, Measured) {
    let mut last = None;
    for threshold_q in 16..=40 {
        let m = measure::measure(trial, AmlConfig { model: BehaviourModel::V1, threshold_q, ..AmlConfig::default() });
        if m.false_hold_rate() <= rate {
            return (threshold_q, m);
        }
        last = Some((threshold_q, m));
    }
    last.expect("thresholds tried")
}

#[test]
fn model_3_at_its_default_meets_the_targets_on_both_populations_beats_model_1_and_mules_are_caught() {
    for trial in trials() {
        let new = measure::measure(&trial, AmlConfig::default());
        let (threshold_q, old) = model_1_within(&trial, new.false_hold_rate());
        println!("model 1 at {threshold_q} quarter points (its false holds within model 3's):");
        report(trial.name, &old);
        println!("model 3 at its default:");
        report(trial.name, &new);
        let (full, half) = (new.strength(Strength::Full), new.strength(Strength::Half));
        assert!(full.injected >= 40 && half.injected >= 40, "{}: enough anomalies to measure", trial.name);
        // At the same false-hold budget model 3 catches more anomalies of
        // the strengths that matter than model 1 does.
        let caught = |m: &Measured| m.strength(Strength::Full).caught + m.strength(Strength::Half).caught;
        assert!(caught(&new) > caught(&old), "{}: full and half caught", trial.name);
        // Issue 20's targets, on both: 95% of full-strength and 85% of
        // half-strength anomalies, at most 0.5% of normal transfers held
        // by false alarms (the mule rule's holds counted).
        assert!(full.rate() >= 0.95, "{}: full strength caught {:.3}", trial.name, full.rate());
        assert!(half.rate() >= 0.85, "{}: half strength caught {:.3}", trial.name, half.rate());
        assert!(new.false_hold_rate() <= 0.005, "{}: false holds {:.4}", trial.name, new.false_hold_rate());
        // The mule rule, on both: nine in ten patterns stopped (at least
        // half of what the mules sent on held), each kind at least four in
        // five, and at most one normal transfer in a thousand held by it.
        let mules = new.all_mules();
        assert!(mules.injected >= 40 && mules.rate() >= 0.9, "{}: mules caught {mules:?}", trial.name);
        for (kind, t) in &new.mules {
            assert!(t.rate() >= 0.8, "{}: {kind} caught {t:?}", trial.name);
        }
        let mule_false = new.normal_held_mule as f64 / new.normal as f64;
        assert!(mule_false <= 0.001, "{}: the mule rule held {mule_false:.4} of normal transfers", trial.name);
    }
}
