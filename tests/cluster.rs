//! The cluster's raft log store and state machine (issue 14, in progress):
//! openraft's own storage suite over in-memory disks, then what the suite
//! does not ask: everything survives a reopen, a torn tail is cut, a purge
//! rewrites a file mostly purged, and committed proposals drive the books
//! the way recovery does, with snapshots that install elsewhere.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use harbour::cluster::log::LogStore;
use harbour::cluster::machine::Books;
use harbour::cluster::{Entry, LogId, PeerNode, Proposal, TypeConfig};
use harbour::engine::{EngineConfig, MANUAL_CLOCK_START_MS};
use harbour::protocol::kind;
use harbour::protocol::records::encode_all;
use harbour::wal::storage::{MemStorage, Storage};
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage, RaftStateMachine};
use openraft::testing::log::{StoreBuilder, Suite};
use openraft::{EntryPayload, Membership, RaftLogReader, RaftSnapshotBuilder, StorageError};

fn engine_config() -> EngineConfig {
    EngineConfig {
        accounts_capacity: 256,
        transfers_capacity: 1024,
        loans_capacity: 64,
        pending_capacity: 64,
        ..EngineConfig::default()
    }
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, Books, ()> for Builder {
    async fn build(&self) -> Result<((), LogStore, Books), StorageError<TypeConfig>> {
        let log = LogStore::open(Arc::new(MemStorage::new())).expect("opens");
        Ok(((), log, Books::new(vec![engine_config()], MANUAL_CLOCK_START_MS)))
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn openrafts_storage_suite_passes() {
    runtime().block_on(Suite::test_all(Builder)).expect("the suite");
}

/// A log id of a term's leader, node 1.
fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(openraft::impls::leader_id_adv::LeaderId { term, node_id: 1 }, index)
}

fn proposal_entry(term: u64, index: u64, p: Proposal) -> Entry {
    Entry::new(log_id(term, index), EntryPayload::Normal(p))
}

async fn append(log: &mut LogStore, entries: Vec<Entry>) {
    let (tx, rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
    log.append(entries, IOFlushed::<TypeConfig>::signal(tx)).await.unwrap();
    rx.await.unwrap().unwrap();
}

#[test]
fn the_log_survives_a_reopen_and_a_torn_tail_is_cut() {
    runtime().block_on(async {
        let disk = MemStorage::new();
        let mut log = LogStore::open(Arc::new(disk.clone())).unwrap();
        let members = BTreeMap::from([(1, PeerNode { channel: "a:1".into(), peer: "a:2".into() })]);
        let membership = Membership::new(vec![BTreeSet::from([1])], members).unwrap();
        let membership = Entry::new(log_id(1, 0), EntryPayload::Membership(membership));
        let mut entries = vec![membership];
        for i in 1..=20 {
            let mut p = Proposal { shard: 0, time_ms: 1_000 + i, records: Vec::new() };
            p.push(kind::PING, &[i as u8; 3]);
            entries.push(proposal_entry(1, i, p));
        }
        append(&mut log, entries.clone()).await;
        log.truncate_after(Some(log_id(1, 15))).await.unwrap();
        log.purge(log_id(1, 4)).await.unwrap();
        let vote = openraft::alias::VoteOf::<TypeConfig>::new(2, 1);
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(log_id(1, 12))).await.unwrap();
        drop(log);

        let mut log = LogStore::open(Arc::new(disk.clone())).unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 4)), Some(log_id(1, 15))));
        let got = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(got, entries[5..16].to_vec(), "entries 5..=15, whole");
        assert_eq!(log.read_vote().await.unwrap(), Some(vote));
        assert_eq!(log.read_committed().await.unwrap(), Some(log_id(1, 12)));
        drop(log);

        // A write cut short by a crash: its bytes are cut, the rest stays.
        let bytes = disk.contents("raft.log").unwrap();
        let torn = MemStorage::new();
        let mut file = torn.open("raft.log", true).unwrap();
        file.write_at(&bytes, 0).unwrap();
        file.write_at(&[0x5A; 30], bytes.len() as u64).unwrap();
        drop(file);
        let mut log = LogStore::open(Arc::new(torn.clone())).unwrap();
        assert_eq!(log.try_get_log_entries(0..100).await.unwrap().len(), 11);
        append(&mut log, vec![proposal_entry(2, 16, Proposal::default())]).await;
        drop(log);
        let mut log = LogStore::open(Arc::new(torn)).unwrap();
        assert_eq!(log.get_log_state().await.unwrap().last_log_id, Some(log_id(2, 16)), "written after the cut");
    });
}

