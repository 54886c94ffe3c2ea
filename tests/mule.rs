//! The mule rule (issue 20): money from several unrelated senders passing
//! through an account is held for MULE_REVIEW, resolved only by an
//! OPERATOR's RESOLVE_REVIEW; what it must leave alone; a chain of new
//! accounts; several shards (the payee's shard learns of each credit
//! through the link); a snapshot; and the whole path over the wire, with
//! the STR's evidence.

mod common;

use common::{HKD, account, apply, deposit, submit, transfer};
use harbour::aml::{self, AmlConfig, DAY_MS, Outcome, Reasons};
use harbour::engine::book::REMITTANCE_OUT;
use harbour::engine::{Engine, EngineConfig};
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};

const MULE: u64 = 2_000;
const VICTIMS: [u64; 4] = [3_001, 3_002, 3_003, 3_004];
const NEXT: u64 = 2_001;
const MINUTE: u64 = 60_000;
const MULE_REVIEW: u8 = 64;
const SMS: u8 = 2;
const METHOD_FACE: u8 = 1;

/// 2026-11-27 10:00 in Hong Kong.
fn t0() -> u64 {
    aml::days_from_civil(2026, 11, 27) as u64 * DAY_MS + 2 * 3_600_000
}

/// A bank with the mule account (no money of its own), the next account of
/// a chain, and four victims with HK$50,000.00 each.
fn bank_with(aml: AmlConfig) -> Engine {
    let config = EngineConfig { manual_clock: true, aml, ..EngineConfig::default() };
    let mut e = Engine::new(config, t0());
    for id in [MULE, NEXT].into_iter().chain(VICTIMS) {
        assert_eq!(e.create_account(&account(id)).code, 0);
    }
    for (i, v) in VICTIMS.into_iter().enumerate() {
        assert_eq!(submit(&mut e, &deposit(900 + i as u128, v, 5_000_000, HKD)).code, 0);
    }
    e
}

fn bank() -> Engine {
    bank_with(AmlConfig::default())
}

fn remit(id: u128, from: u64, amount: u64, country: u16) -> Transfer {
    Transfer { destination_country: country, ..transfer(id, from, REMITTANCE_OUT, amount, HKD) }
}

fn review(e: &mut Engine, id: u128, method: u8, outcome: u8) -> TransferResult {
    let body = encode_all(&[StepUp { transfer_id: id, method, outcome }]);
    TransferResult::decode(&apply(e, kind::RESOLVE_REVIEW, &body))
}

/// The victims pay `each` into `to`, ten minutes apart from `t0()`.
fn fan_in(e: &mut Engine, to: u64, each: u64) {
    for (i, v) in VICTIMS.into_iter().enumerate() {
        e.advance(t0() + i as u64 * 10 * MINUTE);
        let r = submit(e, &transfer(100 + i as u128, v, to, each, HKD));
        assert_eq!((r.code, r.state), (0, STATE_POSTED), "victim {v} pays");
    }
}

fn case_of(e: &Engine, id: u128) -> aml::Case {
    *e.cases().iter().find(|c| c.transfer_id == id).expect("a case")
}

