//! `failover`: a three-node cluster of real `harbour serve` processes on
//! loopback under load, its leader killed with SIGKILL again and again
//! (issue 14). Between kills, some cycles wipe a follower's data directory
//! (it catches up by snapshot), restart every node one by one, or cut the
//! leader off from both followers: every peer link runs through a
//! fault-injecting TCP proxy (one per direction), and a partition closes
//! the leader's links and refuses new ones until it heals.
//!
//! Workers send batches of transfers between model accounts through
//! [`Failover`] (a refused or lost request goes again, same ids, to the
//! new leader). At the end:
//! - every transfer answered as stored is on the cluster, posted;
//! - every account's balance is exactly what the stored transfers make
//!   (so nothing was applied twice, and nothing answered was lost);
//! - the nodes, stopped, replay to the same applied index and the same
//!   state hash, and their books pass the audit.
//!
//! Failover time: from the kill to the first request the new leader
//! answers (a read, which goes through the log).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use harbour::client::{Client, Failover};
use harbour::engine::book::SETTLEMENT_IN;
use harbour::protocol::kind;
use harbour::protocol::records::{self, Account, Balance, BalanceKey, Transfer, TransferResult};
use harbour::sim::Rng;

const KEY: &[u8] = b"failover-test-key-0123456789abcdef";
const NODES: usize = 3;
const FIRST_ACCOUNT: u64 = 1 << 20;
const HKD: u16 = 344;
const FUNDING: u64 = 1 << 40;
/// How long a node may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// What the run does.
#[derive(Clone, Debug)]
pub struct FailoverConfig {
    /// The `harbour` binary.
    pub harbour: PathBuf,
    /// Where the nodes' data directories and configurations go.
    pub dir: PathBuf,
    /// Leader kills.
    pub kills: u64,
    /// Every this many cycles, a follower loses its disk instead (0: never).
    pub wipe_every: u64,
    /// Every this many cycles, every node is restarted in turn (0: never).
    pub rolling_every: u64,
    /// Every this many cycles, the leader is cut off from the followers
    /// for a while (0: never).
    pub partition_every: u64,
    pub seed: u64,
    /// Workers sending transfers at once.
    pub workers: usize,
    pub accounts: u64,
    /// Shards per node (transfers between accounts of two shards cross
    /// them inside the replicated log).
    pub shards: usize,
    /// Traffic between two faults.
    pub between: Duration,
    /// One line per cycle on stderr.
    pub progress: bool,
}

/// What it found.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct FailoverReport {
    pub kills: u64,
    pub wipes: u64,
    pub rolling_restarts: u64,
    pub partitions: u64,
    /// Per kill: from the kill to the first answer of the new leader.
    pub failover_ms: Vec<u64>,
    /// Per partition: from the cut to the first answer of the new leader.
    pub partition_failover_ms: Vec<u64>,
    pub transfers_answered: u64,
    /// Sent but never answered (the run ended mid-failover): found or not
    /// on the cluster, either is allowed.
    pub transfers_unanswered: u64,
    /// Requests sent again after a failover.
    pub resends: u64,
    pub violations: Vec<String>,
    /// Each node's applied index and state hash at the end.
    pub nodes: Vec<(u64, String)>,
}

struct Node {
    id: u64,
    channel: SocketAddr,
    data: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// A free port below the kernel's ephemeral range. A node's ports must
/// stay free while it is down between a kill and its restart: a port from
/// the ephemeral range (what binding port 0 gives) can be taken meanwhile
/// as the local port of any outgoing connection on the machine, and the
/// restart then fails with "Address already in use". The tests that start
/// nodes in process take theirs here too.
pub fn free_port() -> Result<u16, String> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768)
        .clamp(2_048, 49_152);
    let span = u32::from(low - 1_024);
    // Different runs (and test processes running at once) start in
    // different places; calls in one process walk on from one start, so
    // they never repeat a port just handed out (its listener is closed).
    static SEED: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    static CALLS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let seed = *SEED.get_or_init(|| {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        nanos ^ std::process::id().wrapping_mul(0x9e37_79b9)
    });
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut x = (seed % span + call.wrapping_mul(7_919) % span) % span;
    for _ in 0..span.min(4_096) {
        let port = 1_024 + x as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return Ok(l.local_addr().map_err(|e| e.to_string())?.port());
        }
        x = (x + 7_919) % span;
    }
    Err("no free port below the ephemeral range".into())
}

