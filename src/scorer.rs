//! The AML check's one part that can wait: an optional remote scorer (the
//! bank's own model, a TCP service), bounded by the latency budget.
//!
//! The built-in rules run inside the engine, in O(1) per transfer with no
//! I/O, so they are always ready. A [`Scorer`] may not be: the shard asks it
//! about every outgoing transfer of a group before applying the group, and
//! waits at most the budget (default 50 µs). A verdict that is not ready by
//! then becomes MANUAL_REVIEW (fail safe), reason `BUDGET_FALLBACK`; a
//! scorer's "review" becomes MANUAL_REVIEW, reason `REMOTE_SCORER`.
//!
//! Those verdicts depend on timing, so they are not recomputed on replay:
//! the shard logs a SUBMIT_TRANSFERS that got verdicts as one
//! `SUBMIT_JUDGED` record (the verdicts, then the transfers), and the engine
//! applies that record like any other. One record, so a torn log tail can
//! never keep the verdicts and lose their transfers (or the reverse).
//! Replay reads the verdicts back and decides the same.
//!
//! Backpressure: a group's transfers go to the scorer in jobs of at most
//! `SCORER_BATCH_MAX`, and its thread takes at most `JOBS_MAX` jobs; what
//! does not fit is a fallback, never a wait. Late answers are dropped by
//! sequence number. A scorer that fails (refused connection, bad answer)
//! says so at once, and for `RETRY_AFTER` the shard does not ask it at all:
//! a dead scorer costs each group nothing but its fallbacks. Shutdown:
//! dropping the scorer closes its queue and its thread exits after the job
//! in hand.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};

use crate::aml::Reasons;
use crate::protocol::accounts::CUSTOMER_ID_MIN;
use crate::protocol::records::{Record, Transfer};

pub use crate::protocol::internal::{JUDGED_HEADER_SIZE, VERDICT_SIZE, Verdict, encode_judged};

/// Whether the engine's AML will judge a transfer: a customer account pays
/// another account. (The engine decides on the stored account kind; ids
/// below `CUSTOMER_ID_MIN` are the system's.)
#[must_use]
pub fn is_outgoing(t: &Transfer) -> bool {
    t.debit_account >= CUSTOMER_ID_MIN && t.debit_account != t.credit_account
}

/// A source of AML verdicts that may not be ready in time.
pub trait Scorer: Send {
    /// Scores `transfers`; by `deadline` returns one entry per transfer:
    /// `Some(true)` to hold for review, `Some(false)` to clear, `None` if
    /// not ready. Must return by `deadline` (plus scheduling noise).
    fn score(&mut self, transfers: &[Transfer], deadline: Instant) -> Vec<Option<bool>>;
}

/// Counts of the gate's work since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GateStats {
    /// Transfers sent to the scorer.
    pub evaluations: u64,
    /// Transfers held because the verdict was late.
    pub fallbacks: u64,
    /// Transfers the scorer asked to review.
    pub reviews: u64,
    /// Longest wait for a group's verdicts, microseconds.
    pub wait_max_us: u64,
}

/// The shard's side of the budget: asks the scorer about a group's
/// outgoing transfers and turns what it says, or its silence, into
/// verdicts to log.
pub struct Gate {
    scorer: Box<dyn Scorer>,
    budget: Duration,
    stats: GateStats,
}

impl Gate {
    /// A gate that waits at most `budget` per group.
    #[must_use]
    pub fn new(scorer: Box<dyn Scorer>, budget: Duration) -> Self {
        Self { scorer, budget, stats: GateStats::default() }
    }

    /// The counters.
    #[must_use]
    pub fn stats(&self) -> GateStats {
        self.stats
    }

    /// Verdicts for each SUBMIT_TRANSFERS body of a group (one list per
    /// body, ascending index), waiting at most the budget in all.
    pub fn judge(&mut self, bodies: &[&[u8]]) -> Vec<Vec<Verdict>> {
        let mut asked = Vec::new();
        let mut at = Vec::new();
        for (b, body) in bodies.iter().enumerate() {
            for (i, chunk) in body.chunks_exact(Transfer::SIZE).enumerate() {
                let t = Transfer::decode(chunk);
                if is_outgoing(&t) {
                    asked.push(t);
                    at.push((b, i as u32));
                }
            }
        }
        let mut out = vec![Vec::new(); bodies.len()];
        if asked.is_empty() {
            return out;
        }
        let start = Instant::now();
        let answers = self.scorer.score(&asked, start + self.budget);
        let waited = start.elapsed().as_micros() as u64;
        self.stats.wait_max_us = self.stats.wait_max_us.max(waited);
        self.stats.evaluations += asked.len() as u64;
        for (k, (b, index)) in at.into_iter().enumerate() {
            let reason = match answers.get(k).copied().flatten() {
                Some(false) => continue,
                Some(true) => {
                    self.stats.reviews += 1;
                    Reasons::REMOTE_SCORER
                }
                None => {
                    self.stats.fallbacks += 1;
                    Reasons::BUDGET_FALLBACK
                }
            };
            out[b].push(Verdict { index, reason });
        }
        out
    }
}

// ---- the remote scorer ------------------------------------------------------