#[test]
fn a_purge_rewrites_a_file_that_is_mostly_purged() {
    runtime().block_on(async {
        let disk = MemStorage::new();
        let mut log = LogStore::open(Arc::new(disk.clone())).unwrap();
        // 70 entries of 1 MiB: past the size a purge considers a rewrite.
        for i in 0..70 {
            let p = Proposal { shard: 0, time_ms: i, records: vec![i as u8; 1 << 20] };
            append(&mut log, vec![proposal_entry(1, i, p)]).await;
        }
        let before = disk.contents("raft.log").unwrap().len();
        log.purge(log_id(1, 59)).await.unwrap();
        let after = disk.contents("raft.log").unwrap().len();
        assert!(after < before / 5, "{before} -> {after}");
        append(&mut log, vec![proposal_entry(1, 70, Proposal { shard: 0, time_ms: 70, records: vec![7; 10] })]).await;
        drop(log);
        let mut log = LogStore::open(Arc::new(disk)).unwrap();
        let got = log.try_get_log_entries(0..100).await.unwrap();
        assert_eq!(got.iter().map(RaftEntry::index).collect::<Vec<_>>(), (60..=70).collect::<Vec<_>>());
        assert_eq!(log.get_log_state().await.unwrap().last_purged_log_id, Some(log_id(1, 59)));
    });
}

/// Applies entries as a follower does (no one waiting for answers).
async fn apply(books: &mut Books, entries: Vec<Entry>) -> std::io::Result<()> {
    let stream: Vec<std::io::Result<_>> = entries.into_iter().map(|e| Ok((e, None))).collect();
    books.apply(futures_util::stream::iter(stream)).await
}

#[test]
fn committed_proposals_drive_the_books_and_snapshots_install_elsewhere() {
    runtime().block_on(async {
        let configs = vec![engine_config()];
        let mut books = Books::new(configs.clone(), MANUAL_CLOCK_START_MS);
        let mut p = Proposal { shard: 0, time_ms: MANUAL_CLOCK_START_MS, records: Vec::new() };
        p.push(kind::CREATE_ACCOUNTS, &encode_all(&[common::account(1024), common::account(1025)]));
        p.push(kind::SUBMIT_TRANSFERS, &encode_all(&[common::deposit(1, 1024, 500, common::HKD)]));
        let mut q = Proposal { shard: 0, time_ms: MANUAL_CLOCK_START_MS + 10, records: Vec::new() };
        q.push(kind::SUBMIT_TRANSFERS, &encode_all(&[common::transfer(2, 1024, 1025, 200, common::HKD)]));
        let entries = vec![
            Entry::new(log_id(1, 1), EntryPayload::Blank),
            proposal_entry(1, 2, p.clone()),
            proposal_entry(1, 3, q.clone()),
        ];
        apply(&mut books, entries).await.unwrap();
        // The same records through an engine directly, as recovery applies them.
        let mut engine = harbour::engine::Engine::new(engine_config(), MANUAL_CLOCK_START_MS);
        for proposal in [&p, &q] {
            for (kind, body) in proposal.records().unwrap() {
                engine.apply(kind, body, proposal.time_ms, &mut Vec::new()).unwrap();
            }
        }
        assert_eq!(books.state_hashes().await, vec![engine.state_hash()]);
        assert_eq!(books.applied_state().await.unwrap().0, Some(log_id(1, 3)));

        // A snapshot installs on other books to the same state.
        let snapshot = books.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let mut other = Books::new(configs.clone(), MANUAL_CLOCK_START_MS);
        other.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        assert_eq!(other.state_hashes().await, books.state_hashes().await);
        assert_eq!(other.applied_state().await.unwrap().0, Some(log_id(1, 3)));

        // A committed entry naming no shard of these books stops apply.
        let bad = proposal_entry(1, 4, Proposal { shard: 3, time_ms: 0, records: Vec::new() });
        let err = apply(&mut other, vec![bad]).await.unwrap_err();
        assert!(err.to_string().contains("no shard 3"), "{err}");
    });
}

