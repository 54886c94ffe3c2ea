//! The remote AML scorer behind the latency budget: its verdicts hold
//! transfers for MANUAL_REVIEW, a slow or absent scorer becomes a budget
//! fallback without blocking the shard past the budget, and both are logged
//! so a restart without the scorer replays the same decisions.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{HKD, account, counted_scorer, deposit, scorer, transfer};
use harbour::aml::report::FORMAT_CSV;
use harbour::clock::Clock;
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};
use harbour::shard::{Backend, ScorerConfig, Switch, SwitchConfig};

fn config(scorer: Option<(SocketAddr, Duration)>) -> SwitchConfig {
    SwitchConfig {
        clock: Clock::Manual,
        aml_scorer: scorer.map(|(addr, budget)| ScorerConfig { addr, budget, io_timeout: Duration::from_secs(5) }),
        ..SwitchConfig::default()
    }
}

fn submit(s: &Switch, ts: &[Transfer]) -> Vec<TransferResult> {
    decode_all(&s.submit(kind::SUBMIT_TRANSFERS, &encode_all(ts)).expect("answered")).collect()
}

fn lookup(s: &Switch, id: u128) -> TransferResult {
    TransferResult::decode(&s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id }])).unwrap())
}

fn setup(s: &Switch) {
    let created = s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024), account(1025)])).unwrap();
    assert!(decode_all::<RecordResult>(&created).all(|r| r.code == 0));
    assert_eq!(submit(s, &[deposit(1, 1024, 1_000_000, HKD)])[0].state, STATE_POSTED, "deposits are not scored");
}

/// The month's cases as CSV lines (header first).
fn cases_csv(s: &Switch) -> Vec<String> {
    let now_month = (2026, 1); // the manual clock's first month
    let request = StrRequest { year: now_month.0, month: now_month.1, format: FORMAT_CSV };
    let answer = s.submit(kind::EXPORT_STR, &encode_all(&[request])).unwrap();
    let header = StrHeader::decode(&answer[..StrHeader::SIZE]);
    assert_eq!(header.code, 0);
    String::from_utf8(answer[StrHeader::SIZE..].to_vec()).unwrap().lines().map(String::from).collect()
}

#[test]
fn scorer_verdicts_hold_for_review_and_replay_without_the_scorer() {
    let dir = tempfile::tempdir().unwrap();
    let addr = scorer(Duration::ZERO, 5_000);
    {
        let s = Switch::open_dir(dir.path(), config(Some((addr, Duration::from_secs(2)))), Backend::Std).unwrap();
        setup(&s);
        let got = submit(&s, &[transfer(2, 1024, 1025, 100, HKD), transfer(3, 1024, 1025, 9_000, HKD)]);
        assert_eq!((got[0].state, got[0].holds), (STATE_POSTED, 0), "cleared by the scorer");
        assert_eq!((got[1].state, got[1].holds), (STATE_PENDING, 8), "the scorer asks for review");
        let lines = cases_csv(&s);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[1].starts_with("3,") && lines[1].contains("REMOTE_SCORER"), "{}", lines[1]);
    }
    // Restart with no scorer at all: the logged verdict decides the replay.
    let s = Switch::open_dir(dir.path(), config(None), Backend::Std).unwrap();
    assert_eq!((lookup(&s, 3).state, lookup(&s, 3).holds), (STATE_PENDING, 8));
    assert_eq!(lookup(&s, 2).state, STATE_POSTED);
    // Without a scorer nothing more is held for review.
    assert_eq!(submit(&s, &[transfer(4, 1024, 1025, 9_000, HKD)])[0].state, STATE_POSTED);
    // An operator resolves the review.
    let body = encode_all(&[StepUp { transfer_id: 3, method: METHOD_MANUAL_REVIEW, outcome: OUTCOME_PASS }]);
    let r = TransferResult::decode(&s.submit(kind::RESOLVE_REVIEW, &body).unwrap());
    assert_eq!((r.code, r.state), (0, STATE_POSTED));
}

