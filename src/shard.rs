//! Shards: one thread per shard that owns an engine and its log, and the
//! [`Switch`] that routes requests to them.
//!
//! A shard thread is the single writer of its books (the LMAX idea): it takes
//! requests from a bounded queue, applies a whole group of them, writes their
//! records to the log, syncs once (group commit), and only then answers every
//! request of the group. While it syncs, new requests queue up and form the
//! next, larger group, so batching grows with load.
//!
//! Backpressure: each shard's queue holds at most `queue_depth_max`
//! requests; [`Switch::try_submit`] answers `Busy` when the queue is full
//! (nothing applied), [`Switch::submit`] waits for room.
//!
//! Shutdown: [`Switch::shutdown`] (or drop) tells every shard to stop; a
//! shard finishes and answers the group it has begun, syncs, and exits.
//! Requests still queued behind the stop are dropped unanswered, and so
//! never applied (their senders see `ShardFailed`, the reply channel having
//! closed; `Stopped` is for requests sent after the shard exited).
//!
//! Failure: if the log fails, the shard answers the group and every later
//! request with `LogFailed` (outcome unknown: not answered as applied) and
//! applies nothing more; the process must restart and recover from disk. A
//! broken invariant panics the shard thread; the `harbour` binary turns any
//! panic into an abort, so recovery restarts from the log.
//!
//! Sharding: accounts map to shards by a fixed hash of their id, and every
//! shard has its own part of each system account, so a deposit, a
//! withdrawal, a remittance or a conversion touches one shard. A transfer
//! is decided on its debit account's shard; a credit to another shard's
//! customer goes over a logged link (`engine::links`), and the answer
//! waits until that shard has applied it (`docs/sharding.md`). Link
//! messages leave a shard only after the group that made them is durable.
//! With one shard (the default) there are no links.

use std::collections::VecDeque;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::engine::{Engine, EngineConfig, EngineError, MANUAL_CLOCK_START_MS, multi};
use crate::handoff::{Admission, Settled, Windows};
use crate::metrics::{METRICS, Stage};
use crate::protocol::internal::{encode_judged, judged_len};
use crate::protocol::records::{self, Record, Transfer};
use crate::protocol::{kind, kinds};
use crate::router::{Gather, Merge, Routed, Router};
use crate::scorer::{Gate, GateStats, RemoteScorer};
use crate::wal::storage::{FileStorage, Storage};
use crate::wal::{RecoveryReport, Wal, WalConfig, WalError};

/// Most requests one shard applies between two syncs.
pub const GROUP_REQUESTS_MAX: usize = 4096;
/// Deepest a shard's queue may get.
pub const QUEUE_DEPTH_MAX: usize = 65_536;
/// Most shards a switch runs.
pub const SHARDS_MAX: usize = 256;
/// Bytes of request bodies queued for the shards at most; past it a
/// request is BUSY (nothing applied), however few requests that is.
pub const QUEUED_BYTES_MAX: u64 = 256 << 20;
const _: () = assert!(GROUP_REQUESTS_MAX <= QUEUE_DEPTH_MAX);
/// Longest a shard sleeps with hold timers pending and no traffic.
const IDLE_WAKE_MAX: Duration = Duration::from_millis(100);

/// Settings of the shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SwitchConfig {
    /// Number of shards (1..=SHARDS_MAX).
    pub shards: usize,
    pub engine: EngineConfig,
    pub wal: WalConfig,
    /// A shard snapshots its state once this many bytes were logged since
    /// the last one: it bounds the log a recovery replays.
    pub snapshot_log_bytes: u64,
    /// Whether snapshots are encoded and written on a helper thread from a
    /// copy of the state (the shard stops only for the copy), or on the
    /// shard's own thread (deterministic storage operations, for crash
    /// tests).
    pub snapshot_in_background: bool,
    /// Bound of each shard's queue.
    pub queue_depth_max: usize,
    /// Most requests per group commit.
    pub group_requests_max: usize,
    pub clock: Clock,
    /// The remote AML scorer, if the bank runs one.
    pub aml_scorer: Option<ScorerConfig>,
}

/// Where the remote AML scorer is and how long the shards wait for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScorerConfig {
    pub addr: std::net::SocketAddr,
    /// The AML latency budget: the longest a shard waits for a group's
    /// verdicts (contract §6; default 50 µs). Late is MANUAL_REVIEW.
    pub budget: Duration,
    /// The scorer connection's own deadline (connect, read, write).
    pub io_timeout: Duration,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            engine: EngineConfig::default(),
            wal: WalConfig::default(),
            snapshot_log_bytes: 1 << 30,
            snapshot_in_background: true,
            queue_depth_max: 4096,
            group_requests_max: 1024,
            clock: Clock::System,
            aml_scorer: None,
        }
    }
}

/// Why a request got no answer from the books.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwitchError {
    /// A shard's queue is full; nothing was applied.
    Busy,
    /// The request is not one the engine applies (kind or length).
    Engine(EngineError),
    /// The shard's log failed; the request was not applied durably.
    LogFailed(String),
    /// A shard thread died (a broken invariant).
    ShardFailed,
    /// The switch is shutting down; the request was not applied.
    Stopped,
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => write!(f, "shard queue full; nothing applied"),
            Self::Engine(e) => write!(f, "{e}"),
            Self::LogFailed(e) => write!(f, "log failed: {e}"),
            Self::ShardFailed => write!(f, "shard thread failed"),
            Self::Stopped => write!(f, "switch stopped"),
        }
    }
}

impl std::error::Error for SwitchError {}