/// One direction of a peer link, through a proxy that can cut it.
struct Proxy {
    from: u64,
    to: u64,
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
}

/// Forwards connections to `to` until the process ends; while `cut` is
/// true, open connections are dropped and new ones refused.
async fn proxy(listener: tokio::net::TcpListener, to: SocketAddr, cut: tokio::sync::watch::Receiver<bool>) {
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { return };
        if *cut.borrow() {
            continue;
        }
        let mut cut = cut.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                _ = cut.wait_for(|c| *c) => {}
            }
        });
    }
}

fn config_text(me: u64, shards: usize, nodes: &[(u64, u16, u16)], proxies: &[Proxy]) -> String {
    let mut text = format!(
        "shards = {shards}\nclock = \"system\"\naccounts_capacity = 4096\ntransfers_capacity = 1048576\npending_capacity = 1024\n\
         loans_capacity = 1024\n[aml]\nbehaviour = false\ndaily_limit_hkd = \"100000000000.00\"\n\
         [wal]\ndisk_reserve_bytes = 1048576\n\
         [[channels]]\nid = 1\nkey = \"{}\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\", \"OPERATOR\"]\n\
         [cluster]\nnode_id = {me}\nsnapshot_entries = 500\n",
        String::from_utf8_lossy(KEY)
    );
    for (id, channel, peer) in nodes {
        text.push_str(&format!(
            "[[cluster.nodes]]\nid = {id}\nchannel = \"127.0.0.1:{channel}\"\npeer = \"127.0.0.1:{peer}\"\n"
        ));
    }
    for p in proxies.iter().filter(|p| p.from == me) {
        text.push_str(&format!("[[cluster.dial]]\nid = {}\naddr = \"127.0.0.1:{}\"\n", p.to, p.port));
    }
    text
}

impl Node {
    fn start(&mut self, harbour: &Path) -> Result<(), String> {
        let mut child = Command::new(harbour)
            .args(["serve", "--metrics", "off", "--listen", &self.channel.to_string(), "--data"])
            .arg(&self.data)
            .arg("--config")
            .arg(&self.config)
            .env("HARBOUR_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e}", harbour.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(START_TIMEOUT).unwrap_or_default();
        if !line.starts_with("listening on ") {
            let _ = child.kill();
            let _ = child.wait();
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("piped"), &mut err);
            return Err(format!("node {} did not start: {line:?} {err}", self.id));
        }
        // Each node's log, kept across its restarts, for a failed run.
        let stderr = child.stderr.take().expect("piped");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.data.with_extension("log"));
        std::thread::spawn(move || match log {
            Ok(mut log) => std::io::copy(&mut std::io::BufReader::new(stderr), &mut log),
            Err(_) => std::io::copy(&mut std::io::BufReader::new(stderr), &mut std::io::sink()),
        });
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and waits for a clean stop.
    fn stop(&mut self) -> Result<(), String> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // SAFETY: signalling our own child by its pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(30) {
            if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
                return if status.success() { Ok(()) } else { Err(format!("node {} stopped with {status}", self.id)) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        Err(format!("node {} did not stop in 30 s", self.id))
    }
}

/// Which node leads, asked of each: the one that answers a read.
async fn leader(nodes: &[Node]) -> Option<usize> {
    for (i, node) in nodes.iter().enumerate() {
        if node.child.is_none() {
            continue;
        }
        let Ok(Ok(c)) = tokio::time::timeout(Duration::from_secs(2), Client::connect(node.channel, 1, KEY)).await
        else {
            continue;
        };
        let key = BalanceKey { account_id: FIRST_ACCOUNT, currency: HKD };
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), c.lookup_balances(&[key])).await {
            return Some(i);
        }
    }
    None
}

/// Transfers sent by the workers: per transfer, whether its answer said
/// stored.
#[derive(Default)]
struct Ledger {
    sent: Vec<(Transfer, bool)>,
    resends: u64,
    unexpected: Vec<String>,
}

