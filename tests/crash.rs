//! Crash tests through the fault-injecting storage.
//!
//! A seeded workload runs through a shard whose storage loses power at
//! operation k, for every k the workload reaches (writes, syncs, file
//! creations, renames, removals: crashes before and after writes and syncs,
//! inside snapshots and segment rolls), and each crash leaves a seeded torn
//! tail. After recovery the state must be exactly the state after some
//! prefix of the logged requests that includes every acknowledged one (so
//! nothing acknowledged is lost and nothing unacknowledged is half applied),
//! and the audit must hold. Replay determinism is the same comparison: the
//! recovered state's hash equals the hash the live run had at that point.

mod common;

use std::sync::Arc;

use harbour::clock::Clock;
use harbour::engine::{Engine, EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::kind;
use harbour::scorer::{Gate, Scorer, encode_judged};
use harbour::shard::{Shard, SwitchConfig};
use harbour::wal::storage::{FaultPlan, MemStorage};
use harbour::wal::{Preallocate, WalConfig};

fn config() -> SwitchConfig {
    SwitchConfig {
        clock: Clock::Manual,
        // Small segments and frequent snapshots put crash points inside
        // segment rolls, snapshot writes and old-file removal.
        // Preallocation inline (not on a helper thread) keeps storage
        // operations in one deterministic order, and puts zero-filled
        // segment tails in every crash.
        wal: WalConfig { segment_bytes_max: 2048, preallocate: Preallocate::Inline },
        snapshot_in_background: false,
        snapshot_log_bytes: 1500,
        ..SwitchConfig::default()
    }
}

/// A remote scorer stand-in that decides by transfer id: every fifth asks
/// for review, every seventh is "not ready" (a budget fallback).
struct ById;

impl Scorer for ById {
    fn score(
        &mut self,
        transfers: &[harbour::protocol::records::Transfer],
        _deadline: std::time::Instant,
    ) -> Vec<Option<bool>> {
        transfers.iter().map(|t| (t.transfer_id % 7 != 0).then_some(t.transfer_id % 5 == 0)).collect()
    }
}

fn gate() -> Gate {
    Gate::new(Box::new(ById), std::time::Duration::from_secs(1))
}

/// State hashes after each logged request of the workload, from an engine
/// with no log at all; with `judged`, submissions carry the verdicts the
/// shard's gate logs with them.
fn reference(groups: &[Vec<common::Request>], judged: bool) -> Vec<[u8; 32]> {
    let engine_config = EngineConfig { manual_clock: true, ..EngineConfig::default() };
    let mut engine = Engine::new(engine_config, MANUAL_CLOCK_START_MS);
    let mut hashes = vec![engine.state_hash()];
    let mut out = Vec::new();
    let mut gate = gate();
    for (k, body) in groups.iter().flatten() {
        if harbour::protocol::kinds::is_logged(*k) {
            let verdicts = if judged && *k == kind::SUBMIT_TRANSFERS { gate.judge(&[body])[0].clone() } else { vec![] };
            if verdicts.is_empty() {
                engine.apply(*k, body, engine.now_ms(), &mut out).expect("valid request");
            } else {
                let judged = encode_judged(&verdicts, body);
                engine.apply(kind::SUBMIT_JUDGED, &judged, engine.now_ms(), &mut out).expect("valid request");
            }
            hashes.push(engine.state_hash());
        }
    }
    hashes
}

fn logged_in(group: &[common::Request]) -> usize {
    group.iter().filter(|(k, _)| harbour::protocol::kinds::is_logged(*k)).count()
}

/// Runs the workload until the storage crashes; returns how many logged
/// requests were acknowledged and how many were handed to the log.
fn run_until_crash(storage: &MemStorage, groups: &[Vec<common::Request>], judged: bool) -> (usize, usize) {
    let Ok((mut shard, _)) = Shard::open(Arc::new(storage.clone()), &config()) else {
        return (0, 0);
    };
    if judged {
        shard.set_gate(gate());
    }
    let (mut acked, mut handed) = (0, 0);
    for group in groups {
        handed += logged_in(group);
        let (replies, result) = shard.process(&common::view(group));
        if result.is_err() {
            // A group whose commit failed was not acknowledged; a snapshot
            // failure after a good commit still acknowledged the group.
            if replies.iter().all(Result::is_ok) {
                acked += logged_in(group);
            }
            return (acked, handed);
        }
        acked += logged_in(group);
    }
    (acked, handed)
}

fn crash_at_every_point(seed: u64, groups: usize, judged: bool) -> usize {
    let work = common::workload(seed, groups);
    let hashes = reference(&work, judged);
    // How many storage operations a clean run takes.
    let clean = MemStorage::new();
    let (acked, _) = run_until_crash(&clean, &work, judged);
    assert_eq!(acked + 1, hashes.len(), "a clean run acknowledges everything");
    let total_ops = clean.ops();
    for crash_at in 1..=total_ops + 1 {
        let storage =
            MemStorage::with_faults(FaultPlan { crash_at_op: Some(crash_at), fail_sync_number: None }, seed ^ crash_at);
        let (acked, handed) = run_until_crash(&storage, &work, judged);
        let disk = storage.after_crash(crash_at.wrapping_mul(0x5851_f42d));
        let (shard, report) = Shard::open(Arc::new(disk.clone()), &config())
            .unwrap_or_else(|e| panic!("seed {seed} crash at op {crash_at}: recovery failed: {e}"));
        let engine = shard.engine();
        engine.audit().unwrap_or_else(|e| panic!("seed {seed} crash at op {crash_at}: audit: {e}"));
        let hash = engine.state_hash();
        // Requests that change nothing (a refused finalize) leave equal
        // hashes for neighbouring prefixes; any of them will do.
        assert!(
            hashes[acked..=handed].contains(&hash),
            "seed {seed} crash at op {crash_at}: recovered state is not the state after {acked}..={handed} \
             requests ({report:?})"
        );

        // The recovered log takes new writes and replays them again.
        let mut shard = shard;
        let extra = vec![(
            kind::SUBMIT_TRANSFERS,
            harbour::protocol::records::encode_all(&[common::deposit(1 << 100, 1024, 1, common::HKD)]),
        )];
        let (_, result) = shard.process(&common::view(&extra));
        result.expect("recovered log writes");
        let expected = shard.engine().state_hash();
        drop(shard);
        let (again, _) = Shard::open(Arc::new(disk), &config()).expect("reopens");
        assert_eq!(again.engine().state_hash(), expected, "seed {seed} crash at op {crash_at}: second recovery");
    }
    total_ops as usize + 1
}

#[test]
fn every_crash_point_recovers_a_prefix_with_every_acknowledged_request() {
    let mut points = 0;
    let mut loans = (0, 0);
    for seed in 1..=8 {
        points += crash_at_every_point(seed, 40, false);
        // The workloads lend: disbursements and micro-loans both happen.
        let mut engine =
            Engine::new(EngineConfig { manual_clock: true, ..EngineConfig::default() }, MANUAL_CLOCK_START_MS);
        let mut out = Vec::new();
        for (k, body) in common::workload(seed, 40).iter().flatten() {
            engine.apply(*k, body, engine.now_ms(), &mut out).unwrap();
        }
        loans.0 += engine.loans().filter(|l| !l.micro).count();
        loans.1 += engine.loans().filter(|l| l.micro).count();
    }
    assert!(loans.0 >= 5 && loans.1 >= 5, "loan traffic in the crash workloads: {loans:?}");
    eprintln!("{points} crash points");
    assert!(points >= 1000, "only {points} crash points exercised");
}

#[test]
fn every_crash_point_with_logged_aml_verdicts_recovers_the_same_decisions() {
    // The scorer's verdicts are logged with their transfers; recovery has
    // no scorer and must still land on a state the live run passed through.
    let mut points = 0;
    for seed in 11..=13 {
        let work = common::workload(seed, 40);
        let judged = reference(&work, true);
        assert_ne!(judged.last(), reference(&work, false).last(), "seed {seed}: the verdicts change something");
        points += crash_at_every_point(seed, 40, true);
    }
    eprintln!("{points} crash points with verdicts");
}

#[test]
fn a_failed_fsync_stops_the_shard_and_loses_nothing_acknowledged() {
    let work = common::workload(42, 30);
    let hashes = reference(&work, false);
    let mut log_failures = 0;
    for fail_at in 4..40 {
        let storage = MemStorage::with_faults(FaultPlan { crash_at_op: None, fail_sync_number: Some(fail_at) }, 7);
        let Ok((mut shard, _)) = Shard::open(Arc::new(storage.clone()), &config()) else {
            // The failing sync was one of opening's: nothing was answered.
            continue;
        };
        let mut acked = 0;
        let mut failed = false;
        for group in &work {
            let (replies, result) = shard.process(&common::view(group));
            if failed {
                assert!(replies.iter().all(Result::is_err), "after a failed sync nothing is answered OK");
            } else if result.is_err() {
                failed = true;
                if replies.iter().all(Result::is_ok) {
                    acked += logged_in(group);
                }
            } else {
                acked += logged_in(group);
            }
        }
        // A failed snapshot sync leaves the log going; a failed log sync
        // stops it. Either way nothing acknowledged may be lost.
        log_failures += usize::from(failed);
        let (recovered, _) = Shard::open(Arc::new(storage.after_crash(fail_at)), &config()).expect("recovers");
        let hash = recovered.engine().state_hash();
        assert!(hashes[acked..].contains(&hash), "fail at sync {fail_at}: lost an acknowledged request");
    }
    assert!(log_failures >= 10, "most of these syncs are the log's ({log_failures})");
}

/// Runs a workload through a shard on real files and returns the shard's
/// state hash after every group.
fn run_on_files(dir: &std::path::Path, config: &SwitchConfig, work: &[Vec<common::Request>]) -> [u8; 32] {
    let storage = Arc::new(harbour::wal::storage::FileStorage::new(dir).unwrap());
    let (mut shard, _) = Shard::open(storage, config).unwrap();
    for group in work {
        shard.process(&common::view(group)).1.expect("commits");
    }
    shard.engine().state_hash()
}

#[test]
fn replay_reproduces_the_state_byte_for_byte() {
    let work = common::workload(7, 120);
    let expected = *reference(&work, false).last().unwrap();
    for snapshot_log_bytes in [u64::MAX, 2000] {
        let config = SwitchConfig { snapshot_log_bytes, ..config() };
        let dir = tempfile::tempdir().unwrap();
        let live = run_on_files(dir.path(), &config, &work);
        assert_eq!(live, expected, "the live shard agrees with a log-less engine");
        let storage = Arc::new(harbour::wal::storage::FileStorage::new(dir.path()).unwrap());
        let (recovered, report) = Shard::open(storage, &config).unwrap();
        assert_eq!(recovered.engine().state_hash(), live, "replay (snapshot every {snapshot_log_bytes} log bytes)");
        assert_eq!(report.snapshot_lsn.is_some(), snapshot_log_bytes == 2000, "{report:?}");
        recovered.engine().audit().unwrap();
    }
}

#[test]
fn system_clock_expiries_are_logged_and_replayed() {
    // On the system clock nothing but time moves a CLIENT hold's window to
    // its end; the shard logs a TICK when timers fire, so replay voids the
    // transfer at the same instant.
    let dir = tempfile::tempdir().unwrap();
    let mut config = SwitchConfig { clock: Clock::System, ..config() };
    config.engine.hold_windows.client_ms = 30;
    let storage = || Arc::new(harbour::wal::storage::FileStorage::new(dir.path()).unwrap());
    let (mut shard, _) = Shard::open(storage(), &config).unwrap();
    let setup = vec![
        (
            kind::CREATE_ACCOUNTS,
            harbour::protocol::records::encode_all(&[common::account(1024), common::account(1025)]),
        ),
        (kind::SUBMIT_TRANSFERS, harbour::protocol::records::encode_all(&[common::deposit(1, 1024, 500, common::HKD)])),
        (
            kind::SUBMIT_TRANSFERS,
            harbour::protocol::records::encode_all(&[harbour::protocol::records::Transfer {
                flags: harbour::protocol::records::TRANSFER_PENDING,
                ..common::transfer(2, 1024, 1025, 100, common::HKD)
            }]),
        ),
    ];
    shard.process(&common::view(&setup)).1.unwrap();
    assert_eq!(shard.engine().pending_count(), 1);
    std::thread::sleep(std::time::Duration::from_millis(60));
    // A lookup-only group: not logged itself, but the expiry it triggers is.
    let lookup = vec![(
        kind::LOOKUP_TRANSFERS,
        harbour::protocol::records::encode_all(&[harbour::protocol::records::Id { id: 2 }]),
    )];
    shard.process(&common::view(&lookup)).1.unwrap();
    assert_eq!(shard.engine().pending_count(), 0, "voided at the end of its window");
    let hash = shard.engine().state_hash();
    let ticks = shard.wal_stats().records;
    drop(shard);
    assert_eq!(ticks, 4, "three requests and one TICK");
    let (recovered, _) = Shard::open(storage(), &config).unwrap();
    assert_eq!(recovered.engine().state_hash(), hash, "replay voided it at the same instant");
}

/// A resend storm costs no log: a request of exact resends only is
/// answered ALREADY_EXISTS without a log record, a request with one new
/// transfer among them is logged, and a restart recovers the same state.
#[test]
fn exact_resends_are_answered_without_a_log_record() {
    use harbour::protocol::ResultCode;
    use harbour::protocol::records::{TransferResult, decode_all, encode_all};
    let disk = MemStorage::new();
    let (mut shard, _) = Shard::open(Arc::new(disk.clone()), &config()).expect("opens");
    let accounts: Vec<_> = (1024..1034).map(common::account).collect();
    let deposits: Vec<_> = (1024..1034).map(|a| common::deposit(u128::from(a), a, 1_000_000, common::HKD)).collect();
    let (accounts, deposits) = (encode_all(&accounts), encode_all(&deposits));
    shard.process(&[(kind::CREATE_ACCOUNTS, &accounts), (kind::SUBMIT_TRANSFERS, &deposits)]).1.expect("logged");
    let batch: Vec<_> = (0..50u64)
        .map(|i| common::transfer(5_000 + u128::from(i), 1024 + i % 10, 1024 + (i + 3) % 10, 100, common::HKD))
        .collect();
    let body = encode_all(&batch);
    shard.process(&[(kind::SUBMIT_TRANSFERS, &body)]).1.expect("logged");
    let logged = shard.wal_stats();
    for _ in 0..20 {
        let (replies, result) = shard.process(&[(kind::SUBMIT_TRANSFERS, &body)]);
        result.expect("nothing to fail");
        let answers = replies.into_iter().next().expect("one reply").expect("answered");
        assert!(decode_all::<TransferResult>(&answers).all(|r| r.code == ResultCode::AlreadyExists.as_u16()));
    }
    let after = shard.wal_stats();
    assert_eq!((after.records, after.bytes), (logged.records, logged.bytes), "resends were logged");
    // One new transfer among the resends: the request is logged whole.
    let mut mixed = batch.clone();
    mixed.push(common::transfer(9_999, 1024, 1025, 7, common::HKD));
    shard.process(&[(kind::SUBMIT_TRANSFERS, &encode_all(&mixed))]).1.expect("logged");
    assert_eq!(shard.wal_stats().records, after.records + 1);
    let state = shard.engine().state_hash();
    drop(shard);
    let (again, _) = Shard::open(Arc::new(disk), &config()).expect("recovers");
    assert_eq!(again.engine().state_hash(), state, "recovery gives the same state");
}

/// The newest segment removed or emptied after the switch wrote to it is
/// refused at start, with the file and the reason, instead of starting
/// without what it answered: after a clean stop (the stop writes the
/// durable mark) and after a crash (the first commit into each segment
/// wrote it).
#[test]
fn a_missing_or_emptied_newest_segment_is_refused() {
    use harbour::protocol::records::encode_all;
    use harbour::wal::storage::Storage;
    let newest = |disk: &MemStorage| {
        let mut segments: Vec<String> =
            disk.list().unwrap().into_iter().filter(|n| n.starts_with("wal-") && n.ends_with(".log")).collect();
        segments.sort();
        segments.pop().expect("a segment")
    };
    for clean_stop in [true, false] {
        for emptied in [false, true] {
            let disk = MemStorage::new();
            let (mut shard, _) = Shard::open(Arc::new(disk.clone()), &config()).expect("opens");
            let accounts = encode_all(&(1024..1034).map(common::account).collect::<Vec<_>>());
            shard.process(&[(kind::CREATE_ACCOUNTS, &accounts)]).1.expect("logged");
            for i in 0..40u64 {
                let deposit = encode_all(&[common::deposit(u128::from(i) + 1, 1024 + i % 10, 100, common::HKD)]);
                shard.process(&[(kind::SUBMIT_TRANSFERS, &deposit)]).1.expect("logged");
            }
            if clean_stop {
                drop(shard);
            } else {
                // A crash: no stop, nothing more written.
                std::mem::forget(shard);
            }
            let name = newest(&disk);
            assert!(name != "wal-00000000000000000001.log", "the log rolled over segments");
            if emptied {
                disk.open(&name, false).unwrap().truncate(0).unwrap();
            } else {
                disk.remove(&name).unwrap();
            }
            let why = match Shard::open(Arc::new(disk.clone()), &config()) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("started without {name} (clean stop {clean_stop}, emptied {emptied})"),
            };
            assert!(why.contains("durable.mark") && why.contains("missing or cut short"), "{why}");
        }
    }
}

