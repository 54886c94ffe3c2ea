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
use crate::protocol::internal::{self, encode_judged, judged_len};
use crate::protocol::records::{self, Record, Transfer};
use crate::protocol::{kind, kinds};
use crate::router::{Gather, Merge, Routed, Router};
use crate::scorer::{Gate, GateStats, RemoteScorer};
use crate::timeline::{Mark, Trace};
use crate::wal::storage::{FileStorage, Storage};
use crate::wal::{RecoveryReport, Wal, WalError};

pub use crate::config::{
    Backend, GROUP_REQUESTS_MAX, QUEUE_DEPTH_MAX, QUEUED_BYTES_MAX, SHARDS_MAX, ScorerConfig, SwitchConfig,
};

/// Longest a shard sleeps with hold timers pending and no traffic.
const IDLE_WAKE_MAX: Duration = Duration::from_millis(100);
/// Most request bytes one group takes: the log's buffer holds a group's
/// records until the sync, and keeps its size, so this bounds it (a full
/// queue of large requests is applied in several groups).
const GROUP_BYTES_MAX: usize = 16 << 20;
/// How often an idle shard tries again to make a log segment it could not.
const ROLL_POLL: Duration = Duration::from_millis(50);

/// Why a request got no answer from the books.
#[derive(Debug, Clone)]
pub enum SwitchError {
    /// A shard's queue is full; nothing was applied.
    Busy,
    /// The request is not one the engine applies (kind or length).
    Engine(EngineError),
    /// The shard's log failed; the request was not applied durably. The
    /// one error is shared by every request it failed.
    LogFailed(Arc<WalError>),
    /// A shard's disk is below its reserve (`disk_reserve_bytes`): the
    /// request would be logged, so it was not applied.
    NoSpace,
    /// A shard thread died (a broken invariant).
    ShardFailed,
    /// The switch is shutting down; the request was not applied.
    Stopped,
    /// A cluster node that is not the leader: nothing applied; the
    /// leader's channel address, or empty when no leader is known.
    NotLeader(String),
    /// A cluster node lost its leadership (or its majority) while the
    /// request was being replicated: whether it was applied is unknown, so
    /// the connection closes and the channel resends (contract §7).
    LeadershipLost,
    /// A cluster node could not make a backup (nothing changed).
    Backup(String),
}

impl std::fmt::Display for SwitchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Busy => write!(f, "shard queue full; nothing applied"),
            Self::Engine(e) => write!(f, "{e}"),
            Self::LogFailed(e) => write!(f, "log failed: {e}"),
            Self::NoSpace => write!(f, "a shard's disk is below its reserve; nothing applied (lookups are served)"),
            Self::ShardFailed => write!(f, "shard thread failed"),
            Self::Stopped => write!(f, "switch stopped"),
            Self::NotLeader(at) if at.is_empty() => write!(f, "not the leader, and no leader is known"),
            Self::NotLeader(at) => write!(f, "not the leader; the leader is at {at}"),
            Self::LeadershipLost => write!(f, "leadership lost while replicating; outcome unknown"),
            Self::Backup(e) => write!(f, "backup failed: {e}"),
        }
    }
}

impl std::error::Error for SwitchError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Engine(e) => Some(e),
            Self::LogFailed(e) => Some(e.as_ref()),
            _ => None,
        }
    }
}

/// Equal kinds of failure; two log failures are equal if they say the
/// same (an I/O error has no equality of its own).
impl PartialEq for SwitchError {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Engine(a), Self::Engine(b)) => a == b,
            (Self::LogFailed(a), Self::LogFailed(b)) => a.to_string() == b.to_string(),
            (Self::NotLeader(a), Self::NotLeader(b)) => a == b,
            (a, b) => std::mem::discriminant(a) == std::mem::discriminant(b),
        }
    }
}