#[test]
fn fan_in_then_remit_abroad_is_held_until_an_operator_decides() {
    let mut e = bank();
    fan_in(&mut e, MULE, 300_000);
    e.advance(t0() + 60 * MINUTE);
    let r = submit(&mut e, &remit(1, MULE, 1_100_000, 608));
    assert_eq!((r.code, r.state, r.holds), (0, STATE_PENDING, MULE_REVIEW), "HK$11,000 of HK$12,000 leaves");
    let case = case_of(&e, 1);
    assert_eq!(case.reasons.0, Reasons::PASS_THROUGH);
    assert_eq!(case.reasons.levels(), [3]);
    assert_eq!(case.holds, MULE_REVIEW);
    let m = case.mule;
    assert_eq!((m.senders, m.inbound_hkd_minor, m.first_in_ms, m.last_in_ms), (4, 1_200_000, t0(), t0() + 30 * MINUTE));
    assert!((900..=1000).contains(&m.passed_on_permille), "{m:?}");
    // Flagged: the account's next outgoing transfer waits too.
    let next = submit(&mut e, &transfer(2, MULE, VICTIMS[0], 10_000, HKD));
    assert_eq!((next.state, next.holds), (STATE_PENDING, MULE_REVIEW));
    // Only an operator decides, with method 3.
    let step = encode_all(&[StepUp { transfer_id: 1, method: METHOD_MANUAL_REVIEW, outcome: OUTCOME_PASS }]);
    let channel = TransferResult::decode(&apply(&mut e, kind::CONFIRM_STEP_UP, &step));
    assert_eq!(channel.code, ResultCode::Forbidden.as_u16());
    assert_eq!(review(&mut e, 1, METHOD_FACE, OUTCOME_PASS).code, ResultCode::InvalidField.as_u16());
    let passed = review(&mut e, 1, METHOD_MANUAL_REVIEW, OUTCOME_PASS);
    assert_eq!((passed.code, passed.state, passed.holds), (0, STATE_POSTED, 0));
    assert_eq!(case_of(&e, 1).outcome, Outcome::Passed);
    let failed = review(&mut e, 2, METHOD_MANUAL_REVIEW, OUTCOME_FAIL);
    assert_eq!((failed.code, failed.state), (0, STATE_VOIDED));
    assert_eq!(review(&mut e, 1, METHOD_MANUAL_REVIEW, OUTCOME_PASS).code, ResultCode::NotPending.as_u16());
    // The operator cleared the account: what came in was looked at.
    let after = submit(&mut e, &transfer(3, MULE, NEXT, 50_000, HKD));
    assert_eq!((after.state, after.holds), (STATE_POSTED, 0));
    // RESOLVE_REVIEW on a transfer no operator's hold holds.
    let sms = submit(&mut e, &remit(4, VICTIMS[1], 100, 408));
    assert_eq!(sms.holds, SMS);
    assert_eq!(review(&mut e, 4, METHOD_MANUAL_REVIEW, OUTCOME_PASS).code, ResultCode::WrongMethod.as_u16());
    e.audit().expect("balanced");
}

#[test]
fn a_mule_review_not_decided_within_its_window_voids_the_transfer() {
    let mut e = bank();
    fan_in(&mut e, MULE, 300_000);
    let r = submit(&mut e, &remit(1, MULE, 1_100_000, 608));
    assert_eq!(r.holds, MULE_REVIEW);
    assert_eq!(r.hold_until_ms, e.now_ms() + DAY_MS, "MANUAL_REVIEW's window, 24 hours");
    e.advance(e.now_ms() + DAY_MS);
    assert_eq!(e.lookup_transfer(1).state, STATE_VOIDED);
    assert_eq!(case_of(&e, 1).outcome, Outcome::Expired);
}

#[test]
fn what_the_rule_leaves_alone() {
    // The account's own money covers the transfer.
    let mut e = bank();
    assert_eq!(submit(&mut e, &deposit(1, MULE, 10_000_000, HKD)).code, 0);
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &remit(2, MULE, 1_100_000, 608)).holds, 0, "own money");
    // To a payee the account paid before.
    let mut e = bank();
    assert_eq!(submit(&mut e, &deposit(1, MULE, 1_000, HKD)).code, 0);
    assert_eq!(submit(&mut e, &transfer(2, MULE, NEXT, 1_000, HKD)).state, STATE_POSTED);
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &transfer(3, MULE, NEXT, 1_100_000, HKD)).holds, 0, "a known payee");
    // Under the floor (4 × HK$1,000 < HK$5,000).
    let mut e = bank();
    fan_in(&mut e, MULE, 100_000);
    assert_eq!(submit(&mut e, &remit(2, MULE, 390_000, 608)).holds, 0, "under the floor");
    // Friends paying back: the account paid each of them before.
    let mut e = bank();
    assert_eq!(submit(&mut e, &deposit(1, MULE, 4_000, HKD)).code, 0);
    for (i, v) in VICTIMS.into_iter().enumerate() {
        assert_eq!(submit(&mut e, &transfer(10 + i as u128, MULE, v, 1_000, HKD)).state, STATE_POSTED);
    }
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &remit(2, MULE, 1_100_000, 608)).holds, 0, "friends are not strangers");
    // The rule switched off; and with level 3 off, whose learned payees
    // and history it reads.
    let mut e = bank_with(AmlConfig { mule: false, ..AmlConfig::default() });
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &remit(2, MULE, 1_100_000, 608)).holds, 0, "mule rule off");
    let mut e = bank_with(AmlConfig { behaviour: false, ..AmlConfig::default() });
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &remit(2, MULE, 1_100_000, 608)).holds, 0, "level 3 off");
}

