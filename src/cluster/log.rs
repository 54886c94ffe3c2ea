//! The cluster's raft log on a node's storage: openraft's
//! `RaftLogStorage` over the same record format as the shards' logs
//! (`wal::encode_record`, CRC-32C per header and body).
//!
//! One append-only file, `raft.log`, holds every change as a record:
//! entries, truncations, purges, votes and the committed id. Opening folds
//! them in order. Entries not purged are also kept in memory, so a
//! replication stream reads an entry the moment `append` has taken it,
//! before it is durable (openraft's contract).
//!
//! Writes go through one writer thread in the order they were made. The
//! writer takes everything queued, writes it and syncs once (group
//! commit), then reports each write durable in order. `append` returns as
//! soon as its write is queued and reports durability through openraft's
//! `IOFlushed`. So the leader replicates while its own fsync runs, and its
//! fsync and the followers' overlap. Votes, truncations, purges and the
//! committed id wait for their sync before they return. After a failed
//! write or sync every later write fails (as `wal` does): the page cache
//! can no longer be trusted.
//!
//! When purged entries make up most of the file, the live ones are
//! rewritten into a new file that replaces it (temporary file, fsync,
//! rename, directory fsync).

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::mpsc;

use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{EntryPayload, LogState, RaftLogReader};

use super::{Entry, LogId, Proposal, TypeConfig};
use crate::wal::storage::{Storage, StorageFile};

type Vote = openraft::alias::VoteOf<TypeConfig>;

const FILE: &str = "raft.log";
const REWRITE: &str = "raft.log.tmp";

/// Record kinds of `raft.log` (its own, not the engine's).
const ENTRY: u16 = 1;
/// Body: u64 LE, the first index removed.
const TRUNCATE: u16 = 2;
/// Body: JSON of the last purged log id.
const PURGE: u16 = 3;
/// Body: JSON of the vote.
const VOTE: u16 = 4;
/// Body: JSON of the committed log id (or null).
const COMMITTED: u16 = 5;

/// Largest encoded entry: one record of the log (`RECORD_BODY_MAX`). A
/// bigger one is refused with an error, never asserted on.
pub const ENTRY_BYTES_MAX: usize = crate::wal::RECORD_BODY_MAX;

/// A purge considers a rewrite once the file is this large, and makes one
/// when the live records would take less than half of it.
const REWRITE_FROM: u64 = 64 << 20;

/// An entry's record body: tag 0, then the whole entry as JSON (blank and
/// membership entries, rare); or tag 1, then the log id as JSON (u32
/// length first), the shard (u16), the time (u64) and the records.
pub(super) fn encode_entry(entry: &Entry, out: &mut Vec<u8>) -> io::Result<()> {
    match &entry.payload {
        EntryPayload::Normal(p) => {
            let id = serde_json::to_vec(&entry.log_id).map_err(io::Error::other)?;
            out.push(1);
            out.extend_from_slice(&(id.len() as u32).to_le_bytes());
            out.extend_from_slice(&id);
            out.extend_from_slice(&p.shard.to_le_bytes());
            out.extend_from_slice(&p.time_ms.to_le_bytes());
            out.extend_from_slice(&p.records);
        }
        _ => {
            out.push(0);
            serde_json::to_writer(&mut *out, entry).map_err(io::Error::other)?;
        }
    }
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("raft log: {what}"))
}

