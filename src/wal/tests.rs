//! The log on the fault-injecting storage: round trips, torn tails,
//! corruption, failed syncs, snapshots and segment removal.

use std::sync::Arc;

use super::storage::{FaultPlan, MemStorage, Storage};
use super::*;

/// A record as replay saw it: LSN, kind, time, body.
type Seen = (u64, u16, u64, Vec<u8>);
/// The log, its report, the snapshot it loaded and the records it replayed.
type Opened = (Wal, RecoveryReport, Option<(u64, Vec<u8>)>, Vec<Seen>);

fn open_collect(storage: &MemStorage, config: WalConfig) -> Result<Opened, WalError> {
    let mut snapshot = None;
    let mut records = Vec::new();
    let (wal, report) = Wal::open(
        Arc::new(storage.clone()),
        config,
        |lsn, bytes| {
            snapshot = Some((lsn, bytes.to_vec()));
            Ok(())
        },
        |r| {
            records.push((r.lsn, r.kind, r.time_ms, r.body.to_vec()));
            Ok(())
        },
    )?;
    Ok((wal, report, snapshot, records))
}

/// Segments that grow as written: storage operations happen only on the
/// test's thread, so fault points are deterministic.
fn plain() -> WalConfig {
    WalConfig { preallocate: Preallocate::Off, ..WalConfig::default() }
}

fn open(storage: &MemStorage) -> (Wal, RecoveryReport, Vec<Seen>) {
    let (wal, report, _, records) = open_collect(storage, plain()).expect("opens");
    (wal, report, records)
}

fn body(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; (i % 7 * 16) as usize]
}

#[test]
fn committed_records_come_back_in_order() {
    let storage = MemStorage::new();
    let (mut wal, report, records) = open(&storage);
    assert!(records.is_empty());
    assert_eq!(report.next_lsn, LSN_FIRST);
    for i in 0..10 {
        assert_eq!(wal.append(0x11, 1000 + i, &body(i)).expect("append"), LSN_FIRST + i);
        if i % 3 == 2 {
            wal.commit().expect("commit");
        }
    }
    wal.commit().expect("commit");
    assert_eq!(wal.stats().syncs, 4, "one sync per group");
    drop(wal);
    let (wal, report, records) = open(&storage);
    assert_eq!(records.len(), 10);
    for (i, (lsn, kind, time, b)) in records.iter().enumerate() {
        let i = i as u64;
        assert_eq!((*lsn, *kind, *time, b.clone()), (LSN_FIRST + i, 0x11, 1000 + i, body(i)));
    }
    assert_eq!((report.torn_tail, wal.next_lsn()), (None, LSN_FIRST + 10));
}

#[test]
fn a_torn_last_record_is_cut_off_and_reported() {
    let storage = MemStorage::new();
    let (mut wal, _, _) = open(&storage);
    for i in 0..3 {
        wal.append(0x11, i, &body(5)).expect("append");
    }
    wal.commit().expect("commit");
    drop(wal);
    let name = segment_name(LSN_FIRST);
    let full = storage.contents(&name).expect("segment");
    let record_len = full.len() / 3;
    // Every cut inside the third record is a torn write of it.
    for cut in [1, RECORD_HEADER_SIZE - 1, RECORD_HEADER_SIZE, record_len - 1] {
        let torn = MemStorage::new();
        torn.open(&name, true).unwrap().write_at(&full[..2 * record_len + cut], 0).unwrap();
        let (mut wal, report, records) = open(&torn);
        assert_eq!(records.len(), 2, "cut {cut}");
        let (file, offset, bytes) = report.torn_tail.expect("reported");
        // Written bytes up to the last non-zero one: zeros after it cannot
        // be told from a preallocated segment's.
        let written = full[2 * record_len..2 * record_len + cut].iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
        assert_eq!((file, offset, bytes), (torn.describe(&name), 2 * record_len as u64, written as u64));
        // The log goes on after the cut.
        wal.append(0x11, 9, b"after").unwrap();
        wal.commit().unwrap();
        drop(wal);
        let (_, report, records) = open(&torn);
        assert_eq!((records.len(), records[2].3.as_slice(), report.torn_tail), (3, &b"after"[..], None));
    }
    // Zeros where a record should be (an extended file never written, or a
    // preallocated tail) are the log's clean end: nothing to cut, and the
    // next record is written over them.
    let zeros = MemStorage::new();
    let mut bytes = full[..2 * record_len].to_vec();
    bytes.extend_from_slice(&[0; 100]);
    zeros.open(&name, true).unwrap().write_at(&bytes, 0).unwrap();
    let (mut wal, report, records) = open(&zeros);
    assert_eq!((records.len(), report.torn_tail), (2, None));
    wal.append(0x11, 9, b"over the zeros").unwrap();
    wal.commit().unwrap();
    drop(wal);
    let (_, _, records) = open(&zeros);
    assert_eq!(records.last().map(|r| r.3.clone()), Some(b"over the zeros".to_vec()));
}

