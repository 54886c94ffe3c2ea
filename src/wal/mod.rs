//! The write-ahead log: checksummed command records in segment files, group
//! commit, snapshots, and recovery.
//!
//! The log is a clean sequence of commands: each record is one applied
//! request (a wire kind and its body, byte for byte as received) with the
//! logical time it was applied at and a log sequence number (LSN). Replaying
//! the records in LSN order into an engine rebuilt from the newest snapshot
//! reproduces the state exactly, because the engine is deterministic.
//!
//! Only this module calls `sync_data`. `append` only buffers; `commit`
//! writes every buffered record and syncs once (group commit), and a caller
//! answers a request only after the `commit` that covers it returned Ok.
//! After any write or sync error the log refuses every further write
//! (`WalError::Failed`): the page cache can no longer be trusted, and the
//! process must restart from what is on disk.
//!
//! On disk, per shard directory:
//! - `wal-<first LSN, 20 digits>.log`: segments, rolled at
//!   `segment_bytes_max`.
//! - `snap-<LSN, 20 digits>.snap`: the engine's state covering every record
//!   below that LSN. The two newest are kept; segments wholly below the
//!   older one are removed.
//!
//! Record layout (little-endian), 40-byte header then the body:
//!
//! | off | type | field |
//! |---|---|---|
//! | 0 | u32 | CRC-32C of header bytes 4..40 |
//! | 4 | u32 | CRC-32C of the body |
//! | 8 | u32 | body length |
//! | 12 | u16 | kind (wire kind, or `kind::TICK`) |
//! | 14 | u16 | flags: bit 0 `GROUP_END`, the last record of its group (the rest 0) |
//! | 16 | u64 | LSN |
//! | 24 | u64 | logical time, Unix ms |
//! | 32 | u64 | group LSN: the LSN of the first record of the group commit this record was written in |
//!
//! A record flagged `GROUP_END` is followed by an 8-byte end marker: the
//! low 32 bits of its LSN, then the magic `HKGE`. The marker ends in a
//! non-zero byte, so the written bytes of a whole group end at its end.
//!
//! Recovery tells a torn write from corruption in two ways. Group k+1 is
//! written only after group k's fsync returned, so a damaged record
//! followed anywhere by an intact record of a *later* group means
//! acknowledged data was damaged (an error). Damage in the last group is a
//! tear only if the bytes show that part of the group never reached the
//! disk ([`looks_torn`]): a sector of it reads as zeros, or the written
//! bytes stop before the damaged record (and so before the group's end
//! marker) ends. A group whose every sector landed was synced and may have
//! been answered, so damage inside it is refused, not cut.

pub mod storage;

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use storage::{Storage, StorageFile};

/// Bytes of a record header.
pub const RECORD_HEADER_SIZE: usize = 40;
/// Header flag: the last record of its group, followed by the end marker.
const GROUP_END: u16 = 1;
/// The end marker's magic.
const GROUP_END_MAGIC: &[u8; 4] = b"HKGE";
/// Bytes of the end marker after a `GROUP_END` record.
const GROUP_END_SIZE: usize = 8;
/// The unit a disk writes whole or not at all, as torn writes are judged.
const SECTOR: usize = 512;
/// Largest body of one record.
pub use crate::protocol::internal::RECORD_BODY_MAX;
/// The first LSN of a new log.
pub const LSN_FIRST: u64 = 1;

const SNAPSHOT_MAGIC: &[u8; 4] = b"HKSP";
const SNAPSHOT_HEADER_SIZE: usize = 32;
/// Snapshots kept; segments below the oldest are removed.
const SNAPSHOTS_KEPT: usize = 2;

/// Log settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalConfig {
    /// A segment is closed and a new one started once it is this large.
    pub segment_bytes_max: u64,
    /// Whether and how new segments are filled with zeros before use.
    pub preallocate: Preallocate,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self { segment_bytes_max: 64 << 20, preallocate: Preallocate::Background }
    }
}

/// Segment preallocation. Appending to a file also changes its size, which
/// every `fdatasync` must then commit through the file system's journal;
/// writing into a segment already filled with zeros (and synced) changes
/// only data, and measured here that makes each sync about 30% cheaper.
/// Recovery reads an all-zero remainder of a segment as its clean end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preallocate {
    /// Segments grow as records are appended.
    Off,
    /// The next segment is zero-filled when it is needed, on the log's
    /// thread (deterministic storage operations, for crash tests).
    Inline,
    /// The next segment is zero-filled ahead of need by a helper thread, as
    /// `wal-next.prep`, and renamed into place at the roll.
    Background,
}

/// Why the next segment was not made.
enum RollError {
    /// The disk has no room for it; nothing was left behind, and the log
    /// goes on in the current segment.
    NoSpace(WalError),
    /// Anything else: the log fails.
    Failed(WalError),
}

impl From<WalError> for RollError {
    fn from(e: WalError) -> Self {
        RollError::Failed(e)
    }
}

/// Whether an error is the disk (or the quota) being full.
fn is_out_of_space(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) || e.kind() == io::ErrorKind::StorageFull
}

/// Name of a segment being prepared in the background.
const PREP_NAME: &str = "wal-next.prep";
/// The durable mark: the LSN of a record known durable (u64, little-endian,
/// then its CRC-32C). Written after the first commit into each segment and
/// at a clean stop; a recovery that ends below it is refused (the newest
/// segment was removed or cut short), not taken for a shorter log.
const MARK_NAME: &str = "durable.mark";
/// How often a roll that failed is tried again.
const ROLL_RETRY: Duration = Duration::from_millis(50);
/// Zeros written per call while preparing a segment.
const ZERO_CHUNK: usize = 1 << 20;

/// Fills a new file with `size` zero bytes and syncs it.
fn zero_fill(file: &mut dyn StorageFile, size: u64) -> io::Result<()> {
    write_zeros(file, 0, size)?;
    file.sync_data()
}

/// Writes `len` zero bytes from `from` on.
fn write_zeros(file: &mut dyn StorageFile, from: u64, len: u64) -> io::Result<()> {
    static ZEROS: [u8; ZERO_CHUNK] = [0; ZERO_CHUNK];
    let mut at = 0u64;
    while at < len {
        let n = (len - at).min(ZERO_CHUNK as u64);
        file.write_at(&ZEROS[..n as usize], from + at)?;
        at += n;
    }
    Ok(())
}

