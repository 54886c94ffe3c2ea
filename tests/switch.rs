//! The switch through its library API: shard threads, real files, restart,
//! routing across shards, backpressure, and both file backends.

mod common;

use std::sync::Arc;

use common::{HKD, account, deposit, transfer};
use harbour::clock::Clock;
use harbour::engine::book::{REMITTANCE_OUT, SETTLEMENT_IN};
use harbour::protocol::records::*;
use harbour::protocol::{ResultCode, kind};
use harbour::shard::{Backend, OpenError, Switch, SwitchConfig, SwitchError};

fn config(shards: usize) -> SwitchConfig {
    SwitchConfig {
        shards,
        clock: Clock::Manual,
        snapshot_log_bytes: 600,
        wal: harbour::wal::WalConfig { segment_bytes_max: 1 << 20, ..harbour::wal::WalConfig::default() },
        ..SwitchConfig::default()
    }
}

fn transfers(s: &Switch, ts: &[Transfer]) -> Vec<TransferResult> {
    decode_all(&s.submit(kind::SUBMIT_TRANSFERS, &encode_all(ts)).expect("answered")).collect()
}

fn codes(results: &[TransferResult]) -> Vec<ResultCode> {
    results.iter().map(|r| ResultCode::from_u16(r.code).expect("defined")).collect()
}

fn balance(s: &Switch, account_id: u64) -> (i64, u64) {
    let body = s.submit(kind::LOOKUP_BALANCES, &encode_all(&[BalanceKey { account_id, currency: HKD }])).unwrap();
    let b = Balance::decode(&body);
    (b.balance, b.held)
}

fn session(dir: &std::path::Path, backend: Backend) {
    let s = Switch::open_dir(dir, config(1), backend).expect("opens");
    let created: Vec<RecordResult> =
        decode_all(&s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024), account(1025)])).unwrap()).collect();
    assert!(created.iter().all(|r| r.code == 0));
    let results = transfers(
        &s,
        &[
            deposit(1, 1024, 10_000, HKD),
            transfer(2, 1024, 1025, 2_500, HKD),
            Transfer { flags: TRANSFER_PENDING, ..transfer(3, 1024, 1025, 1_000, HKD) },
            transfer(2, 1024, 1025, 2_500, HKD),
            transfer(4, 1025, 1024, 1_000_000, HKD),
        ],
    );
    assert_eq!(
        codes(&results),
        [ResultCode::Ok, ResultCode::Ok, ResultCode::Ok, ResultCode::AlreadyExists, ResultCode::InsufficientFunds]
    );
    assert_eq!(balance(&s, 1024), (7_500, 1_000));
    let fin =
        s.submit(kind::FINALIZE_PENDING, &encode_all(&[Finalize { transfer_id: 3, action: FINALIZE_POST }])).unwrap();
    assert_eq!(TransferResult::decode(&fin).state, STATE_POSTED);
    for i in 10..30u128 {
        transfers(&s, &[transfer(i, 1024, 1025, 1, HKD)]);
    }
    s.shutdown();

    // Everything answered is there after a restart (snapshots were taken
    // every 5 records, so this loads one and replays the rest).
    let s = Switch::open_dir(dir, config(1), backend).expect("reopens");
    let report = &s.recovery_reports()[0];
    assert!(report.snapshot_lsn.is_some(), "{report:?}");
    assert_eq!(balance(&s, 1024), (7_500 - 1_000 - 20, 0));
    assert_eq!(balance(&s, 1025), (2_500 + 1_000 + 20, 0));
    let looked: Vec<TransferResult> =
        decode_all(&s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id: 3 }, Id { id: 4 }])).unwrap()).collect();
    assert_eq!((looked[0].state, looked[0].debit_amount), (STATE_POSTED, 1_000));
    assert_eq!(ResultCode::from_u16(looked[1].code), Some(ResultCode::TransferNotFound), "rejected: not stored");
    assert_eq!(codes(&transfers(&s, &[transfer(2, 1024, 1025, 2_500, HKD)])), [ResultCode::AlreadyExists]);
    s.shutdown();
}

#[test]
fn durable_across_restart_with_std_files() {
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), Backend::Std);
}

#[test]
fn durable_across_restart_with_io_uring() {
    // This machine's kernel gives io_uring; elsewhere the switch falls back
    // to std files, but here the test must exercise the ring.
    #[cfg(target_os = "linux")]
    assert!(harbour::wal::storage::UringStorage::available(), "io_uring available");
    let dir = tempfile::tempdir().unwrap();
    session(dir.path(), Backend::Uring);
}

