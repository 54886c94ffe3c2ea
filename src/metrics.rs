//! Operators' counters and latency histograms, and the HTTP endpoint that
//! exposes them in the Prometheus text format (`docs/operations.md`).
//!
//! Everything is relaxed atomics: recording never locks and never
//! allocates. A latency histogram ([`Histo`]) keeps HdrHistogram's
//! log-linear layout at three significant bits (eight buckets per power of
//! two) over nanoseconds, so two relaxed adds record a value (bucket and
//! sum); quantiles report a bucket's upper bound (0 to +12.5% above the
//! true value: fine enough to set a stage beside the same run's fsync). The endpoint derives Prometheus buckets, whose `le` bounds sit on
//! bucket edges (so they are exact), and summary quantiles from it. The
//! endpoint answers `GET /metrics` (only) with the current values and
//! closes the connection; it never blocks the switch, and silent
//! connections cannot keep a scraper out (`serve`).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::protocol::frame::ErrorCode;

/// Buckets of a [`Histo`] per power of two of nanoseconds.
const HISTO_SUB: usize = 8;
/// Buckets of a [`Histo`].
const HISTO_BUCKETS: usize = 64 * HISTO_SUB;

/// A lock-free latency histogram in nanoseconds.
#[derive(Debug)]
pub struct Histo {
    buckets: [AtomicU64; HISTO_BUCKETS],
    sum_ns: AtomicU64,
}

impl Default for Histo {
    fn default() -> Self {
        Self::new()
    }
}

impl Histo {
    /// An empty histogram.
    #[must_use]
    pub const fn new() -> Self {
        Self { buckets: [const { AtomicU64::new(0) }; HISTO_BUCKETS], sum_ns: AtomicU64::new(0) }
    }

    fn index(ns: u64) -> usize {
        if ns < HISTO_SUB as u64 {
            return ns as usize;
        }
        let top = 63 - ns.leading_zeros() as usize;
        top * HISTO_SUB + ((ns >> (top - 3)) & (HISTO_SUB as u64 - 1)) as usize
    }

    /// The largest value a bucket holds.
    fn upper(index: usize) -> u64 {
        if index < HISTO_SUB {
            return index as u64;
        }
        let (top, sub) = (index / HISTO_SUB, (index % HISTO_SUB) as u128);
        let base = 1u128 << top;
        u64::try_from(base + (sub + 1) * (base >> 3) - 1).unwrap_or(u64::MAX)
    }

    /// Records one duration.
    #[inline]
    pub fn record(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[Self::index(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records the time since `start`.
    #[inline]
    pub fn since(&self, start: std::time::Instant) {
        self.record(start.elapsed());
    }

    /// A consistent-enough copy: the bucket counts, their total, the sum.
    fn snapshot(&self) -> ([u64; HISTO_BUCKETS], u64, u64) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        let count = buckets.iter().sum();
        (buckets, count, self.sum_ns.load(Ordering::Relaxed))
    }

    /// The value at quantile `q` (0..=1), in nanoseconds: the upper bound of
    /// the bucket it falls in (0 when empty).
    #[must_use]
    pub fn quantile(&self, q: f64) -> u64 {
        let (buckets, count, _) = self.snapshot();
        quantile_of(&buckets, count, q)
    }
}

fn quantile_of(buckets: &[u64; HISTO_BUCKETS], count: u64, q: f64) -> u64 {
    if count == 0 {
        return 0;
    }
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Histo::upper(i);
        }
    }
    Histo::upper(HISTO_BUCKETS - 1)
}