pub(super) fn decode_entry(body: &[u8]) -> io::Result<Entry> {
    match body.first() {
        Some(0) => serde_json::from_slice(&body[1..]).map_err(|e| invalid(&e.to_string())),
        Some(1) => {
            let len = u32::from_le_bytes(body.get(1..5).ok_or_else(|| invalid("short entry"))?.try_into().expect("4"));
            let id_end = 5 + len as usize;
            let log_id: LogId = serde_json::from_slice(body.get(5..id_end).ok_or_else(|| invalid("short log id"))?)
                .map_err(|e| invalid(&e.to_string()))?;
            let rest = body.get(id_end..).filter(|r| r.len() >= 10).ok_or_else(|| invalid("short proposal"))?;
            let proposal = Proposal {
                shard: u16::from_le_bytes(rest[0..2].try_into().expect("2")),
                time_ms: u64::from_le_bytes(rest[2..10].try_into().expect("8")),
                records: rest[10..].to_vec(),
            };
            Ok(Entry::new(log_id, EntryPayload::Normal(proposal)))
        }
        _ => Err(invalid("unknown entry tag")),
    }
}

/// What the log holds, folded from its records.
#[derive(Default)]
struct State {
    entries: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    /// Bytes of the file (for rewrites).
    file_bytes: u64,
    /// Records written so far (each record's sequence number).
    records: u64,
    /// The latest time any entry held here carries (or carried: a
    /// truncation or purge does not lower it), so a new leader never logs
    /// an earlier one.
    last_time_ms: u64,
}

impl State {
    fn fold(&mut self, kind: u16, body: &[u8]) -> io::Result<()> {
        match kind {
            ENTRY => {
                let entry = decode_entry(body)?;
                self.note_time(&entry);
                self.entries.insert(entry.index(), entry);
            }
            TRUNCATE => {
                let from = u64::from_le_bytes(body.try_into().map_err(|_| invalid("truncate body"))?);
                self.entries.split_off(&from);
            }
            PURGE => {
                let id: LogId = serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?;
                self.entries = self.entries.split_off(&(id.index() + 1));
                self.purged = Some(id);
            }
            VOTE => self.vote = Some(serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?),
            COMMITTED => self.committed = serde_json::from_slice(body).map_err(|e| invalid(&e.to_string()))?,
            _ => return Err(invalid("unknown record kind")),
        }
        Ok(())
    }

    fn note_time(&mut self, entry: &Entry) {
        if let EntryPayload::Normal(p) = &entry.payload {
            self.last_time_ms = self.last_time_ms.max(p.time_ms);
        }
    }

    /// Encodes one record (and counts it).
    fn record(&mut self, out: &mut Vec<u8>, kind: u16, body: &[u8]) {
        self.records += 1;
        let before = out.len();
        crate::wal::encode_record(out, self.records, self.records, kind, 0, body);
        self.file_bytes += (out.len() - before) as u64;
    }

    /// Every record the state needs, as a new file would hold them, with
    /// how many there are.
    fn encode_live(&self) -> io::Result<(Vec<u8>, u64)> {
        let mut out = Vec::new();
        let mut n = 0;
        let mut push = |out: &mut Vec<u8>, kind: u16, body: &[u8]| {
            n += 1;
            crate::wal::encode_record(out, n, n, kind, 0, body);
        };
        if let Some(purged) = &self.purged {
            push(&mut out, PURGE, &serde_json::to_vec(purged).map_err(io::Error::other)?);
        }
        if let Some(vote) = &self.vote {
            push(&mut out, VOTE, &serde_json::to_vec(vote).map_err(io::Error::other)?);
        }
        push(&mut out, COMMITTED, &serde_json::to_vec(&self.committed).map_err(io::Error::other)?);
        let mut body = Vec::new();
        for entry in self.entries.values() {
            body.clear();
            encode_entry(entry, &mut body)?;
            push(&mut out, ENTRY, &body);
        }
        Ok((out, n))
    }
}

/// Who waits for a write to be durable.
enum Done {
    Flushed(IOFlushed<TypeConfig>),
    Waiting(tokio::sync::oneshot::Sender<io::Result<()>>),
}

impl Done {
    fn send(self, result: io::Result<()>) {
        match self {
            Done::Flushed(callback) => callback.io_completed(result),
            Done::Waiting(tx) => drop(tx.send(result)),
        }
    }
}