async fn worker(
    mut failover: Failover,
    worker: u64,
    accounts: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<parking_lot::Mutex<Ledger>>,
) -> Result<(), String> {
    let mut client = failover.connect().await.map_err(|e| e.to_string())?;
    let mut rng = Rng(seed ^ (worker << 32));
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Transfer> = (0..20)
            .map(|_| {
                seq += 1;
                let debit = FIRST_ACCOUNT + rng.below(accounts);
                let credit = FIRST_ACCOUNT + (debit - FIRST_ACCOUNT + 1 + rng.below(accounts - 1)) % accounts;
                Transfer {
                    transfer_id: (u128::from(worker + 1) << 64) | u128::from(seq),
                    debit_account: debit,
                    credit_account: credit,
                    amount: 1 + rng.below(1_000),
                    debit_currency: HKD,
                    credit_currency: HKD,
                    ..Transfer::default()
                }
            })
            .collect();
        let body = records::encode_all(&batch);
        let first = {
            let mut l = ledger.lock();
            let at = l.sent.len();
            l.sent.extend(batch.iter().map(|t| (*t, false)));
            at
        };
        let before = Instant::now();
        let answer = failover.request(&mut client, kind::SUBMIT_TRANSFERS, batch.len() as u32, &body).await;
        let mut l = ledger.lock();
        match answer {
            Ok(answer) => {
                if before.elapsed() > Duration::from_millis(200) {
                    l.resends += 1;
                }
                for (i, r) in records::decode_all::<TransferResult>(&answer.body).enumerate() {
                    // Stored now, or by an earlier send of the same request
                    // that the failover cut off.
                    if r.code == 0 || r.code == 1 {
                        l.sent[first + i].1 = true;
                    } else {
                        l.unexpected.push(format!("transfer {:#x}: code {}", r.transfer_id, r.code));
                    }
                }
            }
            Err(e) => return Err(format!("worker {worker}: no leader answered: {e}")),
        }
    }
    Ok(())
}

/// How long until a leader other than `not` answers a read (measured by
/// the caller from the fault).
async fn first_answer(failover: &Failover, nodes: &[Node], not: Option<usize>) -> Result<Duration, String> {
    let started = Instant::now();
    let key = records::encode_all(&[BalanceKey { account_id: FIRST_ACCOUNT, currency: HKD }]);
    // Ask the nodes that can lead; an isolated old leader answers nothing.
    let mut probe = failover.clone();
    probe.addrs = nodes.iter().enumerate().filter(|(i, _)| Some(*i) != not).map(|(_, n)| n.channel).collect();
    let mut client = probe.connect().await.map_err(|e| e.to_string())?;
    with_leader(&mut probe, &mut client, kind::LOOKUP_BALANCES, 1, &key).await?;
    Ok(started.elapsed())
}

/// Progress, on stderr, when asked for.
fn tracing_line(cfg: &FailoverConfig, cycle: u64, what: &str) {
    if cfg.progress {
        eprintln!("cycle {cycle}: {what}");
    }
}

/// Sends `f` until a leader answers it.
async fn with_leader(
    failover: &mut Failover,
    client: &mut Client,
    kind: u16,
    count: u32,
    body: &[u8],
) -> Result<Vec<u8>, String> {
    failover.request(client, kind, count, body).await.map(|a| a.body.to_vec()).map_err(|e| e.to_string())
}