#[test]
fn a_late_pass_of_an_old_hold_leaves_a_newer_flag_standing() {
    let mut e = bank();
    fan_in(&mut e, MULE, 300_000);
    e.advance(t0() + 60 * MINUTE);
    assert_eq!(submit(&mut e, &remit(1, MULE, 1_100_000, 608)).holds, MULE_REVIEW);
    e.advance(t0() + 23 * 60 * MINUTE);
    assert_eq!(submit(&mut e, &transfer(2, MULE, NEXT, 10_000, HKD)).holds, MULE_REVIEW, "flagged");
    // The operator passes the first: the flag is cleared with its episode.
    assert_eq!(review(&mut e, 1, METHOD_MANUAL_REVIEW, OUTCOME_PASS).state, STATE_POSTED);
    // New victims pay in; the account is held and flagged again.
    e.advance(t0() + 23 * 60 * MINUTE + 10 * MINUTE);
    for (i, v) in VICTIMS.into_iter().enumerate() {
        assert_eq!(submit(&mut e, &transfer(200 + i as u128, v, MULE, 400_000, HKD)).state, STATE_POSTED);
    }
    assert_eq!(submit(&mut e, &remit(3, MULE, 1_500_000, 360)).holds, MULE_REVIEW, "a new flag");
    // A late pass of the hold from the old flag leaves the new one.
    assert_eq!(review(&mut e, 2, METHOD_MANUAL_REVIEW, OUTCOME_PASS).state, STATE_POSTED);
    assert_eq!(submit(&mut e, &remit(4, MULE, 50_000, 116)).holds, MULE_REVIEW, "still flagged");
}

#[test]
fn a_held_payee_stays_new() {
    let mut e = bank();
    fan_in(&mut e, MULE, 300_000);
    assert_eq!(submit(&mut e, &transfer(1, MULE, NEXT, 1_100_000, HKD)).holds, MULE_REVIEW);
    assert_eq!(review(&mut e, 1, METHOD_MANUAL_REVIEW, OUTCOME_FAIL).state, STATE_VOIDED);
    // After the flag, more strangers' money and the same payee: still a new
    // payee (the failed transfer taught level 3 nothing).
    e.advance(t0() + 26 * 60 * MINUTE);
    for (i, v) in VICTIMS.into_iter().enumerate() {
        assert_eq!(submit(&mut e, &transfer(300 + i as u128, v, MULE, 300_000, HKD)).state, STATE_POSTED);
    }
    let again = submit(&mut e, &transfer(2, MULE, NEXT, 2_000_000, HKD));
    assert_eq!((again.holds, case_of(&e, 2).reasons.0), (MULE_REVIEW, Reasons::PASS_THROUGH));
}

#[test]
fn a_new_account_passing_money_straight_on_is_held() {
    let mut e = bank();
    let r = submit(&mut e, &transfer(1, VICTIMS[0], MULE, 2_000_000, HKD));
    assert_eq!(r.state, STATE_POSTED);
    e.advance(t0() + 5 * MINUTE);
    let r = submit(&mut e, &transfer(2, MULE, NEXT, 1_900_000, HKD));
    assert_eq!((r.state, r.holds), (STATE_PENDING, MULE_REVIEW), "a link of a chain");
    assert_eq!(case_of(&e, 2).reasons.0, Reasons::NEW_ACCOUNT_PASS_THROUGH);
    // The same three hours later is not this rule's (one sender).
    let mut e = bank();
    submit(&mut e, &transfer(1, VICTIMS[0], MULE, 2_000_000, HKD));
    e.advance(t0() + 3 * 60 * MINUTE);
    assert_eq!(submit(&mut e, &transfer(2, MULE, NEXT, 1_900_000, HKD)).holds, 0);
}

#[test]
fn the_inbound_state_survives_a_snapshot() {
    let mut e = bank();
    fan_in(&mut e, MULE, 300_000);
    let mut bytes = Vec::new();
    e.encode_state(&mut bytes);
    let mut restored = Engine::decode_state(*e.config(), &bytes).expect("decodes");
    assert_eq!(restored.inbound(MULE), e.inbound(MULE));
    assert_ne!(e.inbound(MULE).copied(), Some(Default::default()));
    let t = remit(1, MULE, 1_100_000, 608);
    assert_eq!(submit(&mut restored, &t), submit(&mut e, &t));
    assert_eq!(restored.cases(), e.cases());
    assert_eq!(restored.state_hash(), e.state_hash());
}

