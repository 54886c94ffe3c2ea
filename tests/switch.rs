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
fn a_data_directory_from_before_aml_replays_only_with_aml_off() {
    let dir = tempfile::tempdir().unwrap();
    Switch::open_dir(dir.path(), config(1), Backend::Std).expect("opens").shutdown();
    // Make its META look like the build before AML's: no aml_* keys.
    let meta = std::fs::read_to_string(dir.path().join("META")).unwrap();
    let old: String = meta.lines().filter(|l| !l.starts_with("aml_")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dir.path().join("META"), old).unwrap();
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