/// Runs the whole thing.
pub async fn run(cfg: &FailoverConfig) -> Result<FailoverReport, String> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| e.to_string())?;
    let ports: Vec<(u64, u16, u16)> =
        (1..=NODES as u64).map(|id| Ok((id, free_port()?, free_port()?))).collect::<Result<_, String>>()?;
    // A proxy for each direction of each peer link.
    let mut proxies = Vec::new();
    for &(from, _, _) in &ports {
        for &(to, _, peer) in ports.iter().filter(|p| p.0 != from) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
            let port = listener.local_addr().map_err(|e| e.to_string())?.port();
            let (cut, cut_rx) = tokio::sync::watch::channel(false);
            let peer_addr = format!("127.0.0.1:{peer}").parse().expect("address");
            tokio::spawn(proxy(listener, peer_addr, cut_rx));
            proxies.push(Proxy { from, to, port, cut });
        }
    }
    let mut nodes: Vec<Node> = Vec::new();
    for &(id, channel, _) in &ports {
        let config = cfg.dir.join(format!("node-{id}.toml"));
        std::fs::write(&config, config_text(id, cfg.shards, &ports, &proxies)).map_err(|e| e.to_string())?;
        let channel = format!("127.0.0.1:{channel}").parse().expect("address");
        nodes.push(Node { id, channel, data: cfg.dir.join(format!("node-{id}")), config, child: None });
    }
    for node in &mut nodes {
        node.start(&cfg.harbour)?;
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.channel).collect();
    let failover = Failover::new(addrs, 1, KEY);
    let mut setup = failover.clone();
    let mut client = setup.connect().await.map_err(|e| e.to_string())?;
    let accounts: Vec<Account> = (0..cfg.accounts)
        .map(|i| Account { account_id: FIRST_ACCOUNT + i, kind: 1, home_country: 344, ..Account::default() })
        .collect();
    with_leader(&mut setup, &mut client, kind::CREATE_ACCOUNTS, accounts.len() as u32, &records::encode_all(&accounts))
        .await?;
    let deposits: Vec<Transfer> = (0..cfg.accounts)
        .map(|i| Transfer {
            transfer_id: u128::from(i + 1),
            debit_account: SETTLEMENT_IN,
            credit_account: FIRST_ACCOUNT + i,
            amount: FUNDING,
            debit_currency: HKD,
            credit_currency: HKD,
            ..Transfer::default()
        })
        .collect();
    with_leader(
        &mut setup,
        &mut client,
        kind::SUBMIT_TRANSFERS,
        deposits.len() as u32,
        &records::encode_all(&deposits),
    )
    .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(parking_lot::Mutex::new(Ledger::default()));
    let workers: Vec<_> = (0..cfg.workers as u64)
        .map(|w| {
            tokio::spawn(worker(failover.clone(), w, cfg.accounts, cfg.seed, Arc::clone(&stop), Arc::clone(&ledger)))
        })
        .collect();
    let mut report = FailoverReport::default();
    let mut rng = Rng(cfg.seed);
    let mut cycle = 0u64;
    while report.kills < cfg.kills {
        cycle += 1;
        tokio::time::sleep(cfg.between).await;
        let Some(l) = leader(&nodes).await else { continue };
        if cfg.wipe_every > 0 && cycle.is_multiple_of(cfg.wipe_every) {
            // A follower loses its disk and comes back empty.
            let f = (l + 1 + rng.below(NODES as u64 - 1) as usize) % NODES;
            nodes[f].kill();
            std::fs::remove_dir_all(&nodes[f].data).map_err(|e| e.to_string())?;
            nodes[f].start(&cfg.harbour)?;
            report.wipes += 1;
            tracing_line(cfg, cycle, &format!("wiped node {}", nodes[f].id));
            continue;
        }
        if cfg.rolling_every > 0 && cycle.is_multiple_of(cfg.rolling_every) {
            for node in &mut nodes {
                node.stop()?;
                node.start(&cfg.harbour)?;
                tokio::time::sleep(cfg.between / 2).await;
            }
            report.rolling_restarts += 1;
            tracing_line(cfg, cycle, "restarted every node in turn");
            continue;
        }
        if cfg.partition_every > 0 && cycle.is_multiple_of(cfg.partition_every) {
            // The leader keeps its channels but loses both followers.
            let leader_id = nodes[l].id;
            let isolated = |p: &&Proxy| p.from == leader_id || p.to == leader_id;
            let cut_at = Instant::now();
            proxies.iter().filter(isolated).for_each(|p| {
                p.cut.send_replace(true);
            });
            let elapsed = first_answer(&failover, &nodes, Some(l)).await?;
            report.partition_failover_ms.push(elapsed.as_millis() as u64);
            report.partitions += 1;
            tracing_line(cfg, cycle, &format!("cut node {leader_id} off; a new leader answered in {elapsed:?}"));
            // The old leader stays cut off a while, then rejoins.
            tokio::time::sleep(cfg.between.saturating_sub(cut_at.elapsed())).await;
            proxies.iter().filter(isolated).for_each(|p| {
                p.cut.send_replace(false);
            });
            continue;
        }
        let killed = Instant::now();
        nodes[l].kill();
        report.kills += 1;
        first_answer(&failover, &nodes, None).await?;
        report.failover_ms.push(killed.elapsed().as_millis() as u64);
        tracing_line(
            cfg,
            cycle,
            &format!("killed node {}; a new leader answered in {:?}", nodes[l].id, killed.elapsed()),
        );
        nodes[l].start(&cfg.harbour)?;
    }
    tokio::time::sleep(cfg.between).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.map_err(|e| e.to_string())??;
    }
    check(cfg, &failover, &ledger, &mut report).await?;
    // Let every node learn the last commit, then stop them and compare.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for node in &mut nodes {
        node.stop()?;
    }
    compare(&nodes, &mut report)?;
    Ok(report)
}