/// Two shards in one log: a transfer crossing shards is carried out inside
/// the apply of the entry that decides it (its credit, the acknowledgement,
/// the posting), so its answer says POSTED, nothing is left in flight at
/// an entry's end, and books that install a snapshot and apply the rest end
/// the same. Without the exchange the answer would show it in flight and
/// the credit would never land.
#[test]
fn two_shards_in_one_log_settle_their_links_inside_apply() {
    use harbour::engine::{book::INTERSHARD, shard_of};
    use harbour::protocol::records::{BalanceKey, STATE_POSTED, TransferResult, decode_all};
    runtime().block_on(async {
        let configs: Vec<EngineConfig> =
            (0..2).map(|i| EngineConfig { shard: i, shards: 2, ..engine_config() }).collect();
        let mut books = Books::new(configs.clone(), MANUAL_CLOCK_START_MS);
        let a = (1024..).find(|&id| shard_of(id, 2) == 0).unwrap();
        let b = (1024..).find(|&id| shard_of(id, 2) == 1).unwrap();
        let on = |shard: u16, time: u64, kind: u16, body: Vec<u8>| {
            let mut p = Proposal { shard, time_ms: MANUAL_CLOCK_START_MS + time, records: Vec::new() };
            p.push(kind, &body);
            p
        };
        let proposals = [
            on(0, 0, kind::CREATE_ACCOUNTS, encode_all(&[common::account(a)])),
            on(1, 1, kind::CREATE_ACCOUNTS, encode_all(&[common::account(b)])),
            on(0, 2, kind::SUBMIT_TRANSFERS, encode_all(&[common::deposit(1, a, 1_000, common::HKD)])),
            on(0, 3, kind::SUBMIT_TRANSFERS, encode_all(&[common::transfer(2, a, b, 300, common::HKD)])),
        ];
        let entries: Vec<Entry> =
            proposals.iter().enumerate().map(|(i, p)| proposal_entry(1, i as u64 + 1, p.clone())).collect();
        let (mut first, mut last) = (entries.clone(), Vec::new());
        last.push(first.pop().unwrap());
        let stream: Vec<std::io::Result<_>> = first.into_iter().map(|e| Ok((e, None))).collect();
        books.apply(futures_util::stream::iter(stream)).await.unwrap();
        let snapshot = books.get_snapshot_builder().await.build_snapshot().await.unwrap();

        // The crossing transfer, and what its request is answered.
        let applied = books.apply_entry(&last[0]).unwrap();
        let result: TransferResult = decode_all(&applied.answers[0]).next().unwrap();
        assert_eq!((result.code, result.state), (0, STATE_POSTED), "answered posted, not in flight");

        let balance = |shard: usize, account_id: u64| {
            let books = books.clone();
            async move {
                books
                    .read(shard, |e| e.lookup_balance(&BalanceKey { account_id, currency: common::HKD }).balance)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(balance(0, a).await, 700);
        assert_eq!(balance(1, b).await, 300, "the credit landed on the other shard");
        assert_eq!(balance(0, INTERSHARD).await + balance(1, INTERSHARD).await, 0, "nothing in flight");
        for audit in books.audits().await {
            audit.unwrap();
        }
        let unacked = books.read_all(|e| e.links().unacked()).await;
        assert_eq!(unacked, vec![0, 0], "every link entry acknowledged within the entry");

        // Other books from the snapshot, then the last entry: the same.
        let mut other = Books::new(configs, MANUAL_CLOCK_START_MS);
        other.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        apply(&mut other, last).await.unwrap();
        assert_eq!(other.hashes_at().await, books.hashes_at().await);
    });
}

/// A node of a three-node cluster in one process.
struct Node {
    raft: harbour::cluster::memnet::Raft,
    books: Books,
    disk: MemStorage,
}

async fn start_node(net: &harbour::cluster::memnet::MemNet, id: u64, disk: MemStorage) -> Node {
    // Snapshots every 10 entries, keeping 5 behind: a node far behind, or
    // without its disk, needs a snapshot.
    let config = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10),
        max_in_snapshot_log_to_keep: 5,
        // A node may come back without its disk (its log behind what the
        // leader matched before): it catches up instead of stopping the
        // leader (docs/cluster.md, "Failure cases").
        allow_log_reversion: Some(true),
        ..Default::default()
    };
    let config = Arc::new(config.validate().unwrap());
    let log = LogStore::open(Arc::new(disk.clone())).unwrap();
    let books = Books::open(Arc::new(disk.clone()), vec![engine_config()], MANUAL_CLOCK_START_MS).unwrap();
    let raft = harbour::cluster::memnet::Raft::new(id, config, net.factory(id), log, books.clone()).await.unwrap();
    net.join(id, raft.clone());
    Node { raft, books, disk }
}