/// The stages a request goes through, each with its latency histogram: a
/// request's timeline, in order (`docs/operations.md`, "A request's
/// timeline"). Gaps are stages too, so the stages of one request add up to
/// its time in the switch (`total`); `aml` and `log_append` are parts of a
/// group's time, inside `group_to_apply` and `apply_to_fsync`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// From the read that completed a frame to its checks starting (the
    /// frames read before it in the same buffer are handled first).
    Read = 0,
    /// From the frame's checks starting to the request handed to a shard
    /// (checks, session, routing).
    Decode = 1,
    /// Waiting in the shard's queue.
    QueueWait = 2,
    /// From taken off the queue to its group starting (the shard takes the
    /// rest of the group).
    QueueToGroup = 3,
    /// The AML remote scorer's wait for a group (the built-in rules are
    /// inside `Apply`).
    Aml = 4,
    /// From the group's start to this request's apply: timers, other
    /// shards' entries, the scorer, the group's earlier requests.
    GroupToApply = 5,
    /// The engine applying one request.
    Apply = 6,
    /// From this request applied to its group's sync: the group's later
    /// requests.
    ApplyToFsync = 7,
    /// Appending one group's records to the log buffer.
    LogAppend = 8,
    /// Writing and syncing one group (one fdatasync).
    Fsync = 9,
    /// From the group's sync to this request's answer handed back: the
    /// group's earlier answers, and with several shards the wait for the
    /// other shards' acknowledgements.
    FsyncToAnswer = 10,
    /// From the answer queued for the connection's writer to its bytes
    /// written to the socket.
    AnswerToWrite = 11,
    /// From a whole frame read to its answer queued for the writer.
    EndToEnd = 12,
    /// From the read that completed a frame to its answer written.
    Total = 13,
    /// A shard's upkeep after a group's answers (making the next log
    /// segment, starting a snapshot): not a request's stage, but what the
    /// requests queued meanwhile wait for (`queue_wait`).
    Upkeep = 14,
}

impl Stage {
    /// Every stage, in order.
    pub const ALL: [Stage; 15] = [
        Self::Read,
        Self::Decode,
        Self::QueueWait,
        Self::QueueToGroup,
        Self::Aml,
        Self::GroupToApply,
        Self::Apply,
        Self::ApplyToFsync,
        Self::LogAppend,
        Self::Fsync,
        Self::FsyncToAnswer,
        Self::AnswerToWrite,
        Self::EndToEnd,
        Self::Total,
        Self::Upkeep,
    ];

    /// Its label value.
    #[must_use]
    pub fn name(self) -> &'static str {
        [
            "read",
            "decode",
            "queue_wait",
            "queue_to_group",
            "aml",
            "group_to_apply",
            "apply",
            "apply_to_fsync",
            "log_append",
            "fsync",
            "fsync_to_answer",
            "answer_to_write",
            "end_to_end",
            "total",
            "upkeep",
        ][self as usize]
    }
}

/// Kinds with their own end-to-end histogram (any other shares PING's,
/// the first: the server serves no other).
const KIND_SLOTS: [(u16, &str); 17] = [
    (crate::protocol::kind::PING, "PING"),
    (crate::protocol::kind::CREATE_ACCOUNTS, "CREATE_ACCOUNTS"),
    (crate::protocol::kind::SUBMIT_TRANSFERS, "SUBMIT_TRANSFERS"),
    (crate::protocol::kind::CONFIRM_STEP_UP, "CONFIRM_STEP_UP"),
    (crate::protocol::kind::CANCEL_TRANSFERS, "CANCEL_TRANSFERS"),
    (crate::protocol::kind::FINALIZE_PENDING, "FINALIZE_PENDING"),
    (crate::protocol::kind::LOOKUP_TRANSFERS, "LOOKUP_TRANSFERS"),
    (crate::protocol::kind::LOOKUP_BALANCES, "LOOKUP_BALANCES"),
    (crate::protocol::kind::SET_FX_RATES, "SET_FX_RATES"),
    (crate::protocol::kind::FX_QUOTE, "FX_QUOTE"),
    (crate::protocol::kind::SET_CREDIT_LINES, "SET_CREDIT_LINES"),
    (crate::protocol::kind::DISBURSE_LOANS, "DISBURSE_LOANS"),
    (crate::protocol::kind::REPAY_LOANS, "REPAY_LOANS"),
    (crate::protocol::kind::LOOKUP_LOANS, "LOOKUP_LOANS"),
    (crate::protocol::kind::RESOLVE_REVIEW, "RESOLVE_REVIEW"),
    (crate::protocol::kind::SET_TIME, "SET_TIME"),
    (crate::protocol::kind::EXPORT_STR, "EXPORT_STR"),
];