/// Fills a new file with `size` zero bytes a chunk at a time, each synced
/// before the next and, unless the segment is already due (`hurry`),
/// followed by a pause as long as it took: the disk never holds more than a
/// chunk of the fill, so the log's own syncs beside it wait for at most
/// that (a whole 64 MiB segment written and then synced at once stalled
/// them for 25-30 ms, `docs/benchmarks.md`).
fn zero_fill_paced(file: &mut dyn StorageFile, size: u64, hurry: &AtomicBool) -> io::Result<()> {
    let mut at = 0u64;
    while at < size {
        let started = std::time::Instant::now();
        let n = (size - at).min(ZERO_CHUNK as u64);
        write_zeros(file, at, n)?;
        file.sync_data()?;
        at += n;
        if !hurry.load(Ordering::Relaxed) {
            std::thread::sleep(started.elapsed().min(Duration::from_millis(100)));
        }
    }
    Ok(())
}

/// Starts preparing the next segment on a helper thread.
fn prepare_in_background(
    storage: &Arc<dyn Storage>,
    size: u64,
    hurry: Arc<AtomicBool>,
) -> std::thread::JoinHandle<io::Result<()>> {
    let storage = Arc::clone(storage);
    std::thread::Builder::new()
        .name("wal-prepare".into())
        .spawn(move || {
            let prepared = storage.open(PREP_NAME, true).and_then(|mut file| {
                file.truncate(0)?;
                zero_fill_paced(&mut *file, size, &hurry)
            });
            if prepared.is_err() {
                // A half-filled file would only take disk space (a full
                // disk is the usual cause): the next segment starts empty.
                let _ = storage.remove(PREP_NAME);
            }
            prepared
        })
        .expect("a thread for segment preparation")
}

/// Why the log can't go on.
#[derive(Debug)]
pub enum WalError {
    /// An operation on a file failed.
    Io { op: &'static str, file: String, source: io::Error },
    /// Bytes that were acknowledged do not read back as written.
    Corrupt { file: String, offset: u64, reason: String },
    /// An earlier write or sync failed; nothing more is written.
    Failed,
}

impl std::fmt::Display for WalError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io { op, file, source } => write!(f, "{op} {file}: {source}"),
            Self::Corrupt { file, offset, reason } => write!(f, "log corrupt in {file} at offset {offset}: {reason}"),
            Self::Failed => write!(f, "the log failed earlier and refuses further writes; restart to recover"),
        }
    }
}

impl WalError {
    /// The same error, for handing to everyone it failed (an I/O error is
    /// not `Clone`: its kind and message are kept).
    #[must_use]
    pub fn clone_summary(&self) -> WalError {
        match self {
            Self::Io { op, file, source } => {
                Self::Io { op, file: file.clone(), source: io::Error::new(source.kind(), source.to_string()) }
            }
            Self::Corrupt { file, offset, reason } => {
                Self::Corrupt { file: file.clone(), offset: *offset, reason: reason.clone() }
            }
            Self::Failed => Self::Failed,
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// One record read back from the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogRecord<'a> {
    pub lsn: u64,
    /// LSN of the first record of this record's group commit.
    pub group_lsn: u64,
    pub kind: u16,
    pub time_ms: u64,
    pub body: &'a [u8],
}

/// What recovery found, for the operator's log line.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// LSN of the snapshot loaded, if any.
    pub snapshot_lsn: Option<u64>,
    /// Snapshots skipped because their checksum failed.
    pub snapshots_skipped: Vec<String>,
    /// Records replayed after the snapshot.
    pub records_replayed: u64,
    /// A torn last record that was cut off: file, offset, bytes cut (to the
    /// last non-zero byte: a preallocated segment's zeros are not counted).
    pub torn_tail: Option<(String, u64, u64)>,
    /// The next LSN the log will write.
    pub next_lsn: u64,
}

/// Counters for metrics and benches.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    pub records: u64,
    pub bytes: u64,
    pub syncs: u64,
    pub snapshots: u64,
}

/// The log of one shard, open for appending.
pub struct Wal {
    storage: Arc<dyn Storage>,
    config: WalConfig,
    file: Box<dyn StorageFile>,
    file_name: String,
    /// Where the next write goes in the current segment.
    offset: u64,
    next_lsn: u64,
    /// Encoded records not written yet.
    buffer: Vec<u8>,
    /// LSN of the first record in `buffer` (the group being formed).
    group_lsn: u64,
    /// Where the last record in `buffer` starts (flagged at commit).
    last_at: usize,
    /// The current segment is full: the next one is made off the answer
    /// path ([`Wal::poll_roll`]) or before the next write. Failing to make
    /// it never fails the log: the group goes on into the current segment
    /// (into the slack its preallocation left, then growing it).
    roll_due: bool,
    /// Set while a due roll could not be made (the disk has no room for the
    /// next segment): the switch refuses writes until it clears.
    short: Arc<AtomicBool>,
    /// When a failed roll was last tried (retried at most every
    /// `ROLL_RETRY`).
    roll_tried: Option<Instant>,
    /// Whether the next commit also writes the durable mark (the first into
    /// a new segment).
    mark_due: bool,
    /// The helper thread preparing the next segment (`Background`).
    preparing: Option<std::thread::JoinHandle<io::Result<()>>>,
    /// Set once the segment it prepares is due: it stops pausing.
    hurry: Arc<AtomicBool>,
    /// The durable mark, once this log wrote it: the file, and the slot
    /// last written.
    mark: Option<(Box<dyn StorageFile>, usize)>,
    failed: bool,
    stats: WalStats,
}

fn segment_name(first_lsn: u64) -> String {
    format!("wal-{first_lsn:020}.log")
}

fn snapshot_name(lsn: u64) -> String {
    format!("snap-{lsn:020}.snap")
}

fn parse_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    name.strip_prefix(prefix)?.strip_suffix(suffix)?.parse().ok()
}

fn io_err(storage: &dyn Storage, op: &'static str, name: &str) -> impl FnOnce(io::Error) -> WalError {
    let file = storage.describe(name);
    move |source| WalError::Io { op, file, source }
}

/// Bytes written from `at` on in a segment's `bytes`: to the last non-zero
/// byte (a preallocated segment's zeros are not data).
fn written_from(bytes: &[u8], at: usize) -> u64 {
    let written = bytes.iter().rposition(|&b| b != 0).map_or(at, |last| last + 1);
    (written.max(at) - at) as u64
}