#[test]
fn settings_that_decide_outcomes_cannot_change() {
    let dir = tempfile::tempdir().unwrap();
    Switch::open_dir(dir.path(), config(2), Backend::Std).expect("opens").shutdown();
    match Switch::open_dir(dir.path(), config(3), Backend::Std) {
        Err(OpenError::Settings { key, recorded, configured }) => {
            assert_eq!((key.as_str(), recorded.as_str(), configured.as_str()), ("shards", "2", "3"));
        }
        Err(other) => panic!("wrong error: {other}"),
        Ok(_) => panic!("three shards opened a two-shard directory"),
    }
    let system_clock = SwitchConfig { clock: Clock::System, ..config(2) };
    assert!(matches!(Switch::open_dir(dir.path(), system_clock, Backend::Std), Err(OpenError::Settings { .. })));
    let mut shorter = config(2);
    shorter.engine.hold_windows.client_ms = 1000;
    match Switch::open_dir(dir.path(), shorter, Backend::Std) {
        Err(e) => assert!(e.to_string().contains("client_window_ms=604800000"), "{e}"),
        Ok(_) => panic!("another hold window opened the directory"),
    }
    Switch::open_dir(dir.path(), config(2), Backend::Std).expect("the recorded settings open it").shutdown();
    // The AML settings are recorded too.
    let mut higher = config(2);
    higher.engine.aml.daily_limit_hkd_minor += 1;
    let refused = Switch::open_dir(dir.path(), higher, Backend::Std).err().expect("another AML limit is refused");
    assert!(refused.to_string().contains("aml_daily_limit_hkd_minor"), "{refused}");
}

#[test]
fn a_data_directory_keeps_the_behaviour_model_it_was_written_with() {
    use harbour::aml::BehaviourModel;
    use harbour::shard::meta_mismatch;
    let with = |model: BehaviourModel| {
        let mut c = config(1);
        c.engine.aml.model = model;
        harbour::shard::meta(&c)
    };
    // A directory written with model 2 (before model 3 was the default)
    // opens only with model 2.
    assert_eq!(
        meta_mismatch(&with(BehaviourModel::V2), &with(BehaviourModel::V3)),
        Some(("aml_behaviour_model".into(), "2".into(), "3".into()))
    );
    assert_eq!(meta_mismatch(&with(BehaviourModel::V2), &with(BehaviourModel::V2)), None);
    // A directory from before the model was recorded was decided by model 1.
    let before: String = with(BehaviourModel::V1)
        .lines()
        .filter(|l| !l.starts_with("aml_behaviour_model="))
        .map(|l| format!("{l}\n"))
        .collect();
    let (key, recorded, configured) = meta_mismatch(&before, &with(BehaviourModel::V3)).expect("refused");
    assert_eq!((key.as_str(), configured.as_str()), ("aml_behaviour_model", "3"));
    assert!(recorded.starts_with("1 "), "{recorded}");
    assert_eq!(meta_mismatch(&before, &with(BehaviourModel::V1)), None, "model 1 opens it");
}

#[test]
fn a_data_directory_from_before_aml_replays_only_with_aml_off() {
    let dir = tempfile::tempdir().unwrap();
    Switch::open_dir(dir.path(), config(1), Backend::Std).expect("opens").shutdown();
    // Make its META look like the build before AML's: no aml_* keys.
    let meta = std::fs::read_to_string(dir.path().join("META")).unwrap();
    let old: String = meta.lines().filter(|l| !l.starts_with("aml_")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("META"), old).unwrap();
    // That build kept no copies in the shard directories.
    std::fs::remove_file(dir.path().join("shard-0/META")).unwrap();
    let refused = Switch::open_dir(dir.path(), config(1), Backend::Std).err().expect("AML on is refused");
    assert!(refused.to_string().contains("before AML"), "{refused}");
    let mut off = config(1);
    off.engine.aml.enabled = false;
    Switch::open_dir(dir.path(), off, Backend::Std).expect("its log replays as it was written").shutdown();
}