/// The leader every node agrees on (waiting until they do).
async fn leader_of(nodes: &BTreeMap<u64, Node>) -> u64 {
    for _ in 0..300 {
        let mut seen = BTreeSet::new();
        for node in nodes.values() {
            seen.insert(node.raft.current_leader().await);
        }
        if seen.len() == 1
            && let Some(Some(leader)) = seen.pop_first()
            && nodes.contains_key(&leader)
        {
            return leader;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("no leader all nodes agree on");
}

/// Writes a proposal through whichever node leads, as a channel would: a
/// refusal that names no leader (an election, or a lease lapsed with lost
/// messages) is tried again after a moment; nothing was proposed then.
async fn write(nodes: &BTreeMap<u64, Node>, p: &Proposal) -> u64 {
    for _ in 0..200 {
        let leader = leader_of(nodes).await;
        if try_write(&nodes[&leader].raft, p).await {
            return leader;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("never committed");
}

/// One write to `raft`: true if committed, false if refused before it was
/// proposed (no leader named); anything else fails the test.
async fn try_write(raft: &harbour::cluster::Raft, p: &Proposal) -> bool {
    match raft.client_write(p.clone()).await {
        Ok(written) => {
            assert_eq!(written.data.answers.len(), p.records().unwrap().len(), "one answer per record");
            true
        }
        Err(openraft::errors::RaftError::APIError(openraft::errors::ClientWriteError::ForwardToLeader(_))) => false,
        Err(e) => panic!("{e}"),
    }
}

/// The cluster logic over the in-memory network, with one message in ten
/// lost and the rest delayed up to 5 ms: a leader is elected, proposals
/// commit, the leader is lost and a new one goes on, the lost node comes
/// back on its own disk and catches up; every node ends with the books a
/// single engine reaches from the committed proposals, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_every_committed_proposal_through_the_loss_of_its_leader() {
    let net = harbour::cluster::memnet::MemNet::new(7, 10, std::time::Duration::from_millis(5));
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start_node(&net, id, MemStorage::new()).await);
    }
    let members: BTreeMap<u64, PeerNode> = (1..=3)
        .map(|id| {
            (id, PeerNode { channel: format!("127.0.0.1:{}", 7400 + id), peer: format!("127.0.0.1:{}", 7500 + id) })
        })
        .collect();
    nodes[&1].raft.initialize(members).await.unwrap();

    let mut committed: Vec<Proposal> = Vec::new();
    let mut time = MANUAL_CLOCK_START_MS;
    let mut propose = |p: &mut Proposal| {
        time += 1;
        p.time_ms = time;
    };
    let mut accounts = Proposal::default();
    propose(&mut accounts);
    accounts.push(kind::CREATE_ACCOUNTS, &encode_all(&(1024..1040).map(common::account).collect::<Vec<_>>()));
    let mut writes = vec![accounts];
    for i in 0..40u64 {
        let mut p = Proposal::default();
        propose(&mut p);
        p.push(
            kind::SUBMIT_TRANSFERS,
            &encode_all(&[common::deposit(u128::from(i) + 1, 1024 + i % 16, 100 + i, common::HKD)]),
        );
        writes.push(p);
    }

    // Half before the leader is lost, half after.
    let mut first = leader_of(&nodes).await;
    for p in writes.drain(..21) {
        first = write(&nodes, &p).await;
        committed.push(p);
    }
    let lost = nodes.remove(&first).unwrap();
    net.leave(first);
    lost.raft.shutdown().await.unwrap();
    assert_ne!(leader_of(&nodes).await, first);
    for p in writes {
        write(&nodes, &p).await;
        committed.push(p);
    }

    // The lost node restarts on its disk and catches up.
    let back = start_node(&net, first, lost.disk.clone()).await;
    nodes.insert(first, back);
    all_caught_up(&nodes, &committed).await;
    let (delivered, dropped) = net.counts();
    assert!(dropped > 0 && delivered > dropped, "{delivered} delivered, {dropped} lost");
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}

/// Forty deposits to customers 1024..1040, after their accounts.
fn deposits(first_id: u64, n: u64) -> Vec<Proposal> {
    let mut out = Vec::new();
    for i in first_id..first_id + n {
        let mut p = Proposal { shard: 0, time_ms: MANUAL_CLOCK_START_MS + i, records: Vec::new() };
        p.push(
            kind::SUBMIT_TRANSFERS,
            &encode_all(&[common::deposit(u128::from(i), 1024 + i % 16, 100 + i, common::HKD)]),
        );
        out.push(p);
    }
    out
}

fn accounts_proposal() -> Proposal {
    let mut p = Proposal { shard: 0, time_ms: MANUAL_CLOCK_START_MS, records: Vec::new() };
    p.push(kind::CREATE_ACCOUNTS, &encode_all(&(1024..1040).map(common::account).collect::<Vec<_>>()));
    p
}

async fn start_cluster(net: &harbour::cluster::memnet::MemNet) -> BTreeMap<u64, Node> {
    let mut nodes = BTreeMap::new();
    for id in 1..=3 {
        nodes.insert(id, start_node(net, id, MemStorage::new()).await);
    }
    let members: BTreeMap<u64, PeerNode> = (1..=3).map(|id| (id, PeerNode::default())).collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    nodes
}

/// Waits until every node applied the leader's last entry, then checks its
/// books against a single engine fed `committed` in order.
async fn all_caught_up(nodes: &BTreeMap<u64, Node>, committed: &[Proposal]) {
    let leader = leader_of(nodes).await;
    let metrics = nodes[&leader].raft.wait(None).metrics(|_| true, "metrics").await.unwrap();
    let last = metrics.last_log_index.unwrap();
    let mut engine = harbour::engine::Engine::new(engine_config(), MANUAL_CLOCK_START_MS);
    for p in committed {
        for (kind, body) in p.records().unwrap() {
            engine.apply(kind, body, p.time_ms, &mut Vec::new()).unwrap();
        }
    }
    for (id, node) in nodes {
        node.raft
            .wait(Some(std::time::Duration::from_secs(10)))
            .applied_index_at_least(Some(last), "caught up")
            .await
            .unwrap_or_else(|e| panic!("node {id}: {e}"));
        assert_eq!(node.books.state_hashes().await, vec![engine.state_hash()], "node {id}");
    }
}

/// A follower that lost its disk rejoins empty; the leader has purged the
/// log it would need, so it catches up by installing a snapshot of the
/// books, then the log after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_that_lost_its_disk_catches_up_from_a_snapshot() {
    let net = harbour::cluster::memnet::MemNet::new(11, 0, std::time::Duration::ZERO);
    let mut nodes = start_cluster(&net).await;
    let mut committed = vec![accounts_proposal()];
    write(&nodes, &committed[0]).await;
    let leader = leader_of(&nodes).await;
    let follower = *nodes.keys().find(|&&id| id != leader).unwrap();
    let gone = nodes.remove(&follower).unwrap();
    net.leave(follower);
    gone.raft.shutdown().await.unwrap();
    for p in deposits(1, 40) {
        write(&nodes, &p).await;
        committed.push(p);
    }
    let purged = nodes[&leader].raft.wait(None).metrics(|m| m.purged.is_some(), "purged").await.unwrap().purged;
    assert!(purged.is_some_and(|p| p.index() > 5), "the leader purged its log: {purged:?}");
    // The same id on a new, empty disk.
    nodes.insert(follower, start_node(&net, follower, MemStorage::new()).await);
    let back = nodes[&follower].raft.wait(Some(std::time::Duration::from_secs(10)));
    back.metrics(|m| m.snapshot.is_some(), "installed a snapshot").await.unwrap();
    for p in deposits(41, 5) {
        write(&nodes, &p).await;
        committed.push(p);
    }
    all_caught_up(&nodes, &committed).await;
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}

