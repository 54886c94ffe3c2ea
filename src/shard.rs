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
//! Requests still queued behind it are dropped unanswered, and so never
//! applied (their senders see `Stopped`).
//!
//! Failure: if the log fails, the shard answers the group and every later
//! request with `LogFailed` and applies nothing more; the process must
//! restart and recover from disk. A broken invariant panics the shard thread;
//! its requests see `ShardFailed`.
//!
//! Sharding seam: accounts map to shards by a fixed hash of their id, and
//! every shard has its own part of each system account, so a deposit, a
//! withdrawal or a remittance touches one shard. A transfer between two
//! customers on different shards is answered `CROSS_SHARD` until atomic
//! cross-shard transfers land (issue 8); with one shard (the default) every
//! transfer is local.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::clock::Clock;
use crate::engine::{Engine, EngineConfig, EngineError, MANUAL_CLOCK_START_MS};
use crate::hash::mix64;
use crate::protocol::records::{self, Account, Balance, BalanceKey, Record, Transfer, TransferResult};
use crate::protocol::{ResultCode, kind};
use crate::wal::storage::{FileStorage, Storage};
use crate::wal::{RecoveryReport, Wal, WalConfig, WalError};

/// Most requests one shard applies between two syncs.
pub const GROUP_REQUESTS_MAX: usize = 4096;
/// Deepest a shard's queue may get.
pub const QUEUE_DEPTH_MAX: usize = 65_536;
/// Most shards a switch runs.
pub const SHARDS_MAX: usize = 256;
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
    /// the last one: it bounds the log a recovery replays. A snapshot stops
    /// the shard while it encodes (about 1.4 s for 1M accounts and 3M
    /// transfers), so this should be large in production.
    pub snapshot_log_bytes: u64,
    /// Bound of each shard's queue.
    pub queue_depth_max: usize,
    /// Most requests per group commit.
    pub group_requests_max: usize,
    pub clock: Clock,
}

impl Default for SwitchConfig {
    fn default() -> Self {
        Self {
            shards: 1,
            engine: EngineConfig::default(),
            wal: WalConfig::default(),
            snapshot_log_bytes: 1 << 30,
            queue_depth_max: 4096,
            group_requests_max: 1024,
            clock: Clock::System,
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
    /// The data directory was written with another shard count.
    ShardCount {
        recorded: usize,
        configured: usize,
    },
    /// The configuration is out of bounds.
    Config(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Recovery { shard, error } => write!(f, "shard {shard}: {error}"),
            Self::ShardCount { recorded, configured } => write!(
                f,
                "data directory was written with {recorded} shards but {configured} are configured; \
                 start with --shards {recorded} (re-sharding is not supported yet)"
            ),
            Self::Config(e) => write!(f, "configuration: {e}"),
        }
    }
}

impl std::error::Error for OpenError {}

/// The answer to one request: response records, or why there are none.
pub type Reply = Result<Vec<u8>, SwitchError>;

/// A request for one shard.
pub struct Request {
    pub kind: u16,
    pub body: Vec<u8>,
    pub reply: oneshot::Sender<Reply>,
}

enum Message {
    Request(Request),
    Stop,
}

/// One shard's engine and log, driven by its thread (or directly by tests).
pub struct Shard {
    engine: Engine,
    wal: Wal,
    clock: Clock,
    snapshot_log_bytes: u64,
    /// The log's byte count when the last snapshot was taken.
    bytes_at_snapshot: u64,
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
        };
        Ok((shard, report))
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
    /// returns one answer per request. On a log error every answer is
    /// `LogFailed` and the error is returned too.
    pub fn process(&mut self, group: &[(u16, &[u8])]) -> (Vec<Reply>, Result<(), WalError>) {
        let mut replies = Vec::with_capacity(group.len());
        let result = self.apply_group(group, &mut replies).and_then(|()| self.wal.commit());
        if let Err(e) = &result {
            let message = e.to_string();
            replies.clear();
            replies.resize(group.len(), Err(SwitchError::LogFailed(message)));
            return (replies, result);
        }
        let bytes = self.wal.stats().bytes;
        if bytes - self.bytes_at_snapshot >= self.snapshot_log_bytes {
            let mut state = Vec::new();
            self.engine.encode_state(&mut state);
            let snapshot = self.wal.write_snapshot(&state);
            self.bytes_at_snapshot = bytes;
            if let Err(e) = snapshot {
                // The group is durable and answered; the next one will fail.
                return (replies, Err(e));
            }
        }
        (replies, Ok(()))
    }