enum Job {
    /// Bytes to append to the file.
    Append(Vec<u8>, Done),
    /// A whole new file to replace it with.
    Rewrite(Vec<u8>, Done),
}

/// The writer thread: appends and syncs in the order jobs came, many at a
/// time.
fn write_loop(storage: Arc<dyn Storage>, mut offset: u64, jobs: mpsc::Receiver<Job>) {
    // Opened on this thread: a file handle may belong to its thread (an
    // io_uring ring is per thread).
    let (mut file, mut failed): (Box<dyn StorageFile>, Option<String>) = match storage.open(FILE, false) {
        Ok(file) => (file, None),
        Err(e) => (Box::new(Gone), Some(e.to_string())),
    };
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(more) = jobs.try_recv() {
            batch.push(more);
        }
        let mut pending: Vec<Done> = Vec::new();
        let mut bytes = Vec::new();
        for job in batch {
            match job {
                Job::Append(b, done) => {
                    bytes.extend_from_slice(&b);
                    pending.push(done);
                }
                Job::Rewrite(b, done) => {
                    // What was queued before the rewrite goes first.
                    let result = flush(&mut *file, &mut offset, &bytes, &mut failed);
                    pending.drain(..).for_each(|d| d.send(clone_result(&result)));
                    bytes.clear();
                    let result = failed.clone().map_or_else(|| replace(&*storage, &mut file, &mut offset, &b), fail);
                    if let Err(e) = &result {
                        failed.get_or_insert_with(|| e.to_string());
                    }
                    done.send(result);
                }
            }
        }
        let result = flush(&mut *file, &mut offset, &bytes, &mut failed);
        pending.into_iter().for_each(|d| d.send(clone_result(&result)));
    }
}

/// Stands in for a file that did not open (every write fails before it).
struct Gone;

impl StorageFile for Gone {
    fn len(&self) -> io::Result<u64> {
        Err(io::Error::other("raft log not open"))
    }
    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("raft log not open"))
    }
    fn write_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("raft log not open"))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Err(io::Error::other("raft log not open"))
    }
    fn truncate(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("raft log not open"))
    }
}

fn fail(reason: String) -> io::Result<()> {
    Err(io::Error::other(format!("raft log failed earlier: {reason}")))
}

fn clone_result(result: &io::Result<()>) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
    }
}

fn flush(file: &mut dyn StorageFile, offset: &mut u64, bytes: &[u8], failed: &mut Option<String>) -> io::Result<()> {
    if let Some(reason) = failed {
        return fail(reason.clone());
    }
    if bytes.is_empty() {
        return Ok(());
    }
    let syncing = std::time::Instant::now();
    let result = file.write_at(bytes, *offset).and_then(|()| file.sync_data());
    // The same stage as a single node's group commits: operators and the
    // benchmarks read the disk's latency from it.
    crate::metrics::METRICS.stage(crate::metrics::Stage::Fsync, syncing.elapsed());
    crate::metrics::METRICS.log_bytes.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
    match &result {
        Ok(()) => *offset += bytes.len() as u64,
        Err(e) => *failed = Some(e.to_string()),
    }
    result
}

fn replace(storage: &dyn Storage, file: &mut Box<dyn StorageFile>, offset: &mut u64, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = storage.open(REWRITE, true)?;
    tmp.truncate(0)?;
    tmp.write_at(bytes, 0)?;
    tmp.sync_data()?;
    drop(tmp);
    storage.rename(REWRITE, FILE)?;
    storage.sync_dir()?;
    *file = storage.open(FILE, false)?;
    *offset = bytes.len() as u64;
    Ok(())
}

/// The cluster's raft log on a node's storage. Clones share the log (the
/// reader openraft asks for is a clone).
#[derive(Clone)]
pub struct LogStore {
    state: Arc<parking_lot::Mutex<State>>,
    jobs: mpsc::Sender<Job>,
}