/// Where the durable mark's second slot starts: the next 4 KiB page. The
/// page cache writes a file back in whole pages (and ext4 in whole 4 KiB
/// blocks), so two slots in one page would be rewritten together and one
/// torn write could damage both; a page apart, rewriting one slot in place
/// writes only its own page.
const MARK_SLOT: usize = 4096;
/// Where the second slot started in the format of issue 19 (a sector
/// apart, in one page): still read.
const MARK_SLOT_ONE_PAGE: usize = 512;
/// Bytes of a mark slot: the LSN and its CRC-32C (the first format was one
/// slot alone, a 12-byte file).
const MARK_LEN: usize = 12;

/// A mark slot for `lsn`.
fn mark_slot(lsn: u64) -> [u8; MARK_LEN] {
    let mut slot = [0u8; MARK_LEN];
    slot[..8].copy_from_slice(&lsn.to_le_bytes());
    let crc = crc32c::crc32c(&lsn.to_le_bytes());
    slot[8..].copy_from_slice(&crc.to_le_bytes());
    slot
}

/// The LSN of a mark slot, if it reads back whole.
fn mark_of(slot: &[u8]) -> Option<u64> {
    let good = slot.len() >= 12 && crc32c::crc32c(&slot[..8]).to_le_bytes() == slot[8..12];
    good.then(|| u64::from_le_bytes(slot[..8].try_into().expect("8 bytes")))
}

/// The durable mark, if one was written: the larger of its two slots that
/// read back whole (a crash while one is rewritten leaves the other). A
/// mark none of whose slots reads back is refused rather than ignored.
fn read_mark(storage: &dyn Storage, names: &[String]) -> Result<Option<u64>, WalError> {
    if !names.iter().any(|n| n == MARK_NAME) {
        return Ok(None);
    }
    let bytes = storage::read_all(storage, MARK_NAME).map_err(io_err(storage, "read", MARK_NAME))?;
    let marks: Vec<u64> = match bytes.len() {
        MARK_LEN => mark_of(&bytes).into_iter().collect(),
        n if n == MARK_SLOT + MARK_LEN || n == MARK_SLOT_ONE_PAGE + MARK_LEN => {
            [&bytes[..MARK_LEN], &bytes[n - MARK_LEN..]].into_iter().filter_map(mark_of).collect()
        }
        _ => Vec::new(),
    };
    match marks.into_iter().max() {
        Some(lsn) => Ok(Some(lsn)),
        None => Err(WalError::Corrupt {
            file: storage.describe(MARK_NAME),
            offset: 0,
            reason: "the durable mark does not read back".into(),
        }),
    }
}

/// Loads the newest snapshot that decodes, setting aside any that do not;
/// returns the LSN replay starts from (the first, with no snapshot).
fn load_snapshot(
    storage: &dyn Storage,
    snapshots: &[u64],
    on_snapshot: impl FnOnce(u64, &[u8]) -> Result<(), String>,
    report: &mut RecoveryReport,
) -> Result<u64, WalError> {
    let mut on_snapshot = Some(on_snapshot);
    for &lsn in snapshots.iter().rev() {
        let name = snapshot_name(lsn);
        let bytes = storage::read_all(storage, &name).map_err(io_err(storage, "read", &name))?;
        match decode_snapshot(&bytes) {
            Some((inner_lsn, state)) if inner_lsn == lsn => {
                let load = on_snapshot.take().expect("one snapshot loads");
                load(lsn, state).map_err(|reason| WalError::Corrupt {
                    file: storage.describe(&name),
                    offset: SNAPSHOT_HEADER_SIZE as u64,
                    reason,
                })?;
                report.snapshot_lsn = Some(lsn);
                return Ok(lsn);
            }
            _ => {
                // Set the damaged snapshot aside so it never counts as
                // one of the snapshots kept (which would let a good one
                // and its segments be deleted).
                let aside = format!("{name}.corrupt");
                storage.rename(&name, &aside).map_err(io_err(storage, "rename", &name))?;
                storage.sync_dir().map_err(io_err(storage, "sync dir", &aside))?;
                report.snapshots_skipped.push(storage.describe(&name));
            }
        }
    }
    Ok(LSN_FIRST)
}

