//! The cluster's state machine: the books of every shard, fed committed
//! entries in log order through `Engine::apply`, the same path recovery
//! replays today. Blank and membership entries change no books.
//!
//! A snapshot is every shard's state (`Engine::encode_state`) at one log
//! index: a consistent cut of the whole node, which serves openraft's
//! snapshot install for a follower far behind or without its disk. It is
//! kept durably as `raft.snap` (temporary file, fsync, rename, directory
//! fsync) before openraft may purge the log it covers, and a node that
//! restarts starts its books from it.

use std::io::{self, Cursor};
use std::sync::Arc;

use futures_util::TryStreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};

use super::{Applied, LogId, TypeConfig};
use crate::engine::{Engine, EngineConfig};
use crate::protocol::{kind, kinds};
use crate::wal::storage::Storage;

const SNAPSHOT: &str = "raft.snap";
const SNAPSHOT_TMP: &str = "raft.snap.tmp";

type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Cursor<Vec<u8>>>;

struct Inner {
    /// Where the snapshot is kept (None: in memory only).
    storage: Option<Arc<dyn Storage>>,
    configs: Vec<EngineConfig>,
    engines: Vec<Engine>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// Every shard's books, as the cluster's state machine. Clones share them
/// (the snapshot builder is a clone).
#[derive(Clone)]
pub struct Books {
    inner: Arc<tokio::sync::Mutex<Inner>>,
    /// The latest time of an applied entry (or of the snapshot's books).
    now_ms: Arc<std::sync::atomic::AtomicU64>,
    /// The node's audit trail: every administrative act applied is
    /// written there (`audit`), so every node keeps the trail.
    audit: Option<Arc<crate::audit::AuditLog>>,
}

fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Books {
    /// Empty books for shards configured by `configs` (one per shard, in
    /// shard order), their clocks starting at `start_ms`, kept in memory
    /// only (openraft's storage suite; a node uses [`Books::open`]).
    #[must_use]
    pub fn new(configs: Vec<EngineConfig>, start_ms: u64) -> Books {
        let engines = configs.iter().map(|c| Engine::new(*c, start_ms)).collect();
        let inner = Inner {
            storage: None,
            configs,
            engines,
            last_applied: None,
            membership: StoredMembership::default(),
            snapshot: None,
        };
        let now_ms = Arc::new(std::sync::atomic::AtomicU64::new(start_ms));
        Books { inner: Arc::new(tokio::sync::Mutex::new(inner)), now_ms, audit: None }
    }

    /// Writes every administrative act applied from here on to `audit`.
    #[must_use]
    pub fn with_audit(mut self, audit: Arc<crate::audit::AuditLog>) -> Books {
        self.audit = Some(audit);
        self
    }

    /// A node's books: from the snapshot `storage` keeps, if there is one,
    /// else empty. Openraft then applies the log after the snapshot.
    pub fn open(storage: Arc<dyn Storage>, configs: Vec<EngineConfig>, start_ms: u64) -> io::Result<Books> {
        let books = Books::new(configs, start_ms);
        let kept = match crate::wal::storage::read_all(&*storage, SNAPSHOT) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let mut inner = books.inner.try_lock().expect("new books are not shared");
        if let Some(bytes) = kept {
            let (meta, data) = split_snapshot(&bytes)?;
            inner.engines = decode_books(&inner.configs, data)?;
            books.note_time(&inner.engines);
            inner.last_applied = meta.last_log_id;
            inner.membership = meta.last_membership.clone();
            inner.snapshot = Some((meta, data.to_vec()));
        }
        inner.storage = Some(storage);
        drop(inner);
        Ok(books)
    }

    /// Reads shard `shard`'s books (None: no such shard).
    pub async fn read<R>(&self, shard: usize, f: impl FnOnce(&Engine) -> R) -> Option<R> {
        self.inner.lock().await.engines.get(shard).map(f)
    }

    /// Reads every shard's books, in shard order, at one applied entry.
    pub async fn read_all<R>(&self, f: impl Fn(&Engine) -> R) -> Vec<R> {
        self.inner.lock().await.engines.iter().map(f).collect()
    }

    /// A consistent copy of every shard's books at the last applied entry,
    /// in `raft.snap`'s form (`harbour backup`): apply pauses only while the
    /// books are cloned; they are encoded beside it. Also the entry it
    /// stands at (None: nothing applied yet).
    pub async fn backup(&self) -> io::Result<(Vec<u8>, Option<LogId>)> {
        let (engines, meta) = {
            let inner = self.inner.lock().await;
            let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
            (inner.engines.clone(), meta)
        };
        let at = meta.last_log_id;
        let bytes = tokio::task::spawn_blocking(move || join_snapshot(&meta, &encode_books(&engines)))
            .await
            .map_err(io::Error::other)??;
        Ok((bytes, at))
    }

    /// Keeps a backup's snapshot bytes as `raft.snap` in `storage` (a
    /// restore), after checking their checksum; the entry it stands at.
    pub fn restore(storage: &dyn Storage, bytes: &[u8]) -> io::Result<Option<LogId>> {
        let (meta, data) = split_snapshot(bytes)?;
        keep(storage, &meta, data)?;
        Ok(meta.last_log_id)
    }

    /// Every shard's audit (double entry, holds, pending, links).
    pub async fn audits(&self) -> Vec<Result<(), String>> {
        self.inner.lock().await.engines.iter().map(|e| e.audit().map_err(|e| e.to_string())).collect()
    }

    /// The same, from a thread outside the async runtime (a proposer).
    pub fn read_blocking<R>(&self, shard: usize, f: impl FnOnce(&Engine) -> R) -> Option<R> {
        self.inner.blocking_lock().engines.get(shard).map(f)
    }

    /// Reads every shard's books outside raft (an offline check): None if
    /// they are in use.
    pub fn read_all_offline<R>(&self, f: impl Fn(&Engine) -> R) -> Option<Vec<R>> {
        Some(self.inner.try_lock().ok()?.engines.iter().map(f).collect())
    }

    /// The latest time of the applied books, shared: it moves as entries
    /// are applied.
    #[must_use]
    pub fn now_ms(&self) -> Arc<std::sync::atomic::AtomicU64> {
        Arc::clone(&self.now_ms)
    }

    fn note_time(&self, engines: &[Engine]) {
        let latest = engines.iter().map(Engine::now_ms).max().unwrap_or(0);
        self.now_ms.fetch_max(latest, std::sync::atomic::Ordering::Relaxed);
    }

    /// The last entry applied and each shard's state hash there, read at
    /// once (nodes compare them at equal entries).
    pub async fn hashes_at(&self) -> (Option<LogId>, Vec<[u8; 32]>) {
        let inner = self.inner.lock().await;
        (inner.last_applied, inner.engines.iter().map(Engine::state_hash).collect())
    }

    /// Each shard's state hash (nodes that applied the same entries agree).
    pub async fn state_hashes(&self) -> Vec<[u8; 32]> {
        self.inner.lock().await.engines.iter().map(Engine::state_hash).collect()
    }
}

impl Books {
    /// Applies one committed entry.
    fn apply_one(&self, inner: &mut Inner, entry: &super::Entry) -> io::Result<Applied> {
        let mut applied = Applied::default();
        match &entry.payload {
            EntryPayload::Blank => {}
            EntryPayload::Membership(m) => {
                inner.membership = StoredMembership::new(Some(entry.log_id), m.clone());
            }
            EntryPayload::Normal(p) => {
                // A committed entry the books cannot take is corruption
                // (the leader checked it before proposing): an error stops
                // this node's raft rather than skip it.
                let records = p.records().ok_or_else(|| invalid(format!("entry {}: records cut", entry.log_id)))?;
                let shard = usize::from(p.shard);
                if shard >= inner.engines.len() {
                    return Err(invalid(format!("entry {}: no shard {}", entry.log_id, p.shard)));
                }
                // Time never goes back along the log, whichever shard's
                // entry came first (their proposers race).
                let time_ms = inner.engines.iter().map(Engine::now_ms).fold(p.time_ms, u64::max);
                let failed = |e: crate::engine::EngineError| invalid(format!("entry {}: {e}", entry.log_id));
                for (record, (kind, body)) in records.into_iter().enumerate() {
                    let mut out = Vec::new();
                    let engine = &mut inner.engines[shard];
                    engine.apply(kind, body, time_ms, &mut out).map_err(failed)?;
                    if let Some(audit) = &self.audit {
                        let at = (entry.log_id.index(), record as u32);
                        audit_act(audit, at, shard, time_ms, kind, body);
                    }
                    if inner.engines.len() > 1 {
                        let engine = &mut inner.engines[shard];
                        let waits = engine.take_link_wait().is_some();
                        let refunds = engine.refunds();
                        exchange_links(&mut inner.engines, time_ms).map_err(failed)?;
                        // What the exchange made other shards note (a timer
                        // fired, a refund) waits for nothing here: every
                        // link settles within the record.
                        for engine in &mut inner.engines {
                            engine.take_link_wait();
                        }
                        if waits {
                            let inner_kind = match crate::shard::submission(kind, body).0 {
                                kind::SUBMIT_JUDGED => kind::SUBMIT_TRANSFERS,
                                other => other,
                            };
                            inner.engines[shard].settle_answers(inner_kind, &mut out, Some(refunds));
                        }
                    }
                    applied.answers.push(out);
                }
                self.now_ms.fetch_max(time_ms, std::sync::atomic::Ordering::Relaxed);
            }
        }
        inner.last_applied = Some(entry.log_id);
        Ok(applied)
    }