#[test]
fn two_shards_route_by_account_and_sum_system_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(2), Backend::Std).expect("opens");
    let ids: Vec<u64> = (1024..1040).collect();
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&ids.iter().map(|&a| account(a)).collect::<Vec<_>>())).unwrap();
    let deposits: Vec<Transfer> = ids.iter().map(|&a| deposit(u128::from(a), a, 100, HKD)).collect();
    assert!(codes(&transfers(&s, &deposits)).iter().all(|c| *c == ResultCode::Ok));
    // Find one pair on the same shard and one across.
    let same = ids.iter().find(|&&b| b != 1024 && s.shard_of(b) == s.shard_of(1024)).copied().unwrap();
    let other = ids.iter().find(|&&b| s.shard_of(b) != s.shard_of(1024)).copied().unwrap();
    let results = transfers(
        &s,
        &[
            transfer(5000, 1024, same, 10, HKD),
            transfer(5001, 1024, other, 10, HKD),
            Transfer { destination_country: 156, ..transfer(5002, other, REMITTANCE_OUT, 5, HKD) },
        ],
    );
    assert_eq!(codes(&results), [ResultCode::Ok, ResultCode::Ok, ResultCode::Ok]);
    assert!(results.iter().all(|r| r.state == STATE_POSTED), "answered once posted on both shards");
    assert_eq!(balance(&s, 1024), (80, 0));
    assert_eq!(balance(&s, same), (110, 0));
    assert_eq!(balance(&s, other), (105, 0));
    assert_eq!(balance(&s, harbour::engine::book::INTERSHARD), (0, 0), "nothing left in flight");
    assert_eq!(balance(&s, SETTLEMENT_IN), (-1600, 0), "sum of both shards' parts");
    assert_eq!(balance(&s, REMITTANCE_OUT), (5, 0));
    // Lookups by id find the transfer on whichever shard has it.
    let looked: Vec<TransferResult> = decode_all(
        &s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id: 5000 }, Id { id: 5002 }, Id { id: 5001 }])).unwrap(),
    )
    .collect();
    assert_eq!(codes(&looked), [ResultCode::Ok, ResultCode::Ok, ResultCode::Ok]);
    assert!(looked.iter().all(|r| r.state == STATE_POSTED));
    s.shutdown();
}

#[test]
fn a_full_queue_answers_busy_and_applies_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = SwitchConfig { queue_depth_max: 1, group_requests_max: 1, ..config(1) };
    let s = Arc::new(Switch::open_dir(dir.path(), cfg, Backend::Std).expect("opens"));
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024)])).unwrap();
    let threads: Vec<_> = (0..4u128)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                (0..50u128)
                    .map(|i| {
                        let id = 1 + t * 1000 + i;
                        let answer = s.try_submit(kind::SUBMIT_TRANSFERS, &encode_all(&[deposit(id, 1024, 1, HKD)]));
                        (id, answer)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut busy = 0;
    let mut applied = 0i64;
    for t in threads {
        for (id, answer) in t.join().unwrap() {
            let looked = TransferResult::decode(&s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id }])).unwrap());
            match answer {
                Err(SwitchError::Busy) => {
                    busy += 1;
                    assert_eq!(
                        ResultCode::from_u16(looked.code),
                        Some(ResultCode::TransferNotFound),
                        "BUSY applied {id}"
                    );
                }
                Ok(_) => {
                    applied += 1;
                    assert_eq!(looked.state, STATE_POSTED);
                }
                Err(other) => panic!("{other}"),
            }
        }
    }
    assert_eq!(balance(&s, 1024), (applied, 0), "exactly the answered deposits");
    eprintln!("{busy} of 200 answered BUSY");
}

#[test]
fn bad_requests_get_an_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(1), Backend::Std).expect("opens");
    assert!(matches!(s.submit(0x7777, &[]), Err(SwitchError::Engine(_))));
    assert!(matches!(s.submit(kind::SUBMIT_TRANSFERS, &[0; 63]), Err(SwitchError::Engine(_))));
    assert!(matches!(s.submit(kind::TICK, &[]), Err(SwitchError::Engine(_))), "internal kinds are not requests");
    for internal in [kind::QUOTE_AT, kind::LINK_IN, kind::SUBMIT_JUDGED, kind::STR_ROWS] {
        assert!(matches!(s.submit(internal, &[0; 32]), Err(SwitchError::Engine(_))), "{internal:#x}");
    }
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024)])).unwrap();
    s.shutdown();
    let s = Switch::open_dir(dir.path(), config(1), Backend::Std).expect("reopens after refused requests");
    assert_eq!(balance(&s, 1024), (0, 0));
}

#[test]
fn a_request_sent_to_every_shard_counts_its_results_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(3), Backend::Std).expect("opens");
    let counted = || {
        harbour::metrics::METRICS.results[ResultCode::LoanNotFound.as_u16() as usize]
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = counted();
    let body = encode_all(&[Id { id: 77 }, Id { id: 78 }]);
    let answer: Vec<LoanResult> = decode_all(&s.submit(kind::LOOKUP_LOANS, &body).unwrap()).collect();
    assert!(answer.iter().all(|r| r.code == ResultCode::LoanNotFound.as_u16()));
    assert_eq!(counted() - before, 2, "two records, counted once each, not once per shard");
    s.shutdown();
}

