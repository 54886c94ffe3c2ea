//! The channel server: TCP listener, per-connection session, frame checks in
//! the contract's order, and the hand-off of requests to the shards.
//!
//! Each connection is one task that reads frames and one that writes them,
//! so a slow or stalled channel only ever holds up itself. A request that
//! passes every check is handed to its shard(s) at once (`Switch::dispatch`,
//! never waiting for queue room: a full queue is BUSY and nothing is
//! applied); its answer is awaited in its own task and written whenever it
//! comes, so answers may leave out of order (match on `request_id`).
//!
//! Limits: `max_body` per frame, `max_batch` records per request,
//! `max_in_flight` unanswered requests per connection (a semaphore),
//! `connections_max` connections (one more is told BUSY and closed), and an
//! idle timeout for connections that neither send nor wait.
//!
//! Shutdown: when told to stop, every connection stops reading new frames,
//! waits until every request it handed over is answered and written, and
//! closes; then the switch stops its shards after their current group. A
//! request not yet read is never applied.
//!
//! Failure: if a shard's log fails, the server stops at once without
//! answering what that shard could not make durable; the process exits
//! non-zero and a restart recovers from disk.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
/// A connection's halves: plain TCP or TLS.
type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::config::{Channel, Config};
use crate::metrics::{METRICS, Stage};
use crate::protocol::frame::{self, ErrorCode, Header, RESPONSE_BIT};
use crate::protocol::internal::{self, Caller, Scope};
use crate::protocol::kind;
use crate::protocol::kinds::{self, CountRule, KindSpec, Route};
use crate::protocol::session::{Challenge, Hello, HelloResponse};
use crate::shard::{Switch, SwitchError};
use crate::timeline::{Mark, Sampler, Trace};

/// Bytes a connection reads at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes of answers the writer gathers into one write.
const WRITE_GATHER_MAX: usize = 1 << 20;
/// A connection's read or write buffer larger than this after use (a large
/// frame, a burst of answers) is given back rather than kept.
const BUFFER_KEPT_MAX: usize = 4 * READ_CHUNK;

/// The server's settings that a connection needs.
#[derive(Clone, Debug)]
struct Limits {
    max_body: u32,
    max_batch: u32,
    max_in_flight: u32,
    idle_timeout: Duration,
    handshake_timeout: Duration,
    write_timeout: Duration,
}

/// Metrics scrapes served at once at most.
const METRICS_CONNECTIONS_MAX: usize = 16;
/// Scrapers from one address at once.
const METRICS_PER_ADDRESS: usize = 8;
/// STR exports being made at once, switch-wide: each may hold a 256 MiB
/// report in memory.
const STR_EXPORTS_MAX: usize = 1;
/// How long a closing connection keeps reading (and discarding) what the
/// channel still sends, so the close is a FIN after our last answer and not
/// a reset that could destroy it.
const LINGER: Duration = Duration::from_secs(1);

/// Why the server stopped.
#[derive(Debug)]
pub enum ServeError {
    Io(std::io::Error),
    /// A shard's log failed (or a shard died): state in memory is ahead of
    /// the disk.
    Fatal(SwitchError),
    /// A task of the server panicked or was cancelled.
    Task(tokio::task::JoinError),
}

impl std::fmt::Display for ServeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(e) => write!(f, "{e}"),
            Self::Fatal(e) => write!(f, "fatal: {e}"),
            Self::Task(e) => write!(f, "a server task failed: {e}"),
        }
    }
}

impl std::error::Error for ServeError {}

/// Runs the server on `listener` until `stop` turns true (or a fatal error),
/// then drains every connection. The switch is left running: the caller
/// shuts it down.
async fn serve(
    listener: TcpListener,
    switch: Arc<Switch>,
    config: &Config,
    (keyring, gate): (Arc<Keyring>, Arc<crate::admission::Gate>),
    mut stop: watch::Receiver<bool>,
    recorder: Option<Arc<crate::traffic::Recorder>>,
) -> Result<(), ServeError> {
    let limits = Limits {
        max_body: config.max_body,
        max_batch: config.max_batch,
        max_in_flight: config.max_in_flight,
        idle_timeout: Duration::from_millis(config.idle_timeout_ms),
        handshake_timeout: Duration::from_millis(config.handshake_timeout_ms),
        write_timeout: Duration::from_millis(config.write_timeout_ms),
    };
    let exports = Arc::new(Semaphore::new(STR_EXPORTS_MAX));
    let traces = Arc::new(Sampler::new(config.trace_sample));
    let answer_bytes = Arc::new(crate::handoff::Admission::new(config.answer_bytes_max));
    // Connections watch `draining`; the server waits for them through `done`.
    let (drain_tx, drain_rx) = watch::channel(false);
    let (fatal_tx, mut fatal_rx) = mpsc::channel::<ServeError>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let fatal = loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break None;
                }
            }
            Some(message) = fatal_rx.recv() => break Some(message),
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or the like: back off, don't spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let (place, evicted) = match gate.admit(peer.ip()) {
                    Ok(admitted) => admitted,
                    Err(why) => {
                        METRICS.connections_refused.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(refuse(stream, why.detail()));
                        continue;
                    }
                };
                METRICS.connections_total.fetch_add(1, Ordering::Relaxed);
                METRICS.connections_open.fetch_add(1, Ordering::Relaxed);
                let conn = Connection {
                    answers: None,
                    switch: Arc::clone(&switch),
                    channels: Arc::clone(&keyring),
                    limits: limits.clone(),
                    in_flight: Arc::new(Semaphore::new(limits.max_in_flight as usize)),
                    exports: Arc::clone(&exports),
                    traces: Arc::clone(&traces),
                    recorder: recorder.clone(),
                    session: None,
                    fatal: fatal_tx.clone(),
                    writer_gone: Arc::default(),
                    answer_bytes: Arc::clone(&answer_bytes),
                    gate: Arc::clone(&gate),
                    place: Some(place),
                    seat: None,
                    certificate: None,
                    peer,
                };
                let draining = drain_rx.clone();
                let done = done_tx.clone();
                // The TLS files as last (re)loaded.
                let tls = keyring.tls.read().clone();
                tokio::spawn(async move {
                    let mut conn = conn;
                    let mut evicted = evicted;
                    let connected = tokio::time::Instant::now();
                                let halves: Option<(Reader, Writer)> = match tls {
                        None => {
                            let (reader, writer) = stream.into_split();
                            Some((Box::new(reader), Box::new(writer)))
                        }
                        // The TLS handshake counts against the HELLO
                        // deadline, and an eviction ends it too.
                        Some(tls) => tokio::select! {
                            accepted = tls.accept(stream, conn.limits.handshake_timeout, peer) => match accepted {
                                Some((stream, certificate)) => {
                                    conn.certificate = certificate;
                                    let (reader, writer) = tokio::io::split(stream);
                                    Some((Box::new(reader), Box::new(writer)))
                                }
                                None => None,
                            },
                            _ = &mut evicted => None,
                        },
                    };
                    if let Some(halves) = halves {
                        conn.run(halves, (connected, draining), evicted).await;
                    }
                    METRICS.connections_open.fetch_sub(1, Ordering::Relaxed);
                    drop(done);
                });
            }
        }
    };
    drop(listener);
    let _ = drain_tx.send(true);
    drop(done_tx);
    if let Some(error) = fatal {
        return Err(error);
    }
    // Every connection holds a `done` sender; all dropped means all drained.
    // A connection that still has not drained by the deadline is dropped:
    // what it was owed is durable, and the channel resends.
    tokio::select! {
        _ = done_rx.recv() => Ok(()),
        Some(error) = fatal_rx.recv() => Err(error),
        () = tokio::time::sleep(Duration::from_millis(config.drain_timeout_ms)) => Ok(()),
    }
}

