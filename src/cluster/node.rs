//! A node of a cluster as `harbour serve` runs it: its raft log and books
//! on the data directory, raft itself, the peer listener, and the first
//! start of a new cluster.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::log::LogStore;
use super::machine::Books;
use super::{PeerNode, Raft, peer};
use crate::config::{Backend, ClusterConfig, SwitchConfig};
use crate::engine::{EngineConfig, MANUAL_CLOCK_START_MS};
use crate::wal::storage::{FileStorage, Storage};

/// The directory of a data directory that holds a node's raft log and
/// snapshot.
pub const RAFT_DIR: &str = "raft";

/// A running node: what its proposer and its operators need. Clones share
/// the node.
#[derive(Clone)]
pub struct Member {
    pub id: u64,
    pub raft: Raft,
    pub books: Books,
    pub log: LogStore,
    /// The runtime raft runs on (a proposer thread submits through it).
    pub runtime: tokio::runtime::Handle,
    /// How long a proposal may wait for its commit before its outcome is
    /// called unknown (the channel resends it): a leader cut off from the
    /// majority answers nothing more.
    pub commit_wait_max: Duration,
    /// How long a leader may hear from no majority before it calls what it
    /// began unknown (twice `election_timeout_max`: a majority that is only
    /// slow, taking a large entry, is not taken for a lost one).
    pub quorum_wait: Duration,
    /// The peer address it listens on.
    pub peer_addr: std::net::SocketAddr,
    peer_task: Arc<tokio::task::JoinHandle<()>>,
}