/// Threads paying each other across three shard threads, a stop in the
/// middle, then more: every answered transfer posted exactly once, balances
/// as the answers say, nothing left in flight.
#[test]
fn concurrent_cross_shard_payments_add_up_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<u64> = (1024..1088).collect();
    let mut expected: std::collections::BTreeMap<u64, i64> = accounts.iter().map(|&a| (a, 1_000_000)).collect();
    let mut next_id = 1u128 << 64;
    // Random payees at this rate are what AML level 3 holds: every answer
    // here is to post, so AML is off.
    let mut cfg = config(3);
    cfg.engine.aml.enabled = false;
    for round in 0..2 {
        let s = Arc::new(Switch::open_dir(dir.path(), cfg, Backend::Std).expect("opens"));
        if round == 0 {
            s.submit(kind::CREATE_ACCOUNTS, &encode_all(&accounts.iter().map(|&a| account(a)).collect::<Vec<_>>()))
                .unwrap();
            let deposits: Vec<Transfer> = accounts.iter().map(|&a| deposit(u128::from(a), a, 1_000_000, HKD)).collect();
            assert!(codes(&transfers(&s, &deposits)).iter().all(|c| *c == ResultCode::Ok));
        }
        let threads: Vec<_> = (0..4u128)
            .map(|t| {
                let (s, accounts) = (Arc::clone(&s), accounts.clone());
                let base = next_id + t * 1_000_000;
                std::thread::spawn(move || {
                    let mut rng = common::Rng(base as u64);
                    let mut moved = Vec::new();
                    for b in 0..40u128 {
                        let batch: Vec<Transfer> = (0..25u128)
                            .map(|i| {
                                let debit = rng.pick(&accounts);
                                let mut credit = rng.pick(&accounts);
                                if credit == debit {
                                    credit = if debit == 1024 { 1025 } else { 1024 };
                                }
                                transfer(base + b * 100 + i, debit, credit, 1 + rng.below(100), HKD)
                            })
                            .collect();
                        let results = transfers(&s, &batch);
                        for (t, r) in batch.iter().zip(&results) {
                            assert_eq!((r.code, r.state), (0, STATE_POSTED), "transfer {}", t.transfer_id);
                            moved.push((t.debit_account, t.credit_account, t.amount as i64));
                        }
                    }
                    moved
                })
            })
            .collect();
        for t in threads {
            for (debit, credit, amount) in t.join().unwrap() {
                *expected.get_mut(&debit).unwrap() -= amount;
                *expected.get_mut(&credit).unwrap() += amount;
            }
        }
        next_id += 1 << 32;
        Arc::try_unwrap(s).ok().expect("threads done").shutdown();
    }
    let s = Switch::open_dir(dir.path(), cfg, Backend::Std).expect("reopens");
    for (&account, &balance) in &expected {
        assert_eq!(self::balance(&s, account), (balance, 0), "account {account}");
    }
    assert_eq!(self::balance(&s, harbour::engine::book::INTERSHARD), (0, 0), "nothing in flight");
    assert_eq!(self::balance(&s, SETTLEMENT_IN).0, -(accounts.len() as i64) * 1_000_000);
    s.shutdown();
}

#[test]
fn a_refused_cross_shard_credit_is_answered_and_counted_as_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(2), Backend::Std).expect("opens");
    let a = (1024..).find(|&a| s.shard_of(a) == 0).unwrap();
    let b = (1024..).find(|&b| s.shard_of(b) == 1).unwrap();
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(a), account(b)])).unwrap();
    let top = i64::MAX as u64 - 1;
    assert!(
        codes(&transfers(&s, &[deposit(1, a, 100, HKD), deposit(2, b, top, HKD)])).iter().all(|c| *c == ResultCode::Ok)
    );
    let overflows = || {
        harbour::metrics::METRICS.results[ResultCode::Overflow.as_u16() as usize]
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let before = overflows();
    let r = transfers(&s, &[transfer(3, a, b, 2, HKD)]);
    assert_eq!((codes(&r), r[0].state), (vec![ResultCode::Overflow], STATE_VOIDED));
    assert_eq!(overflows() - before, 1, "counted as answered, once settled");
    assert_eq!(balance(&s, a), (100, 0));
    assert_eq!(balance(&s, harbour::engine::book::INTERSHARD), (0, 0));
    s.shutdown();
}

/// A switch of `shards` shards with AML off (random payees would trip the
/// behaviour model) and `accounts` funded with HK$1,000.00 each.
fn funded(dir: &std::path::Path, shards: usize, accounts: &[u64]) -> Switch {
    let mut cfg = config(shards);
    cfg.engine.aml.enabled = false;
    let s = Switch::open_dir(dir, cfg, Backend::Std).expect("opens");
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&accounts.iter().map(|&a| account(a)).collect::<Vec<_>>())).unwrap();
    let deposits: Vec<Transfer> = accounts.iter().map(|&a| deposit(u128::from(a) << 32, a, 100_000, HKD)).collect();
    assert!(codes(&transfers(&s, &deposits)).iter().all(|c| *c == ResultCode::Ok));
    s
}