impl LogStore {
    /// Opens (or creates) the log in `storage`, folding what it holds. A
    /// torn last record (a write cut by a crash, never reported durable) is
    /// cut off.
    pub fn open(storage: Arc<dyn Storage>) -> io::Result<LogStore> {
        let _ = storage.remove(REWRITE);
        let bytes = crate::wal::storage::read_all(&*storage, FILE)
            .or_else(|e| if e.kind() == io::ErrorKind::NotFound { Ok(Vec::new()) } else { Err(e) })?;
        let mut state = State::default();
        let mut at = 0;
        while at < bytes.len() {
            let Some((record, end)) = crate::wal::decode_record(&bytes, at) else { break };
            state.fold(record.kind, record.body)?;
            state.records = record.lsn;
            at = end;
        }
        let mut file = storage.open(FILE, true)?;
        if at < bytes.len() {
            file.truncate(at as u64)?;
        }
        file.sync_data()?;
        drop(file);
        storage.sync_dir()?;
        state.file_bytes = at as u64;
        let (jobs, rx) = mpsc::channel();
        let writer_storage = Arc::clone(&storage);
        std::thread::Builder::new().name("raft-log".into()).spawn(move || write_loop(writer_storage, at as u64, rx))?;
        Ok(LogStore { state: Arc::new(parking_lot::Mutex::new(state)), jobs })
    }

    /// The latest time logged in any entry this log held: a proposal's
    /// time is never earlier (`docs/cluster.md`, "Time").
    #[must_use]
    pub fn last_time_ms(&self) -> u64 {
        self.state.lock().last_time_ms
    }

    /// The committed entries it holds, and the committed id (an offline
    /// check of a stopped node's log).
    #[must_use]
    pub fn committed_entries(&self) -> (Vec<Entry>, Option<LogId>) {
        let state = self.state.lock();
        let upto = state.committed.map_or(0, |c| c.index());
        let entries = state.entries.range(..=upto).map(|(_, e)| e.clone()).collect();
        (entries, state.committed)
    }

    fn send(&self, job: Job) -> io::Result<()> {
        self.jobs.send(job).map_err(|_| io::Error::other("the raft log's writer is gone"))
    }

