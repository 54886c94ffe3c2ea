//! The switch's configuration: embedded defaults (contract §0), an optional
//! TOML file, and command-line flags on top.
//!
//! With no file the switch has one channel (`channel_id = 1`, key
//! `hksw-dev-key`, every role) and refuses to listen on anything but
//! loopback with that key. Every limit has a default and a bound.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::aml::{CountrySet, FATF_INCREASED_MONITORING};
use crate::clock::Clock;
use crate::engine::EngineConfig;
use crate::protocol::frame::role;
use crate::protocol::internal::Scope;
use crate::wal::WalConfig;

// The shards' settings live here, below the shards that read them.

/// Most requests one shard applies between two syncs.
pub const GROUP_REQUESTS_MAX: usize = 4096;
/// Deepest a shard's queue may get.
pub const QUEUE_DEPTH_MAX: usize = 65_536;
/// Most shards a switch runs.
pub const SHARDS_MAX: usize = 256;
/// Free disk every shard keeps by default: two of the default segments
/// (the next segment and a snapshot's worth of room).
pub const DISK_RESERVE_BYTES_DEFAULT: u64 = 128 << 20;
/// Bytes of request bodies queued for the shards at most; past it a
/// request is BUSY (nothing applied), however few requests that is.
pub const QUEUED_BYTES_MAX: u64 = 256 << 20;
const _: () = assert!(GROUP_REQUESTS_MAX <= QUEUE_DEPTH_MAX);

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
    /// Free bytes every shard's disk must keep: below them requests that
    /// would be logged are refused (BUSY, nothing applied) until space
    /// returns, and a start is refused, so the log never meets a full disk.
    pub disk_reserve_bytes: u64,
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
            disk_reserve_bytes: DISK_RESERVE_BYTES_DEFAULT,
        }
    }
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

/// The development channel's key (contract §2).
pub const DEV_KEY: &[u8] = b"hksw-dev-key";
/// Largest request or response body (contract default 1 MiB).
pub const MAX_BODY_DEFAULT: u32 = 1 << 20;
/// Records per request at most: a full batch of the largest response record
/// (64 bytes) fits in `max_body`.
pub const MAX_BATCH_DEFAULT: u32 = 8189;
/// Unanswered requests per connection at most.
pub const MAX_IN_FLIGHT_DEFAULT: u32 = 128;
/// Open connections at most.
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;
/// A connection that sends nothing and waits for nothing this long is closed.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 60_000;
/// A connection must complete HELLO this soon after connecting: a round
/// trip and an HMAC, so a few seconds is plenty for any channel.
pub const HANDSHAKE_TIMEOUT_MS_DEFAULT: u64 = 3_000;
/// Connections awaiting HELLO at most; past it the oldest is evicted
/// (`admission`).
pub const UNAUTHENTICATED_MAX_DEFAULT: usize = 256;
/// Connections awaiting HELLO from one source address at most.
pub const UNAUTHENTICATED_PER_ADDRESS_DEFAULT: usize = 16;
/// Shortest channel key beyond loopback (HMAC-SHA256: a key shorter than
/// its 32-byte output weakens it).
pub const KEY_BYTES_MIN_PUBLIC: usize = 32;
/// A write to a channel that does not read for this long closes it.
pub const WRITE_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// At shutdown, connections still not drained after this long are dropped
/// (their answers are durable; the channel resends).
pub const DRAIN_TIMEOUT_MS_DEFAULT: u64 = 30_000;
const _: () = assert!(MAX_BATCH_DEFAULT as usize * 64 <= MAX_BODY_DEFAULT as usize);
const _: () = assert!(MAX_BATCH_DEFAULT >= 8189 && MAX_IN_FLIGHT_DEFAULT >= 64);

/// One channel allowed to connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Channel {
    pub id: u32,
    pub key: Vec<u8>,
    /// During a key rotation, the key being retired: HELLO with either is
    /// good until a reload without it (`docs/security.md`).
    pub previous_key: Option<Vec<u8>>,
    pub roles: u16,
    /// This channel's own connection quota (none: only `connections_max`).
    pub connections_max: Option<usize>,
    /// Requests in flight over all its connections (none: per connection
    /// only, `max_in_flight`).
    pub max_in_flight: Option<u32>,
    /// Records per second it may send (a token bucket holding a full
    /// batch); none: no rate bound.
    pub records_per_second: Option<u64>,
    /// The accounts it may debit, act on and read (`docs/security.md`,
    /// account scopes); every account by default.
    pub scope: Scope,
}

/// Everything `harbour serve` needs.
#[derive(Clone, Debug)]
pub struct Config {
    pub data: PathBuf,
    pub listen: SocketAddr,
    pub metrics: Option<SocketAddr>,
    /// `user:password` the metrics endpoint requires (HTTP basic auth);
    /// required beyond loopback.
    pub metrics_auth: Option<String>,
    pub channels: Vec<Channel>,
    pub switch: SwitchConfig,
    pub backend: Backend,
    pub max_body: u32,
    pub max_batch: u32,
    pub max_in_flight: u32,
    /// Bytes of answers not yet taken by their connections' writers, all
    /// connections together; past it requests are BUSY (nothing applied).
    pub answer_bytes_max: u64,
    /// Log the whole timeline of one request in this many (0: none;
    /// `docs/operations.md`, "A request's timeline").
    pub trace_sample: u64,
    pub connections_max: usize,
    /// Connections awaiting HELLO at most, and from one address.
    pub unauthenticated_max: usize,
    pub unauthenticated_per_address: usize,
    pub idle_timeout_ms: u64,
    pub handshake_timeout_ms: u64,
    pub write_timeout_ms: u64,
    pub drain_timeout_ms: u64,
    /// The AML latency budget (for the remote scorer's verdicts).
    pub aml_budget: Duration,
    /// Record inbound traffic to this file (`harbour serve --record`).
    pub record: Option<PathBuf>,
    /// The remote scorer connection's own deadline.
    pub aml_scorer_timeout: Duration,
    /// This node's place in a cluster (`[cluster]`); `None`: a single
    /// node, exactly as without clusters.
    pub cluster: Option<ClusterConfig>,
    /// TLS 1.3 around the channel protocol (`[tls]`, `docs/security.md`).
    pub tls: Option<TlsConfig>,
    /// Plain TCP beyond loopback, said in so many words (without `[tls]`
    /// a listener beyond loopback is refused otherwise).
    pub plain_tcp_beyond_loopback: bool,
}