fn lookup(s: &Switch, id: u128) -> TransferResult {
    TransferResult::decode(&s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id }])).unwrap())
}

/// Contract §5 with four shards: an id reused with another debit account,
/// in a later request or in the same one, is ID_CONFLICT showing the
/// first transfer, wherever the accounts live; lookups, cancels and
/// finalizes reach the one transfer.
#[test]
fn a_transfer_id_reused_with_other_accounts_is_id_conflict_on_every_shard() {
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<u64> = (1024..1048).collect();
    let s = funded(dir.path(), 4, &accounts);
    assert!((0..4).all(|shard| accounts.iter().any(|&a| s.shard_of(a) == shard)), "every shard has an account");
    let first = Transfer { flags: TRANSFER_PENDING, ..transfer(7, 1024, 1025, 100, HKD) };
    assert_eq!(codes(&transfers(&s, &[first])), [ResultCode::Ok]);
    let reuses: Vec<Transfer> = accounts[1..].iter().map(|&a| transfer(7, a, 1024, 50, HKD)).collect();
    for r in transfers(&s, &reuses) {
        assert_eq!(ResultCode::from_u16(r.code), Some(ResultCode::IdConflict));
        assert_eq!((r.state, r.debit_amount), (STATE_PENDING, 100), "shows the stored transfer");
    }
    // In one request too: the first record stores the id, the others meet it.
    let batch: Vec<Transfer> = accounts.iter().map(|&a| transfer(8, a, 1030, 10, HKD)).collect();
    let answered = codes(&transfers(&s, &batch));
    assert_eq!(answered[0], ResultCode::Ok);
    assert!(answered[1..].iter().all(|c| *c == ResultCode::IdConflict), "{answered:?}");
    // A first record refused leaves the id free for the next.
    let batch = [transfer(9, 1024, 1025, 10_000_000, HKD), transfer(9, 1026, 1025, 10, HKD)];
    assert_eq!(codes(&transfers(&s, &batch)), [ResultCode::InsufficientFunds, ResultCode::Ok]);
    assert_eq!(lookup(&s, 9).debit_amount, 10);
    for &a in &accounts {
        let expected = match a {
            1024 | 1026 => 100_000 - 10,
            1025 | 1030 => 100_000 + 10,
            _ => 100_000,
        };
        assert_eq!(balance(&s, a), (expected, if a == 1024 { 100 } else { 0 }), "account {a}");
    }
    let cancelled = s.submit(kind::CANCEL_TRANSFERS, &encode_all(&[Id { id: 7 }])).unwrap();
    assert_eq!(TransferResult::decode(&cancelled).state, STATE_VOIDED);
    assert_eq!(balance(&s, 1024), (100_000 - 10, 0));
    s.shutdown();
    // Claims are rebuilt from the shards' books after a restart.
    let mut cfg = config(4);
    cfg.engine.aml.enabled = false;
    let s = Switch::open_dir(dir.path(), cfg, Backend::Std).expect("reopens");
    for &a in &accounts[1..] {
        let r = transfers(&s, &[transfer(7, a, 1024, 50, HKD)]);
        assert_eq!((codes(&r), r[0].state), (vec![ResultCode::IdConflict], STATE_VOIDED), "from {a}");
    }
    s.shutdown();
}