/// The leader cut off from both followers: they elect a new leader and go
/// on; the old one commits nothing alone (its writes are refused once its
/// lease lapses, or never commit); mended, it follows and catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_commits_nothing_and_rejoins() {
    let net = harbour::cluster::memnet::MemNet::new(13, 0, std::time::Duration::ZERO);
    let nodes = start_cluster(&net).await;
    let mut committed = vec![accounts_proposal()];
    write(&nodes, &committed[0]).await;
    let old = leader_of(&nodes).await;
    let others: Vec<u64> = nodes.keys().copied().filter(|&id| id != old).collect();
    net.cut(old, &others, true);
    // Alone, the old leader cannot commit: a write either is refused or
    // does not finish.
    let alone = deposits(100, 1).remove(0);
    let attempt =
        tokio::time::timeout(std::time::Duration::from_millis(800), nodes[&old].raft.client_write(alone)).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "a leader without a majority committed");
    // The majority goes on under a new leader.
    let rest: BTreeMap<u64, &Node> = nodes.iter().filter(|(id, _)| **id != old).map(|(id, n)| (*id, n)).collect();
    let mut new = None;
    for _ in 0..200 {
        for (id, node) in &rest {
            if node.raft.current_leader().await == Some(*id) {
                new = Some(*id);
            }
        }
        if new.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let new = new.expect("the majority elected a leader");
    for p in deposits(1, 15) {
        while !try_write(&nodes[&new].raft, &p).await {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        committed.push(p);
    }
    net.cut(old, &others, false);
    all_caught_up(&nodes, &committed).await;
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
}

/// The same leader loss over real TCP between the nodes (loopback): the
/// peer protocol carries appends, votes and snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_over_tcp_survives_the_loss_of_its_leader() {
    use harbour::cluster::peer::{TcpLinks, serve};
    let mut listeners = BTreeMap::new();
    for id in 1..=3u64 {
        listeners.insert(id, tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap());
    }
    let addrs: BTreeMap<u64, String> =
        listeners.iter().map(|(id, l)| (*id, l.local_addr().unwrap().to_string())).collect();
    let config = |_: u64| {
        let c = openraft::Config {
            heartbeat_interval: 50,
            election_timeout_min: 150,
            election_timeout_max: 300,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(10),
            max_in_snapshot_log_to_keep: 5,
            ..Default::default()
        };
        Arc::new(c.validate().unwrap())
    };
    let start = |id: u64, disk: MemStorage, listener: tokio::net::TcpListener| {
        let config = config(id);
        async move {
            let log = LogStore::open(Arc::new(disk.clone())).unwrap();
            let books = Books::open(Arc::new(disk.clone()), vec![engine_config()], MANUAL_CLOCK_START_MS).unwrap();
            let raft = harbour::cluster::Raft::new(id, config, TcpLinks::default(), log, books.clone()).await.unwrap();
            let server = tokio::spawn(serve(listener, raft.clone(), None));
            (Node { raft, books, disk }, server)
        }
    };
    let mut nodes = BTreeMap::new();
    let mut servers = BTreeMap::new();
    for (id, listener) in listeners {
        let (node, server) = start(id, MemStorage::new(), listener).await;
        nodes.insert(id, node);
        servers.insert(id, server);
    }
    let members: BTreeMap<u64, PeerNode> =
        addrs.iter().map(|(id, a)| (*id, PeerNode { channel: String::new(), peer: a.clone() })).collect();
    nodes[&1].raft.initialize(members).await.unwrap();
    let mut committed = vec![accounts_proposal()];
    write(&nodes, &committed[0]).await;
    for p in deposits(1, 20) {
        write(&nodes, &p).await;
        committed.push(p);
    }
    let first = leader_of(&nodes).await;
    let lost = nodes.remove(&first).unwrap();
    servers.remove(&first).unwrap().abort();
    lost.raft.shutdown().await.unwrap();
    for p in deposits(21, 20) {
        write(&nodes, &p).await;
        committed.push(p);
    }
    // Back on its disk, at its address.
    let listener = tokio::net::TcpListener::bind(&addrs[&first]).await.unwrap();
    let (node, server) = start(first, lost.disk.clone(), listener).await;
    nodes.insert(first, node);
    servers.insert(first, server);
    all_caught_up(&nodes, &committed).await;
    for node in nodes.values() {
        node.raft.shutdown().await.unwrap();
    }
    for server in servers.values() {
        server.abort();
    }
}