/// Why the switch did not start.
#[derive(Debug)]
pub enum OpenError {
    Io(io::Error),
    /// Recovery of a shard failed.
    Recovery {
        shard: usize,
        error: WalError,
    },
    /// The data directory was written with another value of a setting that
    /// decides outcomes (shard count, clock, hold windows).
    Settings {
        key: String,
        recorded: String,
        configured: String,
    },
    /// The configuration is out of bounds.
    Config(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Recovery { shard, error } => write!(f, "shard {shard}: {error}"),
            Self::Settings { key, recorded, configured } => write!(
                f,
                "the data directory was written with {key}={recorded} but {key}={configured} is configured; \
                 start with the recorded value (replaying the log under other settings would decide differently)"
            ),
            Self::Config(e) => write!(f, "configuration: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The answer to one request: response records, or why there are none.
pub type Reply = Result<Vec<u8>, SwitchError>;

/// Where a shard delivers an answer: called once, on the shard thread,
/// after the group's fsync. It must not block.
pub type ReplyFn = Box<dyn FnOnce(Reply) + Send>;

/// A request for one shard.
pub struct Request {
    pub kind: u16,
    pub body: Vec<u8>,
    pub reply: ReplyFn,
    /// When it was queued (for the queue-wait metric).
    pub enqueued: std::time::Instant,
}

enum Message {
    Request(Request),
    Stop,
}

/// Entries and an acknowledgement from one shard to another: the body of
/// the LINK_IN record the receiver logs (`engine::links`).
pub struct LinkMessage {
    pub from: u16,
    pub body: Vec<u8>,
}

/// Most link messages one shard has queued for another at a time; a
/// shard's link queue holds `LINK_WINDOW_MAX` from each peer, so sending
/// never waits and never fails.
pub const LINK_WINDOW_MAX: u32 = 4;
/// How soon a shard with link messages it could not send yet (window full)
/// tries again.
const LINK_RETRY: Duration = Duration::from_micros(200);
/// Longest a stopping switch waits for shards to settle what is in
/// flight between them before it stops anyway (recovery resumes it).
const DRAIN_MAX: Duration = Duration::from_secs(5);

/// How a shard reaches the others: their link queues, the windows that
/// bound them, and the flags a stop waits on (`handoff`).
pub struct Peers {
    me: u16,
    senders: Vec<Sender<LinkMessage>>,
    windows: Arc<Windows>,
    settled: Arc<Settled>,
}

/// A request's answer that waits for other shards to apply what it sent
/// them (a cross-shard credit, an account notice).
struct Deferred {
    /// Per shard, the sequence it must have acknowledged.
    need: Vec<u64>,
    kind: u16,
    answer: Vec<u8>,
    reply: ReplyFn,
    /// The engine's refund count when the answer was made.
    refunds: u64,
}

/// One shard's engine and log, driven by its thread (or directly by tests).
pub struct Shard {
    engine: Engine,
    wal: Wal,
    clock: Clock,
    snapshot_log_bytes: u64,
    /// The log's byte count when the last snapshot was taken.
    bytes_at_snapshot: u64,
    snapshot_in_background: bool,
    /// A snapshot being written on a helper thread; it hands back its copy
    /// of the state for the next snapshot to reuse.
    snapshotting: Option<std::thread::JoinHandle<(Result<(), WalError>, Engine)>>,
    /// The last snapshot's copy, kept so the next copy reuses its memory.
    spare: Option<Engine>,
    /// The remote AML scorer behind its budget, if there is one.
    gate: Option<Gate>,
    /// Log bytes already counted in the metrics.
    log_bytes_seen: u64,
    /// Per request of the group being applied: whether (and for which
    /// acknowledgements) its answer waits.
    waits: Vec<Option<Vec<u64>>>,
    /// Stopping: the clock stands still (no timer fires).
    draining: bool,
    /// The gate's counters as last added to the metrics.
    gate_reported: GateStats,
}

impl Shard {
    /// Recovers a shard from its storage: newest snapshot, then the log.
    pub fn open(storage: Arc<dyn Storage>, config: &SwitchConfig) -> Result<(Shard, RecoveryReport), WalError> {
        let engine_config = EngineConfig { manual_clock: config.clock.is_manual(), ..config.engine };
        let start_ms = if config.clock.is_manual() { MANUAL_CLOCK_START_MS } else { 0 };
        let engine = std::cell::RefCell::new(Engine::new(engine_config, start_ms));
        let mut scratch = Vec::new();
        let (wal, report) = Wal::open(
            storage,
            config.wal,
            |_, state| {
                *engine.borrow_mut() = Engine::decode_state(engine_config, state).map_err(|e| e.to_string())?;
                Ok(())
            },
            |record| {
                scratch.clear();
                let mut engine = engine.borrow_mut();
                engine.apply(record.kind, record.body, record.time_ms, &mut scratch).map_err(|e| e.to_string())
            },
        )?;
        let engine = engine.into_inner();
        let shard = Shard {
            engine,
            wal,
            clock: config.clock,
            snapshot_log_bytes: config.snapshot_log_bytes.max(1),
            bytes_at_snapshot: 0,
            snapshot_in_background: config.snapshot_in_background,
            snapshotting: None,
            spare: None,
            gate: None,
            log_bytes_seen: 0,
            waits: Vec::new(),
            draining: false,
            gate_reported: GateStats::default(),
        };
        Ok((shard, report))
    }

    /// Puts a remote AML scorer in front of the engine: from now on every
    /// group's outgoing transfers wait for its verdicts, at most the gate's
    /// budget.
    pub fn set_gate(&mut self, gate: Gate) {
        self.gate = Some(gate);
    }

    /// The scorer gate's counters, if there is a gate.
    #[must_use]
    pub fn gate_stats(&self) -> Option<GateStats> {
        self.gate.as_ref().map(Gate::stats)
    }

    /// The engine (read-only), for audits and hashes.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The log's counters.
    #[must_use]
    pub fn wal_stats(&self) -> crate::wal::WalStats {
        self.wal.stats()
    }

    /// Applies a group of requests, makes them durable with one sync, and
    /// returns one answer per request, then takes a snapshot if one is due.
    /// On a log error every answer is `LogFailed` and the error is returned
    /// too. (The shard thread answers before it snapshots; see `run`.)
    pub fn process(&mut self, group: &[(u16, &[u8])]) -> (Vec<Reply>, Result<(), WalError>) {
        let answered = self.commit_group(&[], group);
        if answered.1.is_ok() {
            self.snapshot_if_due();
        }
        answered
    }

    /// One step of the shard thread, for a caller that moves link messages
    /// itself (a deterministic simulation): applies other shards' link
    /// messages (`links`, LINK_IN bodies) and a group, commits, then
    /// snapshots if due. Returns the answers, per request whether it waits
    /// for acknowledgements (the sequence each shard must reach, see
    /// [`Engine::take_link_wait`]) and the commit's outcome.
    #[allow(clippy::type_complexity)]
    pub fn step(
        &mut self,
        links: &[&[u8]],
        group: &[(u16, &[u8])],
    ) -> (Vec<Reply>, Vec<Option<Vec<u64>>>, Result<(), WalError>) {
        let (replies, result) = self.commit_group(links, group);
        let waits = self.take_waits(group.len());
        if result.is_ok() {
            self.snapshot_if_due();
        }
        (replies, waits, result)
    }

    fn commit_group(&mut self, links: &[&[u8]], group: &[(u16, &[u8])]) -> (Vec<Reply>, Result<(), WalError>) {
        let mut replies = Vec::with_capacity(group.len());
        let result = self.apply_group(links, group, &mut replies).and_then(|()| {
            let syncing = std::time::Instant::now();
            let syncs = self.wal.stats().syncs;
            let committed = self.wal.commit();
            // Only a group that synced is an fsync sample (a lookup-only
            // group or an idle wake-up writes nothing).
            if self.wal.stats().syncs > syncs {
                METRICS.stage(Stage::Fsync, syncing.elapsed());
            }
            let bytes = self.wal.stats().bytes;
            METRICS.log_bytes.fetch_add(bytes.saturating_sub(self.log_bytes_seen), Ordering::Relaxed);
            self.log_bytes_seen = bytes;
            committed
        });
        if let Err(e) = &result {
            // Whether the group reached the disk is unknown (a failed fsync
            // may still have written some of it): it is not answered as
            // applied, and the log refuses everything after.
            let message = e.to_string();
            replies.clear();
            replies.resize(group.len(), Err(SwitchError::LogFailed(message)));
        }
        (replies, result)
    }

    /// Takes a snapshot once enough log was written since the last one. A
    /// failure is reported and retried after the next interval; the log
    /// goes on.
    fn snapshot_if_due(&mut self) {
        self.finish_snapshot(false);
        let bytes = self.wal.stats().bytes;
        if self.snapshotting.is_some() || bytes - self.bytes_at_snapshot < self.snapshot_log_bytes {
            return;
        }
        self.bytes_at_snapshot = bytes;
        let writer = match self.wal.snapshot_writer() {
            Ok(w) => w,
            Err(e) => return eprintln!("snapshot not taken: {e}"),
        };
        if self.snapshot_in_background {
            // The shard stops only to copy its state; encoding and writing
            // happen beside it while the log goes on.
            let copy = match self.spare.take() {
                Some(mut spare) => {
                    spare.clone_from(&self.engine);
                    spare
                }
                None => self.engine.clone(),
            };
            let spawned = std::thread::Builder::new().name("snapshot".into()).spawn(move || {
                let mut state = Vec::new();
                copy.encode_state(&mut state);
                (writer.write(&state), copy)
            });
            match spawned {
                Ok(handle) => self.snapshotting = Some(handle),
                Err(e) => eprintln!("snapshot not taken: {e}"),
            }
            return;
        }
        let mut state = Vec::new();
        self.engine.encode_state(&mut state);
        let written = writer.write(&state).and_then(|()| self.wal.snapshot_written());
        if written.is_ok() {
            snapshot_taken();
        }
        if let Err(e) = written {
            eprintln!("snapshot failed (the log is unaffected; retrying later): {e}");
        }
    }

    /// Completes a background snapshot that has finished (or, with `wait`,
    /// waits for it): old snapshots and segments are removed only now.
    fn finish_snapshot(&mut self, wait: bool) {
        if !self.snapshotting.as_ref().is_some_and(|h| wait || h.is_finished()) {
            return;
        }
        let handle = self.snapshotting.take().expect("a snapshot in progress");
        let written = match handle.join() {
            Ok((result, copy)) => {
                self.spare = Some(copy);
                result.and_then(|()| self.wal.snapshot_written()).inspect(|()| snapshot_taken())
            }
            Err(_) => Err(WalError::Failed),
        };
        if let Err(e) = written {
            eprintln!("snapshot failed (the log is unaffected; retrying later): {e}");
        }
    }

    /// Whether a request of `kind` with `body` is one the engine takes from
    /// outside (internal log kinds are the shard's own).
    fn acceptable(kind: u16, body: &[u8]) -> Result<(), SwitchError> {
        if kinds::spec(kind).is_none_or(|s| s.origin == kinds::Origin::Shard) {
            return Err(SwitchError::Engine(EngineError::UnknownKind(kind)));
        }
        Engine::check_length(kind, body).map_err(SwitchError::Engine)?;
        // A submission may be logged with a verdict per transfer ahead of
        // it (SUBMIT_JUDGED): that record must fit too.
        let (inner, submitted) = submission(kind, body);
        let logged = if inner == kind::SUBMIT_TRANSFERS {
            body.len() - submitted.len() + judged_len(submitted.len() / Transfer::SIZE, submitted.len())
        } else {
            body.len()
        };
        if logged > crate::wal::RECORD_BODY_MAX {
            return Err(SwitchError::Engine(EngineError::BadLength { kind, len: body.len() }));
        }
        Ok(())
    }

    fn apply_group(
        &mut self,
        links: &[&[u8]],
        group: &[(u16, &[u8])],
        replies: &mut Vec<Reply>,
    ) -> Result<(), WalError> {
        self.waits.clear();
        let now = if self.draining { self.engine.now_ms() } else { self.clock.now_ms(self.engine.now_ms()) };
        if self.engine.advance(now) > 0 {
            // Timers fired: record the time so a replay fires them too.
            self.wal.append(kind::TICK, now, &[])?;
        }
        // Other shards' entries and acknowledgements first: acknowledged
        // transfers post, and the answers waiting on them go out with this
        // group's.
        let mut scratch = Vec::new();
        for body in links {
            self.wal.append(kind::LINK_IN, now, body)?;
            self.engine.apply(kind::LINK_IN, body, now, &mut scratch).expect("link messages are the shards' own");
        }
        // What timers and links sent is no request's to wait for.
        let _ = self.engine.take_link_wait();
        // The remote scorer, if there is one, sees the whole group's
        // transfers at once and is waited for once, at most the budget.
        let mut verdicts = match &mut self.gate {
            Some(gate) => {
                let submits: Vec<&[u8]> = group
                    .iter()
                    .filter(|(k, b)| Self::acceptable(*k, b).is_ok())
                    .map(|&(k, b)| submission(k, b))
                    .filter(|&(k, _)| k == kind::SUBMIT_TRANSFERS)
                    .map(|(_, b)| b)
                    .collect();
                if submits.is_empty() {
                    Vec::new()
                } else {
                    let judging = std::time::Instant::now();
                    let v = gate.judge(&submits);
                    METRICS.stage(Stage::Aml, judging.elapsed());
                    v
                }
            }
            None => Vec::new(),
        }
        .into_iter();
        let mut appending = std::time::Duration::ZERO;
        for &(kind, body) in group {
            if let Err(e) = Self::acceptable(kind, body) {
                replies.push(Err(e));
                self.waits.push(None);
                continue;
            }
            let (inner, submitted) = submission(kind, body);
            let mut out = Vec::with_capacity(submitted.len() / 16 * 64);
            let judged =
                (inner == kind::SUBMIT_TRANSFERS).then(|| verdicts.next()).flatten().filter(|v| !v.is_empty()).map(
                    |v| {
                        // Logged with the transfers they judge, as one record, so
                        // a replay applies the same verdicts to the same
                        // transfers.
                        let judged = encode_judged(&v, submitted);
                        if kind == kind::MULTI {
                            let m = multi::decode(body).expect("acceptable");
                            let others = multi::parts(m.parts_raw).expect("acceptable");
                            let mut wrapped = Vec::with_capacity(body.len() + judged.len());
                            let header = multi::Header { seq: m.seq, complete: m.complete, continues: m.continues };
                            multi::encode(
                                header,
                                kind::SUBMIT_JUDGED,
                                &judged,
                                m.parts_kind,
                                &others,
                                m.rest,
                                &mut wrapped,
                            );
                            (kind::MULTI, wrapped)
                        } else {
                            (kind::SUBMIT_JUDGED, judged)
                        }
                    },
                );
            let (kind_logged, logged) = match &judged {
                Some((k, b)) => (*k, b.as_slice()),
                None => (kind, body),
            };
            // An empty batch changes nothing and needs no log record.
            if kinds::is_logged(kind_logged) && !submitted.is_empty() {
                let t = std::time::Instant::now();
                self.wal.append(kind_logged, now, logged)?;
                appending += t.elapsed();
            }
            let t = std::time::Instant::now();
            self.engine.apply(kind_logged, logged, now, &mut out).expect("kind and length checked before logging");
            METRICS.stage(Stage::Apply, t.elapsed());
            self.answered(inner, out, replies);
        }
        if !appending.is_zero() {
            METRICS.stage(Stage::LogAppend, appending);
        }
        if let Some(gate) = &self.gate {
            // The shard's counts since its last report: shards' gates add.
            let now = gate.stats();
            crate::metrics::METRICS.record_gate(now, self.gate_reported);
            self.gate_reported = now;
        }
        Ok(())
    }

    /// What each of the last group's `n` requests waits for (none if the
    /// group failed before reaching it).
    fn take_waits(&mut self, n: usize) -> Vec<Option<Vec<u64>>> {
        let mut waits = std::mem::take(&mut self.waits);
        waits.resize(n, None);
        waits
    }

    /// Files a request's answer, and whether it waits for other shards; an
    /// answer that waits is counted when it is released (settled).
    fn answered(&mut self, kind: u16, out: Vec<u8>, replies: &mut Vec<Reply>) {
        let wait = self.engine.take_link_wait();
        if wait.is_none() {
            self.count(kind, &out);
        }
        replies.push(Ok(out));
        self.waits.push(wait);
    }

    /// Counts an answer's result codes, unless the request went to every
    /// shard (then its merged answer is counted, once).
    fn count(&self, kind: u16, answers: &[u8]) {
        let broadcast = kinds::spec(kind).is_some_and(|s| s.route == kinds::Route::Broadcast);
        if !broadcast || self.engine.links().shards() == 1 {
            count_results(if kind == kind::SUBMIT_JUDGED { kind::SUBMIT_TRANSFERS } else { kind }, answers);
        }
    }

    /// When the shard must wake without traffic (a hold timer), if ever.
    fn wake_in(&self) -> Option<Duration> {
        if self.clock.is_manual() {
            return None;
        }
        let due = self.engine.next_timer_ms()?;
        let now = self.clock.now_ms(self.engine.now_ms());
        Some(Duration::from_millis(due.saturating_sub(now)).min(IDLE_WAKE_MAX))
    }

    /// The shard thread: takes a group from its queues (other shards' link
    /// messages first, then requests), applies and commits it, answers what
    /// needs no other shard, releases answers whose acknowledgements came,
    /// and sends other shards what is now durable. On stop it takes no more
    /// requests but goes on exchanging link messages until every shard has
    /// nothing in flight (at most `DRAIN_MAX`).
    fn run(
        mut self,
        rx: &Receiver<Message>,
        link_rx: &Receiver<LinkMessage>,
        peers: &Peers,
        group_max: usize,
        now_ms: &AtomicU64,
        queued_bytes: &Admission,
    ) {
        let n = peers.senders.len();
        let me = peers.me;
        let mut sent = vec![0u64; n];
        let mut ack_sent = vec![0u64; n];
        let mut deferred: VecDeque<Deferred> = VecDeque::new();
        let mut batch: Vec<Request> = Vec::with_capacity(group_max);
        let mut inbound: Vec<LinkMessage> = Vec::new();
        let mut stopping: Option<std::time::Instant> = None;
        // When every shard had taken its stop: the drain's limit runs from
        // there.
        let mut drain_since: Option<std::time::Instant> = None;
        // After a restart every unacknowledged entry goes again.
        let mut backlog = self.send_links(peers, &mut sent, &mut ack_sent);
        loop {
            // Published after the step's sends: see `handoff::Settled`.
            let settled = deferred.is_empty() && self.engine.links().unacked() == 0 && !backlog;
            // Only a stopping shard may say it is settled: one still taking
            // requests may yet send something.
            peers.settled.publish(usize::from(me), stopping.is_some() && settled);
            if let Some(stopped) = stopping {
                if drain_since.is_none() && peers.settled.all_stopping() {
                    drain_since = Some(std::time::Instant::now());
                }
                // The limit runs once every shard took its stop; a shard
                // that never does (its thread died) is waited for at most
                // a few limits.
                let overdue =
                    drain_since.is_some_and(|since| since.elapsed() > DRAIN_MAX) || stopped.elapsed() > 4 * DRAIN_MAX;
                if (settled && peers.settled.all()) || overdue || peers.settled.abandoned() {
                    break;
                }
            }
            let mut wait = self.wake_in();
            if backlog || stopping.is_some() {
                wait = Some(wait.map_or(LINK_RETRY, |w| w.min(LINK_RETRY)));
            }
            let mut select = crossbeam_channel::Select::new();
            let external = stopping.is_none().then(|| select.recv(rx));
            let internal = select.recv(link_rx);
            let ready = match wait {
                Some(w) => select.select_timeout(w).ok(),
                None => Some(select.select()),
            };
            let mut next = None;
            if let Some(op) = ready {
                if Some(op.index()) == external {
                    next = Some(op.recv(rx).unwrap_or(Message::Stop));
                } else {
                    debug_assert_eq!(op.index(), internal);
                    if let Ok(m) = op.recv(link_rx) {
                        inbound.push(m);
                    }
                }
            }
            while let Ok(m) = link_rx.try_recv() {
                inbound.push(m);
            }
            if stopping.is_none() && next.is_none() && batch.len() < group_max {
                next = rx.try_recv().ok();
            }
            while let Some(message) = next.take() {
                match message {
                    Message::Request(r) => {
                        METRICS.stage(Stage::QueueWait, r.enqueued.elapsed());
                        METRICS.queue_depth.fetch_sub(1, Ordering::Relaxed);
                        batch.push(r);
                    }
                    Message::Stop => {
                        stopping = Some(std::time::Instant::now());
                        peers.settled.stopping(usize::from(me));
                        break;
                    }
                }
                if batch.len() < group_max {
                    next = rx.try_recv().ok();
                }
            }
            for m in &inbound {
                peers.windows.give_back(usize::from(m.from), usize::from(me));
            }
            let links: Vec<&[u8]> = inbound.iter().map(|m| m.body.as_slice()).collect();
            let group: Vec<(u16, &[u8])> = batch.iter().map(|r| (r.kind, r.body.as_slice())).collect();
            let (replies, result) = self.commit_group(&links, &group);
            // After the last group of requests (applied at the clock's
            // time), no timers while draining: they could put new transfers
            // in flight (they fire after a restart).
            self.draining = stopping.is_some();
            drop(links);
            inbound.clear();
            now_ms.fetch_max(self.engine.now_ms(), Ordering::Relaxed);
            let applied: u64 = batch.iter().map(|r| r.body.len() as u64).sum();
            queued_bytes.release(applied);
            let waits = self.take_waits(batch.len());
            for ((request, reply), wait) in batch.drain(..).zip(replies).zip(waits) {
                match (wait, reply) {
                    (Some(need), Ok(answer)) if result.is_ok() => {
                        let refunds = self.engine.refunds();
                        deferred.push_back(Deferred {
                            need,
                            kind: submission(request.kind, &request.body).0,
                            answer,
                            reply: request.reply,
                            refunds,
                        });
                    }
                    // A requester that gave up is not an error.
                    (_, reply) => (request.reply)(reply),
                }
            }
            if let Err(e) = &result {
                // Nothing more is durable: what waited can't be confirmed.
                for d in deferred.drain(..) {
                    (d.reply)(Err(SwitchError::LogFailed(e.to_string())));
                }
                continue;
            }
            self.release(&mut deferred);
            backlog = self.send_links(peers, &mut sent, &mut ack_sent);
            // Answers first: a snapshot must not delay what is durable.
            self.snapshot_if_due();
        }
    }

    /// Answers the waiting requests whose acknowledgements have all come
    /// (in order: later ones never need less), their transfers shown as
    /// they are now.
    fn release(&self, deferred: &mut VecDeque<Deferred>) {
        let links = &self.engine.links().links;
        while let Some(d) = deferred.front() {
            if !d.need.iter().zip(links).all(|(&seq, link)| link.acked() >= seq) {
                break;
            }
            let mut d = deferred.pop_front().expect("front exists");
            self.engine.settle_answers(d.kind, &mut d.answer, Some(d.refunds));
            self.count(d.kind, &d.answer);
            (d.reply)(Ok(d.answer));
        }
    }

    /// Sends each other shard what it has not been sent (durable entries,
    /// and the acknowledgement of what it sent), within the window.
    /// Returns whether something is left for later (a window was full).
    fn send_links(&self, peers: &Peers, sent: &mut [u64], ack_sent: &mut [u64]) -> bool {
        let me = peers.me;
        let mut backlog = false;
        for peer in (0..peers.senders.len() as u16).filter(|&p| p != me) {
            let p = usize::from(peer);
            loop {
                let (ack, entries) = self.engine.links().message(peer, sent[p]);
                if entries.is_empty() && ack == ack_sent[p] {
                    break;
                }
                if !peers.windows.try_take(usize::from(me), p) {
                    backlog = true;
                    break;
                }
                let mut body = Vec::new();
                crate::engine::links::encode_link_in(me, ack, &entries, &mut body);
                if peers.senders[p].try_send(LinkMessage { from: me, body }).is_err() {
                    // Only a stopped shard's queue refuses (the window
                    // guarantees room): recovery resends.
                    peers.windows.give_back(usize::from(me), p);
                    break;
                }
                METRICS.link_messages.fetch_add(1, Ordering::Relaxed);
                if let Some(last) = entries.last() {
                    sent[p] = last.seq;
                }
                ack_sent[p] = ack;
                if entries.len() < crate::engine::links::LINK_ENTRIES_MAX {
                    break;
                }
            }
        }
        backlog
    }
}

impl Drop for Shard {
    fn drop(&mut self) {
        // A snapshot still being written is finished before the shard goes.
        self.finish_snapshot(true);
    }
}

/// The request kind and body a shard applies for a queued request: a
/// MULTI record's own part, else the request itself.
fn submission(kind: u16, body: &[u8]) -> (u16, &[u8]) {
    if kind == kind::MULTI
        && let Some(m) = multi::decode(body)
    {
        return (m.mine_kind, m.mine);
    }
    (kind, body)
}

/// Tells the operators' metrics a snapshot was written now.
fn snapshot_taken() {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    METRICS.last_snapshot_unix_ms.store(now, Ordering::Relaxed);
}

/// Counts the per-record result codes of an answer, and the new AML holds
/// of SUBMIT_TRANSFERS answers (code OK and pending), for the operators.
fn count_results(kind: u16, answers: &[u8]) {
    use crate::engine::holds::Holds;
    let Some(codes) = kinds::result_codes(kind, answers) else { return };
    // Codes come in runs (a batch is mostly OK): one atomic add per run,
    // not per record.
    let mut run = (0u16, 0u64);
    for code in codes {
        if code != run.0 && run.1 > 0 {
            METRICS.results(run.0, run.1);
            run.1 = 0;
        }
        run = (code, run.1 + 1);
    }
    if run.1 > 0 {
        METRICS.results(run.0, run.1);
    }
    if kind == kind::SUBMIT_TRANSFERS {
        for r in answers.chunks_exact(records::TransferResult::SIZE) {
            let r = records::TransferResult::decode(r);
            if r.code == 0 && r.state == records::STATE_PENDING {
                METRICS.aml_holds(Holds::from_bits(r.holds).unwrap_or_default());
            }
        }
    }
}

/// The running switch: every shard's thread, and the router in front of
/// them.
pub struct Switch {
    core: Arc<Core>,
    threads: Vec<Option<JoinHandle<()>>>,
    config: SwitchConfig,
    reports: Vec<RecoveryReport>,
    /// What the shards say when stopping (`handoff::Settled`).
    shards_settled: Arc<Settled>,
}

/// What routing a request needs, shared with the requests whose answers
/// are on their way (a contended request routes itself again).
struct Core {
    txs: Vec<Sender<Message>>,
    /// With several shards, routing and sending happen under this lock:
    /// the shards' queues get requests in the order their claims were
    /// taken, and `Busy` really means nothing was sent.
    router: parking_lot::Mutex<Router>,
    /// Claims of answered parts, handed over by the shard threads and
    /// folded into the router at its next use (a shard never waits for
    /// the router's lock, which a blocked send may hold).
    answered: Arc<parking_lot::Mutex<Vec<crate::router::Settled>>>,
    /// Bytes of request bodies queued and not yet applied, all shards.
    queued_bytes: Arc<Admission>,
    /// The latest engine time any shard reached (for HELLO's server time).
    now_ms: Arc<AtomicU64>,
    clock: Clock,
    quote_ttl_ms: u64,
    /// Set when the switch stops: a contended request stops retrying.
    stopped: std::sync::atomic::AtomicBool,
}

/// How long a contended request waits before it is routed again.
const CONTENDED_RETRY: Duration = Duration::from_micros(200);

/// File recording the settings a data directory was written with.
const META_FILE: &str = "META";

/// The settings that must not change over a data directory's life, as
/// `key=value` lines.
fn meta(config: &SwitchConfig) -> String {
    let w = config.engine.hold_windows;
    let clock = if config.clock.is_manual() { "manual" } else { "system" };
    let aml = config.engine.aml;
    let high_risk: Vec<String> = aml.high_risk.codes().iter().map(u16::to_string).collect();
    format!(
        "shards={}\nclock={clock}\nstep_up_window_ms={}\nmanual_review_window_ms={}\nclient_window_ms={}\n\
         quote_ttl_ms={}\naml_enabled={}\naml_daily_limit_hkd_minor={}\naml_high_risk_countries={}\n\
         aml_behaviour={}\naml_behaviour_model={}\naml_cooling_off_ms={}\n",
        config.shards,
        w.step_up_ms,
        w.manual_review_ms,
        w.client_ms,
        config.engine.quote_ttl_ms,
        aml.enabled,
        aml.daily_limit_hkd_minor,
        high_risk.join(","),
        aml.behaviour,
        crate::aml::BEHAVIOUR_MODEL_VERSION,
        aml.cooling_off_ms,
    )
}

/// The first setting that differs: (key, recorded, configured).
fn meta_mismatch(recorded: &str, wanted: &str) -> Option<(String, String, String)> {
    let pairs = |text: &str| -> Vec<(String, String)> {
        text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.trim().into(), v.trim().into())).collect()
    };
    let recorded = pairs(recorded);
    for (key, now) in pairs(wanted) {
        match recorded.iter().find(|(k, _)| *k == key) {
            Some((_, was)) if *was != now => return Some((key, was.clone(), now)),
            Some(_) => {}
            // A key an older build did not record is accepted when that
            // build behaved as the setting's value does now; AML did not
            // exist before `aml_enabled` was recorded, so its log replays
            // only with AML off.
            None if key == "aml_enabled" && now != "false" => {
                return Some((key, "false (a data directory from before AML)".into(), now));
            }
            None => {}
        }
    }
    None
}

/// The storage a data directory's shard uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Backend {
    /// `std::fs` (portable).
    #[default]
    Std,
    /// io_uring (Linux); falls back to `std::fs` where the kernel refuses.
    Uring,
}