#[test]
fn corruption_before_the_tail_stops_recovery_naming_file_and_offset() {
    let storage = MemStorage::new();
    let (mut wal, _, _) = open(&storage);
    // One group commit per record: damage is followed by later groups.
    for i in 0..4 {
        wal.append(0x11, i, &body(3)).expect("append");
        wal.commit().expect("commit");
    }
    drop(wal);
    let name = segment_name(LSN_FIRST);
    let record_len = storage.contents(&name).unwrap().len() / 4;
    let cases = [
        ("body byte of record 2", record_len + RECORD_HEADER_SIZE + 1, record_len, "body checksum"),
        ("header byte of record 2", record_len + 9, record_len, "header checksum"),
        ("header of record 3, zeroed sector", 2 * record_len + 3, 2 * record_len, "header checksum"),
    ];
    for (name_case, flip, offset, reason) in cases {
        let damaged = MemStorage::new();
        let bytes = storage.contents(&name).unwrap();
        damaged.open(&name, true).unwrap().write_at(&bytes, 0).unwrap();
        damaged.corrupt(&name, flip);
        match open_collect(&damaged, plain()) {
            Err(WalError::Corrupt { file, offset: at, reason: why }) => {
                assert_eq!((file, at), (damaged.describe(&name), offset as u64), "{name_case}");
                assert!(why.contains(reason) && why.contains("later group"), "{name_case}: {why}");
            }
            Err(other) => panic!("{name_case}: {other}"),
            Ok(_) => panic!("{name_case}: corruption accepted"),
        }
    }
}

#[test]
fn a_failed_sync_fails_the_log_for_good() {
    // Opening syncs three times (the new segment's directory entry, then the
    // segment and the directory again); the fourth sync is the commit's.
    let storage = MemStorage::with_faults(FaultPlan { fail_sync_number: Some(4), crash_at_op: None }, 1);
    let (mut wal, _, _) = open(&storage);
    wal.append(0x11, 1, b"x").unwrap();
    assert!(matches!(wal.commit(), Err(WalError::Io { op: "sync", .. })));
    assert!(matches!(wal.append(0x11, 2, b"y"), Err(WalError::Failed)));
    assert!(matches!(wal.commit(), Err(WalError::Failed)));
    assert!(matches!(wal.write_snapshot(b"state"), Err(WalError::Failed)));
}

#[test]
fn snapshots_cover_old_segments_which_are_removed() {
    let storage = MemStorage::new();
    let config = WalConfig { segment_bytes_max: 200, preallocate: Preallocate::Off };
    let (mut wal, _, _, _) = open_collect(&storage, config).unwrap();
    let mut lsn_at_snapshot = Vec::new();
    for i in 0..30u64 {
        wal.append(0x11, i, &[i as u8; 40]).unwrap();
        wal.commit().unwrap();
        if i % 10 == 9 {
            lsn_at_snapshot.push(wal.next_lsn());
            wal.write_snapshot(format!("state {i}").as_bytes()).unwrap();
        }
    }
    wal.append(0x11, 99, b"tail").unwrap();
    wal.commit().unwrap();
    drop(wal);
    let names = storage.list().unwrap();
    let snaps: Vec<_> = names.iter().filter(|n| n.ends_with(".snap")).collect();
    assert_eq!(snaps.len(), 2, "{names:?}");
    let oldest_kept = lsn_at_snapshot[1];
    for n in names.iter().filter(|n| n.ends_with(".log")) {
        assert!(parse_name(n, "wal-", ".log").unwrap() >= oldest_kept, "{n} should be gone");
    }
    let (_, report, snapshot, records) = open_collect(&storage, config).unwrap();
    assert_eq!(snapshot, Some((lsn_at_snapshot[2], b"state 29".to_vec())));
    assert_eq!(report.snapshot_lsn, Some(lsn_at_snapshot[2]));
    assert_eq!(records.iter().map(|r| r.3.clone()).collect::<Vec<_>>(), vec![b"tail".to_vec()]);

    // A damaged newest snapshot falls back to the older one and the log
    // since it.
    storage.corrupt(&snapshot_name(lsn_at_snapshot[2]), 35);
    let (_, report, snapshot, records) = open_collect(&storage, config).unwrap();
    assert_eq!(snapshot.map(|s| s.1), Some(b"state 19".to_vec()));
    assert_eq!(report.snapshots_skipped.len(), 1);
    assert_eq!(records.len(), 11, "ten records after the older snapshot plus the tail");
}