/// The books' files are the bank's customers' payments: the data
/// directory is made readable by the switch's user only (0700), and every
/// file the process creates from here on is too (umask 077; the log, the
/// snapshots, a cluster's raft files, backups).
fn private_data(data: &std::path::Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // SAFETY: umask only sets the process's file-creation mask; it
        // cannot fail and touches no memory.
        unsafe {
            libc::umask(0o077);
        }
        std::fs::create_dir_all(data)?;
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o700))?;
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(data)?;
    Ok(())
}

/// Tells a connection over a limit BUSY and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, detail: &str) {
    let mut out = BytesMut::new();
    frame::encode(&mut out, frame::ERROR_KIND, 0, 0, &frame::error_body(ErrorCode::Busy, detail));
    METRICS.frame_error(ErrorCode::Busy);
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}

/// An authenticated session: its channel's roles and account scope, and
/// the key it said HELLO with (a reload that retires that key ends the
/// session).
#[derive(Clone, Debug)]
struct Session {
    roles: u16,
    channel: u32,
    scope: Scope,
    key: Vec<u8>,
}

impl Session {
    /// The request as the shards apply it: SCOPED (`internal::Caller`)
    /// when the channel's scope limits the accounts it names, and always
    /// for CREATE_ACCOUNTS, so the books record who opened each account,
    /// and for an administrative act, so the log says who took it (and a
    /// cluster's every node writes it on its audit trail).
    fn scoped(&self, kind: u16, body: &[u8]) -> Option<Vec<u8>> {
        let limited = kind == kind::CREATE_ACCOUNTS || audited(kind) || !self.scope.is_all();
        (limited && internal::is_scoped_kind(kind))
            .then(|| internal::encode_scoped(&Caller { channel: self.channel, scope: self.scope }, kind, body))
    }
}

/// The channels allowed to connect. A reload (`Running::reload_channels`)
/// replaces the list and tells every connection, which ends its session if
/// its channel is gone or the key it said HELLO with is no longer one of
/// the channel's, and otherwise takes the channel's new roles.
pub struct Keyring {
    list: parking_lot::RwLock<Arc<[Channel]>>,
    changed: watch::Sender<u64>,
    /// The configuration running, channels as last reloaded.
    config: parking_lot::Mutex<Config>,
    gate: Arc<crate::admission::Gate>,
    /// How to read the configuration again (`harbour serve`: its file and
    /// command line), for SIGHUP and RELOAD_CHANNELS.
    loader: parking_lot::RwLock<Option<Loader>>,
    /// The audit trail of administrative acts (`audit`).
    audit: Arc<crate::audit::AuditLog>,
    /// `[tls]`'s files as last read: a reload reads them again (a new
    /// certificate, CA or CRL), for new connections and to end sessions
    /// whose certificate is now revoked.
    tls: parking_lot::RwLock<Option<crate::tls::Acceptor>>,
}

/// Reads the configuration again.
pub type Loader = Arc<dyn Fn() -> Result<Config, String> + Send + Sync>;

impl Keyring {
    fn new(
        config: &Config,
        gate: Arc<crate::admission::Gate>,
        audit: Arc<crate::audit::AuditLog>,
        tls: Option<crate::tls::Acceptor>,
    ) -> Arc<Keyring> {
        Arc::new(Keyring {
            audit,
            tls: parking_lot::RwLock::new(tls),
            list: parking_lot::RwLock::new(config.channels.clone().into()),
            changed: watch::channel(0).0,
            config: parking_lot::Mutex::new(config.clone()),
            gate,
            loader: parking_lot::RwLock::new(None),
        })
    }

    fn current(&self) -> Arc<[Channel]> {
        Arc::clone(&self.list.read())
    }

    /// Replaces the channels from `reloaded` (see `Running::reload_channels`).
    fn reload(&self, reloaded: &Config) -> Result<usize, crate::config::ConfigError> {
        reloaded.validate()?;
        let mut config = self.config.lock();
        let mut same = reloaded.clone();
        same.channels.clone_from(&config.channels);
        if same.tls.is_some() == config.tls.is_some() {
            same.tls.clone_from(&config.tls);
        }
        if format!("{same:?}") != format!("{config:?}") {
            return Err(crate::config::ConfigError(
                "only [[channels]] and [tls]'s files reload; a change to any other setting (or adding or \
                 removing [tls]) needs a restart"
                    .into(),
            ));
        }
        // The TLS files are read again whether or not their paths changed
        // (a new CRL is the same file with new contents).
        let tls = match &reloaded.tls {
            Some(t) => Some(crate::tls::Acceptor::new(t).map_err(crate::config::ConfigError)?),
            None => None,
        };
        *self.tls.write() = tls;
        config.tls.clone_from(&reloaded.tls);
        self.gate.set_channels(channel_limits(reloaded));
        *self.list.write() = reloaded.channels.clone().into();
        self.changed.send_modify(|n| *n += 1);
        config.channels.clone_from(&reloaded.channels);
        tracing::info!(channels = reloaded.channels.len(), "channels reloaded");
        Ok(reloaded.channels.len())
    }

    /// Reads the configuration again and reloads its channels.
    fn reload_from_source(&self) -> Result<usize, String> {
        let loader = self.loader.read().clone().ok_or("this switch has no configuration file to read again")?;
        let reloaded = loader()?;
        self.reload(&reloaded).map_err(|e| e.to_string())
    }
}