/// After a clean stop, a flipped byte in the last record is corruption of
/// answered data, not a torn write: the stop's durable mark covers it, so
/// the start is refused instead of cutting the record.
#[test]
fn a_flipped_byte_in_a_clean_stops_last_record_is_refused() {
    use harbour::protocol::records::encode_all;
    use harbour::wal::storage::Storage;
    let disk = MemStorage::new();
    let (mut shard, _) = Shard::open(Arc::new(disk.clone()), &config()).expect("opens");
    let accounts = encode_all(&(1024..1030).map(common::account).collect::<Vec<_>>());
    shard.process(&[(kind::CREATE_ACCOUNTS, &accounts)]).1.expect("logged");
    let deposit = encode_all(&[common::deposit(1, 1024, 100, common::HKD)]);
    shard.process(&[(kind::SUBMIT_TRANSFERS, &deposit)]).1.expect("logged");
    drop(shard);
    let mut segments: Vec<String> = disk.list().unwrap().into_iter().filter(|n| n.ends_with(".log")).collect();
    segments.sort();
    let newest = segments.pop().expect("a segment");
    let bytes = disk.contents(&newest).expect("its bytes");
    let last = bytes.iter().rposition(|&b| b != 0).expect("a record");
    disk.open(&newest, false).unwrap().write_at(&[bytes[last] ^ 0x5A], last as u64).unwrap();
    let why = Shard::open(Arc::new(disk), &config()).err().expect("refused").to_string();
    // Its group's sectors all landed (a damaged record, not a tear), and the
    // mark would refuse it anyway.
    assert!(why.contains("not a torn write") || why.contains("missing or cut short"), "{why}");
}