    /// Applies one committed entry outside raft (a replay, or a check of
    /// what its requests are answered): its answers.
    pub fn apply_entry(&self, entry: &super::Entry) -> io::Result<Applied> {
        let mut inner = self.inner.try_lock().map_err(|_| io::Error::other("the books are in use"))?;
        self.apply_one(&mut inner, entry)
    }

    /// Applies committed entries outside raft (an offline check of a
    /// stopped node's data directory): those after what the books hold.
    pub fn apply_offline(&self, entries: &[super::Entry]) -> io::Result<Option<LogId>> {
        let mut inner = self.inner.try_lock().map_err(|_| io::Error::other("the books are in use"))?;
        for entry in entries {
            if inner.last_applied.is_some_and(|at| entry.log_id.index() <= at.index()) {
                continue;
            }
            self.apply_one(&mut inner, entry)?;
        }
        Ok(inner.last_applied)
    }
}

/// Writes an applied record to the audit trail if it is an administrative
/// act (SCOPED, so it names its channel): once, from shard 0, for an act
/// every shard applies. A trail that cannot be written is reported, not
/// fatal: the act is in the log, and on the other nodes' trails.
fn audit_act(audit: &crate::audit::AuditLog, at: (u64, u32), shard: usize, time_ms: u64, kind: u16, body: &[u8]) {
    let (Some(caller), inner, content) = crate::shard::scoped_submission(kind, body) else { return };
    let every_shard = kinds::spec(inner).is_some_and(|s| s.route == kinds::Route::Broadcast);
    if !crate::audit::audited(inner) || (every_shard && shard != 0) {
        return;
    }
    let name = kinds::spec(inner).map_or("?", |s| s.name);
    if let Err(e) = audit.applied(at, time_ms, caller.channel, name, content) {
        tracing::error!(error = %e, kind = name, "the audit trail could not record an applied act");
    }
}

/// Carries a record's cross-shard effects out inside its apply
/// (`docs/cluster.md`, "Several shards"): every shard's link messages to
/// the others are applied as LINK_IN records, in shard order, until no
/// shard has anything left to send or acknowledge. The raft log already
/// made the record durable on a majority, so nothing waits for a sync, and
/// every node, replaying the same entries, exchanges the same messages: the
/// messages are not logged. After it no transfer is in flight between
/// shards.
fn exchange_links(engines: &mut [Engine], time_ms: u64) -> Result<(), crate::engine::EngineError> {
    let n = engines.len();
    // Per (from, to): the last entry sent in this exchange.
    let mut sent = vec![0u64; n * n];
    let mut body = Vec::new();
    let mut none = Vec::new();
    loop {
        let mut moved = false;
        for from in 0..n {
            for to in (0..n).filter(|&to| to != from) {
                let peer = u16::try_from(to).expect("shards fit u16");
                let (ack, entries) = engines[from].links().message(peer, sent[from * n + to]);
                let known = engines[to].links().links[from].acked();
                if entries.is_empty() && ack <= known {
                    continue;
                }
                if let Some(last) = entries.last() {
                    sent[from * n + to] = last.seq;
                }
                body.clear();
                let me = u16::try_from(from).expect("shards fit u16");
                crate::engine::links::encode_link_in(me, ack, &entries, &mut body);
                engines[to].apply(kind::LINK_IN, &body, time_ms, &mut none)?;
                debug_assert!(none.is_empty(), "a link message has no answer");
                moved = true;
            }
        }
        if !moved {
            return Ok(());
        }
    }
}

/// `raft.snap`: the CRC-32C of everything after it (u32), the u32 length
/// of the metadata's JSON, the JSON, the body. A damaged byte could decode
/// into other, valid-looking books: the checksum refuses it.
fn join_snapshot(meta: &SnapshotMeta, data: &[u8]) -> io::Result<Vec<u8>> {
    let json = serde_json::to_vec(meta).map_err(io::Error::other)?;
    let len = u32::try_from(json.len()).map_err(|_| invalid("snapshot metadata too large".into()))?;
    let mut out = vec![0; 4];
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(data);
    let crc = crc32c::crc32c(&out[4..]);
    out[..4].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn split_snapshot(bytes: &[u8]) -> io::Result<(SnapshotMeta, &[u8])> {
    let crc = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4")));
    if crc != Some(crc32c::crc32c(bytes.get(4..).unwrap_or_default())) {
        return Err(invalid("raft.snap: checksum fails".into()));
    }
    let bytes = &bytes[4..];
    let len = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
    let json = len.and_then(|len| bytes.get(4..4 + len)).ok_or_else(|| invalid("raft.snap cut short".into()))?;
    let meta = serde_json::from_slice(json).map_err(|e| invalid(format!("raft.snap: {e}")))?;
    Ok((meta, &bytes[4 + json.len()..]))
}

/// Keeps a snapshot durably, replacing the one kept before.
fn keep(storage: &dyn Storage, meta: &SnapshotMeta, data: &[u8]) -> io::Result<()> {
    let bytes = join_snapshot(meta, data)?;
    let mut file = storage.open(SNAPSHOT_TMP, true)?;
    file.truncate(0)?;
    file.write_at(&bytes, 0)?;
    file.sync_data()?;
    drop(file);
    storage.rename(SNAPSHOT_TMP, SNAPSHOT)?;
    storage.sync_dir()
}

/// Snapshot body: u32 shard count, then per shard a u64 length and its
/// encoded state.
fn encode_books(engines: &[Engine]) -> Vec<u8> {
    let mut out = (engines.len() as u32).to_le_bytes().to_vec();
    let mut state = Vec::new();
    for engine in engines {
        state.clear();
        engine.encode_state(&mut state);
        out.extend_from_slice(&(state.len() as u64).to_le_bytes());
        out.extend_from_slice(&state);
    }
    out
}

fn decode_books(configs: &[EngineConfig], bytes: &[u8]) -> io::Result<Vec<Engine>> {
    let count = bytes.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4")) as usize);
    if count != Some(configs.len()) {
        return Err(invalid(format!("a snapshot of {count:?} shards for {} shards", configs.len())));
    }
    let mut at = 4;
    let mut engines = Vec::with_capacity(configs.len());
    for config in configs {
        let len = bytes.get(at..at + 8).map(|b| u64::from_le_bytes(b.try_into().expect("8")));
        let state = len
            .and_then(|len| bytes.get(at + 8..(at + 8).checked_add(usize::try_from(len).ok()?)?))
            .ok_or_else(|| invalid("a snapshot cut short".into()))?;
        engines.push(Engine::decode_state(*config, state).map_err(|e| invalid(e.to_string()))?);
        at += 8 + state.len();
    }
    if at != bytes.len() {
        return Err(invalid("bytes after the last shard of a snapshot".into()));
    }
    Ok(engines)
}

impl RaftSnapshotBuilder<TypeConfig> for Books {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let mut inner = self.inner.lock().await;
        let data = encode_books(&inner.engines);
        let meta = SnapshotMeta { last_log_id: inner.last_applied, last_membership: inner.membership.clone() };
        // Durable before openraft may purge the log it covers.
        if let Some(storage) = &inner.storage {
            keep(&**storage, &meta, &data)?;
        }
        inner.snapshot = Some((meta.clone(), data.clone()));
        Ok(Snapshot { meta, snapshot: Cursor::new(data) })
    }
}

impl RaftStateMachine<TypeConfig> for Books {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let inner = self.inner.lock().await;
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<S>(&mut self, mut entries: S) -> io::Result<()>
    where
        S: futures_util::Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        let mut inner = self.inner.lock().await;
        while let Some((entry, responder)) = entries.try_next().await? {
            let applied = self.apply_one(&mut inner, &entry)?;
            if let Some(responder) = responder {
                responder.send(applied);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> io::Result<()> {
        let mut inner = self.inner.lock().await;
        let data = snapshot.into_inner();
        let engines = decode_books(&inner.configs, &data)?;
        if let Some(storage) = &inner.storage {
            keep(&**storage, meta, &data)?;
        }
        self.note_time(&engines);
        inner.engines = engines;
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        inner.snapshot = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let inner = self.inner.lock().await;
        Ok(inner
            .snapshot
            .as_ref()
            .map(|(meta, data)| Snapshot { meta: meta.clone(), snapshot: Cursor::new(data.clone()) }))
    }
}