/// Request magic of the scorer protocol (`docs/aml.md`).
pub const REQUEST_MAGIC: [u8; 4] = *b"HSCQ";
/// Response magic.
pub const RESPONSE_MAGIC: [u8; 4] = *b"HSCA";
/// Header of a request or response: magic, u32 version 1, u64 sequence,
/// u32 count, u32 zero.
pub const SCORER_HEADER_SIZE: usize = 24;
/// Most transfers in one scorer request (a group's worth).
pub const SCORER_BATCH_MAX: usize = 1 << 16;
/// Jobs queued for the scorer's thread at most (with `SCORER_BATCH_MAX`,
/// 2M transfers and 128 MiB of requests per shard at worst).
const JOBS_MAX: usize = 32;
/// After a failure, the scorer is not asked again for this long.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

struct Job {
    seq: u64,
    deadline: Instant,
    transfers: Vec<Transfer>,
}

/// A scorer over TCP. Its own thread holds the connection (reconnecting as
/// needed, with `io_timeout` on connect, read and write), so the shard only
/// ever waits on a channel, never on a socket.
pub struct RemoteScorer {
    jobs: Sender<Job>,
    /// (sequence, verdicts); `None` verdicts: the job failed.
    answers: Receiver<(u64, Option<Vec<u8>>)>,
    seq: u64,
    /// When the scorer last failed, if it did recently.
    failed_at: Option<Instant>,
}

impl RemoteScorer {
    /// Starts the scorer's thread for the service at `addr`.
    pub fn start(addr: SocketAddr, io_timeout: Duration) -> io::Result<Self> {
        let (jobs, job_rx) = bounded::<Job>(JOBS_MAX);
        let (answer_tx, answers) = bounded(JOBS_MAX);
        std::thread::Builder::new().name("aml-scorer".into()).spawn(move || {
            let mut conn: Option<TcpStream> = None;
            let mut healthy = true;
            for job in job_rx {
                if Instant::now() >= job.deadline {
                    continue; // Nobody waits for it any more.
                }
                match ask(&mut conn, addr, io_timeout, &job) {
                    Ok(verdicts) => {
                        if !healthy {
                            tracing::info!(%addr, "aml scorer answering again");
                        }
                        healthy = true;
                        let _ = answer_tx.try_send((job.seq, Some(verdicts)));
                    }
                    Err(e) => {
                        // Once per outage, not once per group.
                        if healthy {
                            tracing::warn!(%addr, error = %e, "aml scorer unreachable; transfers fall back to MANUAL_REVIEW");
                        }
                        healthy = false;
                        conn = None;
                        let _ = answer_tx.try_send((job.seq, None));
                    }
                }
            }
        })?;
        Ok(Self { jobs, answers, seq: 0, failed_at: None })
    }
}

/// One request and its response on the (re)connected stream.
fn ask(conn: &mut Option<TcpStream>, addr: SocketAddr, timeout: Duration, job: &Job) -> io::Result<Vec<u8>> {
    if conn.is_none() {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        *conn = Some(stream);
    }
    let stream = conn.as_mut().expect("connected");
    let mut request = Vec::with_capacity(SCORER_HEADER_SIZE + job.transfers.len() * Transfer::SIZE);
    request.extend_from_slice(&REQUEST_MAGIC);
    request.extend_from_slice(&1u32.to_le_bytes());
    request.extend_from_slice(&job.seq.to_le_bytes());
    request.extend_from_slice(&(job.transfers.len() as u32).to_le_bytes());
    request.extend_from_slice(&0u32.to_le_bytes());
    for t in &job.transfers {
        let at = request.len();
        request.resize(at + Transfer::SIZE, 0);
        t.encode(&mut request[at..]);
    }
    stream.write_all(&request)?;
    let mut header = [0u8; SCORER_HEADER_SIZE];
    stream.read_exact(&mut header)?;
    let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes")) as usize;
    if header[0..4] != RESPONSE_MAGIC || seq != job.seq || count != job.transfers.len() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "response does not match the request"));
    }
    let mut verdicts = vec![0u8; count];
    stream.read_exact(&mut verdicts)?;
    Ok(verdicts)
}

impl Scorer for RemoteScorer {
    fn score(&mut self, transfers: &[Transfer], deadline: Instant) -> Vec<Option<bool>> {
        let mut out = vec![None; transfers.len()];
        if self.failed_at.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
            return out;
        }
        self.failed_at = None;
        // One job per chunk; the ones the queue takes are waited for
        // together, until the deadline.
        let first = self.seq + 1;
        let mut waiting = 0usize;
        for chunk in transfers.chunks(SCORER_BATCH_MAX) {
            self.seq += 1;
            let job = Job { seq: self.seq, deadline, transfers: chunk.to_vec() };
            match self.jobs.try_send(job) {
                Ok(()) => waiting += 1,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => break,
            }
        }
        while waiting > 0 {
            let Ok((seq, verdicts)) = self.answers.recv_deadline(deadline) else { break };
            if seq < first {
                continue; // A late answer to an earlier group.
            }
            waiting -= 1;
            let Some(verdicts) = verdicts else {
                self.failed_at = Some(Instant::now());
                break;
            };
            let at = (seq - first) as usize * SCORER_BATCH_MAX;
            for (slot, v) in out[at..].iter_mut().zip(verdicts) {
                // Any byte but 0 asks for review (fail safe).
                *slot = Some(v != 0);
            }
        }
        out
    }
}