#[test]
fn a_missing_segment_is_a_gap_not_silence() {
    let storage = MemStorage::new();
    let config = WalConfig { segment_bytes_max: 100, preallocate: Preallocate::Off };
    let (mut wal, _, _, _) = open_collect(&storage, config).unwrap();
    for i in 0..6u64 {
        wal.append(0x11, i, &[0; 80]).unwrap();
        wal.commit().unwrap();
    }
    drop(wal);
    storage.remove(&segment_name(LSN_FIRST + 2)).unwrap();
    assert!(matches!(open_collect(&storage, config), Err(WalError::Corrupt { .. })));
    storage.remove(&segment_name(LSN_FIRST)).unwrap();
    assert!(matches!(open_collect(&storage, config), Err(WalError::Corrupt { .. })), "log starting late");
}

#[test]
fn damage_inside_the_last_group_is_a_tear_even_with_records_after_it() {
    // A group of four records written by one commit, whose second record
    // lost a sector: the power failed before the group's fsync returned, so
    // none of it was acknowledged, and the intact records after the hole
    // belong to the same group. Recovery cuts at the hole.
    let storage = MemStorage::new();
    let (mut wal, _, _) = open(&storage);
    wal.append(0x11, 0, &body(3)).unwrap();
    wal.commit().unwrap();
    for i in 1..5 {
        wal.append(0x11, i, &body(3)).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let name = segment_name(LSN_FIRST);
    let bytes = storage.contents(&name).unwrap();
    let record_len = bytes.len() / 5;
    let damaged = MemStorage::new();
    let mut copy = bytes.clone();
    copy[2 * record_len..2 * record_len + 8].fill(0);
    damaged.open(&name, true).unwrap().write_at(&copy, 0).unwrap();
    let (_, report, records) = open(&damaged);
    assert_eq!(records.len(), 2, "the first group and the group's first record");
    assert_eq!(report.torn_tail.map(|t| t.1), Some(2 * record_len as u64));
}

#[test]
fn preallocated_segments_end_cleanly_at_their_zeros() {
    for preallocate in [Preallocate::Inline, Preallocate::Background] {
        let storage = MemStorage::new();
        let config = WalConfig { segment_bytes_max: 300, preallocate };
        let (mut wal, _, _, _) = open_collect(&storage, config).unwrap();
        for i in 0..20u64 {
            wal.append(0x11, i, &[i as u8; 50]).unwrap();
            wal.commit().unwrap();
        }
        drop(wal);
        let names = storage.list().unwrap();
        let segments: Vec<_> = names.iter().filter(|n| n.ends_with(".log")).collect();
        assert!(segments.len() > 3, "{names:?}");
        // Every rolled segment was zero-filled to its full size first.
        for name in &segments[1..] {
            assert!(storage.contents(name).unwrap().len() >= 300, "{name} preallocated");
        }
        let (mut wal, report, _, records) = open_collect(&storage, config).unwrap();
        assert_eq!((records.len(), report.torn_tail), (20, None), "{preallocate:?}: zeros are a clean end");
        wal.append(0x11, 99, b"more").unwrap();
        wal.commit().unwrap();
        drop(wal);
        let (_, _, _, records) = open_collect(&storage, config).unwrap();
        assert_eq!(records.last().map(|r| r.3.clone()), Some(b"more".to_vec()), "{preallocate:?}");
    }
}

/// A background preparation of the next segment that meets a full disk
/// leaves no half-filled file behind (it would only take space).
#[test]
fn a_failed_segment_preparation_leaves_no_file() {
    let storage = MemStorage::new();
    storage.set_free_bytes(1000);
    let shared: Arc<dyn Storage> = Arc::new(storage.clone());
    let prepared = prepare_in_background(&shared, 64 << 10).join().expect("the thread ends");
    assert_eq!(prepared.map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)));
    assert!(!storage.list().unwrap().iter().any(|n| n == PREP_NAME), "{:?}", storage.list());
    // With room, it prepares.
    storage.set_free_bytes(u64::MAX);
    prepare_in_background(&shared, 64 << 10).join().expect("the thread ends").expect("prepared");
    assert!(storage.list().unwrap().iter().any(|n| n == PREP_NAME));
}