/// The same after a power loss, where no mark covers the last group: every
/// sector of the group reached the disk (its end marker too), so it was
/// synced and may have been answered; a flipped byte in it is refused, not
/// cut as a torn write (issue 15).
#[test]
fn a_flipped_byte_in_the_last_group_after_a_crash_is_refused() {
    use harbour::protocol::records::encode_all;
    use harbour::wal::storage::Storage;
    let disk = MemStorage::new();
    let (mut shard, _) = Shard::open(Arc::new(disk.clone()), &config()).expect("opens");
    let accounts = encode_all(&(1024..1030).map(common::account).collect::<Vec<_>>());
    shard.process(&[(kind::CREATE_ACCOUNTS, &accounts)]).1.expect("logged");
    let deposits = encode_all(
        &(0..4u64).map(|i| common::deposit(1 + u128::from(i), 1024 + i, 100, common::HKD)).collect::<Vec<_>>(),
    );
    shard.process(&[(kind::SUBMIT_TRANSFERS, &deposits)]).1.expect("logged");
    // The power fails with everything synced: no clean stop.
    let answered = shard.engine().state_hash();
    let crashed = disk.after_crash(7);
    drop(shard);
    let mut segments: Vec<String> = crashed.list().unwrap().into_iter().filter(|n| n.ends_with(".log")).collect();
    segments.sort();
    let newest = segments.pop().expect("a segment");
    let bytes = crashed.contents(&newest).expect("its bytes");
    let end = bytes.iter().rposition(|&b| b != 0).expect("a record") + 1;
    // A byte of the last request's body, and a byte of the end marker.
    for at in [end - 8 - 30, end - 3] {
        let damaged = crashed.after_crash(0);
        damaged.open(&newest, false).unwrap().write_at(&[bytes[at] ^ 0x5A], at as u64).unwrap();
        let why = Shard::open(Arc::new(damaged), &config()).err().expect("refused").to_string();
        assert!(why.contains("not a torn write"), "byte {at}: {why}");
    }
    // Without the flip the crash recovers everything it answered.
    let (shard, _) = Shard::open(Arc::new(crashed), &config()).expect("recovers");
    assert_eq!(shard.engine().state_hash(), answered);
}