/// Replays segment `segment_lsn` from `*next_lsn` on and returns where its
/// records end. A torn tail is cut, and only in the last segment.
fn replay_segment(
    storage: &dyn Storage,
    segment_lsn: u64,
    is_last: bool,
    next_lsn: &mut u64,
    on_record: &mut impl FnMut(&LogRecord<'_>) -> Result<(), String>,
    report: &mut RecoveryReport,
) -> Result<u64, WalError> {
    let name = segment_name(segment_lsn);
    let bytes = storage::read_all(storage, &name).map_err(io_err(storage, "read", &name))?;
    let corrupt = |offset: usize, reason: String| WalError::Corrupt {
        file: storage.describe(&name),
        offset: offset as u64,
        reason,
    };
    if segment_lsn > *next_lsn {
        return Err(corrupt(0, format!("segment starts at LSN {segment_lsn}, expected {}", *next_lsn)));
    }
    let mut at = 0usize;
    let mut expected_lsn = segment_lsn;
    while at < bytes.len() {
        match read_record(&bytes, at) {
            Ok((record, end)) => {
                if record.lsn != expected_lsn {
                    return Err(corrupt(at, format!("LSN {} where {expected_lsn} was due", record.lsn)));
                }
                if record.lsn >= *next_lsn {
                    on_record(&record).map_err(|reason| corrupt(at, reason))?;
                    report.records_replayed += 1;
                    *next_lsn = record.lsn + 1;
                }
                expected_lsn += 1;
                at = end;
            }
            Err(_) if bytes[at..].iter().all(|&b| b == 0) => {
                // The preallocated, never-written rest of a segment.
                break;
            }
            Err(bad) => {
                if let Some(reason) = damage(&bytes, at, bad, is_last, expected_lsn) {
                    return Err(corrupt(at, reason));
                }
                let cut = written_from(&bytes, at);
                report.torn_tail = Some((storage.describe(&name), at as u64, cut));
                // Zeroed rather than truncated: a preallocated segment keeps
                // its space, so the writes after the cut need none.
                let mut file = storage.open(&name, false).map_err(io_err(storage, "open", &name))?;
                write_zeros(&mut *file, at as u64, cut).map_err(io_err(storage, "cut", &name))?;
                file.sync_data().map_err(io_err(storage, "sync", &name))?;
                break;
            }
        }
    }
    if expected_lsn < *next_lsn {
        return Err(corrupt(at, format!("segment ends at LSN {expected_lsn}, before {}", *next_lsn)));
    }
    Ok(at as u64)
}

/// Encodes one record into `out`.
pub fn encode_record(out: &mut Vec<u8>, lsn: u64, group_lsn: u64, kind: u16, time_ms: u64, body: &[u8]) {
    assert!(body.len() <= RECORD_BODY_MAX, "record body of {} bytes", body.len());
    let start = out.len();
    out.resize(start + RECORD_HEADER_SIZE, 0);
    let h = &mut out[start..];
    h[4..8].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
    h[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[12..14].copy_from_slice(&kind.to_le_bytes());
    h[16..24].copy_from_slice(&lsn.to_le_bytes());
    h[24..32].copy_from_slice(&time_ms.to_le_bytes());
    h[32..40].copy_from_slice(&group_lsn.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[4..RECORD_HEADER_SIZE]);
    h[0..4].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(body);
}

/// Reads the record at `at`, if one is whole there and its checksums
/// (and its group end marker, if flagged) hold: the record and where the
/// next one starts. For logs that share the record format (the cluster's).
#[must_use]
pub fn decode_record(bytes: &[u8], at: usize) -> Option<(LogRecord<'_>, usize)> {
    read_record(bytes, at).ok()
}

/// Flags the record at `last_at` as its group's last and appends the end
/// marker after it (the buffer's end).
fn end_group(buffer: &mut Vec<u8>, last_at: usize) {
    let h = &mut buffer[last_at..last_at + RECORD_HEADER_SIZE];
    h[14..16].copy_from_slice(&GROUP_END.to_le_bytes());
    let header_crc = crc32c::crc32c(&h[4..RECORD_HEADER_SIZE]);
    h[0..4].copy_from_slice(&header_crc.to_le_bytes());
    let lsn = u64::from_le_bytes(h[16..24].try_into().expect("8"));
    buffer.extend_from_slice(&(lsn as u32).to_le_bytes());
    buffer.extend_from_slice(GROUP_END_MAGIC);
}

/// How a record failed to read.
#[derive(Clone, Copy, Debug)]
enum Bad {
    /// Fewer bytes than a header, or a header whose body runs past the end.
    Short,
    /// The header checksum fails.
    Header,
    /// The body checksum fails.
    Body,
    /// The group end marker after a `GROUP_END` record is not there.
    End,
}

impl Bad {
    fn what(self) -> &'static str {
        match self {
            Bad::Short => "record runs past the end of a closed segment",
            Bad::Header => "header checksum fails",
            Bad::Body => "body checksum fails",
            Bad::End => "the group's end marker is damaged",
        }
    }
}

fn read_record(bytes: &[u8], at: usize) -> Result<(LogRecord<'_>, usize), Bad> {
    let h = bytes.get(at..at + RECORD_HEADER_SIZE).ok_or(Bad::Short)?;
    let header_crc = u32::from_le_bytes(h[0..4].try_into().expect("4"));
    let flags = u16::from_le_bytes(h[14..16].try_into().expect("2"));
    if crc32c::crc32c(&h[4..]) != header_crc || flags & !GROUP_END != 0 {
        return Err(Bad::Header);
    }
    let body_crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
    let body_len = u32::from_le_bytes(h[8..12].try_into().expect("4")) as usize;
    let kind = u16::from_le_bytes(h[12..14].try_into().expect("2"));
    let lsn = u64::from_le_bytes(h[16..24].try_into().expect("8"));
    let time_ms = u64::from_le_bytes(h[24..32].try_into().expect("8"));
    let group_lsn = u64::from_le_bytes(h[32..40].try_into().expect("8"));
    let start = at + RECORD_HEADER_SIZE;
    let body = bytes.get(start..start + body_len).ok_or(Bad::Short)?;
    if crc32c::crc32c(body) != body_crc {
        return Err(Bad::Body);
    }
    let mut end = start + body_len;
    if flags & GROUP_END != 0 {
        let marker = bytes.get(end..end + GROUP_END_SIZE).ok_or(Bad::Short)?;
        if marker[..4] != (lsn as u32).to_le_bytes() || &marker[4..] != GROUP_END_MAGIC {
            return Err(Bad::End);
        }
        end += GROUP_END_SIZE;
    }
    Ok((LogRecord { lsn, group_lsn, kind, time_ms, body }, end))
}

/// A snapshot file: header (magic, LSN, body length, body CRC, header CRC)
/// then the engine's state.
fn encode_snapshot(lsn: u64, state: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; SNAPSHOT_HEADER_SIZE];
    out[0..4].copy_from_slice(SNAPSHOT_MAGIC);
    out[4..8].copy_from_slice(&1u32.to_le_bytes());
    out[8..16].copy_from_slice(&lsn.to_le_bytes());
    out[16..24].copy_from_slice(&(state.len() as u64).to_le_bytes());
    out[24..28].copy_from_slice(&crc32c::crc32c(state).to_le_bytes());
    let header_crc = crc32c::crc32c(&out[0..28]);
    out[28..32].copy_from_slice(&header_crc.to_le_bytes());
    out.extend_from_slice(state);
    out
}

fn decode_snapshot(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let h = bytes.get(..SNAPSHOT_HEADER_SIZE)?;
    let header_crc = u32::from_le_bytes(h[28..32].try_into().ok()?);
    if &h[0..4] != SNAPSHOT_MAGIC || crc32c::crc32c(&h[0..28]) != header_crc {
        return None;
    }
    let lsn = u64::from_le_bytes(h[8..16].try_into().ok()?);
    let len = usize::try_from(u64::from_le_bytes(h[16..24].try_into().ok()?)).ok()?;
    let body_crc = u32::from_le_bytes(h[24..28].try_into().ok()?);
    let body = bytes.get(SNAPSHOT_HEADER_SIZE..)?;
    (body.len() == len && crc32c::crc32c(body) == body_crc).then_some((lsn, body))
}

impl Drop for Wal {
    /// A preparation still running finishes without its pauses (its thread
    /// is not waited for).
    fn drop(&mut self) {
        self.hurry.store(true, Ordering::Relaxed);
    }
}