/// A switch of `shards` shards on memory storage.
fn switch(shards: usize) -> harbour::shard::Switch {
    let config = harbour::shard::SwitchConfig {
        shards,
        clock: harbour::clock::Clock::Manual,
        ..harbour::shard::SwitchConfig::default()
    };
    let storages: Vec<std::sync::Arc<dyn harbour::wal::storage::Storage>> =
        (0..shards).map(|_| std::sync::Arc::new(harbour::wal::storage::MemStorage::new()) as _).collect();
    harbour::shard::Switch::open(config, storages).expect("opens")
}

#[test]
fn the_payees_shard_learns_of_credits_from_other_shards() {
    let s = switch(2);
    let home = s.shard_of(MULE);
    let victims: Vec<u64> = (3_000..4_000).filter(|&v| s.shard_of(v) != home).take(4).collect();
    let accounts: Vec<Account> = std::iter::once(MULE).chain(victims.iter().copied()).map(account).collect();
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&accounts)).unwrap();
    let mut batch: Vec<Transfer> =
        victims.iter().enumerate().map(|(i, &v)| deposit(10 + i as u128, v, 5_000_000, HKD)).collect();
    batch.extend(victims.iter().enumerate().map(|(i, &v)| transfer(20 + i as u128, v, MULE, 300_000, HKD)));
    let answers: Vec<TransferResult> =
        decode_all(&s.submit(kind::SUBMIT_TRANSFERS, &encode_all(&batch)).unwrap()).collect();
    assert!(answers.iter().all(|r| r.code == 0 && r.state == STATE_POSTED), "{answers:?}");
    let held: Vec<TransferResult> =
        decode_all(&s.submit(kind::SUBMIT_TRANSFERS, &encode_all(&[remit(1, MULE, 1_100_000, 608)])).unwrap())
            .collect();
    assert_eq!((held[0].state, held[0].holds), (STATE_PENDING, MULE_REVIEW), "four senders on the other shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_wire_with_two_shards_and_in_the_str() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = common::server_config(dir.path());
    config.switch.shards = 2;
    let running = harbour::server::start(&config).await.expect("starts");
    let c = harbour::client::Client::connect(running.addr, 1, b"hksw-dev-key").await.expect("connects");
    let accounts: Vec<Account> = std::iter::once(MULE).chain(VICTIMS).map(account).collect();
    assert!(c.create_accounts(&accounts).await.unwrap().iter().all(|r| r.code == 0));
    let mut batch: Vec<Transfer> =
        VICTIMS.iter().enumerate().map(|(i, &v)| deposit(10 + i as u128, v, 5_000_000, HKD)).collect();
    batch.extend(VICTIMS.iter().enumerate().map(|(i, &v)| transfer(20 + i as u128, v, MULE, 300_000, HKD)));
    assert!(c.submit_transfers(&batch).await.unwrap().iter().all(|r| r.code == 0));
    let held = c.submit_transfers(&[remit(1, MULE, 1_100_000, 608)]).await.unwrap();
    assert_eq!((held[0].state, held[0].holds), (STATE_PENDING, MULE_REVIEW));
    let review = |outcome| StepUp { transfer_id: 1, method: METHOD_MANUAL_REVIEW, outcome };
    let refused = c.confirm_step_up(&[review(OUTCOME_PASS)]).await.unwrap();
    assert_eq!(refused[0].code, ResultCode::Forbidden.as_u16(), "a channel cannot pass it");
    let passed = c.resolve_review(&[review(OUTCOME_PASS)]).await.unwrap();
    assert_eq!((passed[0].code, passed[0].state), (0, STATE_POSTED));
    // The manual clock starts on 2026-01-01.
    let (header, report) = c.export_str(2026, 1, 2).await.unwrap();
    assert_eq!(header.code, 0);
    let csv = String::from_utf8(report).unwrap();
    let mut lines = csv.lines();
    let columns: Vec<&str> = lines.next().unwrap().split(',').collect();
    let row: Vec<&str> = lines.find(|l| l.starts_with("1,")).expect("the case").split(',').collect();
    let value = |name: &str| row[columns.iter().position(|c| *c == name).unwrap()];
    assert_eq!(value("rules"), "PASS_THROUGH");
    assert_eq!(value("holds"), "MULE_REVIEW");
    assert_eq!(value("outcome"), "passed");
    assert_eq!((value("mule_senders"), value("mule_inbound_hkd")), ("4", "12000.00"));
}