/// Loan and transfer ids share one space (contract §6), and repayment ids
/// are one space, across shards.
#[test]
fn loan_transfer_and_repayment_ids_are_unique_across_shards() {
    let dir = tempfile::tempdir().unwrap();
    let s = funded(dir.path(), 4, &(1024..1032).collect::<Vec<_>>());
    let a = (1024..).find(|&a| s.shard_of(a) == 0).unwrap();
    let b = (1024..).find(|&b| s.shard_of(b) == 1).unwrap();
    let lines: Vec<CreditLine> = common::micro_credit_lines(&[a, b]);
    s.submit(kind::SET_CREDIT_LINES, &encode_all(&lines)).unwrap();
    let loan = |id: u128, account_id: u64| Disburse {
        loan_id: id,
        account_id,
        currency: HKD,
        term_days: 30,
        principal: 1_000,
    };
    let loans = |ds: &[Disburse]| -> Vec<LoanResult> {
        decode_all(&s.submit(kind::DISBURSE_LOANS, &encode_all(ds)).unwrap()).collect()
    };
    // A transfer on b's shard, then a loan with its id on a's.
    assert_eq!(codes(&transfers(&s, &[transfer(500, b, a, 10, HKD)])), [ResultCode::Ok]);
    assert_eq!(loans(&[loan(500, a)])[0].code, ResultCode::IdConflict.as_u16());
    // A loan on a's shard, then a transfer with its id from b's.
    assert_eq!(loans(&[loan(600, a)])[0].code, 0);
    assert_eq!(codes(&transfers(&s, &[transfer(600, b, a, 10, HKD)])), [ResultCode::IdConflict]);
    assert_eq!(loans(&[loan(600, b)])[0].code, ResultCode::IdConflict.as_u16());
    // One repayment id for two loans on two shards.
    assert_eq!(loans(&[loan(700, b)])[0].code, 0);
    let repay = |id: u128, loan_id: u128| -> LoanResult {
        LoanResult::decode(
            &s.submit(kind::REPAY_LOANS, &encode_all(&[Repay { repayment_id: id, loan_id, amount: 100 }])).unwrap(),
        )
    };
    assert_eq!(repay(9, 600).code, 0);
    let again = repay(9, 700);
    assert_eq!((again.code, again.loan_id), (ResultCode::IdConflict.as_u16(), 700));
    assert_eq!(repay(9, 600).code, ResultCode::AlreadyExists.as_u16());
    let looked: Vec<LoanResult> = decode_all(
        &s.submit(kind::LOOKUP_LOANS, &encode_all(&[Id { id: 600 }, Id { id: 700 }, Id { id: 500 }])).unwrap(),
    )
    .collect();
    assert_eq!(looked.iter().map(|l| l.principal_outstanding).collect::<Vec<_>>(), [900, 1_000, 0]);
    assert_eq!(looked[2].code, ResultCode::LoanNotFound.as_u16());
    s.shutdown();
}

/// Contract §6: a quote serves one accepted transfer, whichever shards
/// its payers live on, in one batch or raced from two threads.
#[test]
fn a_quote_serves_one_transfer_across_shards_even_when_raced() {
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<u64> = (1024..1040).collect();
    let s = Arc::new(funded(dir.path(), 4, &accounts));
    s.submit(kind::SET_FX_RATES, &encode_all(&[FxRate { from: HKD, to: common::USD, rate_e9: 128_000_000 }])).unwrap();
    let quote = |s: &Switch| {
        let q = QuoteRequest { from: HKD, to: common::USD, flags: 0, amount: 100 };
        Quote::decode(&s.submit(kind::FX_QUOTE, &encode_all(&[q])).unwrap()).quote_id
    };
    let convert = |id: u128, a: u64, q: u64| Transfer {
        credit_currency: common::USD,
        fx_quote_id: q,
        ..transfer(id, a, a, 100, HKD)
    };
    // Eight payers on four shards, one batch.
    let q = quote(&s);
    let batch: Vec<Transfer> =
        accounts[..8].iter().enumerate().map(|(i, &a)| convert(1000 + i as u128, a, q)).collect();
    let answered = codes(&transfers(&s, &batch));
    assert_eq!(answered.iter().filter(|c| **c == ResultCode::Ok).count(), 1, "{answered:?}");
    assert!(answered.iter().all(|c| matches!(c, ResultCode::Ok | ResultCode::QuoteInvalid)), "{answered:?}");
    // Two threads, payers on different shards, racing one quote.
    let a = accounts.iter().copied().find(|&a| s.shard_of(a) == 0).unwrap();
    let b = accounts.iter().copied().find(|&b| s.shard_of(b) == 1).unwrap();
    for round in 0..300u128 {
        let q = quote(&s);
        let racers: Vec<_> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(i, payer)| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || transfers(&s, &[convert(10_000 + round * 2 + i as u128, payer, q)])[0].code)
            })
            .collect();
        let won = racers.into_iter().map(|t| t.join().unwrap()).filter(|&c| c == 0).count();
        assert_eq!(won, 1, "round {round}: quote {q}");
    }
    Arc::try_unwrap(s).ok().expect("threads done").shutdown();
}

/// The same new id sent at the same moment from two threads with
/// different debit accounts (on different shards) is accepted once.
#[test]
fn one_id_raced_from_two_threads_is_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let accounts: Vec<u64> = (1024..1040).collect();
    let s = Arc::new(funded(dir.path(), 3, &accounts));
    let a = accounts.iter().copied().find(|&a| s.shard_of(a) == 0).unwrap();
    let b = accounts.iter().copied().find(|&b| s.shard_of(b) == 1).unwrap();
    for round in 0..300u128 {
        let id = (1 << 90) + round;
        let racers: Vec<_> = [(a, b), (b, a)]
            .into_iter()
            .map(|(from, to)| {
                let s = Arc::clone(&s);
                std::thread::spawn(move || transfers(&s, &[transfer(id, from, to, 1, HKD)])[0].code)
            })
            .collect();
        let mut answered: Vec<u16> = racers.into_iter().map(|t| t.join().unwrap()).collect();
        answered.sort_unstable();
        assert_eq!(answered, [ResultCode::Ok.as_u16(), ResultCode::IdConflict.as_u16()], "round {round}");
        assert_eq!(lookup(&s, id).state, STATE_POSTED);
    }
    assert_eq!(balance(&s, a).0 + balance(&s, b).0, 200_000, "each id moved one unit, once");
    Arc::try_unwrap(s).ok().expect("threads done").shutdown();
}