use crate::audit::audited;

/// Each channel's own limits, for the admission gate.
fn channel_limits(config: &Config) -> Vec<(u32, crate::admission::ChannelLimits)> {
    config
        .channels
        .iter()
        .map(|c| {
            let limits = crate::admission::ChannelLimits {
                connections_max: c.connections_max,
                in_flight_max: c.max_in_flight.map(|n| n as usize),
                records_per_second: c.records_per_second,
                // A full batch always fits the bucket.
                burst: u64::from(config.max_batch),
            };
            (c.id, limits)
        })
        .collect()
}

/// An answer from the shards and the in-flight place it frees once the
/// writer takes it.
type Answer = (BytesMut, Place);

/// A request's times the writer finishes once its answer is written: the
/// read that completed its frame, its answer queued, and its trace if it is
/// sampled (`timeline`).
struct Timing {
    read: std::time::Instant,
    answered: std::time::Instant,
    trace: Option<Arc<Trace>>,
}

impl Timing {
    /// Records the stages from the answer queued to its bytes written, and
    /// logs the trace.
    fn written(self, at: std::time::Instant) {
        METRICS.stage(Stage::AnswerToWrite, at.saturating_duration_since(self.answered));
        METRICS.stage(Stage::Total, at.saturating_duration_since(self.read));
        if let Some(trace) = self.trace {
            trace.mark(Mark::Written, at);
            trace.log();
        }
    }
}

/// What an unanswered request holds: its in-flight place on the
/// connection and, for the books' answers, its share of the answer budget.
/// The place is given back when the answer is taken for writing (or
/// dropped), the budget once the answer's bytes are written (or dropped):
/// answers gathered for a slow channel's socket still count.
struct Place {
    _permit: OwnedSemaphorePermit,
    budget: Option<AnswerBudget>,
    /// The channel's own in-flight place, if it has a bound.
    _channel: Option<OwnedSemaphorePermit>,
    /// A books' answer's times, for the timeline.
    timing: Option<Timing>,
}

/// A share of the answer budget (`Config::answer_bytes_max`: channels that
/// read slowly cannot make the switch hold their answers without bound),
/// given back when dropped.
struct AnswerBudget {
    admission: Arc<crate::handoff::Admission>,
    bytes: u64,
}

impl Drop for AnswerBudget {
    fn drop(&mut self) {
        self.admission.release(self.bytes);
    }
}

struct Connection {
    /// Where shards' answers go: a place per in-flight permit, so sending
    /// never waits and never fails for want of room.
    answers: Option<mpsc::Sender<Answer>>,
    switch: Arc<Switch>,
    channels: Arc<Keyring>,
    limits: Limits,
    /// One permit per unanswered request.
    in_flight: Arc<Semaphore>,
    /// STR exports being made, switch-wide.
    exports: Arc<Semaphore>,
    /// Which requests' timelines are logged (`--trace-sample`).
    traces: Arc<Sampler>,
    /// Where taken requests are recorded (`--record`), if anywhere.
    recorder: Option<Arc<crate::traffic::Recorder>>,
    session: Option<Session>,
    fatal: mpsc::Sender<ServeError>,
    /// Set by the writer when it gave up (the channel stopped reading past
    /// the write timeout, or the socket failed): nothing more is taken.
    writer_gone: Arc<WriterGone>,
    /// The switch-wide budget of answers not yet written.
    answer_bytes: Arc<crate::handoff::Admission>,
    /// Admission: the place this connection holds until HELLO, then its
    /// channel's seat.
    gate: Arc<crate::admission::Gate>,
    place: Option<crate::admission::Place>,
    seat: Option<crate::admission::Seat>,
    /// Over mutual TLS, the channel's certificate: HELLO must name the
    /// channel it was issued to.
    certificate: Option<rustls_pki_types::CertificateDer<'static>>,
    /// Where it connects from (the audit trail's).
    peer: std::net::SocketAddr,
}

/// The writer's word that it can deliver nothing more.
#[derive(Default)]
struct WriterGone {
    gone: std::sync::atomic::AtomicBool,
    notify: tokio::sync::Notify,
}

