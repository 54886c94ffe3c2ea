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
    // Three records of one group, then the group's end marker.
    let record_len = (full.len() - 8) / 3;
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

/// A log of one group of one record, then a group of four records of
/// 1,200-byte bodies (`bodies(i)` for record i), committed; the segment's
/// bytes and where each record starts.
fn two_groups(bodies: impl Fn(u64) -> Vec<u8>) -> (String, Vec<u8>, Vec<usize>) {
    let storage = MemStorage::new();
    let (mut wal, _, _) = open(&storage);
    wal.append(0x11, 0, &bodies(0)).unwrap();
    wal.commit().unwrap();
    for i in 1..5 {
        wal.append(0x11, i, &bodies(i)).unwrap();
    }
    wal.commit().unwrap();
    drop(wal);
    let name = segment_name(LSN_FIRST);
    let bytes = storage.contents(&name).unwrap();
    let mut starts = vec![0];
    let mut at = 0;
    while let Ok((_, end)) = read_record(&bytes, at) {
        starts.push(end);
        at = end;
    }
    starts.pop();
    assert_eq!(starts.len(), 5);
    (name, bytes, starts)
}

fn reopen(name: &str, bytes: &[u8]) -> (MemStorage, Result<Opened, WalError>) {
    let damaged = MemStorage::new();
    damaged.open(name, true).unwrap().write_at(bytes, 0).unwrap();
    let opened = open_collect(&damaged, plain());
    (damaged, opened)
}

#[test]
fn damage_inside_the_last_group_is_a_tear_when_a_sector_of_it_never_landed() {
    // The second group lost a sector inside its second record: the power
    // failed before the group's fsync returned, so none of it was
    // acknowledged, and the intact records after the hole belong to the
    // same group. Recovery cuts at the damaged record.
    let (name, bytes, starts) = two_groups(|i| vec![i as u8 + 1; 1200]);
    let mut copy = bytes.clone();
    let sector = (starts[2] / 512 + 1) * 512;
    assert!(sector + 512 < starts[3], "a whole sector inside record 2");
    copy[sector..sector + 512].fill(0);
    let (_, opened) = reopen(&name, &copy);
    let (_, report, _, records) = opened.expect("a tear is cut, not refused");
    assert_eq!(records.len(), 2, "the first group and the second group's first record");
    assert_eq!(report.torn_tail.map(|t| t.1), Some(starts[2] as u64));
    // The part of a sector from the record on reads as zeros: the sector it
    // shares with the record before never landed.
    let mut copy = bytes.clone();
    let sector_end = (starts[2] / 512 + 1) * 512;
    copy[starts[2]..sector_end].fill(0);
    let (_, opened) = reopen(&name, &copy);
    assert_eq!(opened.expect("torn").1.torn_tail.map(|t| t.1), Some(starts[2] as u64));
}