    fn apply_group(&mut self, group: &[(u16, &[u8])], replies: &mut Vec<Reply>) -> Result<(), WalError> {
        let now = self.clock.now_ms(self.engine.now_ms());
        if self.engine.advance(now) > 0 {
            // Timers fired: record the time so a replay fires them too.
            self.wal.append(kind::TICK, now, &[])?;
        }
        for &(kind, body) in group {
            if let Some(size) = Engine::request_size(kind).filter(|_| kind != kind::TICK) {
                if body.len() % size == 0 {
                    if kind::is_logged(kind) {
                        self.wal.append(kind, now, body)?;
                    }
                    let mut out = Vec::with_capacity(body.len() / size * 64);
                    self.engine.apply(kind, body, now, &mut out).expect("kind and length checked before logging");
                    replies.push(Ok(out));
                    continue;
                }
                replies.push(Err(SwitchError::Engine(EngineError::BadLength { kind, len: body.len() })));
            } else {
                replies.push(Err(SwitchError::Engine(EngineError::UnknownKind(kind))));
            }
        }
        Ok(())
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

    fn run(mut self, rx: &Receiver<Message>, group_max: usize) {
        let mut batch: Vec<Request> = Vec::with_capacity(group_max);
        let mut stopping = false;
        while !stopping {
            let first = match self.wake_in() {
                Some(wait) => match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => Some(Message::Stop),
                },
                None => Some(rx.recv().unwrap_or(Message::Stop)),
            };
            let mut next = first;
            while let Some(message) = next.take() {
                match message {
                    Message::Request(r) => batch.push(r),
                    Message::Stop => {
                        stopping = true;
                        break;
                    }
                }
                if batch.len() < group_max {
                    next = rx.try_recv().ok();
                }
            }
            let group: Vec<(u16, &[u8])> = batch.iter().map(|r| (r.kind, r.body.as_slice())).collect();
            let (replies, _) = self.process(&group);
            for (request, reply) in batch.drain(..).zip(replies) {
                // A requester that gave up is not an error.
                let _ = request.reply.send(reply);
            }
        }
    }
}

struct ShardHandle {
    tx: Sender<Message>,
    thread: Option<JoinHandle<()>>,
}

/// The running switch: every shard's thread, and the router in front of
/// them.
pub struct Switch {
    shards: Vec<ShardHandle>,
    config: SwitchConfig,
    reports: Vec<RecoveryReport>,
}