impl Eq for SwitchError {}

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
    /// The record of the settings (`META`) is missing or contradicted in
    /// a directory that holds data: the file and what to do.
    Meta(String),
    /// A shard's disk has less free space than the reserve.
    NoSpace {
        shard: usize,
        free: u64,
        reserve: u64,
    },
    /// A request spanning shards, found part-applied at start, could not
    /// be finished on `shard`.
    Round {
        shard: usize,
        error: SwitchError,
    },
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
            Self::Meta(e) => write!(f, "data directory: {e}"),
            Self::NoSpace { shard, free, reserve } => write!(
                f,
                "shard {shard}: {free} bytes free on its disk, below the reserve of {reserve} \
                 (disk_reserve_bytes): free space before starting"
            ),
            Self::Round { shard, error } => write!(f, "shard {shard}: finishing a request spanning shards: {error}"),
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
    /// When the shard took it off its queue (`enqueued` until then).
    pub taken: std::time::Instant,
    /// Its timeline, if it is one the switch traces (`--trace-sample`).
    pub trace: Option<Arc<crate::timeline::Trace>>,
    /// In a cluster of several shards, the router's epoch it was routed in:
    /// a proposer drops it in any other (`lead`). 0 elsewhere.
    pub epoch: u64,
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
    /// When its group was durable.
    synced: std::time::Instant,
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
    /// Per request of the group being applied: when its apply started and
    /// ended (the timeline's stages, `metrics::Stage`).
    applied: Vec<(std::time::Instant, std::time::Instant)>,
    /// The group's start, and its sync's start and end.
    group_times: GroupTimes,
}

/// When the last group started and synced.
#[derive(Clone, Copy, Debug)]
struct GroupTimes {
    start: std::time::Instant,
    fsync_start: std::time::Instant,
    fsync_end: std::time::Instant,
}

impl GroupTimes {
    fn at(now: std::time::Instant) -> Self {
        Self { start: now, fsync_start: now, fsync_end: now }
    }
}

impl Request {
    /// A request queued now.
    pub fn new(kind: u16, body: Vec<u8>, reply: ReplyFn, epoch: u64) -> Self {
        let now = std::time::Instant::now();
        Self { kind, body, reply, enqueued: now, taken: now, trace: None, epoch }
    }
}

pub use crate::router::{route_transfer, shard_of};

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
    answered: Arc<parking_lot::Mutex<Vec<(u64, crate::router::Settled)>>>,
    /// Bytes of request bodies queued and not yet applied, all shards.
    queued_bytes: Arc<Admission>,
    /// The latest engine time any shard reached (for HELLO's server time).
    now_ms: Arc<AtomicU64>,
    clock: Clock,
    quote_ttl_ms: u64,
    /// Set when the switch stops: a contended request stops retrying.
    stopped: std::sync::atomic::AtomicBool,
    /// Whether every shard's disk keeps its reserve.
    room: Room,
    /// A cluster node of several shards: the epoch its router serves.
    leading: Option<Arc<lead::Leading>>,
}

/// Whether every shard's disk keeps the reserve, checked at most every
/// `ROOM_CHECK_EVERY` (a `statvfs` per shard), so a refusal lifts by
/// itself once space returns.
struct Room {
    storages: Vec<Arc<dyn Storage>>,
    reserve: u64,
    /// Per shard, whether its log could not make its next segment
    /// (`Wal::short_flag`): writes are refused until it is made.
    logs_short: Vec<Arc<std::sync::atomic::AtomicBool>>,
    /// When last checked, and what it found.
    last: parking_lot::Mutex<(Option<std::time::Instant>, bool)>,
}

const ROOM_CHECK_EVERY: Duration = Duration::from_millis(50);

impl Room {
    fn ok(&self) -> bool {
        if self.logs_short.iter().any(|s| s.load(Ordering::Relaxed)) {
            METRICS.disk_below_reserve.store(1, Ordering::Relaxed);
            return false;
        }
        let mut last = self.last.lock();
        if last.0.is_some_and(|at| at.elapsed() < ROOM_CHECK_EVERY) {
            return last.1;
        }
        let ok = self.storages.iter().all(|s| s.free_bytes().map_or(true, |free| free >= self.reserve));
        if ok != last.1 && last.0.is_some() {
            if ok {
                tracing::info!(reserve = self.reserve, "disk space is back above the reserve; taking writes again");
            } else {
                tracing::warn!(
                    reserve = self.reserve,
                    "a shard's disk fell below the reserve; refusing writes (BUSY), serving lookups"
                );
            }
        }
        *last = (Some(std::time::Instant::now()), ok);
        METRICS.disk_below_reserve.store(u64::from(!ok), Ordering::Relaxed);
        ok
    }
}

/// How long a contended request waits before it is routed again.
const CONTENDED_RETRY: Duration = Duration::from_micros(200);

mod lead;
mod propose;
mod reply;
mod run;
mod step;
mod switch;

pub use reply::PendingReply;
use step::count_results;
pub(crate) use step::{scoped_submission, submission};
pub use switch::{META_FILE, Switch, meta, meta_mismatch, open_backend, recorded_meta, shard_dirs};