impl Wal {
    /// Opens a shard's log: loads the newest valid snapshot (handing its
    /// bytes and LSN to `on_snapshot`), replays every later record through
    /// `on_record` in LSN order, cuts off a torn last record, and returns the
    /// log ready to append after the last good record.
    ///
    /// A record that fails its checksum anywhere but at the very end of the
    /// last segment is corruption of acknowledged data: the open fails,
    /// naming the file and offset, and nothing is dropped.
    pub fn open(
        storage: Arc<dyn Storage>,
        config: WalConfig,
        on_snapshot: impl FnOnce(u64, &[u8]) -> Result<(), String>,
        mut on_record: impl FnMut(&LogRecord<'_>) -> Result<(), String>,
    ) -> Result<(Wal, RecoveryReport), WalError> {
        let names = storage.list().map_err(io_err(&*storage, "list", "."))?;
        let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "wal-", ".log")).collect();
        let mut snapshots: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "snap-", ".snap")).collect();
        segments.sort_unstable();
        snapshots.sort_unstable();
        for stale in names.iter().filter(|n| n.ends_with(".tmp") || n.as_str() == PREP_NAME) {
            storage.remove(stale).map_err(io_err(&*storage, "remove", stale))?;
        }

        let mut report = RecoveryReport::default();
        let mark = read_mark(&*storage, &names)?;
        let start_lsn = load_snapshot(&*storage, &snapshots, on_snapshot, &mut report)?;

        // The segment holding `start_lsn` is the last one starting at or
        // before it; every later segment must follow on without a gap.
        let first = segments.iter().rposition(|&s| s <= start_lsn);
        if first.is_none() && segments.first().is_some_and(|&s| s > start_lsn) {
            let name = segment_name(segments[0]);
            return Err(WalError::Corrupt {
                file: storage.describe(&name),
                offset: 0,
                reason: format!("log starts at LSN {} but recovery needs LSN {start_lsn}", segments[0]),
            });
        }
        let replay = first.map_or(&[][..], |i| &segments[i..]);
        let mut next_lsn = start_lsn;
        let mut last: Option<(String, u64)> = None;
        for (i, &segment_lsn) in replay.iter().enumerate() {
            let is_last = i + 1 == replay.len();
            let end = replay_segment(&*storage, segment_lsn, is_last, &mut next_lsn, &mut on_record, &mut report)?;
            last = Some((segment_name(segment_lsn), end));
        }

        if let Some(mark) = mark
            && next_lsn <= mark
        {
            return Err(WalError::Corrupt {
                file: storage.describe(MARK_NAME),
                offset: 0,
                reason: format!(
                    "the log ends at LSN {} but LSN {mark} was durable: the newest segment is missing or cut \
                     short (restore it from a backup; docs/storage.md, \"The durable mark\")",
                    next_lsn - 1
                ),
            });
        }
        // Every start marks its first commit: the newest segment is then
        // covered even when a crash came between its first records and its
        // mark, or a restart found it empty (a mark costs one small sync).
        let mark_due = true;
        let (file_name, offset) = match last {
            Some(found) => found,
            None => {
                let name = segment_name(next_lsn);
                let mut file = storage.open(&name, true).map_err(io_err(&*storage, "create", &name))?;
                if config.preallocate != Preallocate::Off {
                    // A new log's first segment is filled before it serves.
                    zero_fill(&mut *file, config.segment_bytes_max).map_err(io_err(&*storage, "preallocate", &name))?;
                }
                storage.sync_dir().map_err(io_err(&*storage, "sync dir", &name))?;
                (name, 0)
            }
        };
        let mut file = storage.open(&file_name, false).map_err(io_err(&*storage, "open", &file_name))?;
        // What was replayed may have been only in the page cache (a process
        // killed between write and fsync): make it durable before anything
        // that depends on it is answered.
        file.sync_data().map_err(io_err(&*storage, "sync", &file_name))?;
        storage.sync_dir().map_err(io_err(&*storage, "sync dir", &file_name))?;
        report.next_lsn = next_lsn;
        let wal = Wal {
            storage,
            config,
            file,
            file_name,
            offset,
            next_lsn,
            buffer: Vec::with_capacity(1 << 20),
            group_lsn: next_lsn,
            last_at: 0,
            roll_due: false,
            short: Arc::new(AtomicBool::new(false)),
            roll_tried: None,
            mark_due,
            preparing: None,
            hurry: Arc::default(),
            mark: None,
            failed: false,
            stats: WalStats::default(),
        };
        let mut wal = wal;
        wal.prepare_next(false);
        Ok((wal, report))
    }

    /// Buffers one record; returns its LSN. Nothing is durable until
    /// [`Wal::commit`].
    pub fn append(&mut self, kind: u16, time_ms: u64, body: &[u8]) -> Result<u64, WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        assert!(body.len() <= RECORD_BODY_MAX, "a body over RECORD_BODY_MAX is refused before it is logged");
        let lsn = self.next_lsn;
        if self.buffer.is_empty() {
            self.group_lsn = lsn;
        }
        // Records are numbered without gaps; a group is the run of records
        // from its first, and the buffer holds exactly that group.
        assert!(self.group_lsn <= lsn, "lsn {lsn} below its group's first, {}", self.group_lsn);
        debug_assert!(
            self.buffer.len() as u64 >= (lsn - self.group_lsn) * RECORD_HEADER_SIZE as u64,
            "the buffer holds every record of the group before {lsn}"
        );
        self.last_at = self.buffer.len();
        encode_record(&mut self.buffer, lsn, self.group_lsn, kind, time_ms, body);
        self.next_lsn += 1;
        self.stats.records += 1;
        Ok(lsn)
    }

    /// Whether records are buffered and not yet committed.
    #[must_use]
    pub fn has_uncommitted(&self) -> bool {
        !self.buffer.is_empty()
    }

    /// Writes every buffered record and syncs once. Ok means every record
    /// appended so far is durable. Any error fails the log for good.
    pub fn commit(&mut self) -> Result<(), WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        if self.buffer.is_empty() {
            return Ok(());
        }
        let result = self.write_and_sync();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn write_and_sync(&mut self) -> Result<(), WalError> {
        // Does not wait for a segment still being prepared: the group goes
        // on into the current one (its preallocated slack, then growing),
        // up to a quarter segment past its size, where the disk reserve
        // is counted on; past that it waits.
        let overshot = self.offset > self.config.segment_bytes_max + self.config.segment_bytes_max / 4;
        self.try_roll(overshot)?;
        end_group(&mut self.buffer, self.last_at);
        let storage = &*self.storage;
        let name = &self.file_name;
        self.file.write_at(&self.buffer, self.offset).map_err(io_err(storage, "write", name))?;
        self.file.sync_data().map_err(io_err(storage, "sync", name))?;
        self.offset += self.buffer.len() as u64;
        self.stats.bytes += self.buffer.len() as u64;
        self.stats.syncs += 1;
        self.buffer.clear();
        // Due until made (a snapshot may have asked for it too).
        self.roll_due |= self.offset >= self.config.segment_bytes_max;
        if self.roll_due {
            self.hurry.store(true, Ordering::Relaxed);
        }
        if std::mem::take(&mut self.mark_due) {
            self.write_mark()?;
        }
        Ok(())
    }

    /// Records that every committed record is durable (`MARK_NAME`): a
    /// recovery that finds less is refused. The first commit into each
    /// segment calls it, and a clean stop.
    pub fn write_mark(&mut self) -> Result<(), WalError> {
        // The last durable record: the one before the group being formed.
        let durable = if self.buffer.is_empty() { self.next_lsn } else { self.group_lsn };
        if self.failed || durable <= LSN_FIRST {
            return Ok(());
        }
        let storage = Arc::clone(&self.storage);
        let storage = &*storage;
        let lsn = durable - 1;
        // After the first, a mark is one slot rewritten in place and one
        // sync of a small file (the old slot still holds the last mark):
        // cheap enough for the commit that first writes into a segment.
        if let Some((file, slot)) = &mut self.mark {
            *slot ^= 1;
            file.write_at(&mark_slot(lsn), (*slot * MARK_SLOT) as u64).map_err(io_err(storage, "write", MARK_NAME))?;
            return file.sync_data().map_err(io_err(storage, "sync", MARK_NAME));
        }
        // The first: both slots in a new file, put in place durably.
        let tmp = format!("{MARK_NAME}.tmp");
        let mut file = storage.open(&tmp, true).map_err(io_err(storage, "create", &tmp))?;
        file.truncate(0).map_err(io_err(storage, "truncate", &tmp))?;
        let mut both = vec![0u8; MARK_SLOT + MARK_LEN];
        both[..MARK_LEN].copy_from_slice(&mark_slot(lsn));
        both[MARK_SLOT..].copy_from_slice(&mark_slot(lsn));
        file.write_at(&both, 0).map_err(io_err(storage, "write", &tmp))?;
        file.sync_data().map_err(io_err(storage, "sync", &tmp))?;
        drop(file);
        storage.rename(&tmp, MARK_NAME).map_err(io_err(storage, "rename", &tmp))?;
        storage.sync_dir().map_err(io_err(storage, "sync dir", MARK_NAME))?;
        let file = storage.open(MARK_NAME, false).map_err(io_err(storage, "open", MARK_NAME))?;
        self.mark = Some((file, 0));
        Ok(())
    }

    /// Makes the next segment if the current one is full and the last try
    /// is `ROLL_RETRY` old, once its background preparation finished. Call
    /// off the answer path, after a group's answers went out. Never fails
    /// the log.
    pub fn poll_roll(&mut self) {
        if let Err(e) = self.try_roll(false) {
            // The next commit reports the failed log.
            tracing::error!(error = %e, "making the next log segment failed");
        }
    }

    /// Whether the next segment could not be made (the disk has no room for
    /// it); the flag is shared with whoever admits writes.
    #[must_use]
    pub fn short_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.short)
    }

    /// Shares `flag` as the one [`Wal::short_flag`] returns (the switch
    /// makes the flags before the shards open).
    pub fn use_short_flag(&mut self, flag: Arc<AtomicBool>) {
        flag.store(self.short.load(Ordering::Relaxed), Ordering::Relaxed);
        self.short = flag;
    }

    /// Whether the current segment is full and the next not yet made.
    #[must_use]
    pub fn roll_pending(&self) -> bool {
        self.roll_due
    }

    /// Makes the next segment if one is due (see [`Wal::poll_roll`]). Only a
    /// failure that leaves the files in doubt is an error (the log then
    /// fails); no room for the segment sets the short flag instead.
    fn try_roll(&mut self, wait: bool) -> Result<(), WalError> {
        if !self.roll_due || self.failed {
            return Ok(());
        }
        let retry_early = self.roll_tried.is_some_and(|at| at.elapsed() < ROLL_RETRY);
        let preparing = self.preparing.as_ref().is_some_and(|t| !t.is_finished());
        if retry_early || (preparing && !wait) {
            return Ok(());
        }
        match self.roll() {
            Ok(()) => {
                self.roll_due = false;
                self.roll_tried = None;
                if self.short.swap(false, Ordering::Relaxed) {
                    tracing::info!(file = %self.storage.describe(&self.file_name), "the next log segment is made; taking writes again");
                }
                Ok(())
            }
            Err(RollError::NoSpace(e)) => {
                self.roll_tried = Some(Instant::now());
                if !self.short.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "no room for the next log segment; refusing writes (BUSY) until there is, serving lookups"
                    );
                }
                Ok(())
            }
            Err(RollError::Failed(e)) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Starts a new segment whose first record is the first one buffered
    /// (or, with nothing buffered, the next one appended). The segment is
    /// filled with zeros before use (unless `Preallocate::Off`), so writes
    /// into it never need space; if that cannot be done the half-made file
    /// is removed and the current segment stays.
    fn roll(&mut self) -> Result<(), RollError> {
        let first = if self.buffer.is_empty() { self.next_lsn } else { self.group_lsn };
        let name = segment_name(first);
        let storage = Arc::clone(&self.storage);
        let storage = &*storage;
        let size = self.config.segment_bytes_max;
        let prepared = self.preparing.take().map(|t| t.join().unwrap_or_else(|_| Err(io::Error::other("panicked"))));
        let file = match prepared {
            Some(Ok(())) => {
                storage.rename(PREP_NAME, &name).map_err(io_err(storage, "rename", PREP_NAME))?;
                storage.open(&name, false).map_err(io_err(storage, "open", &name))?
            }
            failed => {
                if let Some(Err(e)) = failed {
                    tracing::warn!(error = %e, file = %storage.describe(&name), "preparing the next log segment failed; making it now");
                }
                let made = storage.open(&name, true).and_then(|mut file| {
                    if self.config.preallocate != Preallocate::Off {
                        zero_fill(&mut *file, size)?;
                    }
                    Ok(file)
                });
                match made {
                    Ok(file) => file,
                    Err(e) if is_out_of_space(&e) => {
                        // The half-made file goes, durably: left behind it
                        // would read as a segment the log skipped. A
                        // background preparation starts again.
                        match storage.remove(&name) {
                            Err(r) if r.kind() != io::ErrorKind::NotFound => {
                                return Err(RollError::Failed(io_err(storage, "remove", &name)(r)));
                            }
                            _ => {}
                        }
                        storage.sync_dir().map_err(|r| RollError::Failed(io_err(storage, "sync dir", &name)(r)))?;
                        // Due already: the retry need not pause.
                        self.prepare_next(true);
                        return Err(RollError::NoSpace(io_err(storage, "make segment", &name)(e)));
                    }
                    Err(e) => return Err(RollError::Failed(io_err(storage, "make segment", &name)(e))),
                }
            }
        };
        storage.sync_dir().map_err(io_err(storage, "sync dir", &name))?;
        self.file = file;
        self.file_name = name;
        self.offset = 0;
        self.mark_due = true;
        self.prepare_next(false);
        Ok(())
    }

    /// Starts preparing the next segment in the background (`Background`
    /// only), pausing between chunks unless `hurry` (it is due already).
    fn prepare_next(&mut self, hurry: bool) {
        if self.config.preallocate == Preallocate::Background && self.preparing.is_none() {
            self.hurry = Arc::new(AtomicBool::new(hurry));
            let hurry = Arc::clone(&self.hurry);
            self.preparing = Some(prepare_in_background(&self.storage, self.config.segment_bytes_max, hurry));
        }
    }

    /// The LSN the next record gets.
    #[must_use]
    pub fn next_lsn(&self) -> u64 {
        self.next_lsn
    }

    /// Counters.
    #[must_use]
    pub fn stats(&self) -> WalStats {
        self.stats
    }

    /// Writes a snapshot of the state after every record so far, then
    /// removes snapshots beyond the newest two and the segments the older
    /// one covers. Call with nothing uncommitted. A failure here leaves the
    /// log itself healthy (snapshots are an optimisation): the caller
    /// reports it and tries again later.
    pub fn write_snapshot(&mut self, state: &[u8]) -> Result<(), WalError> {
        self.snapshot_writer()?.write(state)?;
        self.snapshot_written()
    }

    /// A writer for a snapshot of the state after every record so far,
    /// usable from another thread while the log goes on. Call with nothing
    /// uncommitted; then [`Wal::snapshot_written`] once it succeeded.
    pub fn snapshot_writer(&self) -> Result<SnapshotWriter, WalError> {
        if self.failed {
            return Err(WalError::Failed);
        }
        assert!(self.buffer.is_empty(), "snapshot taken with uncommitted records");
        Ok(SnapshotWriter { storage: Arc::clone(&self.storage), lsn: self.next_lsn })
    }

    /// After a snapshot was written: removes snapshots beyond the newest two
    /// and the segments the older one covers, and makes a fresh segment due
    /// (made once ready, so old segments can go whole later).
    pub fn snapshot_written(&mut self) -> Result<(), WalError> {
        let storage = Arc::clone(&self.storage);
        let storage = &*storage;
        self.stats.snapshots += 1;

        // A fresh segment is due, so the old ones can go as a whole once a
        // later snapshot covers them.
        if self.offset > 0 {
            self.roll_due = true;
            self.hurry.store(true, Ordering::Relaxed);
        }
        let names = storage.list().map_err(io_err(storage, "list", "."))?;
        let mut snapshots: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "snap-", ".snap")).collect();
        snapshots.sort_unstable();
        let keep_from = snapshots.len().saturating_sub(SNAPSHOTS_KEPT);
        for &old in &snapshots[..keep_from] {
            let old_name = snapshot_name(old);
            storage.remove(&old_name).map_err(io_err(storage, "remove", &old_name))?;
        }
        let oldest_kept = snapshots[keep_from];
        let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "wal-", ".log")).collect();
        segments.sort_unstable();
        for pair in segments.windows(2) {
            // Every record of pair[0] is below pair[1]'s first LSN.
            if pair[1] <= oldest_kept {
                let seg = segment_name(pair[0]);
                storage.remove(&seg).map_err(io_err(storage, "remove", &seg))?;
            }
        }
        storage.sync_dir().map_err(io_err(storage, "sync dir", "."))?;
        Ok(())
    }
}