impl Switch {
    /// Opens (or creates) a data directory: `dir/shard-N/` per shard, and a
    /// record (`META`) of the settings that decide outcomes (shard count,
    /// clock, hold windows), which later starts must match: a replay under
    /// other settings would decide differently.
    pub fn open_dir(dir: &Path, config: SwitchConfig, backend: Backend) -> Result<Switch, OpenError> {
        let root = FileStorage::new(dir).map_err(OpenError::Io)?;
        let wanted = meta(&config);
        match std::fs::read_to_string(dir.join(META_FILE)) {
            Ok(recorded) => {
                if let Some((key, was, now)) = meta_mismatch(&recorded, &wanted) {
                    return Err(OpenError::Settings { key, recorded: was, configured: now });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                root.write_durably(META_FILE, wanted.as_bytes()).map_err(OpenError::Io)?;
            }
            Err(e) => return Err(OpenError::Io(e)),
        }
        let mut storages: Vec<Arc<dyn Storage>> = Vec::with_capacity(config.shards);
        for i in 0..config.shards {
            let path = dir.join(format!("shard-{i}"));
            storages.push(open_backend(&path, backend).map_err(OpenError::Io)?);
        }
        Switch::open(config, storages)
    }

    /// Starts one thread per storage, each recovering its shard first.
    pub fn open(config: SwitchConfig, storages: Vec<Arc<dyn Storage>>) -> Result<Switch, OpenError> {
        if config.shards == 0 || config.shards > SHARDS_MAX || storages.len() != config.shards {
            return Err(OpenError::Config(format!("shards must be 1..={SHARDS_MAX}, one storage each")));
        }
        if config.group_requests_max == 0
            || config.group_requests_max > GROUP_REQUESTS_MAX
            || config.queue_depth_max < config.group_requests_max
            || config.queue_depth_max > QUEUE_DEPTH_MAX
        {
            return Err(OpenError::Config(format!(
                "need 0 < group_requests_max <= {GROUP_REQUESTS_MAX} and group_requests_max <= queue_depth_max \
                 <= {QUEUE_DEPTH_MAX}"
            )));
        }
        let n = config.shards;
        let mut txs = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        let mut reports = Vec::with_capacity(n);
        let now_ms = Arc::new(AtomicU64::new(0));
        let queued_bytes = Arc::new(Admission::new(QUEUED_BYTES_MAX));
        let mut router = Router::new(n, 1);
        if n > 1 {
            router.reserve(n * (config.engine.transfers_capacity + config.engine.loans_capacity));
        }
        let mut live_quotes = Vec::with_capacity(n);
        let mut multis = Vec::with_capacity(n);
        let mut first_error = None;
        // Each shard's link queue has room for a full window from every
        // other shard, so a link message is never refused or waited for.
        let windows = Arc::new(Windows::new(n, LINK_WINDOW_MAX));
        let settled = Arc::new(Settled::new(n));
        let (link_txs, mut link_rxs): (Vec<_>, Vec<_>) =
            (0..n).map(|_| crossbeam_channel::bounded::<LinkMessage>(windows.queue_capacity())).unzip();
        for (i, storage) in storages.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth_max);
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let shard_now = Arc::clone(&now_ms);
            let shard_queued = Arc::clone(&queued_bytes);
            let peers = Peers {
                me: i as u16,
                senders: link_txs.clone(),
                windows: Arc::clone(&windows),
                settled: Arc::clone(&settled),
            };
            let link_rx = link_rxs.remove(0);
            let mut config = config;
            config.engine.shard = i as u16;
            config.engine.shards = n as u16;
            let thread = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || match Shard::open(storage, &config) {
                    Ok((mut shard, report)) => {
                        // With AML off nothing is judged: no scorer either.
                        if let Some(s) = config.aml_scorer.filter(|_| config.engine.aml.enabled) {
                            match RemoteScorer::start(s.addr, s.io_timeout) {
                                Ok(scorer) => shard.set_gate(Gate::new(Box::new(scorer), s.budget)),
                                Err(e) => {
                                    let _ = ready_tx.send(Err(WalError::Io {
                                        op: "start aml scorer thread",
                                        file: String::new(),
                                        source: e,
                                    }));
                                    return;
                                }
                            }
                        }
                        shard_now.fetch_max(shard.engine.now_ms(), Ordering::Relaxed);
                        // The router's claims are rebuilt from what every
                        // shard stores (with one shard there are none).
                        let stored = (n > 1).then(|| (shard.engine.stored_ids(), shard.engine.multi().clone()));
                        let _ = ready_tx.send(Ok((report, shard.engine.next_quote_id(), stored)));
                        shard.run(&rx, &link_rx, &peers, config.group_requests_max, &shard_now, &shard_queued);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(OpenError::Io)?;
            match ready_rx.recv() {
                Ok(Ok((report, quote, stored))) => {
                    router.note_quote_id(quote);
                    if let Some((stored, multi)) = stored {
                        router.restore_stored(i, stored.ids, stored.repayments);
                        live_quotes.push(stored.quotes);
                        router.restore_requests(multi.applied);
                        multis.push(multi);
                    }
                    // The operator's record of what recovery did.
                    if let Some((file, offset, bytes)) = &report.torn_tail {
                        eprintln!("shard {i}: cut a torn last record of {bytes} bytes at {file} offset {offset}");
                    }
                    for skipped in &report.snapshots_skipped {
                        eprintln!("shard {i}: skipped snapshot {skipped}: checksum fails");
                    }
                    reports.push(report);
                }
                Ok(Err(error)) => first_error = first_error.or(Some(OpenError::Recovery { shard: i, error })),
                Err(_) => first_error = first_error.or(Some(OpenError::Recovery { shard: i, error: WalError::Failed })),
            }
            txs.push(tx);
            threads.push(Some(thread));
        }
        if first_error.is_none() && n > 1 {
            router.restore_quotes(&live_quotes);
        }
        let core = Core {
            txs,
            router: parking_lot::Mutex::new(router),
            answered: Arc::default(),
            queued_bytes,
            now_ms,
            clock: config.clock,
            quote_ttl_ms: config.engine.quote_ttl_ms,
            stopped: std::sync::atomic::AtomicBool::new(false),
        };
        let switch = Switch { core: Arc::new(core), threads, config, reports, shards_settled: settled };
        if first_error.is_none() && n > 1 {
            // A request spanning shards that one shard applied before the
            // crash is applied on the others too, before any new traffic.
            let due = multi::reconcile(&multis.iter().collect::<Vec<_>>());
            let mut answers = Vec::new();
            for (shard, records) in due.into_iter().enumerate() {
                for body in records {
                    let sent = switch.core.send(shard, kind::MULTI, body.clone(), true, None);
                    answers.push((
                        shard,
                        body,
                        sent.map_err(|e| OpenError::Recovery {
                            shard,
                            error: WalError::Io {
                                op: "reconcile",
                                file: String::new(),
                                source: io::Error::other(e.to_string()),
                            },
                        })?,
                    ));
                }
            }
            for (shard, body, rx) in answers {
                match rx.blocking_recv().unwrap_or(Err(SwitchError::ShardFailed)) {
                    // The ids it stored were not there when the claims
                    // were rebuilt.
                    Ok(answer) => switch.core.router.lock().adopt(shard, kind::MULTI, &body, &answer),
                    Err(e) => {
                        switch.shards_settled.abandon();
                        return Err(OpenError::Recovery {
                            shard,
                            error: WalError::Io {
                                op: "reconcile",
                                file: String::new(),
                                source: io::Error::other(e.to_string()),
                            },
                        });
                    }
                }
            }
            // A request split in rounds whose next round nobody began is
            // routed on, as it would have been.
            for (round, kind, rest) in multi::continuations(&multis.iter().collect::<Vec<_>>()) {
                let stage = switch.core.route_and_send(kind, &rest, true, Some(round));
                let done = stage.and_then(|stage| {
                    PendingReply { core: Arc::clone(&switch.core), kind, wait: true, stage }.wait_blocking()
                });
                if let Err(e) = done {
                    switch.shards_settled.abandon();
                    return Err(OpenError::Recovery {
                        shard: 0,
                        error: WalError::Io {
                            op: "continue a request",
                            file: String::new(),
                            source: io::Error::other(e.to_string()),
                        },
                    });
                }
            }
        }
        match first_error {
            Some(e) => {
                // A shard did not recover: the others stop at once, without
                // waiting to settle with it (the next start resends).
                switch.shards_settled.abandon();
                Err(e)
            }
            None => Ok(switch),
        }
    }

    /// What each shard's recovery found.
    #[must_use]
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    /// The switch's time as of the last group any shard applied (on the
    /// system clock, at least the wall clock).
    #[must_use]
    pub fn now_ms(&self) -> u64 {
        self.core.now_ms()
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// The shard that owns a customer account.
    #[must_use]
    pub fn shard_of(&self, account_id: u64) -> usize {
        shard_of(account_id, self.core.txs.len())
    }

    /// Applies a request and waits for its durable answer; waits for queue
    /// room rather than answering `Busy`.
    pub fn submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.dispatch(kind, body, true)?.wait_blocking()
    }

    /// Like [`Switch::submit`], but answers `Busy` at once (nothing applied)
    /// if a shard's queue is full.
    pub fn try_submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.dispatch(kind, body, false)?.wait_blocking()
    }