/// Result codes counted per code (0..=RESULT_CODES_MAX-1).
const RESULT_CODES_MAX: usize = 72;

/// Every counter the switch keeps.
#[derive(Debug)]
pub struct Metrics {
    /// Latency per stage.
    pub stages: [Histo; Stage::ALL.len()],
    /// End-to-end latency per kind (`KIND_SLOTS` order).
    pub kinds: [Histo; 17],
    /// Per-record result codes of the shards' answers, by code.
    pub results: [AtomicU64; RESULT_CODES_MAX],
    /// Requests queued for the shards now.
    pub queue_depth: AtomicU64,
    /// Link messages shards sent each other (cross-shard credits, their
    /// acknowledgements, account notices).
    pub link_messages: AtomicU64,
    /// Requests that waited because another request held one of their ids
    /// or quotes undecided on another shard (docs/sharding.md).
    pub claim_waits: AtomicU64,
    /// Later rounds of requests split because a record had to see an
    /// earlier one's outcome on another shard (docs/sharding.md).
    pub later_rounds: AtomicU64,
    /// Bytes the logs have written.
    pub log_bytes: AtomicU64,
    /// Unix ms of the last snapshot written (0: none yet).
    pub last_snapshot_unix_ms: AtomicU64,
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    /// Unauthenticated connections closed to make room for a newer one.
    pub connections_evicted: AtomicU64,
    /// Connections that have not said HELLO yet.
    pub connections_unauthenticated: AtomicU64,
    /// Requests refused BUSY by their channel's own limits.
    pub channel_limited: AtomicU64,
    /// TLS handshakes refused, and HELLOs refused for another channel's
    /// certificate.
    pub tls_refused: AtomicU64,
    pub requests_total: AtomicU64,
    pub records_total: AtomicU64,
    pub busy_total: AtomicU64,
    /// Connections closed because the channel stopped reading its answers.
    pub write_timeouts_total: AtomicU64,
    /// 1 while a shard's disk is below its reserve (writes refused).
    pub disk_below_reserve: AtomicU64,
    /// Requests refused because a shard's disk was below its reserve.
    pub no_space_total: AtomicU64,
    /// SUBMIT_TRANSFERS requests of exact resends only, answered without
    /// a log record.
    pub resends_unlogged_total: AtomicU64,
    /// ERROR frames sent, by code (index = code - 1).
    pub frame_errors: [AtomicU64; 14],
    /// New AML holds by kind: FACE_REVIEW (level 1), SMS_OTP (level 2),
    /// COOLING_OFF (level 3), MANUAL_REVIEW (no HKD rate, scorer, budget).
    pub aml_holds: [AtomicU64; AML_HOLDS.len()],
    /// Transfers sent to the remote scorer.
    pub aml_scorer_evaluations: AtomicU64,
    /// Transfers held because the scorer's verdict missed the budget.
    pub aml_budget_fallbacks: AtomicU64,
    /// Transfers the remote scorer asked to review.
    pub aml_scorer_reviews: AtomicU64,
    /// Longest wait for the scorer, microseconds.
    pub aml_scorer_wait_max_us: AtomicU64,
    /// This node's raft, in a cluster (all zero on a single node).
    pub cluster: ClusterGauges,
}

/// A cluster node's raft as operators watch it (`cluster::node` keeps
/// them current from raft's own metrics).
#[derive(Debug)]
pub struct ClusterGauges {
    /// This node's id (0: not a cluster).
    pub node_id: AtomicU64,
    /// 1 follower, 2 candidate, 3 leader, 4 learner, 0 shut down.
    pub role: AtomicU64,
    pub term: AtomicU64,
    /// The leader this node knows (0: none).
    pub leader_id: AtomicU64,
    pub last_log_index: AtomicU64,
    pub committed_index: AtomicU64,
    pub applied_index: AtomicU64,
    /// Times this node stood for election.
    pub elections_total: AtomicU64,
    /// On the leader: per follower, entries it lacks (the leader's last
    /// index less the follower's matched one).
    pub lag: parking_lot::Mutex<Vec<(u64, u64)>>,
}