/// A flipped byte in the kept snapshot is refused at open (it could decode
/// into other books), and an entry larger than a log record is refused
/// with an error, not a panic.
#[test]
fn a_damaged_snapshot_and_an_oversized_entry_are_refused() {
    runtime().block_on(async {
        let disk = MemStorage::new();
        let mut books = Books::open(Arc::new(disk.clone()), vec![engine_config()], MANUAL_CLOCK_START_MS).unwrap();
        let mut p = Proposal { shard: 0, time_ms: MANUAL_CLOCK_START_MS, records: Vec::new() };
        p.push(kind::CREATE_ACCOUNTS, &encode_all(&[common::account(1024)]));
        apply(&mut books, vec![proposal_entry(1, 1, p)]).await.unwrap();
        books.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let again = Books::open(Arc::new(disk.clone()), vec![engine_config()], MANUAL_CLOCK_START_MS).unwrap();
        assert_eq!(again.state_hashes().await, books.state_hashes().await, "the kept snapshot restores");
        let len = disk.contents("raft.snap").unwrap().len();
        disk.corrupt("raft.snap", len - 3);
        let refused = Books::open(Arc::new(disk), vec![engine_config()], MANUAL_CLOCK_START_MS).err().expect("refused");
        assert!(refused.to_string().contains("checksum"), "{refused}");

        let mut log = LogStore::open(Arc::new(MemStorage::new())).unwrap();
        let huge = Proposal { shard: 0, time_ms: 0, records: vec![0; harbour::cluster::log::ENTRY_BYTES_MAX + 1] };
        let (tx, _rx) = <TypeConfig as openraft::type_config::TypeConfigExt>::oneshot();
        let err = log.append(vec![proposal_entry(1, 1, huge)], IOFlushed::<TypeConfig>::signal(tx)).await.unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err}");
        assert_eq!(log.get_log_state().await.unwrap().last_log_id, None, "nothing taken");
    });
}