/// Writes one snapshot file (temporary name, fsync, rename, directory
/// fsync); it touches no state of the log, so it may run on any thread.
pub struct SnapshotWriter {
    storage: Arc<dyn Storage>,
    lsn: u64,
}

impl SnapshotWriter {
    /// The LSN the snapshot covers up to (exclusive).
    #[must_use]
    pub fn lsn(&self) -> u64 {
        self.lsn
    }

    /// Writes the snapshot of `state` durably.
    pub fn write(&self, state: &[u8]) -> Result<(), WalError> {
        let storage = &*self.storage;
        let name = snapshot_name(self.lsn);
        let tmp = format!("{name}.tmp");
        let bytes = encode_snapshot(self.lsn, state);
        let mut file = storage.open(&tmp, true).map_err(io_err(storage, "create", &tmp))?;
        file.truncate(0).map_err(io_err(storage, "truncate", &tmp))?;
        file.write_at(&bytes, 0).map_err(io_err(storage, "write", &tmp))?;
        file.sync_data().map_err(io_err(storage, "sync", &tmp))?;
        drop(file);
        storage.rename(&tmp, &name).map_err(io_err(storage, "rename", &tmp))?;
        storage.sync_dir().map_err(io_err(storage, "sync dir", &name))
    }
}

/// Why damage at `at` (the record `expected_lsn` fails to read) is
/// corruption of acknowledged data, or None for a torn write that recovery
/// cuts off: a tear is possible only in the last segment, with nothing of a
/// later group intact after it, and with the bytes showing that part of the
/// group never reached the disk.
fn damage(bytes: &[u8], at: usize, bad: Bad, is_last: bool, expected_lsn: u64) -> Option<String> {
    if !is_last {
        return Some(bad.what().to_string());
    }
    if let Some(lsn) = later_group_after(bytes, at, expected_lsn) {
        return Some(format!("{}, and record {lsn} of a later group follows intact", bad.what()));
    }
    (!looks_torn(bytes, at)).then(|| {
        format!(
            "{}, but every sector of its group reached the disk: damaged after it was synced, not a torn write \
             (docs/storage.md, \"Torn or damaged\")",
            bad.what()
        )
    })
}

