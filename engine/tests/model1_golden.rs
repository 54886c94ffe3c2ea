//! Model 1 decides a generated log exactly as the build before model 2 did:
//! a data directory written under model 1 replays to the same answers and
//! cases (the golden figures were taken with that build, 08d603d). The
//! mule rule, off in such a directory, is off here.

use harbour_engine::aml::synth::{self, SynthConfig};
use harbour_engine::aml::{AmlConfig, Reasons};
use harbour_engine::protocol::kind;
use harbour_engine::protocol::records::*;
use harbour_engine::{Engine, EngineConfig};

/// Every answer's and every case's bytes, folded.
fn decisions(aml: AmlConfig) -> (u64, usize, usize) {
    // No mule patterns: the log the golden figures were taken on.
    let config = SynthConfig { seed: 3, accounts: 600, strengths: false, mule_share: 0.0, ..SynthConfig::default() };
    let s = synth::generate(&config);
    let mut e = Engine::new(
        EngineConfig {
            manual_clock: true,
            accounts_capacity: s.accounts.len() + 16,
            transfers_capacity: s.events.len() + 16,
            aml,
            ..EngineConfig::default()
        },
        config.start_ms,
    );
    let mut out = Vec::new();
    let accounts: Vec<Account> = s
        .accounts
        .iter()
        .map(|&id| Account { account_id: id, kind: 1, home_country: 344, ..Account::default() })
        .collect();
    e.apply(kind::CREATE_ACCOUNTS, &encode_all(&accounts), config.start_ms, &mut out).unwrap();
    let mut h = 0u64;
    let fold = |h: u64, x: u64| harbour_engine::hash::mix64(h ^ x).rotate_left(7);
    for ev in &s.events {
        out.clear();
        e.apply(kind::SUBMIT_TRANSFERS, &encode_all(&[ev.transfer]), ev.time_ms, &mut out).unwrap();
        for chunk in out.chunks(8) {
            h = fold(h, u64::from_le_bytes(chunk.try_into().unwrap()));
        }
    }
    let cases = e.cases();
    let tripped = cases.iter().filter(|c| c.reasons.has(Reasons::BEHAVIOUR_CHANGE)).count();
    for c in &cases {
        h = fold(h, c.transfer_id as u64);
        h = fold(h, u64::from(c.reasons.0) | (u64::from(c.holds) << 16));
        h = fold(h, c.submitted_ms);
    }
    (h, cases.len(), tripped)
}

#[test]
fn model_1_decides_a_log_as_before() {
    let got = decisions(AmlConfig {
        model: harbour_engine::aml::BehaviourModel::V1,
        threshold_q: 16,
        // A data directory from before the mule rule has it off (META).
        mule: false,
        ..AmlConfig::default()
    });
    assert_eq!(
        got,
        (11_008_555_669_903_538_432, 635, 275),
        "model 1 decides as the build before model 2 did (commit 08d603d)"
    );
}