    /// Hands a request to its shard(s) without waiting for the answer: the
    /// async server's entry point. With `wait` false a full queue is `Busy`
    /// and nothing is sent anywhere. A request that must wait for another's
    /// claims (`router`) is accepted and routed when its answer is awaited.
    pub fn dispatch(&self, kind: u16, body: &[u8], wait: bool) -> Result<PendingReply, SwitchError> {
        let stage = self.core.route_and_send(kind, body, wait, None)?;
        Ok(PendingReply { core: Arc::clone(&self.core), kind, wait, stage })
    }

    /// Whether every request goes whole to one shard (then
    /// [`Switch::dispatch_direct`] applies).
    #[must_use]
    pub fn single_shard(&self) -> bool {
        self.core.txs.len() == 1
    }

    /// With one shard: hands the request over with a callback the shard
    /// thread calls with the answer right after the fsync, sparing the
    /// caller a task wake-up per request. `Busy` (nothing sent) if the
    /// queue is full and `wait` is false; the callback is then dropped
    /// uncalled.
    pub fn dispatch_direct(&self, kind: u16, body: Vec<u8>, wait: bool, reply: ReplyFn) -> Result<(), SwitchError> {
        assert!(self.single_shard(), "dispatch_direct needs a single shard");
        if kinds::from_channel(kind).is_none() {
            return Err(SwitchError::Engine(EngineError::UnknownKind(kind)));
        }
        self.core.enqueue(0, Request { kind, body, reply, enqueued: std::time::Instant::now() }, wait)
    }