/// Whether the bytes at `at`, where a record of the last group fails to
/// read, show that part of the group never reached the disk. Unwritten
/// space reads as zeros (segments are preallocated with zeros or grow as
/// they are written), and a disk writes a sector whole or not at all. So a
/// tear shows as a sector of the group reading as zeros, or as the written
/// bytes stopping before the damaged record ends (its group's end marker,
/// never zero, comes after it). A group all of whose sectors landed was
/// synced: damage inside it is not a tear.
fn looks_torn(bytes: &[u8], at: usize) -> bool {
    let written_end = at + written_from(bytes, at) as usize;
    // The damaged record's extent, as far as its header can be trusted.
    let claimed_end = match bytes.get(at..at + RECORD_HEADER_SIZE) {
        Some(h) if crc32c::crc32c(&h[4..]) == u32::from_le_bytes(h[0..4].try_into().expect("4")) => {
            let body_len = u32::from_le_bytes(h[8..12].try_into().expect("4")) as usize;
            let end_marker =
                if u16::from_le_bytes(h[14..16].try_into().expect("2")) & GROUP_END != 0 { GROUP_END_SIZE } else { 0 };
            at + RECORD_HEADER_SIZE + body_len + end_marker
        }
        _ => at + RECORD_HEADER_SIZE,
    };
    if claimed_end > written_end {
        return true;
    }
    // Every sector from the one holding `at` to the last written one: the
    // part of it from `at` on all zeros means it never landed.
    let mut sector = at - at % SECTOR;
    while sector + SECTOR <= written_end {
        if bytes[sector.max(at)..sector + SECTOR].iter().all(|&b| b == 0) {
            return true;
        }
        sector += SECTOR;
    }
    false
}