/// `[tls]`: the switch's certificate chain and key, the CA that signs the
/// channels' certificates (mutual TLS: every channel shows one), and that
/// CA's revocation lists, all PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
    pub crls: Vec<PathBuf>,
}

/// `[cluster.tls]`: this node's certificate chain and key (naming
/// `node-<id>.harbour`, for server and client auth), the cluster's CA that
/// signs every node's, and its revocation lists, all PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerTlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    pub crls: Vec<PathBuf>,
}

/// One node of a cluster, as every node's configuration names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterNode {
    pub id: u64,
    /// Where channels reach it (the NOT_LEADER detail).
    pub channel: String,
    /// Where the other nodes reach it (raft's messages).
    pub peer: String,
}

/// `[cluster]`: this node and the others (docs/cluster.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's id: one of `nodes`.
    pub node_id: u64,
    /// Every voting node of a new cluster, this one included. A node that
    /// joins a running cluster is added by an operator (`harbour cluster
    /// add`), and lists only itself.
    pub nodes: Vec<ClusterNode>,
    /// The leader's heartbeat to followers.
    pub heartbeat_ms: u64,
    /// A follower that hears no leader for a random time in this range
    /// stands for election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Committed entries between two snapshots of the books.
    pub snapshot_entries: u64,
    /// A node joining a running cluster: it never starts a cluster of its
    /// own, and waits for an operator to add it.
    pub join: bool,
    /// Where this node dials a peer when not at its listed peer address
    /// (a proxy or a tunnel in between; the failover harness's partitions).
    pub dial: Vec<(u64, String)>,
    /// Mutual TLS 1.3 on the peer links (`docs/security.md`).
    pub tls: Option<PeerTlsConfig>,
}

impl ClusterConfig {
    /// This node's own entry.
    #[must_use]
    pub fn me(&self) -> Option<&ClusterNode> {
        self.nodes.iter().find(|n| n.id == self.node_id)
    }
}

/// Cluster timing defaults (openraft's own). A follower votes for a new
/// leader only once the old leader's lease, `election_timeout_max`, has
/// lapsed, and stands for election after its own random timeout: a
/// leader's death is answered for within about 0.5 s, inside the 1 s
/// failover target (docs/benchmarks.md), while heartbeats every 50 ms
/// keep a leader slowed by a busy core in place.
pub const HEARTBEAT_MS_DEFAULT: u64 = 50;
pub const ELECTION_TIMEOUT_MIN_MS_DEFAULT: u64 = 150;
pub const ELECTION_TIMEOUT_MAX_MS_DEFAULT: u64 = 300;
/// Entries (shard group commits) between snapshots: each entry is kept in
/// memory until a snapshot lets the log be purged.
pub const SNAPSHOT_ENTRIES_DEFAULT: u64 = 20_000;

impl Default for Config {
    fn default() -> Self {
        Self {
            data: PathBuf::from("./data"),
            listen: "127.0.0.1:7400".parse().expect("address"),
            metrics: Some("127.0.0.1:9464".parse().expect("address")),
            channels: vec![Channel {
                id: 1,
                key: DEV_KEY.to_vec(),
                previous_key: None,
                roles: role::ALL,
                connections_max: None,
                max_in_flight: None,
                records_per_second: None,
                scope: Scope::default(),
            }],
            switch: SwitchConfig {
                engine: EngineConfig {
                    accounts_capacity: 1 << 20,
                    transfers_capacity: 1 << 22,
                    loans_capacity: 1 << 18,
                    pending_capacity: 1 << 18,
                    ..EngineConfig::default()
                },
                ..SwitchConfig::default()
            },
            // Measured faster here than the io_uring backend, whose writes
            // and syncs are each a separate ring round trip (benchmarks.md).
            backend: Backend::Std,
            max_body: MAX_BODY_DEFAULT,
            max_batch: MAX_BATCH_DEFAULT,
            max_in_flight: MAX_IN_FLIGHT_DEFAULT,
            answer_bytes_max: 256 << 20,
            trace_sample: 0,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            unauthenticated_max: UNAUTHENTICATED_MAX_DEFAULT,
            unauthenticated_per_address: UNAUTHENTICATED_PER_ADDRESS_DEFAULT,
            idle_timeout_ms: IDLE_TIMEOUT_MS_DEFAULT,
            handshake_timeout_ms: HANDSHAKE_TIMEOUT_MS_DEFAULT,
            write_timeout_ms: WRITE_TIMEOUT_MS_DEFAULT,
            drain_timeout_ms: DRAIN_TIMEOUT_MS_DEFAULT,
            aml_budget: Duration::from_micros(AML_BUDGET_US_DEFAULT),
            record: None,
            aml_scorer_timeout: Duration::from_millis(AML_SCORER_TIMEOUT_MS_DEFAULT),
            cluster: None,
            tls: None,
            plain_tcp_beyond_loopback: false,
            metrics_auth: None,
        }
    }
}

/// A configuration the switch refuses to start with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The TOML file's shape; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data: Option<PathBuf>,
    listen: Option<SocketAddr>,
    metrics: Option<String>,
    metrics_auth: Option<String>,
    clock: Option<String>,
    shards: Option<usize>,
    backend: Option<String>,
    max_in_flight: Option<u32>,
    answer_bytes_max: Option<u64>,
    trace_sample: Option<u64>,
    connections_max: Option<usize>,
    unauthenticated_max: Option<usize>,
    unauthenticated_per_address: Option<usize>,
    idle_timeout_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    accounts_capacity: Option<usize>,
    transfers_capacity: Option<usize>,
    /// Loans and credit lines to size the credit store for.
    loans_capacity: Option<usize>,
    /// Pending (held) transfers to size the pending table for.
    pending_capacity: Option<usize>,
    /// How long an FX quote is good (default 30 s).
    quote_ttl_ms: Option<u64>,
    wal: Option<WalFile>,
    aml: Option<AmlFile>,
    #[serde(default)]
    channels: Vec<ChannelFile>,
    cluster: Option<ClusterFile>,
    tls: Option<TlsFile>,
    plain_tcp_beyond_loopback: Option<bool>,
}