/// Contract §3 with two shards: a later record sees an earlier one's
/// cross-shard credit, an independent record between them is answered in
/// its place, and the money adds up; the request went in several rounds.
#[test]
fn a_batch_moving_money_on_across_shards_sees_each_credit_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let on = |s| (1024u64..).filter(move |&a| harbour::shard::shard_of(a, 2) == s);
    let (a, b): (Vec<u64>, Vec<u64>) = (on(0).take(3).collect(), on(1).take(3).collect());
    let all: Vec<u64> = a.iter().chain(&b).copied().collect();
    let s = funded(dir.path(), 2, &all);
    let rounds = || {
        harbour::metrics::METRICS
            .render()
            .lines()
            .find_map(|l| l.strip_prefix("harbour_later_rounds_total ").map(|v| v.parse::<u64>().unwrap()))
            .unwrap()
    };
    let before = rounds();
    // Each hop spends what the one before sent: 150,000 is more than any
    // account's own 100,000.
    let results = transfers(
        &s,
        &[
            transfer(1, a[0], b[0], 100_000, HKD),
            transfer(2, b[0], a[1], 150_000, HKD),
            transfer(3, a[2], b[2], 1_000, HKD),
            transfer(4, a[1], b[1], 220_000, HKD),
            transfer(5, b[1], a[0], 1_000_000, HKD),
        ],
    );
    assert_eq!(
        codes(&results),
        [ResultCode::Ok, ResultCode::Ok, ResultCode::Ok, ResultCode::Ok, ResultCode::InsufficientFunds]
    );
    assert_eq!(results.iter().map(|r| r.transfer_id).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(rounds() >= before + 2, "the hops went in later rounds");
    assert_eq!(balance(&s, a[0]), (0, 0));
    assert_eq!(balance(&s, b[0]), (50_000, 0));
    assert_eq!(balance(&s, a[1]), (30_000, 0));
    assert_eq!(balance(&s, b[1]), (320_000, 0));
    s.shutdown();
}

/// Losing `META` never lets a directory replay under other settings: it
/// is restored from the shard directories' copies (and a start with other
/// settings refused as before); with the copies gone too, or disagreeing,
/// a directory that holds data is refused with the file and what to do.
#[test]
fn a_lost_meta_is_restored_from_its_copies_or_the_start_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = Switch::open_dir(dir.path(), config(2), Backend::Std).expect("opens");
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024), account(1025)])).expect("answered");
    assert_eq!(transfers(&s, &[deposit(1, 1024, 500, HKD)])[0].code, 0);
    s.shutdown();
    let meta = dir.path().join("META");
    let recorded = std::fs::read_to_string(&meta).unwrap();
    for i in 0..2 {
        assert_eq!(std::fs::read_to_string(dir.path().join(format!("shard-{i}/META"))).unwrap(), recorded);
    }

    // META deleted, then a start with another AML limit: refused.
    std::fs::remove_file(&meta).unwrap();
    let mut other = config(2);
    other.engine.aml.daily_limit_hkd_minor += 1;
    assert!(matches!(Switch::open_dir(dir.path(), other, Backend::Std), Err(OpenError::Settings { .. })));
    assert!(matches!(
        Switch::open_dir(dir.path(), config(1), Backend::Std),
        Err(OpenError::Settings { key, .. }) if key == "shards"
    ));
    // With the recorded settings it starts, and META is back.
    let s = Switch::open_dir(dir.path(), config(2), Backend::Std).expect("reopens");
    assert_eq!(transfers(&s, &[deposit(1, 1024, 500, HKD)])[0].code, ResultCode::AlreadyExists.as_u16());
    s.shutdown();
    assert_eq!(std::fs::read_to_string(&meta).unwrap(), recorded);

    // A copy that disagrees: refused, naming it.
    std::fs::write(dir.path().join("shard-1/META"), recorded.replace("shards=2", "shards=3")).unwrap();
    match Switch::open_dir(dir.path(), config(2), Backend::Std) {
        Err(OpenError::Meta(why)) => assert!(why.contains("shard-1") && why.contains("disagrees"), "{why}"),
        other => panic!("a disagreeing copy was accepted: {:?}", other.err()),
    }
    // META and every copy gone, with data in the shards: refused.
    for f in [meta.clone(), dir.path().join("shard-0/META"), dir.path().join("shard-1/META")] {
        std::fs::remove_file(f).unwrap();
    }
    match Switch::open_dir(dir.path(), config(2), Backend::Std) {
        Err(OpenError::Meta(why)) => assert!(why.contains("META is missing") && why.contains("holds data"), "{why}"),
        other => panic!("a directory with data and no META opened: {:?}", other.err()),
    }
}