#[test]
fn damage_inside_a_last_group_whose_every_sector_landed_is_refused() {
    // A byte flipped in a record of the last group, with every sector of the
    // group written: the group was synced and may have been answered, so
    // recovery refuses rather than cut it. The same for the last record of
    // all whose body ends in zeros (its end marker shows it was written
    // whole), and for the end marker itself.
    let trailing_zeros = |i: u64| {
        let mut b = vec![i as u8 + 1; 1200];
        b[1100..].fill(0);
        b
    };
    let (name, bytes, starts) = two_groups(|i| vec![i as u8 + 1; 1200]);
    let (_, zeros, zero_starts) = two_groups(trailing_zeros);
    let cases = [
        ("a body byte of record 2", bytes.clone(), starts[2] + RECORD_HEADER_SIZE + 3, starts[2], "body checksum"),
        ("a header byte of record 3", bytes.clone(), starts[3] + 20, starts[3], "header checksum"),
        ("the last record, its body ending in zeros", zeros, zero_starts[4] + 45, zero_starts[4], "body checksum"),
        ("the end marker", bytes.clone(), bytes.len() - 6, starts[4], "end marker"),
    ];
    for (case, mut copy, flip, offset, what) in cases {
        copy[flip] ^= 0x40;
        let (damaged, opened) = reopen(&name, &copy);
        match opened {
            Err(WalError::Corrupt { file, offset: at, reason }) => {
                assert_eq!((file, at), (damaged.describe(&name), offset as u64), "{case}");
                assert!(reason.contains(what) && reason.contains("not a torn write"), "{case}: {reason}");
            }
            Err(other) => panic!("{case}: {other}"),
            Ok(_) => panic!("{case}: cut as a torn write"),
        }
        // `harbour check` says the same, changing nothing.
        let seen = inspect(&damaged).unwrap();
        assert!(seen.refused.iter().any(|r| r.contains("not a torn write")), "{case}: {:?}", seen.refused);
        assert_eq!(damaged.contents(&name).unwrap(), copy, "{case}");
    }
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
            // A commit never waits for the segment being prepared; the
            // shard rolls after its answers, here once it is ready.
            wal.try_roll(true).unwrap();
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
    let prepared =
        prepare_in_background(&shared, 64 << 10, Arc::new(AtomicBool::new(true))).join().expect("the thread ends");
    assert_eq!(prepared.map_err(|e| e.raw_os_error()), Err(Some(libc::ENOSPC)));
    assert!(!storage.list().unwrap().iter().any(|n| n == PREP_NAME), "{:?}", storage.list());
    // With room, it prepares.
    storage.set_free_bytes(u64::MAX);
    prepare_in_background(&shared, 64 << 10, Arc::new(AtomicBool::new(true)))
        .join()
        .expect("the thread ends")
        .expect("prepared");
    assert!(storage.list().unwrap().iter().any(|n| n == PREP_NAME));
}

#[test]
fn a_segment_that_cannot_be_made_fails_no_write_and_is_made_once_space_returns() {
    // A disk filled past the reserve by something else: the next segment
    // cannot be made. The log says so (the flag the switch refuses writes
    // by) and goes on in the current segment, growing it, instead of
    // failing; once space returns the next try makes the segment.
    let storage = MemStorage::new();
    let config = WalConfig { segment_bytes_max: 64 << 10, preallocate: Preallocate::Inline };
    let (mut wal, _, _, _) = open_collect(&storage, config).expect("opens");
    let short = wal.short_flag();
    // Room for the durable mark (4 KiB and a slot) the first commit
    // writes, not for a segment.
    storage.set_free_bytes(8 << 10);
    let mut lsn = 0;
    while !wal.roll_pending() {
        wal.append(0x11, lsn, &body(6)).unwrap();
        wal.commit().expect("written into the preallocated segment");
        lsn += 1;
    }
    wal.poll_roll();
    assert!(short.load(Ordering::Relaxed), "the segment could not be made");
    let segments = |s: &MemStorage| s.list().unwrap().into_iter().filter(|n| n.ends_with(".log")).count();
    assert_eq!(segments(&storage), 1, "the half-made segment was removed");
    // Groups already admitted still go in, past the segment's size.
    for _ in 0..3 {
        wal.append(0x11, lsn, &body(6)).unwrap();
        wal.commit().expect("a full disk does not fail the log");
        lsn += 1;
    }
    assert!(short.load(Ordering::Relaxed));
    storage.set_free_bytes(u64::MAX);
    std::thread::sleep(ROLL_RETRY);
    wal.poll_roll();
    assert!(!short.load(Ordering::Relaxed) && !wal.roll_pending(), "made once space returned");
    assert_eq!(segments(&storage), 2);
    wal.append(0x11, lsn, &body(6)).unwrap();
    wal.commit().unwrap();
    drop(wal);
    let (_, _, _, records) = open_collect(&storage, config).expect("reopens");
    assert_eq!(records.len() as u64, lsn + 1, "every record, in order, across both segments");
    assert!(records.iter().enumerate().all(|(i, r)| r.2 == i as u64));
}