#[test]
fn a_slow_scorer_costs_the_budget_and_no_more() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Duration::from_secs(3);
    let budget = Duration::from_millis(20);
    let addr = scorer(slow, 0);
    let s = Switch::open_dir(dir.path(), config(Some((addr, budget))), Backend::Std).unwrap();
    setup(&s);
    // Each request waits at most the budget for the scorer (plus the
    // group's fsync and scheduling), far less than the scorer takes; the
    // margin is generous because this machine is shared and noisy.
    let margin = Duration::from_millis(800);
    for id in 10..14u128 {
        let start = Instant::now();
        let got = submit(&s, &[transfer(id, 1024, 1025, 100, HKD)]);
        let took = start.elapsed();
        assert_eq!((got[0].state, got[0].holds), (STATE_PENDING, 8), "held for MANUAL_REVIEW");
        assert!(took < budget + margin, "request {id} took {took:?} with a {budget:?} budget");
    }
    // Other kinds never wait for the scorer.
    let start = Instant::now();
    lookup(&s, 10);
    assert!(start.elapsed() < margin);
    let lines = cases_csv(&s);
    assert_eq!(lines.len(), 5);
    assert!(lines[1..].iter().all(|l| l.contains("BUDGET_FALLBACK") && l.contains("MANUAL_REVIEW")), "{lines:?}");
    // The review voids or releases it like any other.
    let body = encode_all(&[StepUp { transfer_id: 10, method: METHOD_MANUAL_REVIEW, outcome: OUTCOME_FAIL }]);
    assert_eq!(TransferResult::decode(&s.submit(kind::RESOLVE_REVIEW, &body).unwrap()).state, STATE_VOIDED);
    drop(s);
    // Replay decides the same: no scorer now, still held.
    let s = Switch::open_dir(dir.path(), config(None), Backend::Std).unwrap();
    assert_eq!(lookup(&s, 11).holds, 8);
    assert_eq!(lookup(&s, 10).state, STATE_VOIDED);
}

#[test]
fn an_unreachable_scorer_is_a_fallback_at_once() {
    // A port nothing listens on; a long budget that a dead scorer must not
    // cost: its failure comes back at once, and for a while it is not
    // asked at all.
    let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let budget = Duration::from_secs(5);
    let s = Switch::open_dir(dir.path(), config(Some((addr, budget))), Backend::Std).unwrap();
    setup(&s);
    for id in 2..6u128 {
        let start = Instant::now();
        let got = submit(&s, &[transfer(id, 1024, 1025, 100, HKD)]);
        assert_eq!((got[0].code, got[0].holds), (ResultCode::Ok.as_u16(), 8));
        assert!(start.elapsed() < budget / 2, "transfer {id} waited {:?} for a dead scorer", start.elapsed());
    }
}

#[test]
fn with_aml_off_the_scorer_is_not_asked() {
    let (addr, asked) = counted_scorer(Duration::ZERO, 0);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(Some((addr, Duration::from_secs(2))));
    cfg.engine.aml.enabled = false;
    let s = Switch::open_dir(dir.path(), cfg, Backend::Std).unwrap();
    setup(&s);
    assert_eq!(submit(&s, &[transfer(2, 1024, 1025, 100, HKD)])[0].state, STATE_POSTED);
    assert_eq!(asked.load(Ordering::SeqCst), 0, "AML off: the scorer is not asked");
    drop(s);
    // With AML on the same scorer is asked (it reviews everything).
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(Some((addr, Duration::from_secs(2)))), Backend::Std).unwrap();
    setup(&s);
    assert_eq!(submit(&s, &[transfer(2, 1024, 1025, 100, HKD)])[0].holds, 8);
    assert_eq!(asked.load(Ordering::SeqCst), 1);
}