/// Names of `Metrics::aml_holds`, in order.
const AML_HOLDS: [(crate::engine::holds::Holds, &str, &str); 5] = [
    (crate::engine::holds::Holds::FACE_REVIEW, "FACE_REVIEW", "1"),
    (crate::engine::holds::Holds::SMS_OTP, "SMS_OTP", "2"),
    (crate::engine::holds::Holds::COOLING_OFF, "COOLING_OFF", "3"),
    (crate::engine::holds::Holds::MANUAL_REVIEW, "MANUAL_REVIEW", "review"),
    (crate::engine::holds::Holds::MULE_REVIEW, "MULE_REVIEW", "mule"),
];

/// The process's counters.
pub static METRICS: Metrics = Metrics {
    stages: [const { Histo::new() }; Stage::ALL.len()],
    kinds: [const { Histo::new() }; 17],
    results: [const { AtomicU64::new(0) }; RESULT_CODES_MAX],
    queue_depth: AtomicU64::new(0),
    link_messages: AtomicU64::new(0),
    claim_waits: AtomicU64::new(0),
    later_rounds: AtomicU64::new(0),
    log_bytes: AtomicU64::new(0),
    last_snapshot_unix_ms: AtomicU64::new(0),
    connections_open: AtomicU64::new(0),
    connections_total: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    connections_evicted: AtomicU64::new(0),
    connections_unauthenticated: AtomicU64::new(0),
    channel_limited: AtomicU64::new(0),
    tls_refused: AtomicU64::new(0),
    requests_total: AtomicU64::new(0),
    records_total: AtomicU64::new(0),
    busy_total: AtomicU64::new(0),
    write_timeouts_total: AtomicU64::new(0),
    disk_below_reserve: AtomicU64::new(0),
    no_space_total: AtomicU64::new(0),
    resends_unlogged_total: AtomicU64::new(0),
    frame_errors: [const { AtomicU64::new(0) }; 14],
    aml_holds: [const { AtomicU64::new(0) }; AML_HOLDS.len()],
    aml_scorer_evaluations: AtomicU64::new(0),
    aml_budget_fallbacks: AtomicU64::new(0),
    aml_scorer_reviews: AtomicU64::new(0),
    aml_scorer_wait_max_us: AtomicU64::new(0),
    cluster: ClusterGauges {
        node_id: AtomicU64::new(0),
        role: AtomicU64::new(0),
        term: AtomicU64::new(0),
        leader_id: AtomicU64::new(0),
        last_log_index: AtomicU64::new(0),
        committed_index: AtomicU64::new(0),
        applied_index: AtomicU64::new(0),
        elections_total: AtomicU64::new(0),
        lag: parking_lot::const_mutex(Vec::new()),
    },
};