/// File recording how many shards a data directory was written with.
const SHARDS_FILE: &str = "SHARDS";

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
    /// record of the shard count that later starts must match.
    pub fn open_dir(dir: &Path, config: SwitchConfig, backend: Backend) -> Result<Switch, OpenError> {
        std::fs::create_dir_all(dir).map_err(OpenError::Io)?;
        let shards_file = dir.join(SHARDS_FILE);
        match std::fs::read_to_string(&shards_file) {
            Ok(text) => {
                let recorded: usize = text.trim().parse().map_err(|_| {
                    OpenError::Io(io::Error::other(format!("{} is not a number", shards_file.display())))
                })?;
                if recorded != config.shards {
                    return Err(OpenError::ShardCount { recorded, configured: config.shards });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let tmp = dir.join("SHARDS.tmp");
                std::fs::write(&tmp, format!("{}\n", config.shards)).map_err(OpenError::Io)?;
                std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(OpenError::Io)?;
                std::fs::rename(&tmp, &shards_file).map_err(OpenError::Io)?;
                std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(OpenError::Io)?;
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
        if config.group_requests_max == 0 || config.queue_depth_max < config.group_requests_max {
            return Err(OpenError::Config("need 0 < group_requests_max <= queue_depth_max".into()));
        }
        let mut shards = Vec::with_capacity(config.shards);
        let mut reports = Vec::with_capacity(config.shards);
        let mut first_error = None;
        for (i, storage) in storages.into_iter().enumerate() {
            let (tx, rx) = crossbeam_channel::bounded(config.queue_depth_max.min(QUEUE_DEPTH_MAX));
            let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
            let thread = std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn(move || match Shard::open(storage, &config) {
                    Ok((shard, report)) => {
                        let _ = ready_tx.send(Ok(report));
                        shard.run(&rx, config.group_requests_max);
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                })
                .map_err(OpenError::Io)?;
            match ready_rx.recv() {
                Ok(Ok(report)) => {
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
            shards.push(ShardHandle { tx, thread: Some(thread) });
        }
        let switch = Switch { shards, config, reports };
        match first_error {
            Some(e) => Err(e),
            None => Ok(switch),
        }
    }

    /// What each shard's recovery found.
    #[must_use]
    pub fn recovery_reports(&self) -> &[RecoveryReport] {
        &self.reports
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &SwitchConfig {
        &self.config
    }

    /// The shard that owns a customer account.
    #[must_use]
    pub fn shard_of(&self, account_id: u64) -> usize {
        shard_of(account_id, self.shards.len())
    }

    /// Applies a request and waits for its durable answer; waits for queue
    /// room rather than answering `Busy`.
    pub fn submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.route(kind, body, true)
    }

    /// Like [`Switch::submit`], but answers `Busy` at once (nothing applied)
    /// if a shard's queue is full.
    pub fn try_submit(&self, kind: u16, body: &[u8]) -> Reply {
        self.route(kind, body, false)
    }

    fn send(
        &self,
        shard: usize,
        kind: u16,
        body: Vec<u8>,
        wait: bool,
    ) -> Result<oneshot::Receiver<Reply>, SwitchError> {
        let (reply, rx) = oneshot::channel();
        let message = Message::Request(Request { kind, body, reply });
        let tx = &self.shards[shard].tx;
        if wait {
            tx.send(message).map_err(|_| SwitchError::Stopped)?;
        } else {
            tx.try_send(message).map_err(|e| match e {
                TrySendError::Full(_) => SwitchError::Busy,
                TrySendError::Disconnected(_) => SwitchError::Stopped,
            })?;
        }
        Ok(rx)
    }

    fn wait(rx: oneshot::Receiver<Reply>) -> Reply {
        rx.blocking_recv().unwrap_or(Err(SwitchError::ShardFailed))
    }

    fn route(&self, kind: u16, body: &[u8], wait: bool) -> Reply {
        let n = self.shards.len();
        if n == 1 {
            return Self::wait(self.send(0, kind, body.to_vec(), wait)?);
        }
        match kind {
            kind::CREATE_ACCOUNTS => {
                self.scatter::<Account, records::RecordResult>(body, wait, |a| Ok(shard_of(a.account_id, n)))
            }
            kind::SUBMIT_TRANSFERS => self.scatter::<Transfer, TransferResult>(body, wait, |t| {
                route_transfer(t, n).ok_or(TransferResult {
                    transfer_id: t.transfer_id,
                    code: ResultCode::CrossShard.as_u16(),
                    ..TransferResult::default()
                })
            }),
            kind::LOOKUP_BALANCES => self.lookup_balances(body, wait),
            _ => self.broadcast(kind, body, wait),
        }
    }

    /// Sends each record to its shard (or answers it at once), keeping the
    /// request's order in the answer.
    fn scatter<R: Record, A: Record>(&self, body: &[u8], wait: bool, place: impl Fn(&R) -> Result<usize, A>) -> Reply {
        if !body.len().is_multiple_of(R::SIZE) {
            return Err(SwitchError::Engine(EngineError::BadLength { kind: 0, len: body.len() }));
        }
        let n = self.shards.len();
        let mut bodies = vec![Vec::new(); n];
        let mut slots: Vec<Result<usize, A>> = Vec::with_capacity(body.len() / R::SIZE);
        for chunk in body.chunks_exact(R::SIZE) {
            let placed = place(&R::decode(chunk));
            if let Ok(s) = placed {
                bodies[s].extend_from_slice(chunk);
            }
            slots.push(placed);
        }
        let kind = if R::SIZE == Account::SIZE { kind::CREATE_ACCOUNTS } else { kind::SUBMIT_TRANSFERS };
        let mut pending = Vec::with_capacity(n);
        for (s, b) in bodies.into_iter().enumerate() {
            pending.push(if b.is_empty() { None } else { Some(self.send(s, kind, b, wait)?) });
        }
        let mut answers: Vec<Option<(Vec<u8>, usize)>> = Vec::with_capacity(n);
        for p in pending {
            answers.push(match p {
                Some(rx) => Some((Self::wait(rx)?, 0)),
                None => None,
            });
        }
        let mut out = Vec::with_capacity(slots.len() * A::SIZE);
        for slot in slots {
            match slot {
                Ok(s) => {
                    let (bytes, at) = answers[s].as_mut().expect("shard answered");
                    out.extend_from_slice(&bytes[*at..*at + A::SIZE]);
                    *at += A::SIZE;
                }
                Err(answer) => records::push(&mut out, &answer),
            }
        }
        Ok(out)
    }

    /// Balances of customer accounts come from their shard; a system
    /// account's balance is the sum of its parts on every shard.
    fn lookup_balances(&self, body: &[u8], wait: bool) -> Reply {
        let all = self.broadcast_raw(kind::LOOKUP_BALANCES, body, wait)?;
        let n = self.shards.len();
        let mut out = Vec::with_capacity(body.len() / BalanceKey::SIZE * Balance::SIZE);
        for (i, chunk) in body.chunks_exact(BalanceKey::SIZE).enumerate() {
            let key = BalanceKey::decode(chunk);
            let at = i * Balance::SIZE;
            let answer = if key.account_id < crate::engine::book::CUSTOMER_ID_MIN {
                let mut sum = Balance::decode(&all[0][at..at + Balance::SIZE]);
                for part in &all[1..] {
                    let b = Balance::decode(&part[at..at + Balance::SIZE]);
                    sum.balance = sum.balance.wrapping_add(b.balance);
                    sum.held = sum.held.wrapping_add(b.held);
                }
                sum
            } else {
                let s = shard_of(key.account_id, n);
                Balance::decode(&all[s][at..at + Balance::SIZE])
            };
            records::push(&mut out, &answer);
        }
        Ok(out)
    }

    /// Sends a request keyed by transfer id to every shard and keeps, per
    /// record, the answer of the shard that knows the id.
    fn broadcast(&self, kind: u16, body: &[u8], wait: bool) -> Reply {
        let all = self.broadcast_raw(kind, body, wait)?;
        let size = if kind == kind::SET_TIME { records::RecordResult::SIZE } else { TransferResult::SIZE };
        let mut out = all[0].clone();
        if size == TransferResult::SIZE {
            for part in &all[1..] {
                for (mine, theirs) in out.chunks_exact_mut(size).zip(part.chunks_exact(size)) {
                    let code = TransferResult::decode(mine).code;
                    if code == ResultCode::TransferNotFound.as_u16() {
                        mine.copy_from_slice(theirs);
                    }
                }
            }
        }
        Ok(out)
    }

    fn broadcast_raw(&self, kind: u16, body: &[u8], wait: bool) -> Result<Vec<Vec<u8>>, SwitchError> {
        let mut pending = Vec::with_capacity(self.shards.len());
        for s in 0..self.shards.len() {
            pending.push(self.send(s, kind, body.to_vec(), wait)?);
        }
        pending.into_iter().map(Self::wait).collect()
    }

    /// Stops every shard after the group it is applying; waits for them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        for shard in &self.shards {
            let _ = shard.tx.send(Message::Stop);
        }
        for shard in &mut self.shards {
            if let Some(thread) = shard.thread.take() {
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

fn open_backend(path: &Path, backend: Backend) -> io::Result<Arc<dyn Storage>> {
    #[cfg(target_os = "linux")]
    if backend == Backend::Uring && crate::wal::storage::UringStorage::available() {
        return Ok(Arc::new(crate::wal::storage::UringStorage::new(path)?));
    }
    let _ = backend;
    Ok(Arc::new(FileStorage::new(path)?))
}

/// The shard that owns a customer account: a fixed hash of its id, so the
/// assignment never changes for a given shard count.
#[must_use]
pub fn shard_of(account_id: u64, shards: usize) -> usize {
    if shards == 1 { 0 } else { (mix64(account_id) % shards as u64) as usize }
}

/// The shard a transfer runs on: its customer account's, or the customers'
/// common shard; `None` if it would cross shards. System accounts exist on
/// every shard.
#[must_use]
pub fn route_transfer(t: &Transfer, shards: usize) -> Option<usize> {
    let system = |id: u64| id < crate::engine::book::CUSTOMER_ID_MIN;
    match (system(t.debit_account), system(t.credit_account)) {
        (true, true) => Some(0),
        (true, false) => Some(shard_of(t.credit_account, shards)),
        (false, true) => Some(shard_of(t.debit_account, shards)),
        (false, false) => {
            let s = shard_of(t.debit_account, shards);
            (s == shard_of(t.credit_account, shards)).then_some(s)
        }
    }
}