/// The LSN of an intact record after offset `at` that belongs to a group
/// later than the damaged record's, if any. The damaged record's LSN is
/// `expected_lsn` (its group started at or before it); a later group starts
/// after it, so its group LSN is above `expected_lsn`. Scans every offset:
/// this runs only when recovery met damage.
fn later_group_after(bytes: &[u8], at: usize, expected_lsn: u64) -> Option<u64> {
    let mut offset = at + 1;
    while offset + RECORD_HEADER_SIZE <= bytes.len() {
        // A header is never all zeros: skip zero runs (a preallocated tail)
        // to the first place a header could start.
        let window = &bytes[offset..offset + RECORD_HEADER_SIZE];
        if window[0] == 0 && window.iter().all(|&b| b == 0) {
            match bytes[offset..].iter().position(|&b| b != 0) {
                Some(p) => offset = (offset + p).saturating_sub(RECORD_HEADER_SIZE - 1).max(offset + 1),
                None => return None,
            }
            continue;
        }
        if let Ok((r, _)) = read_record(bytes, offset)
            && r.group_lsn > expected_lsn
            && r.lsn > expected_lsn
        {
            return Some(r.lsn);
        }
        offset += 1;
    }
    None
}

#[cfg(test)]
mod tests;

/// What one segment holds, read without changing anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    pub name: String,
    /// The LSN its name says it starts at.
    pub first_lsn: u64,
    /// Its last whole record's LSN, if it has any.
    pub last_lsn: Option<u64>,
    pub records: u64,
    /// Bytes after its last whole record that are not zeros (a torn or
    /// damaged record), and where they start.
    pub damaged: Option<(u64, u64)>,
}

/// A shard's storage as `harbour check` reports it: segments, snapshots,
/// the durable mark, and what recovery would refuse or cut.
#[derive(Clone, Debug, Default)]
pub struct Inspection {
    pub segments: Vec<SegmentInfo>,
    /// Snapshot names with their LSN and whether their checksums pass.
    pub snapshots: Vec<(String, u64, bool)>,
    pub mark: Option<u64>,
    /// What recovery would refuse (the shard would not start).
    pub refused: Vec<String>,
    /// What recovery would repair on its own (a torn tail cut, a damaged
    /// snapshot set aside).
    pub repaired: Vec<String>,
}

/// Reads a shard's storage and says what recovery would find, changing
/// nothing (the operator's `harbour check`).
pub fn inspect(storage: &dyn Storage) -> Result<Inspection, WalError> {
    let names = storage.list().map_err(io_err(storage, "list", "."))?;
    let mut out = Inspection::default();
    match read_mark(storage, &names) {
        Ok(mark) => out.mark = mark,
        Err(e) => out.refused.push(e.to_string()),
    }
    let mut snapshots: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "snap-", ".snap")).collect();
    snapshots.sort_unstable();
    for lsn in snapshots {
        let name = snapshot_name(lsn);
        let bytes = storage::read_all(storage, &name).map_err(io_err(storage, "read", &name))?;
        let ok = decode_snapshot(&bytes).is_some_and(|(inner, _)| inner == lsn);
        if !ok {
            out.repaired.push(format!("{name}: checksum fails; recovery sets it aside and uses an older one"));
        }
        out.snapshots.push((name, lsn, ok));
    }
    let mut segments: Vec<u64> = names.iter().filter_map(|n| parse_name(n, "wal-", ".log")).collect();
    segments.sort_unstable();
    for (i, &first_lsn) in segments.iter().enumerate() {
        let name = segment_name(first_lsn);
        let bytes = storage::read_all(storage, &name).map_err(io_err(storage, "read", &name))?;
        let mut info = SegmentInfo { name: name.clone(), first_lsn, last_lsn: None, records: 0, damaged: None };
        let mut at = 0;
        while at < bytes.len() {
            match read_record(&bytes, at) {
                Ok((record, end)) => {
                    info.last_lsn = Some(record.lsn);
                    info.records += 1;
                    at = end;
                }
                Err(_) if bytes[at..].iter().all(|&b| b == 0) => break,
                Err(bad) => {
                    info.damaged = Some((at as u64, written_from(&bytes, at)));
                    let expected = info.last_lsn.map_or(first_lsn, |l| l + 1);
                    match damage(&bytes, at, bad, i + 1 == segments.len(), expected) {
                        None => out.repaired.push(format!(
                            "{name}: {} bytes at offset {at} do not read back; cut as a torn write",
                            written_from(&bytes, at)
                        )),
                        Some(reason) => out.refused.push(format!("{name}: damaged at offset {at}: {reason}")),
                    }
                    break;
                }
            }
        }
        out.segments.push(info);
    }
    for pair in out.segments.windows(2) {
        let expected = pair[0].last_lsn.map_or(pair[0].first_lsn, |l| l + 1);
        if pair[1].first_lsn != expected {
            out.refused
                .push(format!("{} starts at LSN {}, but LSN {expected} was due", pair[1].name, pair[1].first_lsn));
        }
    }
    let end = out.segments.iter().rev().find_map(|s| s.last_lsn);
    let covered = out.snapshots.iter().filter(|s| s.2).map(|s| s.1 - 1).max();
    let last = end.max(covered);
    if let Some(mark) = out.mark
        && last.is_none_or(|l| l < mark)
    {
        out.refused.push(format!(
            "{MARK_NAME}: LSN {mark} was durable but the log ends at {}: the newest segment is missing or cut short",
            last.map_or_else(|| "nothing".to_string(), |l| l.to_string())
        ));
    }
    Ok(out)
}