    /// Stops every shard after the group it is applying; waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.core.stopped.store(true, Ordering::Relaxed);
        for tx in &self.core.txs {
            let _ = tx.send(Message::Stop);
        }
        for thread in &mut self.threads {
            if let Some(thread) = thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Core {
    fn now_ms(&self) -> u64 {
        self.clock.now_ms(self.now_ms.load(Ordering::Relaxed))
    }

    /// Routes a request and sends its parts, or says it must wait for
    /// another request's claims (nothing sent).
    fn route_and_send(
        &self,
        kind: u16,
        body: &[u8],
        wait: bool,
        continues: Option<u64>,
    ) -> Result<Progress, SwitchError> {
        if self.txs.len() == 1 && kind != kind::EXPORT_STR {
            // One shard: no claims, no merge.
            let mut router = Router::new(1, 1);
            let Routed::Plan { mut parts, .. } = router.route(kind, body, 0, 0, None).map_err(SwitchError::Engine)?
            else {
                unreachable!("one shard is never contended")
            };
            let part = parts.pop().expect("one part");
            let rx = self.send(part.shard, part.kind, part.body, wait, None)?;
            return Ok(Progress::Sent { parts: vec![rx], merge: Merge::Single, rest: None });
        }
        let mut router = self.router.lock();
        for settled in self.answered.lock().drain(..) {
            router.settle(settled);
        }
        if self.stopped.load(Ordering::Relaxed) {
            return Err(SwitchError::Stopped);
        }
        let routed =
            router.route(kind, body, self.now_ms(), self.quote_ttl_ms, continues).map_err(SwitchError::Engine)?;
        let (parts, merge, rest, round) = match routed {
            Routed::Contended => {
                METRICS.claim_waits.fetch_add(1, Ordering::Relaxed);
                return Ok(Progress::Contended(body.to_vec(), continues));
            }
            Routed::Plan { parts, merge, rest, round } => {
                if continues.is_some() {
                    METRICS.later_rounds.fetch_add(1, Ordering::Relaxed);
                }
                (parts, merge, rest, round)
            }
        };
        let bytes: u64 = parts.iter().map(|p| p.body.len() as u64).sum();
        if let Err(e) = self.reserve(parts.iter().map(|p| p.shard), bytes, wait) {
            router.undo(parts);
            return Err(e);
        }
        let mut rxs = Vec::with_capacity(parts.len());
        let mut parts = parts.into_iter();
        while let Some(part) = parts.next() {
            let claimed = (!part.claimed.is_empty()).then_some(part.claimed);
            match self.send(part.shard, part.kind, part.body, wait, claimed) {
                Ok(rx) => rxs.push(rx),
                Err(e) => {
                    // Only a stopping switch refuses here (room was
                    // checked): what was not sent holds no claim.
                    router.undo(parts.collect());
                    return Err(e);
                }
            }
        }
        let rest = rest.map(|r| (r, round.expect("a round with a rest is numbered")));
        Ok(Progress::Sent { parts: rxs, merge, rest })
    }

    /// Checks every target queue has room before sending anything, so a
    /// `Busy` answer means nothing was applied anywhere.
    fn reserve(&self, targets: impl Iterator<Item = usize>, bytes: u64, wait: bool) -> Result<(), SwitchError> {
        if wait {
            return Ok(());
        }
        if !self.queued_bytes.has_room(bytes) {
            return Err(SwitchError::Busy);
        }
        for s in targets {
            let tx = &self.txs[s];
            if tx.capacity().is_some_and(|cap| tx.len() >= cap) {
                return Err(SwitchError::Busy);
            }
        }
        Ok(())
    }

    /// Sends a part; its answer settles its claims (on the shard thread,
    /// handed to the router through `answered`) before it is passed on.
    fn send(
        &self,
        shard: usize,
        kind: u16,
        body: Vec<u8>,
        wait: bool,
        claimed: Option<crate::router::Claimed>,
    ) -> Result<oneshot::Receiver<Reply>, SwitchError> {
        let (tx, rx) = oneshot::channel();
        let reply: ReplyFn = match claimed {
            None => Box::new(move |answer| drop(tx.send(answer))),
            Some(claimed) => {
                let answered = Arc::clone(&self.answered);
                Box::new(move |answer: Reply| {
                    let settled = claimed.outcomes(answer.as_ref().ok().map(Vec::as_slice));
                    answered.lock().push(settled);
                    // A requester that gave up is not an error.
                    drop(tx.send(answer));
                })
            }
        };
        self.enqueue(shard, Request { kind, body, reply, enqueued: std::time::Instant::now() }, wait)?;
        Ok(rx)
    }

    fn enqueue(&self, shard: usize, request: Request, wait: bool) -> Result<(), SwitchError> {
        let len = request.body.len() as u64;
        if !self.queued_bytes.admit(len, wait) {
            return Err(SwitchError::Busy);
        }
        let message = Message::Request(request);
        let tx = &self.txs[shard];
        // Counted before the send (the shard may take it at once).
        METRICS.queue_depth.fetch_add(1, Ordering::Relaxed);
        let sent = if wait {
            tx.send(message).map_err(|_| SwitchError::Stopped)
        } else {
            tx.try_send(message).map_err(|e| match e {
                TrySendError::Full(_) => SwitchError::Busy,
                TrySendError::Disconnected(_) => SwitchError::Stopped,
            })
        };
        if sent.is_err() {
            self.queued_bytes.release(len);
            METRICS.queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }
}

/// Where a request is: sent (answers on their way, and maybe records to
/// route once they are in, continuing the round sent), or waiting for
/// another request's claims (the records, and the round they continue).
enum Progress {
    Sent { parts: Vec<oneshot::Receiver<Reply>>, merge: Merge, rest: Option<(crate::router::Rest, u64)> },
    Contended(Vec<u8>, Option<u64>),
}

/// A request handed to its shard(s), whose answer is on its way.
pub struct PendingReply {
    core: Arc<Core>,
    kind: u16,
    wait: bool,
    stage: Progress,
}

impl PendingReply {
    /// Waits on this thread (not inside an async runtime).
    pub fn wait_blocking(self) -> Reply {
        let PendingReply { core, kind, wait, mut stage } = self;
        let mut out = Gather::default();
        loop {
            stage = match stage {
                Progress::Sent { parts, merge, rest } => {
                    let mut answers = Vec::with_capacity(parts.len());
                    for rx in parts {
                        answers.push(rx.blocking_recv().unwrap_or(Err(SwitchError::ShardFailed))?);
                    }
                    merged(kind, merge, answers, rest.as_ref().map(|(r, _)| r), &mut out);
                    match rest {
                        None => return Ok(out.finish()),
                        Some((rest, round)) => core.again(kind, rest.body, wait, Some(round))?,
                    }
                }
                Progress::Contended(body, continues) => {
                    std::thread::sleep(CONTENDED_RETRY);
                    core.again(kind, body, wait, continues)?
                }
            };
        }
    }

    /// Waits asynchronously.
    pub async fn wait(self) -> Reply {
        let PendingReply { core, kind, wait, mut stage } = self;
        let mut out = Gather::default();
        loop {
            stage = match stage {
                Progress::Sent { parts, merge, rest } => {
                    let mut answers = Vec::with_capacity(parts.len());
                    for rx in parts {
                        answers.push(rx.await.unwrap_or(Err(SwitchError::ShardFailed))?);
                    }
                    merged(kind, merge, answers, rest.as_ref().map(|(r, _)| r), &mut out);
                    match rest {
                        None => return Ok(out.finish()),
                        Some((rest, round)) => core.again(kind, rest.body, wait, Some(round))?,
                    }
                }
                Progress::Contended(body, continues) => {
                    tokio::time::sleep(CONTENDED_RETRY).await;
                    core.again(kind, body, wait, continues)?
                }
            };
        }
    }
}

impl Core {
    /// Routes (the rest of) an accepted request again: a full queue now
    /// only delays it (the request was accepted; part of it may be
    /// applied).
    fn again(&self, kind: u16, body: Vec<u8>, wait: bool, continues: Option<u64>) -> Result<Progress, SwitchError> {
        match self.route_and_send(kind, &body, wait, continues) {
            Err(SwitchError::Busy) => Ok(Progress::Contended(body, continues)),
            other => other,
        }
    }
}

/// Merges a round's answers into what came before, counting the result
/// codes of answers no single shard counted (those every shard gave).
fn merged(kind: u16, how: Merge, answers: Vec<Vec<u8>>, rest: Option<&crate::router::Rest>, out: &mut Gather) {
    let counted_here = matches!(how, Merge::First | Merge::Balances(_));
    let answer = crate::router::merge(how, answers);
    if counted_here {
        count_results(kind, &answer);
    }
    out.add(kind, answer, rest);
}

fn open_backend(path: &Path, backend: Backend) -> io::Result<Arc<dyn Storage>> {
    #[cfg(target_os = "linux")]
    if backend == Backend::Uring && crate::wal::storage::UringStorage::available() {
        return Ok(Arc::new(crate::wal::storage::UringStorage::new(path)?));
    }
    let _ = backend;
    Ok(Arc::new(FileStorage::new(path)?))
}

pub use crate::router::{route_transfer, shard_of};