impl WriterGone {
    fn set(&self) {
        self.gone.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    fn is_set(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }
}

/// What the reader does after a frame.
enum Next {
    Continue,
    Close,
}

impl Connection {
    async fn run(
        mut self,
        (mut reader, writer): (Reader, Writer),
        (connected, mut draining): (tokio::time::Instant, watch::Receiver<bool>),
        mut evicted: tokio::sync::oneshot::Receiver<()>,
    ) {
        let mut reloaded = self.channels.changed.subscribe();
        // A reload during the TLS handshake was before the subscription:
        // its CRLs are checked now.
        if !self.still_valid() {
            return;
        }
        // Frames the reader itself answers (CHALLENGE, HELLO, PING, errors)
        // wait for room; shards' answers never do.
        let (out_tx, out_rx) = mpsc::channel::<BytesMut>(16);
        let (answers_tx, answers_rx) = mpsc::channel::<Answer>(self.limits.max_in_flight as usize);
        self.answers = Some(answers_tx);
        let gone = Arc::clone(&self.writer_gone);
        let writer_task = tokio::spawn(write_loop(writer, out_rx, answers_rx, self.limits.write_timeout, gone));
        let nonce = random_nonce();
        let challenge = Challenge { server_nonce: nonce, server_version: frame::VERSION };
        send_frame(&out_tx, kind::CHALLENGE, 1, 0, &challenge.encode()).await;

        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        // When the last read returned: the frames it completed were read then.
        let mut read_at = std::time::Instant::now();
        'frames: loop {
            // Take every whole frame already buffered.
            loop {
                match frame::decode(&mut buf, self.limits.max_body) {
                    Err(e) => {
                        send_error(&out_tx, e.code, e.request_id, "frame rejected").await;
                        break 'frames;
                    }
                    Ok(Some((header, body))) => {
                        if self.writer_gone.is_set() {
                            break 'frames;
                        }
                        if let Next::Close = self.handle((header, body), &nonce, &out_tx, read_at).await {
                            break 'frames;
                        }
                    }
                    Ok(None) => break,
                }
            }
            if *draining.borrow() {
                break;
            }
            // Between frames, a buffer a large frame grew is given back.
            if buf.is_empty() && buf.capacity() > BUFFER_KEPT_MAX {
                buf = BytesMut::with_capacity(READ_CHUNK);
            }
            let idle = self.in_flight.available_permits() == self.limits.max_in_flight as usize;
            let timeout = if self.session.is_none() {
                // HELLO must come in time, however slowly bytes trickle in.
                self.limits.handshake_timeout.saturating_sub(connected.elapsed())
            } else if idle {
                self.limits.idle_timeout
            } else {
                Duration::from_secs(86_400)
            };
            tokio::select! {
                read = tokio::time::timeout(timeout, reader.read_buf(&mut buf)) => match read {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(_)) => read_at = std::time::Instant::now(),
                    Err(_) => {
                        // Idle too long: only close if still nothing is pending.
                        if self.in_flight.available_permits() == self.limits.max_in_flight as usize {
                            break;
                        }
                    }
                },
                _ = draining.changed() => break,
                () = self.writer_gone.notify.notified() => break,
                // A newer connection took this one's place before HELLO.
                Ok(()) = &mut evicted, if self.session.is_none() => break,
                // The channels were reloaded: this session may have ended.
                Ok(()) = reloaded.changed(), if self.session.is_some() => {
                    if !self.still_valid() {
                        break;
                    }
                }
            }
        }
        // Answer everything handed over before closing. (A writer that gave
        // up on a channel that stopped reading drops its queue, which frees
        // every place.)
        let _ = self.in_flight.acquire_many(self.limits.max_in_flight).await;
        drop(out_tx);
        self.answers = None;
        let _ = writer_task.await;
        if self.writer_gone.is_set() || self.session.is_none() {
            // Nothing more can reach the channel, or nothing is owed to a
            // connection that never said HELLO: close now.
            return;
        }
        // Read and discard what the channel still sends until it closes (or
        // briefly), so our last answers are not lost to a reset.
        let _ = tokio::time::timeout(LINGER, async {
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }

    /// Runs the per-frame checks after the codec's, in the contract's order:
    /// session, kind, role, length, count, in-flight, record contents.
    async fn handle(
        &mut self,
        (h, body): (Header, Bytes),
        nonce: &[u8; 16],
        out: &mpsc::Sender<BytesMut>,
        read: std::time::Instant,
    ) -> Next {
        let received = std::time::Instant::now();
        METRICS.stage(Stage::Read, received.saturating_duration_since(read));
        let fail = |code: ErrorCode, detail: String| async move {
            send_error(out, code, h.request_id, &detail).await;
            if code.closes() { Next::Close } else { Next::Continue }
        };
        if self.session.is_none() && h.kind != kind::HELLO {
            return fail(ErrorCode::NotAuthenticated, "send HELLO first".into()).await;
        }
        let Some(spec) = kinds::from_channel(h.kind) else {
            return fail(ErrorCode::UnknownKind, format!("kind {:#06x}", h.kind)).await;
        };
        let roles = self.session.as_ref().map_or(0, |s| s.roles);
        if spec.roles != 0 && roles & spec.roles == 0 {
            return fail(ErrorCode::Forbidden, format!("{} needs role mask {:#x}", spec.name, spec.roles)).await;
        }
        // What reads every account at once is not for a channel scoped to
        // some of them (the STR's rows, a copy of the books).
        let scoped = self.session.as_ref().is_some_and(|s| !s.scope.is_all());
        if scoped && matches!(h.kind, kind::EXPORT_STR | kind::EXPORT_STR_PAGE | kind::BACKUP) {
            let detail = format!("{} reads every account; this channel is scoped to some", spec.name);
            return fail(ErrorCode::Forbidden, detail).await;
        }
        let count_ok = match spec.count {
            CountRule::Batch => true,
            CountRule::Zero => h.count == 0,
            CountRule::One => h.count == 1,
        };
        if !count_ok || u64::from(h.body_len) != u64::from(h.count) * spec.request_size as u64 {
            let detail = format!("{} takes records of {} bytes", spec.name, spec.request_size);
            return fail(ErrorCode::BadLength, detail).await;
        }
        if h.count > self.limits.max_batch {
            return fail(ErrorCode::BatchTooLarge, format!("max_batch is {}", self.limits.max_batch)).await;
        }
        let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() else {
            let detail = format!("max_in_flight is {}", self.limits.max_in_flight);
            return fail(ErrorCode::TooManyInFlight, detail).await;
        };
        if !(spec.well_formed)(&body) || (h.kind == kind::HELLO && self.session.is_some()) {
            return fail(ErrorCode::Malformed, format!("{}: reserved bytes, flags or enum values", spec.name)).await;
        }
        if audited(h.kind) {
            // An administrative act is on the trail's disk before it is
            // handed over; without the trail it is not applied.
            let audit = Arc::clone(&self.channels.audit);
            let (channel, peer, name, content) =
                (self.session.as_ref().map_or(0, |s| s.channel), self.peer, spec.name, body.clone());
            let recorded = tokio::task::spawn_blocking(move || audit.act(channel, name, peer, &content)).await;
            if !matches!(recorded, Ok(Ok(()))) {
                tracing::error!(kind = spec.name, "the audit trail could not record an administrative act");
                return fail(ErrorCode::Busy, "the audit trail could not record the act; nothing applied".into()).await;
            }
        }
        match h.kind {
            kind::HELLO => return self.hello(h, &body, nonce, out).await,
            kind::PING => send_frame(out, kind::PING | RESPONSE_BIT, 0, h.request_id, &[]).await,
            kind::RELOAD_CHANNELS => {
                // Read again off the connection's task (a file read).
                let keyring = Arc::clone(&self.channels);
                let reloaded = tokio::task::spawn_blocking(move || keyring.reload_from_source()).await;
                let body = match reloaded {
                    Ok(Ok(channels)) => serde_json::json!({ "reloaded": true, "channels": channels }),
                    Ok(Err(e)) => serde_json::json!({ "reloaded": false, "error": e }),
                    Err(e) => serde_json::json!({ "reloaded": false, "error": e.to_string() }),
                };
                drop(permit);
                send_frame(out, kind::RELOAD_CHANNELS | RESPONSE_BIT, 1, h.request_id, body.to_string().as_bytes())
                    .await;
            }
            kind::CLUSTER_STATUS | kind::CLUSTER_CHANGE | kind::BACKUP => {
                return self.operate(h, body, permit, out).await;
            }
            _ if spec.route != Route::Session => {
                return self.dispatch(h, body, spec, permit, out, (read, received)).await;
            }
            // Every kind of the table is PING, HELLO or the engine's.
            _ => return fail(ErrorCode::UnknownKind, format!("kind {:#06x} is not served", h.kind)).await,
        }
        Next::Continue
    }

    async fn hello(&mut self, h: Header, body: &[u8], nonce: &[u8; 16], out: &mpsc::Sender<BytesMut>) -> Next {
        let hello = Hello::decode(body);
        let channels = self.channels.current();
        let channel = channels.iter().find(|c| c.id == hello.channel_id);
        // During a rotation the retiring key is good too.
        let key = channel.and_then(|c| {
            std::iter::once(&c.key).chain(&c.previous_key).find(|k| hello.verify(k, nonce)).map(|k| (c, k.clone()))
        });
        let Some((channel, key)) = key else {
            tracing::warn!(channel = hello.channel_id, "HELLO refused: unknown channel or wrong mac");
            self.channels.audit.refused_hello(hello.channel_id, self.peer);
            send_error(out, ErrorCode::AuthFailed, h.request_id, "unknown channel or wrong mac").await;
            return Next::Close;
        };
        if let Some(certificate) = &self.certificate
            && !crate::tls::names_channel(certificate, channel.id)
        {
            tracing::warn!(channel = channel.id, "HELLO refused: the client certificate is another channel's");
            METRICS.tls_refused.fetch_add(1, Ordering::Relaxed);
            let detail = "the client certificate was not issued to this channel";
            send_error(out, ErrorCode::AuthFailed, h.request_id, detail).await;
            return Next::Close;
        }
        let place = self.place.take().expect("a connection holds its place until HELLO");
        match self.gate.seat(place, channel.id) {
            Ok(seat) => self.seat = Some(seat),
            Err(why) => {
                METRICS.connections_refused.fetch_add(1, Ordering::Relaxed);
                send_error(out, ErrorCode::Busy, h.request_id, why.detail()).await;
                return Next::Close;
            }
        }
        self.session = Some(Session { roles: channel.roles, channel: channel.id, scope: channel.scope, key });
        let answer = HelloResponse {
            code: 0,
            roles: channel.roles,
            max_batch: self.limits.max_batch,
            max_in_flight: self.limits.max_in_flight,
            max_body: self.limits.max_body,
            server_time_ms: self.switch.now_ms(),
        };
        send_frame(out, kind::HELLO | RESPONSE_BIT, 1, h.request_id, &answer.encode()).await;
        Next::Continue
    }

    /// After a reload: whether this connection's certificate is not
    /// revoked by the CRLs read again, and its session's channel still
    /// exists with the key it said HELLO with (its new roles and scope
    /// taken if so).
    fn still_valid(&mut self) -> bool {
        let revoked = self
            .certificate
            .as_ref()
            .is_some_and(|certificate| self.channels.tls.read().as_ref().is_some_and(|tls| tls.revokes(certificate)));
        if revoked {
            let channel = self.session.as_ref().map(|s| s.channel);
            tracing::info!(?channel, peer = %self.peer, "connection ended by a reload: its certificate is revoked");
            METRICS.tls_refused.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let channels = self.channels.current();
        let Some(session) = &mut self.session else { return true };
        let valid = channels
            .iter()
            .find(|c| c.id == session.channel)
            .filter(|c| c.key == session.key || c.previous_key.as_ref() == Some(&session.key));
        match valid {
            Some(c) => {
                session.roles = c.roles;
                session.scope = c.scope;
                true
            }
            None => {
                tracing::info!(channel = session.channel, "session ended by a reload: its channel or key is gone");
                false
            }
        }
    }

    async fn dispatch(
        &self,
        h: Header,
        body: Bytes,
        spec: &KindSpec,
        permit: tokio::sync::OwnedSemaphorePermit,
        out: &mpsc::Sender<BytesMut>,
        (read, received): (std::time::Instant, std::time::Instant),
    ) -> Next {
        if self.writer_gone.is_set() {
            // Its answer could not be delivered: do not apply it.
            return Next::Close;
        }
        let response_kind = spec.kind | RESPONSE_BIT;
        let answers = self.answers.clone().expect("a running connection has an answer queue");
        // The channel's own limits: BUSY for this channel's frames only.
        let channel = match self.seat.as_ref().map(|s| s.admit(h.count)) {
            Some(Err(why)) => {
                METRICS.channel_limited.fetch_add(1, Ordering::Relaxed);
                return busy(out, h, why.detail()).await;
            }
            Some(Ok(place)) => place,
            None => None,
        };
        if matches!(h.kind, kind::EXPORT_STR | kind::EXPORT_STR_PAGE) {
            // One export at a time switch-wide bounds its memory.
            let place = Place { _permit: permit, budget: None, _channel: channel, timing: None };
            return self.export_str(h, body, place, out).await;
        }
        let bytes = u64::from(h.count) * spec.response_size as u64;
        if !self.answer_bytes.admit(bytes, false) {
            return busy(out, h, "answers waiting for channels that read slowly fill the budget; nothing applied")
                .await;
        }
        let budget = Some(AnswerBudget { admission: Arc::clone(&self.answer_bytes), bytes });
        let trace = self.traces.take().then(|| Trace::new(read, h.request_id, h.kind, h.count));
        if let Some(t) = &trace {
            t.mark(Mark::Decoded, received);
        }
        let timing = Some(Timing { read, answered: received, trace: trace.clone() });
        let permit = Place { _permit: permit, budget, _channel: channel, timing };
        let scoped = self.session.as_ref().and_then(|s| s.scoped(h.kind, &body));
        let applied_kind = if scoped.is_some() { kind::SCOPED } else { h.kind };
        if self.switch.single_shard() {
            // The shard thread encodes the answer and queues it for the
            // writer itself: one wake-up less per request.
            let failed = self.failed();
            let reply: crate::shard::ReplyFn = Box::new(move |answer| match answer {
                Ok(records) => {
                    deliver(&answers, response_kind, h, &records, permit);
                    METRICS.end_to_end(h.kind, received.elapsed());
                }
                Err(e) => failed.answer(e, &answers, h, permit),
            });
            METRICS.stage(Stage::Decode, received.elapsed());
            let applied = scoped.unwrap_or_else(|| body.to_vec());
            return match self.switch.dispatch_direct(applied_kind, applied, false, reply, trace) {
                Ok(()) => {
                    if let Some(r) = &self.recorder {
                        r.record(h.kind, h.count, &body);
                    }
                    METRICS.requests_total.fetch_add(1, Ordering::Relaxed);
                    METRICS.records_total.fetch_add(u64::from(h.count), Ordering::Relaxed);
                    Next::Continue
                }
                Err(e) => self.refused(e, h, out).await,
            };
        }
        METRICS.stage(Stage::Decode, received.elapsed());
        let applied = scoped.as_deref().unwrap_or(&body);
        let pending = match self.switch.dispatch_traced(applied_kind, applied, false, trace.as_ref()) {
            Ok(p) => p,
            Err(e) => return self.refused(e, h, out).await,
        };
        if let Some(r) = &self.recorder {
            r.record(h.kind, h.count, &body);
        }
        METRICS.requests_total.fetch_add(1, Ordering::Relaxed);
        METRICS.records_total.fetch_add(u64::from(h.count), Ordering::Relaxed);
        let failed = self.failed();
        tokio::spawn(async move {
            match pending.wait().await {
                Ok(answer) => {
                    deliver(&answers, response_kind, h, &answer, permit);
                    METRICS.end_to_end(h.kind, received.elapsed());
                }
                Err(e) => failed.answer(e, &answers, h, permit),
            }
        });
        Next::Continue
    }
}

impl Connection {
    /// EXPORT_STR and EXPORT_STR_PAGE: the shards hand over the month's
    /// rows, or a page's (a copy of a few hundred bytes per case); the
    /// report, up to 256 MiB, or the page, is formatted on a blocking
    /// thread, never a shard's, and one export runs at a time switch-wide
    /// (another is BUSY: nothing to undo, send it again).
    async fn export_str(&self, h: Header, body: Bytes, permit: Place, out: &mpsc::Sender<BytesMut>) -> Next {
        let Ok(export) = Arc::clone(&self.exports).try_acquire_owned() else {
            METRICS.busy_total.fetch_add(1, Ordering::Relaxed);
            send_error(out, ErrorCode::Busy, h.request_id, "an STR export is already being made").await;
            return Next::Continue;
        };
        let pending = match self.switch.dispatch(h.kind, &body, false) {
            Ok(p) => p,
            Err(e) => return self.refused(e, h, out).await,
        };
        METRICS.requests_total.fetch_add(1, Ordering::Relaxed);
        let answers = self.answers.clone().expect("a running connection has an answer queue");
        let failed = self.failed();
        tokio::spawn(async move {
            let made = tokio::task::spawn_blocking(move || pending.wait_blocking()).await;
            drop(export);
            match made {
                Ok(Ok(report)) => deliver(&answers, h.kind | RESPONSE_BIT, h, &report, permit),
                Ok(Err(e)) => failed.answer(e, &answers, h, permit),
                Err(e) => drop(failed.fatal.try_send(ServeError::Task(e))),
            }
        });
        Next::Continue
    }

    /// An operator's cluster request (`cluster::ops`), answered by this
    /// node on a task of its own with one body: JSON, or the backup.
    async fn operate(
        &self,
        h: Header,
        body: Bytes,
        permit: OwnedSemaphorePermit,
        out: &mpsc::Sender<BytesMut>,
    ) -> Next {
        use crate::cluster::ops;
        let Some(member) = self.switch.member().cloned() else {
            let detail = "not a cluster node (its configuration has no [cluster] section)";
            send_error(out, ErrorCode::UnknownKind, h.request_id, detail).await;
            return Next::Continue;
        };
        let answers = self.answers.clone().expect("a running connection has an answer queue");
        let place = Place { _permit: permit, budget: None, _channel: None, timing: None };
        let failed = self.failed();
        tokio::spawn(async move {
            let answer = match h.kind {
                kind::CLUSTER_STATUS => Ok(ops::status(&member).into_bytes()),
                kind::CLUSTER_CHANGE => {
                    let change =
                        <crate::protocol::records::ClusterChange as crate::protocol::records::Record>::decode(&body);
                    match ops::change(&member, &change).await {
                        Ok(view) => Ok(view.into_bytes()),
                        Err(ops::ChangeError::NotLeader(leader)) => Err(SwitchError::NotLeader(leader)),
                        Err(ops::ChangeError::Failed(e)) => {
                            Ok(serde_json::json!({ "error": e }).to_string().into_bytes())
                        }
                    }
                }
                _ => match member.books.backup().await {
                    Ok((bytes, _)) if bytes.len() <= crate::client::RESPONSE_BODY_MAX as usize => Ok(bytes),
                    Ok((bytes, _)) => Err(SwitchError::Backup(format!("{} bytes: larger than a frame", bytes.len()))),
                    Err(e) => Err(SwitchError::Backup(e.to_string())),
                },
            };
            match answer {
                Ok(bytes) => deliver(&answers, h.kind | RESPONSE_BIT, Header { count: 1, ..h }, &bytes, place),
                Err(e) => failed.answer(e, &answers, h, place),
            }
        });
        Next::Continue
    }

    /// Where a request the books did not answer is handled.
    fn failed(&self) -> Failed {
        Failed { fatal: self.fatal.clone(), close: Arc::clone(&self.writer_gone) }
    }

    /// A request the shards did not take: BUSY (nothing applied), or the
    /// switch is failing.
    async fn refused(&self, e: SwitchError, h: Header, out: &mpsc::Sender<BytesMut>) -> Next {
        let detail = match e {
            SwitchError::Busy => "shard queue full; nothing applied",
            SwitchError::NoSpace => {
                METRICS.no_space_total.fetch_add(1, Ordering::Relaxed);
                "disk below its reserve; nothing applied (lookups are served); resend later"
            }
            // A cluster node of several shards refuses before routing
            // when it does not lead (nothing applied), and a rest of a
            // request whose round was routed in an earlier term has an
            // unknown outcome: as `Failed::answer` does.
            SwitchError::NotLeader(leader) => {
                METRICS.frame_error(ErrorCode::NotLeader);
                send_error(out, ErrorCode::NotLeader, h.request_id, &leader).await;
                return Next::Continue;
            }
            SwitchError::LeadershipLost => return Next::Close,
            e => {
                let _ = self.fatal.try_send(ServeError::Fatal(e));
                return Next::Close;
            }
        };
        busy(out, h, detail).await
    }
}

/// What a connection does with a request the books did not answer.
struct Failed {
    fatal: mpsc::Sender<ServeError>,
    /// Closes the connection (the reader stops taking frames).
    close: Arc<WriterGone>,
}

impl Failed {
    /// In a cluster, a node that does not lead answers NOT_LEADER (nothing
    /// applied, the connection stays open) and one that lost its
    /// leadership midway closes the connection (outcome unknown: the
    /// channel resends, contract §7). Anything else means the books can no
    /// longer answer durably: the server stops.
    fn answer(&self, e: SwitchError, answers: &mpsc::Sender<Answer>, h: Header, permit: Place) {
        match e {
            SwitchError::NotLeader(leader) => deliver_error(answers, ErrorCode::NotLeader, h, &leader, permit),
            SwitchError::Backup(why) => {
                deliver_error(answers, ErrorCode::Busy, h, &format!("backup failed: {why}"), permit)
            }
            SwitchError::LeadershipLost => {
                drop(permit);
                self.close.set();
            }
            e => drop(self.fatal.try_send(ServeError::Fatal(e))),
        }
    }
}

/// Answers ERROR BUSY (nothing applied; the channel resends) and counts it.
async fn busy(out: &mpsc::Sender<BytesMut>, h: Header, detail: &str) -> Next {
    METRICS.busy_total.fetch_add(1, Ordering::Relaxed);
    send_error(out, ErrorCode::Busy, h.request_id, detail).await;
    Next::Continue
}

/// Queues an ERROR frame answering `h` for the writer, with its place.
fn deliver_error(answers: &mpsc::Sender<Answer>, code: ErrorCode, h: Header, detail: &str, permit: Place) {
    METRICS.frame_error(code);
    let body = frame::error_body(code, detail);
    let mut bytes = BytesMut::with_capacity(frame::HEADER_SIZE + body.len());
    frame::encode(&mut bytes, frame::ERROR_KIND, 0, h.request_id, &body);
    let _ = answers.try_send((bytes, permit));
}

/// Queues a shard's answer for the writer, with its in-flight place.
fn deliver(answers: &mpsc::Sender<Answer>, kind: u16, h: Header, records: &[u8], mut permit: Place) {
    if let Some(timing) = &mut permit.timing {
        timing.answered = std::time::Instant::now();
        if let Some(trace) = &timing.trace {
            trace.mark(Mark::Answered, timing.answered);
        }
    }
    let mut bytes = BytesMut::with_capacity(frame::HEADER_SIZE + records.len());
    frame::encode(&mut bytes, kind, h.count, h.request_id, records);
    // There is a place per permit; Closed means the channel went away.
    let _ = answers.try_send((bytes, permit));
}

fn random_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    getrandom::fill(&mut nonce).expect("the OS gives random bytes");
    nonce
}

async fn send_frame(out: &mpsc::Sender<BytesMut>, kind: u16, count: u32, request_id: u64, body: &[u8]) {
    let mut bytes = BytesMut::with_capacity(frame::HEADER_SIZE + body.len());
    frame::encode(&mut bytes, kind, count, request_id, body);
    // A closed writer means the channel went away; nothing to answer.
    let _ = out.send(bytes).await;
}

async fn send_error(out: &mpsc::Sender<BytesMut>, code: ErrorCode, request_id: u64, detail: &str) {
    METRICS.frame_error(code);
    send_frame(out, frame::ERROR_KIND, 0, request_id, &frame::error_body(code, detail)).await;
}

/// Writes frames as they come, gathering whatever is queued into one write.
/// Answers' in-flight places are freed before the write that carries them,
/// so a channel that has seen an answer always finds its place free.
async fn write_loop(
    mut writer: Writer,
    mut frames: mpsc::Receiver<BytesMut>,
    mut answers: mpsc::Receiver<Answer>,
    write_timeout: Duration,
    gone: Arc<WriterGone>,
) {
    let mut gathered = BytesMut::with_capacity(READ_CHUNK);
    let mut places: Vec<Place> = Vec::new();
    let mut budgets: Vec<AnswerBudget> = Vec::new();
    let mut timings: Vec<Timing> = Vec::new();
    let (mut frames_open, mut answers_open) = (true, true);
    while frames_open || answers_open {
        tokio::select! {
            answer = answers.recv(), if answers_open => match answer {
                Some((bytes, place)) => {
                    gathered.extend_from_slice(&bytes);
                    places.push(place);
                }
                None => answers_open = false,
            },
            frame = frames.recv(), if frames_open => match frame {
                Some(bytes) => gathered.extend_from_slice(&bytes),
                None => frames_open = false,
            },
        }
        while gathered.len() < WRITE_GATHER_MAX {
            if let Ok((bytes, place)) = answers.try_recv() {
                gathered.extend_from_slice(&bytes);
                places.push(place);
            } else if let Ok(bytes) = frames.try_recv() {
                gathered.extend_from_slice(&bytes);
            } else {
                break;
            }
        }
        // The places go now; the budget stays with the bytes until written.
        timings.extend(places.iter_mut().filter_map(|p| p.timing.take()));
        budgets.extend(places.drain(..).filter_map(|p| p.budget));
        if !gathered.is_empty() {
            // A channel that stops reading does not hold the connection (or
            // a shutdown) forever.
            match tokio::time::timeout(write_timeout, writer.write_all(&gathered)).await {
                Ok(Ok(())) => {
                    let written = std::time::Instant::now();
                    timings.drain(..).for_each(|t| t.written(written));
                    gathered.clear();
                    budgets.clear();
                    // A burst's buffer is not kept for the connection's life.
                    if gathered.capacity() > BUFFER_KEPT_MAX {
                        gathered = BytesMut::with_capacity(READ_CHUNK);
                    }
                }
                failed => {
                    if failed.is_err() {
                        METRICS.write_timeouts_total.fetch_add(1, Ordering::Relaxed);
                        tracing::info!(
                            timeout_ms = write_timeout.as_millis() as u64,
                            "closing a channel that stopped reading"
                        );
                    }
                    // The reader stops taking requests and closes.
                    gone.set();
                    return;
                }
            }
        }
    }
    let _ = writer.shutdown().await;
}

/// A server started by [`start`]: its address, and the means to stop it.
pub struct Running {
    /// Where channels connect.
    pub addr: std::net::SocketAddr,
    /// Where the metrics endpoint listens, if it does.
    pub metrics_addr: Option<std::net::SocketAddr>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    switch: Arc<Switch>,
    recorder: Option<Arc<crate::traffic::Recorder>>,
    /// This node's raft, in a cluster.
    member: Option<crate::cluster::node::Member>,
    keyring: Arc<Keyring>,
}

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    /// The configuration does not hold together.
    Config(crate::config::ConfigError),
    /// The data directory did not open (a shard did not recover, or its
    /// settings differ from the recorded ones).
    Open(crate::shard::OpenError),
    /// An address could not be bound (`what`: channels or metrics).
    Bind { what: &'static str, addr: std::net::SocketAddr, source: std::io::Error },
    /// The TLS certificates, key or CRLs could not be read.
    Tls(String),
    /// The traffic recording file could not be created.
    Record { path: std::path::PathBuf, source: std::io::Error },
    /// The task opening the data directory panicked.
    Task(tokio::task::JoinError),
    /// The cluster node did not start.
    Cluster(crate::cluster::node::NodeError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Config(e) => write!(f, "{e}"),
            Self::Open(e) => write!(f, "{e}"),
            Self::Bind { what, addr, source } => write!(f, "{what} {addr}: {source}"),
            Self::Record { path, source } => write!(f, "--record {}: {source}", path.display()),
            Self::Tls(e) => write!(f, "{e}"),
            Self::Task(e) => write!(f, "opening the data directory: {e}"),
            Self::Cluster(e) => write!(f, "cluster: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// Opens the data directory (recovering every shard), binds the channel and
/// metrics addresses and starts serving.
pub async fn start(config: &Config) -> Result<Running, StartError> {
    config.validate().map_err(StartError::Config)?;
    private_data(&config.data).map_err(|e| StartError::Open(crate::shard::OpenError::Io(e)))?;
    let audit = Arc::new(
        crate::audit::AuditLog::open(&config.data).map_err(|e| StartError::Open(crate::shard::OpenError::Io(e)))?,
    );
    let (switch, member) = match &config.cluster {
        Some(cluster) => {
            let started =
                crate::cluster::node::start(cluster, &config.data, config.backend, &config.switch, Arc::clone(&audit));
            let member = started.await.map_err(StartError::Cluster)?;
            let raft_dir = config.data.join(crate::cluster::node::RAFT_DIR);
            let storage: Arc<dyn crate::wal::storage::Storage> = Arc::new(
                crate::wal::storage::FileStorage::new(&raft_dir)
                    .map_err(|e| StartError::Open(crate::shard::OpenError::Io(e)))?,
            );
            let switch = Switch::open_cluster(config.switch, member.clone(), vec![storage]);
            (switch.map_err(StartError::Open)?, Some(member))
        }
        None => {
            let open_config = config.clone();
            let switch = tokio::task::spawn_blocking(move || {
                Switch::open_dir(&open_config.data, open_config.switch, open_config.backend)
            })
            .await
            .map_err(StartError::Task)?
            .map_err(StartError::Open)?;
            (switch, None)
        }
    };
    let switch = Arc::new(switch);
    let bind = |what, addr| move |source| StartError::Bind { what, addr, source };
    let listener = TcpListener::bind(config.listen).await.map_err(bind("channels", config.listen))?;
    let addr = listener.local_addr().map_err(bind("channels", config.listen))?;
    let metrics_addr = match config.metrics {
        Some(at) => {
            let metrics = crate::metrics::bind(at).await.map_err(bind("metrics", at))?;
            let bound = metrics.local_addr().map_err(bind("metrics", at))?;
            tokio::spawn(crate::metrics::serve(
                metrics,
                METRICS_CONNECTIONS_MAX,
                METRICS_PER_ADDRESS,
                config.metrics_auth.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    let recorder = match &config.record {
        Some(path) => Some(Arc::new(
            crate::traffic::Recorder::start(path)
                .map_err(|source| StartError::Record { path: path.clone(), source })?,
        )),
        None => None,
    };
    let (stop, stop_rx) = watch::channel(false);
    let gate = crate::admission::Gate::new(
        config.unauthenticated_max,
        config.unauthenticated_per_address,
        config.connections_max,
        channel_limits(config),
    );
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::Acceptor::new(t).map_err(StartError::Tls)?),
        None => None,
    };
    let keyring = Keyring::new(config, Arc::clone(&gate), audit, tls);
    let task_switch = Arc::clone(&switch);
    let task_config = config.clone();
    let task_recorder = recorder.clone();
    let access = (Arc::clone(&keyring), Arc::clone(&gate));
    let task =
        tokio::spawn(async move { serve(listener, task_switch, &task_config, access, stop_rx, task_recorder).await });
    Ok(Running { addr, metrics_addr, stop, task, switch, recorder, member, keyring })
}

impl Running {
    /// Replaces the channels (keys, roles, limits) from `reloaded`, the
    /// configuration read again: connections of channels that remain, with
    /// a key that remains, keep their sessions; the others are closed.
    /// Every other setting needs a restart: a reload that changes one is
    /// refused, naming it, and changes nothing.
    pub fn reload_channels(&mut self, reloaded: &Config) -> Result<usize, crate::config::ConfigError> {
        self.keyring.reload(reloaded)
    }

    /// How to read the configuration again: SIGHUP (`reload`) and an
    /// OPERATOR's RELOAD_CHANNELS use it.
    pub fn set_loader(&self, loader: Loader) {
        *self.keyring.loader.write() = Some(loader);
    }

    /// Reads the configuration again and reloads its channels (SIGHUP).
    pub fn reload(&self) -> Result<usize, String> {
        self.keyring.reload_from_source()
    }

    /// Waits until the server stops by itself (a fatal error); `Ok` never
    /// comes before [`Running::stop`] is called from elsewhere.
    pub async fn stopped(&mut self) -> Result<(), ServeError> {
        (&mut self.task).await.unwrap_or_else(|e| Err(ServeError::Task(e)))
    }

    /// Stops reading new frames, answers everything begun, closes every
    /// connection, then stops the shards after their current groups.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.stop.send(true);
        let served = self.task.await.unwrap_or_else(|e| Err(ServeError::Task(e)));
        served?;
        if let Some(recorder) = self.recorder {
            // Whoever still holds the recorder (a connection past the drain
            // deadline), its file is finished and synced now.
            let finished = tokio::task::spawn_blocking(move || {
                let written = recorder.finish();
                (written, recorder.dropped.load(Ordering::Relaxed), recorder.failed.load(Ordering::Relaxed))
            })
            .await;
            match finished {
                Ok((Ok(written), dropped, failed)) => tracing::info!(
                    written,
                    dropped_queue_full = dropped,
                    dropped_after_error = failed,
                    "traffic recording finished"
                ),
                Ok((Err(e), _, _)) => tracing::warn!(error = %e, "traffic recording failed"),
                Err(e) => tracing::warn!(error = %e, "traffic recording failed"),
            }
        }
        let switch = self.switch;
        let stopped = tokio::task::spawn_blocking(move || match Arc::try_unwrap(switch) {
            Ok(switch) => switch.shutdown(),
            Err(shared) => drop(shared),
        })
        .await
        .map_err(ServeError::Task);
        if let Some(member) = self.member {
            member.shutdown().await;
        }
        stopped
    }

    /// This node's raft handle and books, in a cluster.
    #[must_use]
    pub fn member(&self) -> Option<&crate::cluster::node::Member> {
        self.member.as_ref()
    }
}