/// A disk below its reserve: writes are refused with nothing applied
/// (NoSpace, BUSY on the wire), lookups are served, and writes resume by
/// themselves once space returns; a start without the reserve is refused.
#[test]
fn a_disk_below_its_reserve_refuses_writes_serves_lookups_and_recovers() {
    use harbour::wal::storage::{MemStorage, Storage};
    let disk = MemStorage::new();
    let cfg = SwitchConfig { disk_reserve_bytes: 1 << 20, ..config(1) };
    let storages: Vec<Arc<dyn Storage>> = vec![Arc::new(disk.clone())];
    let s = Switch::open(cfg, storages).expect("opens");
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024)])).expect("answered");
    assert_eq!(transfers(&s, &[deposit(1, 1024, 500, HKD)])[0].code, 0);

    disk.set_free_bytes(1000);
    std::thread::sleep(std::time::Duration::from_millis(60));
    let refused = s.submit(kind::SUBMIT_TRANSFERS, &encode_all(&[deposit(2, 1024, 700, HKD)]));
    assert_eq!(refused.err(), Some(SwitchError::NoSpace));
    let looked = s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id: 2 }, Id { id: 1 }])).expect("lookups served");
    let looked: Vec<TransferResult> = decode_all(&looked).collect();
    assert_eq!(looked[0].code, ResultCode::TransferNotFound.as_u16(), "nothing was applied");
    assert_eq!(looked[1].code, 0);

    disk.set_free_bytes(u64::MAX);
    std::thread::sleep(std::time::Duration::from_millis(60));
    assert_eq!(transfers(&s, &[deposit(2, 1024, 700, HKD)])[0].code, 0, "writes resume without a restart");
    s.shutdown();

    disk.set_free_bytes(1000);
    let storages: Vec<Arc<dyn Storage>> = vec![Arc::new(disk)];
    match Switch::open(cfg, storages) {
        Err(OpenError::NoSpace { shard: 0, free: 1000, reserve }) => assert_eq!(reserve, 1 << 20),
        other => panic!("started below the reserve: {:?}", other.err()),
    }
}

/// A disk filled past the reserve by something else, so that the next log
/// segment cannot be made: before, the next write failed and the process
/// exited; now writes are refused (BUSY, nothing applied), lookups served,
/// and writes resume by themselves once a segment can be made.
#[test]
fn a_log_segment_that_cannot_be_made_refuses_writes_until_it_can() {
    use harbour::wal::storage::{MemStorage, Storage};
    use harbour::wal::{Preallocate, WalConfig};
    let disk = MemStorage::new();
    let wal = WalConfig { segment_bytes_max: 8 << 10, preallocate: Preallocate::Inline };
    let cfg = SwitchConfig { disk_reserve_bytes: 0, wal, ..config(1) };
    let storages: Vec<Arc<dyn Storage>> = vec![Arc::new(disk.clone())];
    let s = Switch::open(cfg, storages).expect("opens");
    s.submit(kind::CREATE_ACCOUNTS, &encode_all(&[account(1024)])).expect("answered");
    disk.set_free_bytes(2000);
    let mut id = 1;
    let refused = loop {
        assert!(id < 500, "the segment filled without a refusal");
        match s.submit(kind::SUBMIT_TRANSFERS, &encode_all(&[deposit(id, 1024, 1, HKD)])) {
            Ok(_) => id += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(refused, SwitchError::NoSpace);
    let looked = s.submit(kind::LOOKUP_TRANSFERS, &encode_all(&[Id { id }, Id { id: 1 }])).expect("lookups served");
    let looked: Vec<TransferResult> = decode_all(&looked).collect();
    assert_eq!(looked[0].code, ResultCode::TransferNotFound.as_u16(), "nothing was applied");
    assert_eq!(looked[1].code, 0);

    disk.set_free_bytes(u64::MAX);
    std::thread::sleep(std::time::Duration::from_millis(150));
    assert_eq!(transfers(&s, &[deposit(id, 1024, 1, HKD)])[0].code, 0, "writes resume without a restart");
    s.shutdown();
    let storages: Vec<Arc<dyn Storage>> = vec![Arc::new(disk)];
    let s = Switch::open(cfg, storages).expect("reopens");
    assert_eq!(balance(&s, 1024).0, id as i64, "every answered deposit, after the segment made late");
    s.shutdown();
}