/// Why a node did not start.
#[derive(Debug)]
pub enum NodeError {
    Io(PathBuf, std::io::Error),
    /// The peer address could not be bound.
    Bind(String, std::io::Error),
    /// The data directory holds a single node's data, or books that fail
    /// their audit.
    Data(String),
    Raft(String),
    /// `[cluster.tls]` does not load.
    Tls(String),
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io(path, e) => write!(f, "{}: {e}", path.display()),
            Self::Bind(addr, e) => write!(f, "cluster peer address {addr}: {e}"),
            Self::Data(e) => write!(f, "{e}"),
            Self::Raft(e) => write!(f, "raft: {e}"),
            Self::Tls(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for NodeError {}

/// The engine settings of each shard of a cluster's books, and the time
/// new books start at.
#[must_use]
pub fn engine_configs(switch: &SwitchConfig) -> (Vec<EngineConfig>, u64) {
    let manual = switch.clock.is_manual();
    let configs = (0..switch.shards)
        .map(|i| EngineConfig { manual_clock: manual, shard: i as u16, shards: switch.shards as u16, ..switch.engine })
        .collect();
    (configs, if manual { MANUAL_CLOCK_START_MS } else { 0 })
}

/// The settings that decide outcomes (shard count, clock, hold windows,
/// AML) are recorded in `raft/META` at a node's first start; a later start
/// with other settings is refused, as a single node's is: replaying the
/// log under them would decide differently.
fn check_settings(storage: &FileStorage, dir: &Path, switch: &SwitchConfig) -> Result<(), NodeError> {
    let wanted = crate::shard::meta(switch);
    match crate::wal::storage::read_all(storage, crate::shard::META_FILE) {
        Ok(bytes) => {
            let recorded = String::from_utf8_lossy(&bytes);
            if let Some((key, was, now)) = crate::shard::meta_mismatch(&recorded, &wanted) {
                return Err(NodeError::Data(format!(
                    "{}: the node's data was written with {key}={was} but {key}={now} is configured; every node \
                     of a cluster runs the recorded settings",
                    dir.join(crate::shard::META_FILE).display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => storage
            .write_durably(crate::shard::META_FILE, wanted.as_bytes())
            .map_err(|e| NodeError::Io(dir.to_path_buf(), e)),
        Err(e) => Err(NodeError::Io(dir.to_path_buf(), e)),
    }
}

/// How long a snapshot may take to cross to a follower and install there.
const SNAPSHOT_SEND_MS: u64 = 60_000;

/// openraft's settings from the `[cluster]` section.
fn raft_config(cluster: &ClusterConfig) -> Result<openraft::Config, NodeError> {
    let config = openraft::Config {
        cluster_name: "harbour".into(),
        heartbeat_interval: cluster.heartbeat_ms,
        election_timeout_min: cluster.election_timeout_min_ms,
        election_timeout_max: cluster.election_timeout_max_ms,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(cluster.snapshot_entries),
        // Entries kept after a snapshot, so a follower a little behind
        // catches up from the log rather than a whole snapshot.
        max_in_snapshot_log_to_keep: cluster.snapshot_entries.min(1_000),
        // A snapshot crosses the peer link in one piece: openraft's 200 ms
        // suits a few megabytes, not books of millions of transfers (a
        // wiped follower could then never catch up, and with another node
        // down the cluster had no majority).
        install_snapshot_timeout: SNAPSHOT_SEND_MS,
        // A node that lost its disk and rejoins catches up by snapshot
        // instead of stopping the leader (docs/cluster.md, "Failure cases").
        allow_log_reversion: Some(true),
        // A node that cannot win (cut off, restarted behind) asks first,
        // so it does not raise the term and depose a healthy leader when
        // it comes back.
        enable_pre_vote: Some(true),
        ..Default::default()
    };
    config.validate().map_err(|e| NodeError::Raft(e.to_string()))
}

/// Starts this node: opens its log and books in `data/raft/`, starts raft
/// and the peer listener, and on the first start of a new cluster (no vote,
/// no log) proposes the configured nodes as its members (every node of a
/// new cluster does; raft takes one). A node started with `join` waits to
/// be added by an operator instead.
pub async fn start(
    cluster: &ClusterConfig,
    data: &Path,
    backend: Backend,
    switch: &SwitchConfig,
    audit: Arc<crate::audit::AuditLog>,
) -> Result<Member, NodeError> {
    let singles = crate::shard::shard_dirs(data).map_err(|e| NodeError::Io(data.to_path_buf(), e))?;
    if let Some(dir) = singles.first() {
        return Err(NodeError::Data(format!(
            "{} holds a single node's data: a cluster node starts empty (it catches up from the others) or \
             from a backup of a cluster (docs/cluster.md, \"Operators\")",
            dir.display()
        )));
    }
    let dir = data.join(RAFT_DIR);
    // Always std files: the books write snapshots from raft's tasks, where
    // the io_uring backend (a runtime of its own) cannot run.
    let _ = backend;
    let files = FileStorage::new(&dir).map_err(|e| NodeError::Io(dir.clone(), e))?;
    check_settings(&files, &dir, switch)?;
    let storage: Arc<dyn Storage> = Arc::new(files);
    let (configs, start_ms) = engine_configs(switch);
    let opened = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            let log = LogStore::open(Arc::clone(&storage))?;
            let books = Books::open(storage, configs, start_ms)?.with_audit(audit);
            Ok::<_, std::io::Error>((log, books))
        })
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?
        .map_err(|e| NodeError::Io(dir, e))?
    };
    let (log, books) = opened;
    for (shard, audit) in books.audits().await.into_iter().enumerate() {
        audit
            .map_err(|e| NodeError::Data(format!("{}: shard {shard}'s books fail their audit: {e}", dir.display())))?;
    }
    let me = cluster.me().expect("validated: node_id is listed");
    let listener = tokio::net::TcpListener::bind(&me.peer).await.map_err(|e| NodeError::Bind(me.peer.clone(), e))?;
    let peer_addr = listener.local_addr().map_err(|e| NodeError::Bind(me.peer.clone(), e))?;
    let config = Arc::new(raft_config(cluster)?);
    let tls = match &cluster.tls {
        Some(c) => Some(crate::tls::PeerTls::new(c).map_err(NodeError::Tls)?),
        None => None,
    };
    let links = peer::TcpLinks {
        dial: Arc::new(cluster.dial.iter().cloned().collect()),
        tls: tls.clone(),
        me: cluster.node_id,
    };
    let raft = Raft::new(cluster.node_id, config, links, log.clone(), books.clone())
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    let served = raft.clone();
    let peer_task = tokio::spawn(async move {
        if let Err(e) = peer::serve(listener, served, tls).await {
            tracing::error!(error = %e, "the cluster's peer listener failed");
        }
    });
    let initialized = raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))?;
    if !initialized && !cluster.join {
        let members: BTreeMap<u64, PeerNode> = cluster
            .nodes
            .iter()
            .map(|n| (n.id, PeerNode { channel: n.channel.clone(), peer: n.peer.clone() }))
            .collect();
        // Every node of a new cluster proposes the same members; whichever
        // start comes second is told it is not allowed, which is fine.
        if let Err(e) = raft.initialize(members).await {
            tracing::info!(error = %e, "cluster already initialized");
        }
    }
    tokio::spawn(watch_metrics(raft.clone(), cluster.node_id));
    let commit_wait_max = Duration::from_millis(4 * cluster.election_timeout_max_ms).max(Duration::from_secs(2));
    tracing::info!(node = cluster.node_id, peer = %peer_addr, initialized, "cluster node started");
    Ok(Member {
        id: cluster.node_id,
        raft,
        books,
        log,
        runtime: tokio::runtime::Handle::current(),
        commit_wait_max,
        quorum_wait: Duration::from_millis(2 * cluster.election_timeout_max_ms),
        peer_addr,
        peer_task: Arc::new(peer_task),
    })
}

impl Member {
    /// Stops raft and the peer listener.
    pub async fn shutdown(&self) {
        self.peer_task.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
    }

    /// The raft term this node is in.
    #[must_use]
    pub fn term(&self) -> u64 {
        use openraft::rt::WatchReceiver;
        self.raft.metrics().borrow_watched().current_term
    }

    /// Where channels reach the leader, as this node knows it: `Ok` if
    /// this node leads, else the leader's channel address (empty when no
    /// leader is known).
    pub fn leader(&self) -> Result<(), String> {
        use openraft::rt::WatchReceiver;
        let forward = match self.raft.as_leader() {
            Ok(_) => return Ok(()),
            Err(f) => f,
        };
        if let Some(node) = forward.leader_node {
            return Err(node.channel);
        }
        // A follower whose vote is not yet the committed leader's still
        // knows the leader it hears from.
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow_watched();
        let named = metrics.current_leader.filter(|&id| id != self.id);
        Err(named
            .and_then(|id| metrics.membership_config.membership().get_node(&id).map(|n| n.channel.clone()))
            .unwrap_or_default())
    }
}

/// What a stopped node's data directory holds, replayed offline.
#[derive(Debug)]
pub struct Replayed {
    /// The last entry applied (the committed id, or the snapshot's).
    pub applied: Option<super::LogId>,
    /// Each shard's state hash there.
    pub hashes: Vec<[u8; 32]>,
    /// Each shard's audit.
    pub audits: Vec<Result<(), String>>,
}

/// Replays a stopped node's books from its snapshot and committed log
/// (`harbour check` of a cluster node, and the tests' comparison of nodes).
/// It cuts a torn tail of the log as a start would. Call it from a thread
/// that may block (it reads files).
pub fn replay(data: &Path, switch: &SwitchConfig) -> std::io::Result<Replayed> {
    let storage: Arc<dyn crate::wal::storage::Storage> =
        Arc::new(crate::wal::storage::FileStorage::new(data.join(RAFT_DIR))?);
    let log = LogStore::open(Arc::clone(&storage))?;
    let (configs, start_ms) = engine_configs(switch);
    let books = Books::open(storage, configs, start_ms)?;
    let (entries, _) = log.committed_entries();
    let applied = books.apply_offline(&entries)?;
    let in_use = || std::io::Error::other("the books are in use");
    let hashes = books.read_all_offline(crate::engine::Engine::state_hash).ok_or_else(in_use)?;
    let audits = books.read_all_offline(|e| e.audit().map_err(|e| e.to_string())).ok_or_else(in_use)?;
    Ok(Replayed { applied, hashes, audits })
}

/// Keeps the operators' cluster gauges current from raft's metrics.
async fn watch_metrics(raft: Raft, id: u64) {
    use openraft::ServerState;
    use openraft::rt::WatchReceiver;
    use std::sync::atomic::Ordering::Relaxed;
    let gauges = &crate::metrics::METRICS.cluster;
    gauges.node_id.store(id, Relaxed);
    let mut metrics = raft.metrics();
    let mut was = ServerState::Follower;
    loop {
        {
            let m = metrics.borrow_watched();
            let role = match m.state {
                ServerState::Learner => 4,
                ServerState::Follower => 1,
                ServerState::Candidate => 2,
                ServerState::Leader => 3,
                ServerState::Shutdown => 0,
            };
            if m.state == ServerState::Candidate && was != ServerState::Candidate {
                gauges.elections_total.fetch_add(1, Relaxed);
            }
            was = m.state;
            gauges.role.store(role, Relaxed);
            gauges.term.store(m.current_term, Relaxed);
            gauges.leader_id.store(m.current_leader.unwrap_or(0), Relaxed);
            let last = m.last_log_index.unwrap_or(0);
            gauges.last_log_index.store(last, Relaxed);
            gauges.committed_index.store(m.local_committed.as_ref().map_or(0, |c| c.index()), Relaxed);
            gauges.applied_index.store(m.last_applied.map_or(0, |a| a.index()), Relaxed);
            *gauges.lag.lock() = m
                .replication
                .iter()
                .flatten()
                .filter(|(node, _)| **node != id)
                .map(|(node, matched)| (*node, last.saturating_sub(matched.map_or(0, |l| l.index()))))
                .collect();
        }
        if metrics.changed().await.is_err() {
            gauges.role.store(0, Relaxed);
            return;
        }
    }
}

/// Writes a backup (BACKUP's answer) as a cluster node's data directory:
/// `dir/raft/raft.snap`, and a log that starts after it. Copied into every
/// node's data directory (the same ids and addresses), it starts the
/// cluster again from the backup. Refuses a directory that holds data.
pub fn write_backup(dir: &Path, bytes: &[u8]) -> std::io::Result<Option<super::LogId>> {
    let raft = dir.join(RAFT_DIR);
    if raft.exists() || !crate::shard::shard_dirs(dir)?.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            format!("{} already holds data: back up into a new directory", dir.display()),
        ));
    }
    let storage = crate::wal::storage::FileStorage::new(&raft)?;
    let at = Books::restore(&storage, bytes)?;
    if let Some(at) = at {
        super::log::write_restored(&storage, at)?;
    }
    Ok(at)
}