    /// Queues records and waits until they are durable.
    async fn write_waiting(&self, bytes: Vec<u8>) -> io::Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(Job::Append(bytes, Done::Waiting(tx)))?;
        rx.await.map_err(|_| io::Error::other("the raft log's writer is gone"))?
    }

    /// Encodes one record of `kind` with a JSON body.
    fn json_record(&self, kind: u16, value: &impl serde::Serialize) -> io::Result<Vec<u8>> {
        let json = serde_json::to_vec(value).map_err(io::Error::other)?;
        let mut out = Vec::new();
        self.state.lock().record(&mut out, kind, &json);
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> io::Result<Vec<Entry>> {
        Ok(self.state.lock().entries.range(range).map(|(_, e)| e.clone()).collect())
    }

    /// Replication's read. When `start` was purged meanwhile (openraft
    /// chose to send log, then purged it before the read), the entries from
    /// `start` on are not all here: nothing is returned, which openraft
    /// takes as a heartbeat, and its next look sends a snapshot. Returning
    /// the part after the purge would skip entries (openraft 0.10.0-alpha.37
    /// asserts against it).
    async fn limited_get_log_entries(&mut self, start: u64, end: u64) -> io::Result<Vec<Entry>> {
        let state = self.state.lock();
        if start < end && !state.entries.contains_key(&start) {
            return Ok(Vec::new());
        }
        Ok(state.entries.range(start..end).map(|(_, e)| e.clone()).collect())
    }

    async fn read_vote(&mut self) -> io::Result<Option<Vote>> {
        Ok(self.state.lock().vote)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> io::Result<LogState<TypeConfig>> {
        let state = self.state.lock();
        let last = state.entries.values().next_back().map(|e| e.log_id).or_else(|| state.purged);
        Ok(LogState { last_purged_log_id: state.purged, last_log_id: last })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> io::Result<()> {
        let bytes = self.json_record(VOTE, vote)?;
        self.state.lock().vote = Some(*vote);
        self.write_waiting(bytes).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> io::Result<()> {
        let bytes = self.json_record(COMMITTED, &committed)?;
        self.state.lock().committed = committed;
        self.write_waiting(bytes).await
    }

    async fn read_committed(&mut self) -> io::Result<Option<LogId>> {
        Ok(self.state.lock().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed<TypeConfig>) -> io::Result<()>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // Every entry encoded and checked before anything changes.
        let mut encoded = Vec::new();
        for entry in entries {
            let mut body = Vec::new();
            encode_entry(&entry, &mut body)?;
            if body.len() > ENTRY_BYTES_MAX {
                return Err(invalid(&format!("entry {} is {} bytes", entry.index(), body.len())));
            }
            encoded.push((entry, body));
        }
        let mut out = Vec::new();
        {
            let mut state = self.state.lock();
            for (entry, body) in encoded {
                state.record(&mut out, ENTRY, &body);
                state.note_time(&entry);
                state.entries.insert(entry.index(), entry);
            }
        }
        // Readable now; durable when the callback says so.
        self.send(Job::Append(out, Done::Flushed(callback)))
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> io::Result<()> {
        let from = last_log_id.map_or(0, |id| id.index() + 1);
        let mut out = Vec::new();
        {
            let mut state = self.state.lock();
            state.record(&mut out, TRUNCATE, &from.to_le_bytes());
            state.entries.split_off(&from);
        }
        self.write_waiting(out).await
    }

    async fn purge(&mut self, log_id: LogId) -> io::Result<()> {
        let bytes = self.json_record(PURGE, &log_id)?;
        let rewrite = {
            let mut state = self.state.lock();
            state.entries = state.entries.split_off(&(log_id.index() + 1));
            state.purged = Some(log_id);
            match (state.file_bytes > REWRITE_FROM).then(|| state.encode_live()).transpose()? {
                Some((live, n)) if 2 * live.len() as u64 <= state.file_bytes => {
                    (state.records, state.file_bytes) = (n, live.len() as u64);
                    Some(live)
                }
                _ => None,
            }
        };
        self.write_waiting(bytes).await?;
        if let Some(whole) = rewrite {
            let (tx, rx) = tokio::sync::oneshot::channel();
            self.send(Job::Rewrite(whole, Done::Waiting(tx)))?;
            rx.await.map_err(|_| io::Error::other("the raft log's writer is gone"))??;
        }
        Ok(())
    }
}

/// Writes the log of a node restored from a backup (`harbour backup`):
/// nothing but the mark that everything up to `last`, the backup's
/// snapshot, is purged and committed, so the node starts from the
/// snapshot and takes the rest from the cluster.
pub fn write_restored(storage: &dyn Storage, last: LogId) -> io::Result<()> {
    let mut state = State::default();
    let mut out = Vec::new();
    // The vote of the leader that wrote the last entry: a node's vote is
    // never older than its log (openraft asserts it when it leads).
    let vote = Vote::new_committed(last.leader_id.term, last.leader_id.node_id);
    for (kind, json) in [
        (VOTE, serde_json::to_vec(&vote).map_err(io::Error::other)?),
        (PURGE, serde_json::to_vec(&last).map_err(io::Error::other)?),
        (COMMITTED, serde_json::to_vec(&Some(last)).map_err(io::Error::other)?),
    ] {
        state.record(&mut out, kind, &json);
    }
    if crate::wal::storage::read_all(storage, FILE).is_ok_and(|b| !b.is_empty()) {
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, "a raft log is already there"));
    }
    let mut file = storage.open(FILE, true)?;
    file.truncate(0)?;
    file.write_at(&out, 0)?;
    file.sync_data()?;
    storage.sync_dir()
}