/// `[tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
}

/// `[cluster]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterFile {
    node_id: u64,
    nodes: Vec<ClusterNodeFile>,
    heartbeat_ms: Option<u64>,
    election_timeout_min_ms: Option<u64>,
    election_timeout_max_ms: Option<u64>,
    snapshot_entries: Option<u64>,
    #[serde(default)]
    join: bool,
    #[serde(default)]
    dial: Vec<ClusterDialFile>,
    tls: Option<PeerTlsFile>,
}

/// `[cluster.tls]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerTlsFile {
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
    #[serde(default)]
    crls: Vec<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterDialFile {
    id: u64,
    addr: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterNodeFile {
    id: u64,
    channel: String,
    peer: String,
}

/// `[aml]`: the AML rules (docs/aml.md).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AmlFile {
    enabled: Option<bool>,
    /// Level 1's daily limit as an HKD decimal, e.g. "80000.00".
    daily_limit_hkd: Option<String>,
    /// Level 2's list (ISO 3166-1 numeric); replaces the default.
    high_risk_countries: Option<Vec<u16>>,
    /// Adds the FATF increased-monitoring list to level 2's.
    increased_monitoring: Option<bool>,
    /// Level 3 on or off.
    behaviour: Option<bool>,
    /// Level 3's model version (1, 2 or 3).
    behaviour_model: Option<u32>,
    /// Level 3's share of normal transfers it may hold, e.g. "0.3%"
    /// (models 2 and 3; their operating points).
    false_hold_budget: Option<String>,
    /// Level 3's threshold in points, in quarters, e.g. "4.25" (instead of
    /// a budget).
    behaviour_threshold: Option<String>,
    cooling_off_ms: Option<u64>,
    /// The mule rule (MULE_REVIEW) on or off.
    mule_detection: Option<bool>,
    /// The mule rule looks only at strangers' recent money of at least
    /// this much, an HKD decimal, e.g. "5000.00".
    mule_min_inbound_hkd: Option<String>,
    /// The latency budget for the remote scorer's verdicts.
    budget_us: Option<u64>,
    /// The remote scorer's address (none by default).
    scorer: Option<SocketAddr>,
    /// The scorer connection's own deadline.
    scorer_timeout_ms: Option<u64>,
}

/// The AML latency budget's default (issue 5): 50 µs.
pub const AML_BUDGET_US_DEFAULT: u64 = 50;
/// The longest AML budget accepted: a shard never waits longer per group.
pub const AML_BUDGET_US_MAX: u64 = 1_000_000;
/// The remote scorer connection's default deadline.
pub const AML_SCORER_TIMEOUT_MS_DEFAULT: u64 = 1_000;

/// Parses a false-hold budget, a percentage with at most two decimal
/// places ("0.3%"), into basis points (0.01% to 10%).
pub fn parse_budget_bp(text: &str) -> Result<u32, ConfigError> {
    use rust_decimal::prelude::ToPrimitive as _;
    let bad = || ConfigError(format!("aml.false_hold_budget {text:?}: a percentage from \"0.01%\" to \"10%\""));
    let number = text.trim().strip_suffix('%').ok_or_else(bad)?;
    let d = rust_decimal::Decimal::from_str_exact(number.trim()).map_err(|_| bad())?;
    let bp = d * rust_decimal::Decimal::from(100);
    if !bp.fract().is_zero() || bp < rust_decimal::Decimal::ONE || bp > rust_decimal::Decimal::from(1000) {
        return Err(bad());
    }
    bp.to_u32().ok_or_else(bad)
}

/// Parses a level-3 threshold in points, in quarters ("4", "4.25"), into
/// quarter points (1 to 40 points).
pub fn parse_threshold_q(text: &str) -> Result<u32, ConfigError> {
    use rust_decimal::prelude::ToPrimitive as _;
    let bad = || ConfigError(format!("aml.behaviour_threshold {text:?}: points from 1 to 40, in quarters"));
    let d = rust_decimal::Decimal::from_str_exact(text.trim()).map_err(|_| bad())?;
    let q = d * rust_decimal::Decimal::from(4);
    if !q.fract().is_zero() || q < rust_decimal::Decimal::from(4) || q > rust_decimal::Decimal::from(160) {
        return Err(bad());
    }
    q.to_u32().ok_or_else(bad)
}