/// Every stored transfer found, every balance exact.
async fn check(
    _cfg: &FailoverConfig,
    failover: &Failover,
    ledger: &parking_lot::Mutex<Ledger>,
    report: &mut FailoverReport,
) -> Result<(), String> {
    let mut failover = failover.clone();
    let mut client = failover.connect().await.map_err(|e| e.to_string())?;
    let ledger = std::mem::take(&mut *ledger.lock());
    report.violations.extend(ledger.unexpected);
    report.resends = ledger.resends;
    let mut balances: std::collections::BTreeMap<u64, i128> = std::collections::BTreeMap::new();
    for chunk in ledger.sent.chunks(4_000) {
        let ids: Vec<records::Id> = chunk.iter().map(|(t, _)| records::Id { id: t.transfer_id }).collect();
        let body = with_leader(
            &mut failover,
            &mut client,
            kind::LOOKUP_TRANSFERS,
            ids.len() as u32,
            &records::encode_all(&ids),
        )
        .await?;
        for ((t, answered), found) in chunk.iter().zip(records::decode_all::<TransferResult>(&body)) {
            let stored = found.code == 0;
            if *answered {
                report.transfers_answered += 1;
            } else {
                report.transfers_unanswered += 1;
            }
            if *answered && !stored {
                report.violations.push(format!("transfer {:#x} answered as stored is gone", t.transfer_id));
            }
            if stored {
                if found.state != records::STATE_POSTED || found.debit_amount != t.amount {
                    report.violations.push(format!("transfer {:#x} stored as {found:?}", t.transfer_id));
                }
                *balances.entry(t.debit_account).or_default() -= i128::from(t.amount);
                *balances.entry(t.credit_account).or_default() += i128::from(t.amount);
            }
        }
    }
    let accounts: Vec<BalanceKey> =
        (0.._cfg.accounts).map(|i| BalanceKey { account_id: FIRST_ACCOUNT + i, currency: HKD }).collect();
    let body = with_leader(
        &mut failover,
        &mut client,
        kind::LOOKUP_BALANCES,
        accounts.len() as u32,
        &records::encode_all(&accounts),
    )
    .await?;
    for b in records::decode_all::<Balance>(&body) {
        let want = i128::from(FUNDING) + balances.get(&b.account_id).copied().unwrap_or(0);
        if i128::from(b.balance) != want {
            report
                .violations
                .push(format!("account {}: balance {} but the stored transfers make {want}", b.account_id, b.balance));
        }
    }
    Ok(())
}

/// Replays every stopped node's data directory: same applied index, same
/// state hash, audits clean.
fn compare(nodes: &[Node], report: &mut FailoverReport) -> Result<(), String> {
    let mut config = harbour::config::Config::default();
    let text = std::fs::read_to_string(&nodes[0].config).map_err(|e| e.to_string())?;
    config.merge_toml(&text).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for node in nodes {
        let replayed = tokio::task::block_in_place(|| harbour::cluster::node::replay(&node.data, &config.switch))
            .map_err(|e| format!("node {}: {e}", node.id))?;
        for audit in &replayed.audits {
            if let Err(e) = audit {
                report.violations.push(format!("node {}: audit: {e}", node.id));
            }
        }
        let index = replayed.applied.map_or(0, |id| id.index());
        let hash: String = replayed.hashes.iter().flatten().take(8).map(|b| format!("{b:02x}")).collect();
        seen.push((index, hash));
    }
    if seen.windows(2).any(|w| w[0] != w[1]) {
        report.violations.push(format!("the nodes differ once stopped: {seen:?}"));
    }
    report.nodes = seen;
    Ok(())
}