impl Metrics {
    /// Counts one ERROR frame.
    pub fn frame_error(&self, code: ErrorCode) {
        self.frame_errors[code as usize - 1].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a stage's latency.
    #[inline]
    pub fn stage(&self, stage: Stage, d: std::time::Duration) {
        self.stages[stage as usize].record(d);
    }

    /// Records a request's end-to-end latency, per kind too.
    pub fn end_to_end(&self, kind: u16, d: std::time::Duration) {
        self.stages[Stage::EndToEnd as usize].record(d);
        let slot = KIND_SLOTS.iter().position(|(k, _)| *k == kind).unwrap_or(0);
        self.kinds[slot].record(d);
    }

    /// Counts `n` records answered with result `code`.
    #[inline]
    pub fn results(&self, code: u16, n: u64) {
        self.results[usize::from(code).min(RESULT_CODES_MAX - 1)].fetch_add(n, Ordering::Relaxed);
    }

    /// Counts the AML holds of one new pending transfer.
    pub fn aml_holds(&self, holds: crate::engine::holds::Holds) {
        for (i, (hold, _, _)) in AML_HOLDS.iter().enumerate() {
            if holds.contains(*hold) {
                self.aml_holds[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Adds a shard's scorer-gate counters since it last reported
    /// (`before`), so every shard's gate counts; the longest wait is the
    /// longest of any.
    pub fn record_gate(&self, s: crate::scorer::GateStats, before: crate::scorer::GateStats) {
        self.aml_scorer_evaluations.fetch_add(s.evaluations - before.evaluations, Ordering::Relaxed);
        self.aml_budget_fallbacks.fetch_add(s.fallbacks - before.fallbacks, Ordering::Relaxed);
        self.aml_scorer_reviews.fetch_add(s.reviews - before.reviews, Ordering::Relaxed);
        self.aml_scorer_wait_max_us.fetch_max(s.wait_max_us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    #[must_use]
    // Long by design: one block per metric family, in the order of
    // docs/operations.md's table.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one("harbour_connections_open", "gauge", "Channel connections open now.", get(&self.connections_open));
        one("harbour_connections_total", "counter", "Channel connections accepted.", get(&self.connections_total));
        one(
            "harbour_connections_refused_total",
            "counter",
            "Connections refused: a limit of the switch, of a channel, or of a source address.",
            get(&self.connections_refused),
        );
        one(
            "harbour_connections_evicted_total",
            "counter",
            "Connections awaiting HELLO closed to make room for newer ones.",
            get(&self.connections_evicted),
        );
        one(
            "harbour_connections_unauthenticated",
            "gauge",
            "Connections that have not said HELLO yet.",
            get(&self.connections_unauthenticated),
        );
        one(
            "harbour_channel_limited_total",
            "counter",
            "Requests refused BUSY by their channel's own max_in_flight or records_per_second.",
            get(&self.channel_limited),
        );
        one(
            "harbour_tls_refused_total",
            "counter",
            "TLS handshakes refused (no, unknown, expired or revoked client certificate; no handshake in time), and \
             HELLOs naming another channel than the certificate's.",
            get(&self.tls_refused),
        );
        one("harbour_requests_total", "counter", "Requests handed to the shards.", get(&self.requests_total));
        one("harbour_records_total", "counter", "Records in requests handed to the shards.", get(&self.records_total));
        one("harbour_busy_total", "counter", "Requests answered BUSY (nothing applied).", get(&self.busy_total));
        one(
            "harbour_write_timeouts_total",
            "counter",
            "Connections closed because the channel stopped reading its answers.",
            get(&self.write_timeouts_total),
        );
        one(
            "harbour_disk_below_reserve",
            "gauge",
            "1 while a shard's disk is below disk_reserve_bytes (writes refused BUSY, lookups served).",
            get(&self.disk_below_reserve),
        );
        one(
            "harbour_no_space_total",
            "counter",
            "Requests refused BUSY because a shard's disk was below its reserve (nothing applied).",
            get(&self.no_space_total),
        );
        one(
            "harbour_resends_unlogged_total",
            "counter",
            "Requests of exact resends only, answered ALREADY_EXISTS without a log record.",
            get(&self.resends_unlogged_total),
        );
        let c = &self.cluster;
        if get(&c.node_id) != 0 {
            one("harbour_cluster_node_id", "gauge", "This cluster node's id.", get(&c.node_id));
            one(
                "harbour_cluster_role",
                "gauge",
                "This node's raft role: 1 follower, 2 candidate, 3 leader, 4 learner, 0 stopped.",
                get(&c.role),
            );
            one("harbour_cluster_term", "gauge", "The raft term this node is in.", get(&c.term));
            one("harbour_cluster_leader_id", "gauge", "The leader this node knows (0: none).", get(&c.leader_id));
            one(
                "harbour_cluster_last_log_index",
                "gauge",
                "The last raft log index this node holds.",
                get(&c.last_log_index),
            );
            one(
                "harbour_cluster_committed_index",
                "gauge",
                "The last raft log index this node knows committed (majority-durable).",
                get(&c.committed_index),
            );
            one(
                "harbour_cluster_applied_index",
                "gauge",
                "The last raft log index applied to this node's books.",
                get(&c.applied_index),
            );
            one(
                "harbour_cluster_elections_total",
                "counter",
                "Times this node stood for election.",
                get(&c.elections_total),
            );
            let _ = writeln!(
                out,
                "# HELP harbour_cluster_replication_lag_entries On the leader: entries each follower lacks.\n\
                 # TYPE harbour_cluster_replication_lag_entries gauge"
            );
            for (node, lag) in c.lag.lock().iter() {
                let _ = writeln!(out, "harbour_cluster_replication_lag_entries{{node=\"{node}\"}} {lag}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP harbour_frame_errors_total ERROR frames sent, by code.\n# TYPE harbour_frame_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let value = get(&self.frame_errors[code as usize - 1]);
            let _ = writeln!(out, "harbour_frame_errors_total{{code=\"{}\"}} {value}", code.name());
        }
        let _ = writeln!(
            out,
            "# HELP harbour_aml_holds_total Transfers AML held, by hold (level 1 FACE_REVIEW, 2 SMS_OTP, 3 \
             COOLING_OFF; MANUAL_REVIEW for no HKD rate, scorer or budget fallback; MULE_REVIEW for \
             money passing through).\n\
             # TYPE harbour_aml_holds_total counter"
        );
        for (i, (_, name, level)) in AML_HOLDS.iter().enumerate() {
            let value = get(&self.aml_holds[i]);
            let _ = writeln!(out, "harbour_aml_holds_total{{hold=\"{name}\",level=\"{level}\"}} {value}");
        }
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        one(
            "harbour_aml_scorer_evaluations_total",
            "counter",
            "Transfers sent to the remote AML scorer.",
            get(&self.aml_scorer_evaluations),
        );
        one(
            "harbour_aml_budget_fallbacks_total",
            "counter",
            "Transfers held for MANUAL_REVIEW because the scorer missed the AML budget.",
            get(&self.aml_budget_fallbacks),
        );
        one(
            "harbour_aml_scorer_reviews_total",
            "counter",
            "Transfers the remote scorer asked to review.",
            get(&self.aml_scorer_reviews),
        );
        // Prometheus's base unit is the second (promtool checks it).
        let wait_max_s = get(&self.aml_scorer_wait_max_us) as f64 / 1e6;
        let _ = writeln!(
            out,
            "# HELP harbour_aml_scorer_wait_max_seconds Longest wait for the remote scorer's verdicts.\n\
             # TYPE harbour_aml_scorer_wait_max_seconds gauge\nharbour_aml_scorer_wait_max_seconds {wait_max_s}"
        );
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        one("harbour_queue_depth", "gauge", "Requests queued for the shards now.", get(&self.queue_depth));
        one(
            "harbour_link_messages_total",
            "counter",
            "Messages between shards (cross-shard credits, acknowledgements, account notices).",
            get(&self.link_messages),
        );
        one(
            "harbour_claim_waits_total",
            "counter",
            "Routings of a request deferred because another request held one of its ids or quotes undecided on another shard.",
            get(&self.claim_waits),
        );
        one(
            "harbour_later_rounds_total",
            "counter",
            "Later rounds of requests whose records had to see an earlier record's outcome on another shard.",
            get(&self.later_rounds),
        );
        one("harbour_log_bytes_total", "counter", "Bytes the write-ahead logs have written.", get(&self.log_bytes));
        let last = get(&self.last_snapshot_unix_ms);
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let age = if last == 0 { -1.0 } else { now.saturating_sub(last) as f64 / 1000.0 };
        let _ = writeln!(
            out,
            "# HELP harbour_snapshot_age_seconds Seconds since the last snapshot was written (-1: none yet).\n\
             # TYPE harbour_snapshot_age_seconds gauge\nharbour_snapshot_age_seconds {age}"
        );
        let _ = writeln!(
            out,
            "# HELP harbour_results_total Per-record result codes of the shards' answers.\n\
             # TYPE harbour_results_total counter"
        );
        let mut other = 0;
        for (code, n) in self.results.iter().enumerate() {
            let n = get(n);
            match crate::protocol::ResultCode::from_u16(code as u16) {
                Some(c) if n > 0 => {
                    let _ = writeln!(out, "harbour_results_total{{code=\"{}\"}} {n}", c.name());
                }
                Some(_) => {}
                None => other += n,
            }
        }
        if other > 0 {
            let _ = writeln!(out, "harbour_results_total{{code=\"OTHER\"}} {other}");
        }
        render_histograms(
            &mut out,
            "harbour_stage_seconds",
            "Latency of each stage of a request.",
            "stage",
            Stage::ALL.iter().map(|s| (s.name(), &self.stages[*s as usize])),
        );
        render_histograms(
            &mut out,
            "harbour_request_seconds",
            "End-to-end latency of requests, by kind.",
            "kind",
            KIND_SLOTS.iter().enumerate().map(|(i, (_, name))| (*name, &self.kinds[i])),
        );
        out
    }
}

/// The nominal `le` bounds of the exported histograms, in seconds; each is
/// exported as the nearest bucket edge at or below it, so counts are exact.
const LE_SECONDS: [f64; 22] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Writes histograms (buckets, sum, count) and, under `NAME_quantiles`, a
/// summary of the same data (p50, p90, p99, p99.9, max).
fn render_histograms<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    label: &str,
    histos: impl Iterator<Item = (&'a str, &'a Histo)> + Clone,
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (value, h) in histos.clone() {
        let (buckets, count, sum_ns) = h.snapshot();
        let mut cumulative = 0u64;
        let mut i = 0usize;
        for le in LE_SECONDS {
            let bound_ns = (le * 1e9) as u64;
            // Whole buckets up to the last edge at or below the bound; the
            // exported `le` is that edge, so nothing is split or misplaced.
            while i < HISTO_BUCKETS && Histo::upper(i) < bound_ns {
                cumulative += buckets[i];
                i += 1;
            }
            let edge = if i == 0 { 0.0 } else { (Histo::upper(i - 1) as f64 + 1.0) / 1e9 };
            let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"{edge:e}\"}} {cumulative}");
        }
        let _ = writeln!(out, "{name}_bucket{{{label}=\"{value}\",le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "{name}_sum{{{label}=\"{value}\"}} {}", sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{name}_count{{{label}=\"{value}\"}} {count}");
    }
    let summary = format!("{name}_quantiles");
    let _ = writeln!(out, "# HELP {summary} {help} Quantiles.\n# TYPE {summary} summary");
    for (value, h) in histos {
        let (buckets, count, sum_ns) = h.snapshot();
        for (q, text) in [(0.5, "0.5"), (0.9, "0.9"), (0.99, "0.99"), (0.999, "0.999"), (1.0, "1")] {
            let v = quantile_of(&buckets, count, q) as f64 / 1e9;
            let _ = writeln!(out, "{summary}{{{label}=\"{value}\",quantile=\"{text}\"}} {v}");
        }
        let _ = writeln!(out, "{summary}_sum{{{label}=\"{value}\"}} {}", sum_ns as f64 / 1e9);
        let _ = writeln!(out, "{summary}_count{{{label}=\"{value}\"}} {count}");
    }
}

/// How long a scraper has to send its request head, and to take the
/// answer.
const SCRAPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serves the counters over HTTP until the task is dropped: `GET /metrics`
/// only (anything else is 404 or 405), at most `max_connections` scrapers
/// at once and `per_address` from one address. A connection that is full
/// makes room by closing the oldest one still sending its request
/// (`admission::Gate`), so silent connections cannot keep a scraper out,
/// and each has `SCRAPE_DEADLINE` to send its head and take the answer.
pub async fn serve(listener: TcpListener, max_connections: usize, per_address: usize, auth: Option<String>) {
    let gate = crate::admission::Gate::new(max_connections, per_address, max_connections, []);
    let expected: Option<std::sync::Arc<str>> = auth.map(|a| format!("Basic {}", base64(a.as_bytes())).into());
    loop {
        let Ok((mut stream, peer)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok((place, evicted)) = gate.admit(peer.ip()) else { continue };
        let expected = expected.clone();
        tokio::spawn(async move {
            let answered = async {
                let head = read_head(&mut stream).await;
                // Only a connection still sending its request is evicted.
                drop(place);
                let Some(head) = head else { return };
                let response = answer(&head, expected.as_deref());
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            };
            tokio::select! {
                () = answered => {}
                _ = evicted => {}
                () = tokio::time::sleep(2 * SCRAPE_DEADLINE) => {}
            }
        });
    }
}

/// A request head (up to its blank line, at most 4 KiB), within the
/// deadline; `None` if it did not come.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(512);
    let read = async {
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 4096 {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(SCRAPE_DEADLINE, read).await.ok()?;
    Some(head)
}

/// Base64 (RFC 4648, with padding), for the basic-auth header.
#[must_use]
pub fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(TABLE[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The response to a request head: the metrics for `GET /metrics`, with
/// the basic-auth header `expected` if one is required.
fn answer(head: &[u8], expected: Option<&str>) -> String {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let plain = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    };
    if path != "/metrics" {
        return plain("404 Not Found", "only /metrics is served\n");
    }
    if method != "GET" {
        return plain("405 Method Not Allowed", "GET /metrics\n");
    }
    if let Some(expected) = expected {
        let given = String::from_utf8_lossy(head).lines().find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                .map(|(_, v)| v.trim().to_string())
        });
        // Compared in full whatever the first difference.
        let same = given.as_deref().is_some_and(|g| {
            g.len() == expected.len() && g.bytes().zip(expected.bytes()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0
        });
        if !same {
            return "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"harbour\"\r\nContent-Length: 0\r\n\
                    Connection: close\r\n\r\n"
                .to_string();
        }
    }
    let body = METRICS.render();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// What `promtool check metrics` checks of names, on everything served:
    /// base units (seconds, bytes), counters ending `_total`, one TYPE and
    /// HELP per family.
    #[test]
    fn metric_names_follow_prometheus_conventions() {
        let text = METRICS.render();
        let mut families = std::collections::BTreeSet::new();
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut words = line.split_whitespace().skip(2);
            let (name, kind) = (words.next().unwrap(), words.next().unwrap());
            assert!(families.insert(name.to_string()), "{name} typed twice");
            for unit in ["_microseconds", "_milliseconds", "_us", "_ms", "_kilobytes", "_megabytes"] {
                assert!(!name.ends_with(unit) && !name.contains(&format!("{unit}_")), "{name}: not a base unit");
            }
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} must end _total");
            }
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        }
        assert!(families.len() > 20, "{families:?}");
    }

    #[test]
    fn base64_is_rfc_4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"prometheus:a-long-password"), "cHJvbWV0aGV1czphLWxvbmctcGFzc3dvcmQ=");
    }

    #[test]
    fn histograms_bucket_every_value_and_report_upper_bounds() {
        // Every bucket's upper bound is below the next one's, to the last
        // (8..24 are never used: values below 8 have buckets of their own).
        for i in (1..HISTO_SUB).chain(3 * HISTO_SUB + 1..HISTO_BUCKETS) {
            assert!(Histo::upper(i - 1) < Histo::upper(i) || Histo::upper(i) == u64::MAX, "bucket {i}");
            assert_eq!(Histo::index(Histo::upper(i)), i, "the upper bound of bucket {i} is in it");
        }
        assert_eq!(Histo::upper(HISTO_BUCKETS - 1), u64::MAX);
        let h = Histo::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        h.record(Duration::MAX);
        let p50 = h.quantile(0.5);
        assert!((500_000..=562_500).contains(&p50), "p50 {p50} ns: at most 12.5% above 500 µs");
        assert_eq!(h.quantile(1.0), u64::MAX);
        let mut text = String::new();
        render_histograms(&mut text, "t", "help", "stage", [("x", &h)].into_iter());
        let counts: Vec<u64> = text
            .lines()
            .filter(|l| l.starts_with("t_bucket"))
            .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
            .collect();
        assert!(counts.windows(2).all(|w| w[0] <= w[1]), "cumulative: {counts:?}");
        assert_eq!(*counts.last().unwrap(), 1001, "+Inf is the count");
    }
}