/// Parses an HKD decimal with at most two places into minor units.
pub fn parse_hkd(text: &str) -> Result<u64, ConfigError> {
    use std::str::FromStr;
    let bad = || ConfigError(format!("{text:?} is not an HKD amount with at most two decimal places"));
    let d = rust_decimal::Decimal::from_str_exact(text.trim()).map_err(|_| bad())?;
    let minor = d.checked_mul(rust_decimal::Decimal::from(100)).ok_or_else(bad)?;
    if !minor.fract().is_zero() || minor.is_sign_negative() {
        return Err(bad());
    }
    u64::from_str(&minor.trunc().normalize().to_string()).map_err(|_| bad())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WalFile {
    segment_bytes_max: Option<u64>,
    /// Zero-fill segments ahead of use (default true).
    preallocate: Option<bool>,
    snapshot_log_bytes: Option<u64>,
    queue_depth_max: Option<usize>,
    group_requests_max: Option<usize>,
    /// Free bytes each shard's disk must keep (default 128 MiB).
    disk_reserve_bytes: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    id: u32,
    /// The key as text (its UTF-8 bytes) ...
    key: Option<String>,
    /// ... or as hex.
    key_hex: Option<String>,
    /// The key being retired during a rotation, as text or hex.
    previous_key: Option<String>,
    previous_key_hex: Option<String>,
    roles: Vec<String>,
    /// This channel's own connection quota.
    connections_max: Option<usize>,
    max_in_flight: Option<u32>,
    records_per_second: Option<u64>,
    /// "all" (the default) or "own": the accounts this channel opened.
    scope: Option<String>,
    /// Account ids `[first, last]` it may act on too.
    scope_accounts: Option<[u64; 2]>,
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Parses `system` or `manual`.
pub fn parse_clock(s: &str) -> Result<Clock, ConfigError> {
    match s {
        "system" => Ok(Clock::System),
        "manual" => Ok(Clock::Manual),
        other => Err(ConfigError(format!("clock must be system or manual, not {other:?}"))),
    }
}

impl Config {
    /// Applies a TOML file's settings over `self`.
    pub fn merge_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let file: File = toml::from_str(text).map_err(|e| ConfigError(format!("config file: {e}")))?;
        if let Some(v) = file.data {
            self.data = v;
        }
        if let Some(v) = file.listen {
            self.listen = v;
        }
        if let Some(v) = file.metrics_auth {
            self.metrics_auth = Some(v);
        }
        if let Some(v) = file.metrics {
            self.metrics = if v == "off" {
                None
            } else {
                Some(v.parse().map_err(|_| ConfigError(format!("metrics address {v:?}")))?)
            };
        }
        if let Some(v) = file.clock {
            self.switch.clock = parse_clock(&v)?;
        }
        if let Some(v) = file.shards {
            self.switch.shards = v;
        }
        if let Some(v) = file.backend {
            self.backend = match v.as_str() {
                "std" => Backend::Std,
                "uring" => Backend::Uring,
                other => return Err(ConfigError(format!("backend must be std or uring, not {other:?}"))),
            };
        }
        if let Some(v) = file.max_in_flight {
            self.max_in_flight = v;
        }
        if let Some(v) = file.answer_bytes_max {
            self.answer_bytes_max = v;
        }
        if let Some(v) = file.trace_sample {
            self.trace_sample = v;
        }
        if let Some(v) = file.connections_max {
            self.connections_max = v;
        }
        if let Some(v) = file.unauthenticated_max {
            self.unauthenticated_max = v;
        }
        if let Some(v) = file.unauthenticated_per_address {
            self.unauthenticated_per_address = v;
        }
        if let Some(v) = file.idle_timeout_ms {
            self.idle_timeout_ms = v;
        }
        if let Some(v) = file.handshake_timeout_ms {
            self.handshake_timeout_ms = v;
        }
        if let Some(v) = file.write_timeout_ms {
            self.write_timeout_ms = v;
        }
        if let Some(v) = file.accounts_capacity {
            self.switch.engine.accounts_capacity = v;
        }
        if let Some(v) = file.transfers_capacity {
            self.switch.engine.transfers_capacity = v;
        }
        if let Some(v) = file.loans_capacity {
            self.switch.engine.loans_capacity = v;
        }
        if let Some(v) = file.pending_capacity {
            self.switch.engine.pending_capacity = v;
        }
        if let Some(v) = file.quote_ttl_ms {
            self.switch.engine.quote_ttl_ms = v;
        }
        if let Some(w) = file.wal {
            let defaults = WalConfig::default();
            self.switch.wal = WalConfig {
                segment_bytes_max: w.segment_bytes_max.unwrap_or(defaults.segment_bytes_max),
                preallocate: match w.preallocate {
                    Some(false) => crate::wal::Preallocate::Off,
                    _ => defaults.preallocate,
                },
            };
            if let Some(v) = w.snapshot_log_bytes {
                self.switch.snapshot_log_bytes = v;
            }
            if let Some(v) = w.queue_depth_max {
                self.switch.queue_depth_max = v;
            }
            if let Some(v) = w.group_requests_max {
                self.switch.group_requests_max = v;
            }
            if let Some(v) = w.disk_reserve_bytes {
                self.switch.disk_reserve_bytes = v;
            }
        }
        if let Some(a) = file.aml {
            self.merge_aml(a)?;
        }
        if let Some(t) = file.tls {
            self.tls = Some(TlsConfig { cert: t.cert, key: t.key, client_ca: t.client_ca, crls: t.crls });
        }
        if let Some(v) = file.plain_tcp_beyond_loopback {
            self.plain_tcp_beyond_loopback = v;
        }
        if let Some(c) = file.cluster {
            self.cluster = Some(ClusterConfig {
                node_id: c.node_id,
                nodes: c
                    .nodes
                    .into_iter()
                    .map(|n| ClusterNode { id: n.id, channel: n.channel, peer: n.peer })
                    .collect(),
                heartbeat_ms: c.heartbeat_ms.unwrap_or(HEARTBEAT_MS_DEFAULT),
                election_timeout_min_ms: c.election_timeout_min_ms.unwrap_or(ELECTION_TIMEOUT_MIN_MS_DEFAULT),
                election_timeout_max_ms: c.election_timeout_max_ms.unwrap_or(ELECTION_TIMEOUT_MAX_MS_DEFAULT),
                snapshot_entries: c.snapshot_entries.unwrap_or(SNAPSHOT_ENTRIES_DEFAULT),
                join: c.join,
                dial: c.dial.into_iter().map(|d| (d.id, d.addr)).collect(),
                tls: c.tls.map(|t| PeerTlsConfig { cert: t.cert, key: t.key, ca: t.ca, crls: t.crls }),
            });
        }
        // The development channel exists only without a configuration file
        // (contract §2): a file names every channel it allows.
        self.channels = file.channels.into_iter().map(channel).collect::<Result<_, _>>()?;
        Ok(())
    }

    fn merge_aml(&mut self, a: AmlFile) -> Result<(), ConfigError> {
        let aml = &mut self.switch.engine.aml;
        if let Some(v) = a.enabled {
            aml.enabled = v;
        }
        if let Some(v) = a.daily_limit_hkd {
            aml.daily_limit_hkd_minor = parse_hkd(&v)?;
        }
        if let Some(codes) = a.high_risk_countries {
            if let Some(bad) = codes.iter().find(|c| !crate::money::is_country(**c)) {
                return Err(ConfigError(format!("aml.high_risk_countries: {bad} is not an ISO 3166-1 country")));
            }
            aml.high_risk = CountrySet::of(&codes);
        }
        if a.increased_monitoring == Some(true) {
            for c in FATF_INCREASED_MONITORING {
                aml.high_risk.insert(c);
            }
        }
        if let Some(v) = a.behaviour {
            aml.behaviour = v;
        }
        if let Some(v) = a.cooling_off_ms {
            aml.cooling_off_ms = v;
        }
        if let Some(v) = a.mule_detection {
            aml.mule = v;
        }
        if let Some(v) = a.mule_min_inbound_hkd {
            aml.mule_min_inbound_hkd_minor = parse_hkd(&v)?;
        }
        if let Some(v) = a.behaviour_model {
            aml.model = crate::aml::BehaviourModel::from_version(v)
                .ok_or_else(|| ConfigError(format!("aml.behaviour_model: {v} is not a model (1, 2 or 3)")))?;
        }
        aml.threshold_q = match (a.false_hold_budget, a.behaviour_threshold, aml.model) {
            (Some(_), Some(_), _) => {
                return Err(ConfigError("aml: false_hold_budget and behaviour_threshold both set; set one".into()));
            }
            (Some(budget), None, model) => crate::aml::threshold_for_budget(model, parse_budget_bp(&budget)?)
                .ok_or_else(|| {
                    ConfigError(
                        "aml.false_hold_budget: model 1 has no operating points; set behaviour_threshold".into(),
                    )
                })?,
            (None, Some(points), _) => parse_threshold_q(&points)?,
            (None, None, crate::aml::BehaviourModel::V1) => crate::aml::TRIP_SCORE * crate::aml::QUARTER,
            (None, None, crate::aml::BehaviourModel::V2) => crate::aml::V2_DEFAULT_THRESHOLD_Q,
            (None, None, crate::aml::BehaviourModel::V3) => crate::aml::V3_DEFAULT_THRESHOLD_Q,
        };
        if let Some(v) = a.budget_us {
            self.aml_budget = Duration::from_micros(v);
        }
        if let Some(v) = a.scorer_timeout_ms {
            self.aml_scorer_timeout = Duration::from_millis(v);
        }
        if let Some(addr) = a.scorer {
            self.switch.aml_scorer = Some(ScorerConfig { addr, budget: Duration::ZERO, io_timeout: Duration::ZERO });
        }
        if let Some(s) = &mut self.switch.aml_scorer {
            s.budget = self.aml_budget;
            s.io_timeout = self.aml_scorer_timeout;
        }
        Ok(())
    }

    /// Checks bounds and the dev-key rule; call after every override.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(m));
        if self.channels.is_empty() {
            return bad("no channels configured".into());
        }
        let mut ids: Vec<u32> = self.channels.iter().map(|c| c.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("two channels share an id".into());
        }
        if self.channels.iter().any(|c| c.key.len() < 8 || c.previous_key.as_ref().is_some_and(|k| k.len() < 8)) {
            return bad("every channel key must be at least 8 bytes".into());
        }
        if !self.listen.ip().is_loopback()
            && let Some(c) = self.channels.iter().find(|c| {
                let short = |k: &Vec<u8>| k.len() < KEY_BYTES_MIN_PUBLIC && k != DEV_KEY;
                short(&c.key) || c.previous_key.as_ref().is_some_and(short)
            })
        {
            return bad(format!(
                "channel {}: a key of {} bytes on {}: beyond loopback every key must be at least \
                 {KEY_BYTES_MIN_PUBLIC} bytes",
                c.id,
                c.key.len(),
                self.listen
            ));
        }
        if self.channels.iter().any(|c| c.connections_max.is_some_and(|m| m == 0 || m > self.connections_max)) {
            return bad(format!(
                "a channel's connections_max must be within 1..=connections_max ({})",
                self.connections_max
            ));
        }
        if self.channels.iter().any(|c| c.max_in_flight == Some(0) || c.records_per_second == Some(0)) {
            return bad("a channel's max_in_flight and records_per_second must be positive".into());
        }
        if self.unauthenticated_max == 0 || self.unauthenticated_per_address == 0 {
            return bad("unauthenticated_max and unauthenticated_per_address must be positive".into());
        }
        let dev_key = self.channels.iter().any(|c| c.key == DEV_KEY || c.previous_key.as_deref() == Some(DEV_KEY));
        if dev_key && !self.listen.ip().is_loopback() {
            return bad(format!(
                "refusing to listen on {} with the development key {:?}: configure channel keys (--config) \
                 or listen on loopback",
                self.listen,
                String::from_utf8_lossy(DEV_KEY)
            ));
        }
        if self.tls.is_none() && !self.plain_tcp_beyond_loopback && !self.listen.ip().is_loopback() {
            return bad(format!(
                "refusing plain TCP on {}: configure [tls] (docs/security.md), or set \
                 plain_tcp_beyond_loopback = true to accept that anyone on the path reads and alters frames",
                self.listen
            ));
        }
        if let Some(auth) = &self.metrics_auth
            && !auth.split_once(':').is_some_and(|(user, password)| !user.is_empty() && password.len() >= 12)
        {
            return bad("metrics_auth is \"user:password\", the password of 12 characters or more".into());
        }
        if let Some(at) = self.metrics.filter(|m| !m.ip().is_loopback())
            && self.metrics_auth.is_none()
        {
            return bad(format!(
                "the metrics endpoint on {at} is beyond loopback: set metrics_auth = \"user:password\""
            ));
        }
        if !(64..=4096).contains(&self.max_in_flight) {
            return bad(format!("max_in_flight {} outside 64..=4096", self.max_in_flight));
        }
        // Answers are at most 4x their request (16-byte ids, 64-byte
        // results): the largest request's must fit the budget.
        if self.answer_bytes_max < 4 * u64::from(self.max_body) {
            return bad(format!(
                "answer_bytes_max {} below 4 x max_body ({}): the largest request could never be answered",
                self.answer_bytes_max, self.max_body
            ));
        }
        if self.connections_max == 0 || self.connections_max > 65_536 {
            return bad(format!("connections_max {} outside 1..=65536", self.connections_max));
        }
        if self.switch.shards == 0 || self.switch.shards > SHARDS_MAX {
            return bad(format!("shards = {} outside 1..={}", self.switch.shards, SHARDS_MAX));
        }
        let budget_us = self.aml_budget.as_micros();
        if budget_us == 0 || budget_us > u128::from(AML_BUDGET_US_MAX) {
            return bad(format!("aml.budget_us {budget_us} outside 1..={AML_BUDGET_US_MAX}"));
        }
        if self.switch.engine.aml.cooling_off_ms == 0 || self.aml_scorer_timeout.is_zero() {
            return bad("aml.cooling_off_ms and aml.scorer_timeout_ms must be positive".into());
        }
        if self.switch.engine.quote_ttl_ms == 0 {
            return bad("quote_ttl_ms must be positive".into());
        }
        if self.idle_timeout_ms == 0
            || self.handshake_timeout_ms == 0
            || self.write_timeout_ms == 0
            || self.drain_timeout_ms == 0
        {
            return bad("every timeout must be positive".into());
        }
        if let Some(c) = &self.cluster {
            c.validate()?;
            // Peer links without [cluster.tls] are plain TCP: beyond
            // loopback only when said in so many words.
            let loopback = |addr: &str| {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h).trim_matches(['[', ']']);
                host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
            };
            if !self.plain_tcp_beyond_loopback
                && c.tls.is_none()
                && let Some(n) = c.nodes.iter().find(|n| !loopback(&n.peer))
            {
                return bad(format!(
                    "[cluster]: node {}'s peer address {} is beyond loopback, and peer links are plain TCP: \
                     configure [cluster.tls] (docs/security.md), or keep them on a private network and set \
                     plain_tcp_beyond_loopback = true",
                    n.id, n.peer
                ));
            }
        }
        Ok(())
    }
}