/// The durable mark is two slots rewritten in turn, each in its own 4 KiB
/// page: one torn by a crash leaves the other (an older, still true mark),
/// and the earlier formats (a lone slot; two slots in one page) still read.
#[test]
fn a_torn_mark_slot_leaves_the_other() {
    let storage = MemStorage::new();
    let config = WalConfig { segment_bytes_max: 4096, preallocate: Preallocate::Inline };
    let (mut wal, _, _, _) = open_collect(&storage, config).expect("opens");
    for lsn in 0..3 {
        wal.append(0x11, lsn, &body(6)).unwrap();
        wal.commit().unwrap();
        wal.write_mark().unwrap();
    }
    let names = storage.list().unwrap();
    let marked = read_mark(&storage, &names).unwrap().expect("a mark");
    assert_eq!(marked, wal.next_lsn() - 1);
    let bytes = storage::read_all(&storage, MARK_NAME).unwrap();
    assert_eq!(bytes.len(), 4096 + MARK_LEN, "the second slot starts the second 4 KiB page");
    // Tear the slot written last: the other one's mark stands.
    let last = if mark_of(&bytes[..MARK_LEN]) == Some(marked) { 0 } else { 1 };
    let mut file = storage.open(MARK_NAME, false).unwrap();
    file.write_at(&[0xFF; 4], (last * MARK_SLOT) as u64).unwrap();
    let older = read_mark(&storage, &names).unwrap().expect("the other slot");
    assert!(older < marked, "{older} < {marked}");
    // Both torn: refused, not ignored.
    file.write_at(&[0xFF; 4], ((1 - last) * MARK_SLOT) as u64).unwrap();
    assert!(matches!(read_mark(&storage, &names), Err(WalError::Corrupt { .. })));
    // The first format: 12 bytes.
    file.truncate(0).unwrap();
    file.write_at(&mark_slot(7), 0).unwrap();
    assert_eq!(read_mark(&storage, &names).unwrap(), Some(7));
    // Issue 19's: two slots a sector apart, the larger mark wins.
    file.write_at(&mark_slot(9), MARK_SLOT_ONE_PAGE as u64).unwrap();
    assert_eq!(read_mark(&storage, &names).unwrap(), Some(9));
    // Any other length is no mark the switch wrote.
    file.write_at(&[0], (MARK_SLOT_ONE_PAGE + MARK_LEN) as u64).unwrap();
    assert!(matches!(read_mark(&storage, &names), Err(WalError::Corrupt { .. })));
}

/// A commit does not wait for the next segment being prepared: it goes on
/// into the current one and the roll comes after (here, `poll_roll` once
/// the preparation is done); every record reads back in order across the
/// segments, whatever the timing, and a restart marks its first commit.
#[test]
fn commits_go_on_while_the_next_segment_is_prepared() {
    let storage = MemStorage::new();
    let config = WalConfig { segment_bytes_max: 16 << 10, preallocate: Preallocate::Background };
    let (mut wal, _, _, _) = open_collect(&storage, config).expect("opens");
    let mut lsn = 0u64;
    for _ in 0..3 {
        while !wal.roll_pending() {
            wal.append(0x11, lsn, &body(200)).unwrap();
            wal.commit().unwrap();
            lsn += 1;
        }
        // A few more groups whether or not the segment is ready.
        for _ in 0..5 {
            wal.append(0x11, lsn, &body(200)).unwrap();
            wal.commit().unwrap();
            lsn += 1;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while wal.roll_pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(ROLL_RETRY);
            wal.poll_roll();
        }
        assert!(!wal.roll_pending(), "rolled once the segment was ready");
    }
    drop(wal);
    let segments = storage.list().unwrap().into_iter().filter(|n| n.ends_with(".log")).count();
    assert!(segments >= 4, "{segments} segments");
    let (mut wal, _, _, records) = open_collect(&storage, config).expect("reopens");
    assert_eq!(records.len() as u64, lsn, "every record");
    assert!(records.iter().enumerate().all(|(i, r)| r.2 == i as u64), "in order");
    // The first commit after the restart marks it.
    wal.append(0x11, lsn, &body(6)).unwrap();
    wal.commit().unwrap();
    let names = storage.list().unwrap();
    assert_eq!(read_mark(&storage, &names).unwrap(), Some(wal.next_lsn() - 1));
}