impl ClusterConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError(format!("[cluster]: {m}")));
        if self.me().is_none() {
            return bad(format!("node_id {} is not one of the nodes listed", self.node_id));
        }
        let mut ids: Vec<u64> = self.nodes.iter().map(|n| n.id).collect();
        ids.sort_unstable();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return bad("two nodes share an id".into());
        }
        let dials = self.dial.iter().map(|(id, addr)| (*id, "dial", addr));
        let listed = self.nodes.iter().flat_map(|n| [(n.id, "channel", &n.channel), (n.id, "peer", &n.peer)]);
        for (id, what, addr) in listed.chain(dials) {
            let port = addr.rsplit_once(':').and_then(|(host, port)| (!host.is_empty()).then_some(port));
            if port.and_then(|p| p.parse::<u16>().ok()).is_none() {
                return bad(format!("node {id}: {what} address {addr:?} is not host:port"));
            }
        }
        if self.heartbeat_ms == 0
            || self.election_timeout_min_ms < 2 * self.heartbeat_ms
            || self.election_timeout_max_ms <= self.election_timeout_min_ms
        {
            return bad(format!(
                "need 0 < heartbeat_ms ({}) <= election_timeout_min_ms / 2 ({}) and election_timeout_min_ms < \
                 election_timeout_max_ms ({})",
                self.heartbeat_ms, self.election_timeout_min_ms, self.election_timeout_max_ms
            ));
        }
        if self.snapshot_entries == 0 {
            return bad("snapshot_entries must be positive".into());
        }
        Ok(())
    }
}

fn channel(c: ChannelFile) -> Result<Channel, ConfigError> {
    let key = match (c.key, c.key_hex) {
        (Some(text), None) => text.into_bytes(),
        (None, Some(hex)) => {
            parse_hex(&hex).ok_or_else(|| ConfigError(format!("channel {}: key_hex is not hex", c.id)))?
        }
        _ => return Err(ConfigError(format!("channel {}: give exactly one of key and key_hex", c.id))),
    };
    let previous_key = match (c.previous_key, c.previous_key_hex) {
        (Some(text), None) => Some(text.into_bytes()),
        (None, Some(hex)) => {
            Some(parse_hex(&hex).ok_or_else(|| ConfigError(format!("channel {}: previous_key_hex is not hex", c.id)))?)
        }
        (None, None) => None,
        _ => {
            return Err(ConfigError(format!(
                "channel {}: give at most one of previous_key and previous_key_hex",
                c.id
            )));
        }
    };
    let mut roles = 0;
    for name in &c.roles {
        let bit = role::NAMES
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, b)| *b)
            .ok_or_else(|| ConfigError(format!("channel {}: unknown role {name:?}", c.id)))?;
        roles |= bit;
    }
    let own = match c.scope.as_deref() {
        None | Some("all") => false,
        Some("own") if c.id != 0 => true,
        Some("own") => return Err(ConfigError("channel 0 cannot be scoped to its own accounts: give it an id".into())),
        Some(other) => {
            return Err(ConfigError(format!("channel {}: scope {other:?} is neither \"all\" nor \"own\"", c.id)));
        }
    };
    let range = match c.scope_accounts {
        Some([first, last]) if first > last => {
            return Err(ConfigError(format!("channel {}: scope_accounts [{first}, {last}] is backwards", c.id)));
        }
        Some([first, last]) => Some((first, last)),
        None => None,
    };
    Ok(Channel {
        id: c.id,
        key,
        previous_key,
        roles,
        connections_max: c.connections_max,
        max_in_flight: c.max_in_flight,
        records_per_second: c.records_per_second,
        scope: Scope { own, range },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_contracts() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "127.0.0.1:7400");
        assert_eq!(c.metrics.map(|m| m.to_string()), Some("127.0.0.1:9464".into()));
        assert_eq!(c.data, PathBuf::from("./data"));
        assert_eq!(
            c.channels,
            vec![Channel {
                id: 1,
                key: b"hksw-dev-key".to_vec(),
                previous_key: None,
                roles: 63,
                connections_max: None,
                max_in_flight: None,
                records_per_second: None,
                scope: Scope::default(),
            }]
        );
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn channel_scopes_are_read_and_bad_ones_refused() {
        let mut c = Config::default();
        let channel =
            |extra: &str| format!("[[channels]]\nid = 4\nkey = \"card-system-key\"\nroles = [\"PAYMENTS\"]\n{extra}");
        c.merge_toml(&channel("scope = \"own\"\nscope_accounts = [2000000, 2999999]\n")).unwrap();
        let scope = c.channels.iter().find(|ch| ch.id == 4).expect("channel 4").scope;
        assert_eq!(scope, Scope { own: true, range: Some((2_000_000, 2_999_999)) });
        c.merge_toml(&channel("")).unwrap();
        assert!(c.channels.iter().find(|ch| ch.id == 4).unwrap().scope.is_all(), "every account by default");
        for (bad, says) in [("scope = \"mine\"\n", "neither"), ("scope_accounts = [5, 4]\n", "backwards")] {
            let e = Config::default().merge_toml(&channel(bad)).unwrap_err().0;
            assert!(e.contains(says), "{bad}: {e}");
        }
        let zero = "[[channels]]\nid = 0\nkey = \"card-system-key\"\nroles = []\nscope = \"own\"\n";
        assert!(Config::default().merge_toml(zero).unwrap_err().0.contains("channel 0"));
    }

    #[test]
    fn the_dev_key_stays_on_loopback() {
        let mut c = Config { listen: "0.0.0.0:7400".parse().unwrap(), ..Config::default() };
        assert!(c.validate().unwrap_err().0.contains("development key"));
        c.merge_toml(
            "[[channels]]\nid = 7\nkey_hex = \"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"\n\
             roles = [\"payments\", \"ACCOUNTS\"]\n",
        )
        .unwrap();
        let e = c.validate().unwrap_err().0;
        assert!(e.contains("refusing plain TCP"), "beyond loopback, TLS or words: {e}");
        c.plain_tcp_beyond_loopback = true;
        c.validate().expect("a real key may listen anywhere");
        assert_eq!(c.channels[0].roles, role::PAYMENTS | role::ACCOUNTS);
        c.merge_toml("[[channels]]\nid = 1\nkey = \"hksw-dev-key\"\nroles = [\"PAYMENTS\"]\n").unwrap();
        assert!(c.validate().is_err(), "the development key from a file stays on loopback too");
        let mut retiring = c.clone();
        retiring.channels = vec![Channel {
            previous_key: Some(DEV_KEY.to_vec()),
            ..Channel { id: 7, key: vec![7; 32], ..Config::default().channels[0].clone() }
        }];
        let e = retiring.validate().unwrap_err().0;
        assert!(e.contains("development key"), "nor as a key being retired: {e}");
    }

    #[test]
    fn cluster_sections_are_checked() {
        let nodes = "[[cluster.nodes]]\nid = 1\nchannel = \"10.0.0.1:7400\"\npeer = \"10.0.0.1:7500\"\n\
                     [[cluster.nodes]]\nid = 2\nchannel = \"10.0.0.2:7400\"\npeer = \"10.0.0.2:7500\"\n";
        let channel = "[[channels]]\nid = 1\nkey = \"a-key-of-at-least-32-bytes-long-ok\"\nroles = []\n";
        let mut c = Config::default();
        c.merge_toml(&format!("{channel}[cluster]\nnode_id = 2\n{nodes}")).unwrap();
        let e = c.validate().unwrap_err().0;
        assert!(e.contains("peer links are plain TCP"), "peers beyond loopback need words: {e}");
        let mut tls = Config::default();
        let peer_tls = "[cluster.tls]\ncert = \"node-2.pem\"\nkey = \"node-2.key\"\nca = \"ca.pem\"\n";
        tls.merge_toml(&format!("{channel}[cluster]\nnode_id = 2\n{nodes}{peer_tls}")).unwrap();
        assert_eq!(tls.cluster.as_ref().and_then(|c| c.tls.as_ref()).map(|t| t.ca.clone()), Some("ca.pem".into()));
        tls.validate().expect("peer links under TLS may go beyond loopback");
        c.plain_tcp_beyond_loopback = true;
        c.validate().unwrap();
        // A cluster node of several shards is a configuration like any other.
        let mut several = c.clone();
        several.switch.shards = 4;
        several.validate().unwrap();
        let cluster = c.cluster.clone().unwrap();
        assert_eq!(cluster.me().unwrap().peer, "10.0.0.2:7500");
        assert_eq!(
            (cluster.heartbeat_ms, cluster.election_timeout_min_ms, cluster.election_timeout_max_ms, cluster.join),
            (HEARTBEAT_MS_DEFAULT, ELECTION_TIMEOUT_MIN_MS_DEFAULT, ELECTION_TIMEOUT_MAX_MS_DEFAULT, false)
        );
        for (bad, why) in [
            (format!("[cluster]\nnode_id = 3\n{nodes}"), "not one of the nodes"),
            (format!("[cluster]\nnode_id = 1\n{nodes}{}", &nodes[..nodes.len() / 2]), "share an id"),
            (
                "[cluster]\nnode_id = 1\n[[cluster.nodes]]\nid = 1\nchannel = \"nowhere\"\npeer = \"h:1\"\n".into(),
                "host:port",
            ),
            (format!("[cluster]\nnode_id = 1\nheartbeat_ms = 200\n{nodes}"), "heartbeat_ms"),
            (format!("[cluster]\nnode_id = 1\nsnapshot_entries = 0\n{nodes}"), "snapshot_entries"),
        ] {
            let mut c = Config { plain_tcp_beyond_loopback: true, ..Config::default() };
            c.merge_toml(&format!("{channel}{bad}")).unwrap();
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(Config::default().merge_toml("[cluster]\nnode_id = 1\nnodes = []\nleader = 1").is_err());
    }

    #[test]
    fn files_are_read_strictly() {
        let mut c = Config::default();
        c.merge_toml(
            "data = \"/srv/harbour\"\nshards = 1\nclock = \"manual\"\nbackend = \"std\"\nmetrics = \"off\"\n\
             [wal]\nsegment_bytes_max = 1048576\nsnapshot_log_bytes = 99\n",
        )
        .unwrap();
        assert_eq!((c.switch.clock, c.backend, c.metrics), (Clock::Manual, Backend::Std, None));
        assert_eq!((c.switch.wal.segment_bytes_max, c.switch.snapshot_log_bytes), (1 << 20, 99));
        for bad in [
            "colour = \"blue\"",
            "clock = \"sundial\"",
            "[[channels]]\nid = 1\nkey = \"k\"\nkey_hex = \"00\"\nroles = []",
            "[[channels]]\nid = 1\nkey = \"longenoughkey\"\nroles = [\"ADMIN\"]",
        ] {
            assert!(Config::default().merge_toml(bad).is_err(), "{bad}");
        }
        let mut short = Config::default();
        short.merge_toml("[[channels]]\nid = 1\nkey = \"k\"\nroles = []").unwrap();
        assert!(short.validate().is_err(), "a one-byte key");
        let mut aml = Config::default();
        aml.merge_toml(
            "[aml]\ndaily_limit_hkd = \"50000.50\"\nhigh_risk_countries = [408]\nincreased_monitoring = true\n\
             cooling_off_ms = 3600000\nbudget_us = 200\nscorer = \"127.0.0.1:7500\"\nbehaviour = false\n",
        )
        .unwrap();
        let a = aml.switch.engine.aml;
        assert_eq!((a.daily_limit_hkd_minor, a.cooling_off_ms, a.behaviour), (5_000_050, 3_600_000, false));
        let mule = |text: &str| {
            let mut c = Config::default();
            c.merge_toml(text).map(|()| (c.switch.engine.aml.mule, c.switch.engine.aml.mule_min_inbound_hkd_minor))
        };
        assert_eq!(mule("").unwrap(), (true, 500_000), "on by default, from HK$5,000");
        assert_eq!(
            mule("[aml]\nmule_detection = false\nmule_min_inbound_hkd = \"20000\"").unwrap(),
            (false, 2_000_000)
        );
        assert!(mule("[aml]\nmule_min_inbound_hkd = \"lots\"").is_err());
        assert!(a.high_risk.contains(408) && !a.high_risk.contains(364) && a.high_risk.contains(887));
        let s = aml.switch.aml_scorer.unwrap();
        assert_eq!((s.addr.port(), s.budget, s.io_timeout), (7500, Duration::from_micros(200), Duration::from_secs(1)));
        for bad in [
            "[aml]\ndaily_limit_hkd = \"1.005\"",
            "[aml]\ndaily_limit_hkd = \"-1\"",
            "[aml]\nhigh_risk_countries = [999]",
            "[aml]\nlevel = 4",
            "[aml]\nbehaviour_model = 4",
            "[aml]\nfalse_hold_budget = \"0.3\"",
            "[aml]\nfalse_hold_budget = \"0.001%\"",
            "[aml]\nfalse_hold_budget = \"11%\"",
            "[aml]\nbehaviour_threshold = \"4.1\"",
            "[aml]\nbehaviour_threshold = \"0\"",
            "[aml]\nfalse_hold_budget = \"0.3%\"\nbehaviour_threshold = \"4\"",
            "[aml]\nbehaviour_model = 1\nfalse_hold_budget = \"0.3%\"",
        ] {
            assert!(Config::default().merge_toml(bad).is_err(), "{bad}");
        }
        let level3 = |text: &str| {
            let mut c = Config::default();
            c.merge_toml(text).unwrap();
            (c.switch.engine.aml.model.version(), c.switch.engine.aml.threshold_q)
        };
        // The default is model 3 at the default budget's operating point.
        assert_eq!(level3(""), (3, crate::aml::V3_DEFAULT_THRESHOLD_Q));
        assert_eq!(level3("[aml]\nfalse_hold_budget = \"0.3%\""), (3, crate::aml::V3_DEFAULT_THRESHOLD_Q));
        assert_eq!(level3("[aml]\nbehaviour_model = 1"), (1, 16), "model 1 trips at 4 points");
        assert_eq!(level3("[aml]\nbehaviour_threshold = \"4.25\""), (3, 17));
        assert_eq!(level3("[aml]\nbehaviour_model = 1\nbehaviour_threshold = \"5\""), (1, 20));
        assert_eq!(level3("[aml]\nfalse_hold_budget = \"1%\""), (3, 13));
        assert_eq!(level3("[aml]\nfalse_hold_budget = \"0.01%\""), (3, 20), "below every point: the strictest");
        assert_eq!(level3("[aml]\nfalse_hold_budget = \"10%\""), (3, 12));
        // Model 2 keeps its own default and operating points.
        assert_eq!(level3("[aml]\nbehaviour_model = 2"), (2, crate::aml::V2_DEFAULT_THRESHOLD_Q));
        assert_eq!(level3("[aml]\nbehaviour_model = 2\nfalse_hold_budget = \"0.3%\""), (2, 32));
        let mut zero = Config::default();
        zero.merge_toml("[aml]\nbudget_us = 0").unwrap();
        assert!(zero.validate().is_err(), "a zero budget");
        let mut no_channels = Config::default();
        no_channels.merge_toml("listen = \"127.0.0.1:7401\"").unwrap();
        assert!(no_channels.channels.is_empty(), "a file without channels has no development channel");
        assert!(no_channels.validate().is_err());
    }
}
