//! A brief run of the failover harness (`harbour-loadtest failover`): three
//! real `harbour serve` processes on loopback under load; the leader is
//! killed with SIGKILL, a follower loses its data directory and catches up
//! by snapshot, the leader is cut off from both followers by the proxies
//! between peers, and every node is restarted in turn. Every answered
//! transfer must be on the cluster, every balance exact, and the stopped
//! nodes must replay to the same index and state hash. The long run's
//! figures are in docs/benchmarks.md.

mod common;

use std::time::Duration;

use harbour_loadtest::failover::{self, FailoverConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_every_answer_through_kills_wipes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = FailoverConfig {
        harbour: env!("CARGO_BIN_EXE_harbour").into(),
        dir: dir.path().to_path_buf(),
        kills: 3,
        wipe_every: 4,
        rolling_every: 5,
        partition_every: 3,
        seed: 11,
        workers: 3,
        accounts: 32,
        shards: 1,
        between: Duration::from_millis(800),
        progress: false,
    };
    let report = failover::run(&config).await.expect("the harness runs");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.kills, 3);
    assert!(report.wipes >= 1 && report.rolling_restarts >= 1 && report.partitions >= 1, "{report:?}");
    assert!(report.transfers_answered > 1_000, "traffic ran: {report:?}");
    assert_eq!(report.nodes.len(), 3);
    assert!(report.nodes[0].0 > 100, "entries were committed: {report:?}");
}

const KEY: &str = "cluster-test-key-0123456789abcdefgh";

/// The node that leads, once one does (within 10 s).
async fn leader_of(running: &[harbour::server::Running]) -> usize {
    for _ in 0..500 {
        if let Some(i) = running.iter().position(|r| r.member().unwrap().raft.is_leader()) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader in 10 s")
}

/// Free (channel, peer) ports for `n` nodes, below the ephemeral range
/// (`failover::free_port`: a restarted node needs its ports again).
fn ports(n: usize) -> Vec<(u16, u16)> {
    let free = || failover::free_port().expect("a free port");
    (0..n).map(|_| (free(), free())).collect()
}

/// Starts nodes `ids` (1-based into `ports`) in this process, each in
/// `dir/node-ID`; the cluster lists every port's node, or with `join` only
/// the node itself.
async fn start_nodes(
    dir: &std::path::Path,
    ports: &[(u16, u16)],
    ids: &[usize],
    join: bool,
) -> Vec<harbour::server::Running> {
    start_nodes_with(dir, ports, ids, join, "", 65_536).await
}

/// The same, with more settings (top-level TOML lines).
async fn start_nodes_with(
    dir: &std::path::Path,
    ports: &[(u16, u16)],
    ids: &[usize],
    join: bool,
    more: &str,
    transfers: usize,
) -> Vec<harbour::server::Running> {
    let node = |i: usize| {
        let (channel, peer) = ports[i - 1];
        format!("[[cluster.nodes]]\nid = {i}\nchannel = \"127.0.0.1:{channel}\"\npeer = \"127.0.0.1:{peer}\"\n")
    };
    let mut running = Vec::new();
    for &i in ids {
        let nodes: String = if join { node(i) } else { (1..=ports.len()).map(node).collect() };
        let mut config = harbour::config::Config::default();
        let text = format!(
            "accounts_capacity = 4096\ntransfers_capacity = {transfers}\n{more}\
             [[channels]]\nid = 1\nkey = \"{KEY}\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\", \"LENDING\", \"TREASURY\", \"OPERATOR\"]\n\
             [cluster]\nnode_id = {i}\njoin = {join}\n{nodes}"
        );
        config.merge_toml(&text).unwrap();
        config.data = dir.join(format!("node-{i}"));
        config.listen = format!("127.0.0.1:{}", ports[i - 1].0).parse().unwrap();
        config.metrics = Some("127.0.0.1:0".parse().unwrap());
        running.push(harbour::server::start(&config).await.unwrap());
    }
    running
}

/// Three nodes in this process: a follower answers NOT_LEADER naming the
/// leader's channel address, applies nothing, and keeps the connection
/// open; the leader answers; the Rust client's failover follows the
/// redirect on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_to_the_leader() {
    use harbour::client::{Client, Failover};
    use harbour::protocol::frame::ErrorCode;
    use harbour::protocol::records::{Account, BalanceKey};

    let dir = tempfile::tempdir().unwrap();
    let ports = ports(3);
    let running = start_nodes(dir.path(), &ports, &[1, 2, 3], false).await;
    let key = KEY.as_bytes();
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    // The client finds the leader by itself, through refusals.
    let mut failover = Failover::new(addrs.clone(), 1, key);
    let mut client = failover.connect().await.unwrap();
    let account = Account { account_id: 5000, kind: 1, home_country: 344, ..Account::default() };
    let body = harbour::protocol::records::encode_all(&[account]);
    let created = failover.request(&mut client, harbour::protocol::kind::CREATE_ACCOUNTS, 1, &body).await.unwrap();
    assert_eq!(created.count, 1);
    let leader = leader_of(&running).await;
    let follower = (leader + 1) % 3;
    let _ = &ports;
    // Right after an election a follower may not know the leader yet
    // (then NOT_LEADER's detail is empty): wait until it has heard from it.
    let follower_raft = running[follower].member().unwrap().raft.clone();
    follower_raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(leader as u64 + 1), "the follower knows the leader")
        .await
        .unwrap();
    let c = Client::connect(addrs[follower], 1, key).await.expect("HELLO works on a follower");
    let refused = c.lookup_balances(&[BalanceKey { account_id: 5000, currency: 344 }]).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::NotLeader));
    let harbour::client::ClientError::Refused { detail, .. } = &refused else { unreachable!() };
    assert_eq!(detail, &addrs[leader].to_string(), "the detail names the leader's channel address");
    // Nothing was applied, and the connection is still open.
    let again = Account { account_id: 5001, ..account };
    let refused = c.create_accounts(&[again]).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(ErrorCode::NotLeader));
    c.ping().await.expect("the connection stays open");
    let at_leader = Client::connect(addrs[leader], 1, key).await.unwrap();
    let found = at_leader.lookup_balances(&[BalanceKey { account_id: 5001, currency: 344 }]).await.unwrap();
    assert_ne!(found[0].code, 0, "the refused account was never created");
    let found = at_leader.lookup_balances(&[BalanceKey { account_id: 5000, currency: 344 }]).await.unwrap();
    assert_eq!(found[0].code, 0);
    // A cluster node serves every cluster metric the dashboard names
    // (tests/server.rs checks the others on a single node).
    let metrics = running[leader].metrics_addr.expect("metrics on");
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(metrics).unwrap();
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
        let mut text = String::new();
        s.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    let dashboard =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/grafana-dashboard.json")).unwrap();
    let names: Vec<&str> = dashboard
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("harbour_cluster_"))
        .collect();
    assert!(names.len() >= 3, "the dashboard has a cluster row");
    for name in names {
        assert!(text.contains(name.trim_end_matches("_total")), "the dashboard names {name}, not served:\n{text}");
    }
    for r in running {
        r.stop().await.unwrap();
    }
}

/// A data directory is one node's or a cluster node's, never taken for the
/// other: either start is refused, naming the directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_and_cluster_data_are_not_mixed() {
    let dir = tempfile::tempdir().unwrap();
    let mut single = harbour::config::Config::default();
    single.merge_toml("accounts_capacity = 1024\ntransfers_capacity = 4096\nmetrics = \"off\"\n[[channels]]\nid = 1\nkey = \"0123456789abcdef\"\nroles = []\n").unwrap();
    single.listen = "127.0.0.1:0".parse().unwrap();
    single.data = dir.path().join("single");
    harbour::server::start(&single).await.unwrap().stop().await.unwrap();
    let mut cluster = single.clone();
    cluster
        .merge_toml(
            "metrics = \"off\"\n[[channels]]\nid = 1\nkey = \"0123456789abcdef\"\nroles = []\n[cluster]\nnode_id = 1\n\
             [[cluster.nodes]]\nid = 1\nchannel = \"127.0.0.1:1\"\npeer = \"127.0.0.1:0\"\n",
        )
        .unwrap();
    let refused = harbour::server::start(&cluster).await.err().expect("a single node's data refused").to_string();
    assert!(refused.contains("single node's data"), "{refused}");
    cluster.data = dir.path().join("cluster");
    harbour::server::start(&cluster).await.unwrap().stop().await.unwrap();
    // `harbour check` replays a stopped cluster node's books.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harbour"))
        .args(["check", "--data"])
        .arg(&cluster.data)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("a cluster node's data") && text.contains("audit clean"), "{text}");
    // Its settings are recorded: a restart under others is refused.
    let mut other = cluster.clone();
    other.switch.engine.aml.daily_limit_hkd_minor += 1;
    let refused = harbour::server::start(&other).await.err().expect("other settings refused").to_string();
    assert!(refused.contains("recorded settings") && refused.contains("aml_daily_limit"), "{refused}");
    single.data = cluster.data.clone();
    let refused = harbour::server::start(&single).await.err().expect("a cluster node's data refused").to_string();
    assert!(refused.contains("cluster node's data"), "{refused}");
}

/// Operators: every node reports its view; a fourth node joins (learner,
/// then voter) and is removed again while the cluster takes writes; a
/// backup of a running node replays to the books' own state hash, and a
/// cluster started from copies of it holds what was written before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_membership_and_backup() {
    use harbour::client::Failover;
    use harbour::protocol::kind;
    use harbour::protocol::records::{
        self, Account, Balance, BalanceKey, CLUSTER_ADD, CLUSTER_REMOVE, ClusterChange, Transfer,
    };

    let dir = tempfile::tempdir().unwrap();
    let ports = ports(4);
    let mut running = start_nodes(dir.path(), &ports[..3], &[1, 2, 3], false).await;
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut failover = Failover::new(addrs.clone(), 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let account = Account { account_id: 7000, kind: 1, home_country: 344, ..Account::default() };
    failover.request(&mut client, kind::CREATE_ACCOUNTS, 1, &records::encode_all(&[account])).await.unwrap();
    let deposit = Transfer {
        transfer_id: 1,
        debit_account: harbour::engine::book::SETTLEMENT_IN,
        credit_account: 7000,
        amount: 12_345,
        debit_currency: 344,
        credit_currency: 344,
        ..Transfer::default()
    };
    failover.request(&mut client, kind::SUBMIT_TRANSFERS, 1, &records::encode_all(&[deposit])).await.unwrap();

    // Each node's own view; exactly one leader among them.
    let mut leaders = 0;
    for addr in &addrs {
        let c = harbour::client::Client::connect(*addr, 1, KEY.as_bytes()).await.unwrap();
        let status = c.request(kind::CLUSTER_STATUS, 0, &[]).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&status.body).unwrap();
        assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
        leaders += usize::from(v["role"] == "Leader");
    }
    assert_eq!(leaders, 1);

    // A fourth node, started to join, is added and then removed.
    running.extend(start_nodes(dir.path(), &ports, &[4], true).await);
    let (channel, peer) = ports[3];
    let add =
        ClusterChange::new(4, CLUSTER_ADD, &format!("127.0.0.1:{channel}"), &format!("127.0.0.1:{peer}")).unwrap();
    // On a loaded machine raft may refuse a change while an election or
    // another change settles: an operator sends it again.
    let mut v = serde_json::Value::Null;
    for _ in 0..5 {
        let added = failover.request(&mut client, kind::CLUSTER_CHANGE, 1, &records::encode_all(&[add])).await.unwrap();
        v = serde_json::from_slice(&added.body).unwrap();
        if v["members"].is_array() {
            break;
        }
        eprintln!("CLUSTER_CHANGE refused, sent again: {v}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let voters = v["members"].as_array().unwrap_or_else(|| panic!("{v}")).iter().filter(|m| m["voter"] == true).count();
    assert_eq!(voters, 4, "{v}");
    let fourth = running[3].member().unwrap().books.clone();
    let remove = ClusterChange::new(4, CLUSTER_REMOVE, "", "").unwrap();
    let removed =
        failover.request(&mut client, kind::CLUSTER_CHANGE, 1, &records::encode_all(&[remove])).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(&removed.body).unwrap();
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    // It caught up before it voted: its books are the leader's (no write
    // came after the deposit but membership entries, which change none).
    let leader = leader_of(&running).await;
    let leader_books = running[leader].member().unwrap().books.state_hashes().await;
    assert_eq!(fourth.state_hashes().await, leader_books, "the added node caught up");
    // A malformed change is refused before anything happens.
    let mut bad = records::encode_all(&[add]);
    bad[8] = 9;
    let refused = client.request(kind::CLUSTER_CHANGE, 1, &bad).await.unwrap_err();
    assert_eq!(refused.error_code(), Some(harbour::protocol::frame::ErrorCode::Malformed));

    // A backup replays to the running books' hash.
    let backup = failover.request(&mut client, kind::BACKUP, 0, &[]).await.unwrap();
    let leader = leader_of(&running).await;
    let live = running[leader].member().unwrap().books.state_hashes().await;
    let out = dir.path().join("backup");
    let at = harbour::cluster::node::write_backup(&out, &backup.body).unwrap().unwrap();
    assert!(harbour::cluster::node::write_backup(&out, &backup.body).is_err(), "a backup never overwrites data");
    let config = harbour::config::Config::default();
    let mut switch = config.switch;
    switch.engine.accounts_capacity = 4096;
    switch.engine.transfers_capacity = 65536;
    let replayed = tokio::task::block_in_place(|| harbour::cluster::node::replay(&out, &switch)).unwrap();
    assert_eq!(replayed.applied.map(|a| a.index()), Some(at.index()));
    assert_eq!(replayed.hashes, live, "the backup is the books it was taken from");

    // The whole cluster is lost; it starts again from copies of the backup.
    for r in running {
        r.stop().await.unwrap();
    }
    let restored = dir.path().join("restored");
    for i in 1..=3 {
        copy_dir(&out, &restored.join(format!("node-{i}")));
    }
    let running = start_nodes(&restored, &ports[..3], &[1, 2, 3], false).await;
    let mut failover = Failover::new(addrs.clone(), 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let key = records::encode_all(&[BalanceKey { account_id: 7000, currency: 344 }]);
    let found = failover.request(&mut client, kind::LOOKUP_BALANCES, 1, &key).await.unwrap();
    let found: Vec<Balance> = records::decode_all(&found.body).collect();
    assert_eq!((found[0].code, found[0].balance), (0, 12_345), "the restored cluster holds the deposit");
    let again = Transfer { transfer_id: 2, amount: 5, ..deposit };
    let answer =
        failover.request(&mut client, kind::SUBMIT_TRANSFERS, 1, &records::encode_all(&[again])).await.unwrap();
    assert_eq!(records::decode_all::<harbour::protocol::records::TransferResult>(&answer.body).next().unwrap().code, 0);
    for r in running {
        r.stop().await.unwrap();
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// The load tester replays a generated workload at a cluster whose leader
/// dies midway: it follows the new leader, sends again in order what was
/// left unanswered (same ids), and the books end exactly as predicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_through_a_failover_leaves_the_predicted_balances() {
    replay_through_a_failover(1).await;
}

/// The same with two shards: about half the transfers cross shards, their
/// links carried out inside the apply of every node (`docs/cluster.md`,
/// "Several shards"), and the new leader rebuilds the router's claims from
/// its books before it routes anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_two_shards_through_a_failover_leaves_the_predicted_balances() {
    replay_through_a_failover(2).await;
}

async fn replay_through_a_failover(shards: usize) {
    use harbour_loadtest::run::{self, Pace, Target};
    use harbour_loadtest::workload::{self, GenConfig};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("traffic.htr");
    let shape = GenConfig { accounts: 400, transfers: 20_000, batch: 100, seed: 5, ..GenConfig::default() };
    let file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    let expected = workload::generate(&shape, file, 1).unwrap();
    // The prediction assumes AML levels 1 and 3 hold nothing.
    let more = format!("shards = {shards}\n[aml]\ndaily_limit_hkd = \"100000000000.00\"\nbehaviour = false\n");
    let ports = ports(3);
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, &more, 65_536).await;
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let target =
        Target { addr: addrs[0], others: addrs[1..].to_vec(), tls: None, channel: 1, key: KEY.as_bytes().to_vec() };
    let reader =
        harbour::traffic::TrafficReader::new(std::io::BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    let replay = tokio::spawn(async move { run::replay(&target, reader, 4, Pace::Rate(8_000.0), false).await });
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let leader = leader_of(&running).await;
    // The leader's raft dies: its proposals fail, its connections close.
    running[leader].member().unwrap().shutdown().await;
    let (shared, _, _) = replay.await.unwrap().expect("the replay follows the new leader");
    let outcome = shared.outcome.lock().unwrap().clone();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    assert!(shared.resends.load(std::sync::atomic::Ordering::Relaxed) > 0, "the failover cut some requests off");
    let new_leader = leader_of(&running).await;
    assert_ne!(new_leader, leader);
    // A leader elected just now may still be applying what it committed.
    let raft = running[new_leader].member().unwrap().raft.clone();
    let committed = {
        use openraft::rt::WatchReceiver;
        raft.metrics().borrow_watched().local_committed.map(|c| c.index())
    };
    raft.wait(Some(Duration::from_secs(10)))
        .applied_index_at_least(committed, "applied what it committed")
        .await
        .unwrap();
    let books = running[new_leader].member().unwrap().books.clone();
    for audit in books.audits().await {
        audit.expect("every shard's books balance");
    }
    // A system account's balance is the sum of its parts; a customer's
    // is on its shard only.
    let lookups: Vec<Vec<i128>> = books
        .read_all(|engine| {
            expected
                .balances
                .keys()
                .map(|&(account_id, currency)| {
                    let key = harbour::protocol::records::BalanceKey { account_id, currency };
                    i128::from(engine.lookup_balance(&key).balance)
                })
                .collect()
        })
        .await;
    let wrong = expected
        .balances
        .values()
        .enumerate()
        .filter(|&(i, want)| lookups.iter().map(|shard| shard[i]).sum::<i128>() != *want)
        .count();
    if shards > 1 {
        let crossed = books.read(0, |e| e.links().links[1].last_seq).await.unwrap();
        assert!(crossed > 100, "transfers crossed shards: {crossed} link entries");
        // The new leader knows which shard holds each id (its claims were
        // rebuilt from its books): an id shard 0 stores, sent again from
        // accounts of shard 1, goes to shard 0 and is refused there; an
        // empty router would store it a second time on shard 1.
        let taken = books.read(0, |e| e.stored_ids().ids[0]).await.unwrap();
        let mut on_1 = expected
            .balances
            .keys()
            .map(|&(account, _)| account)
            .filter(|&a| a >= harbour::engine::book::CUSTOMER_ID_MIN && harbour::engine::shard_of(a, 2) == 1);
        let (debit, credit) = (on_1.next().unwrap(), on_1.next().unwrap());
        let again = harbour::protocol::records::Transfer {
            transfer_id: taken,
            debit_account: debit,
            credit_account: credit,
            amount: 1,
            debit_currency: 344,
            credit_currency: 344,
            ..Default::default()
        };
        let c = harbour::client::Client::connect(addrs[new_leader], 1, KEY.as_bytes()).await.unwrap();
        let answer = c.submit_transfers(&[again]).await.unwrap();
        assert_eq!(answer[0].code, harbour::protocol::codes::ResultCode::IdConflict.as_u16(), "{answer:?}");
        let stored_on_1 = books.read(1, |e| e.lookup_transfer(taken).code).await.unwrap();
        assert_ne!(stored_on_1, 0, "the id is stored once, on shard 0");
    }
    // The follower that stayed ends with the same books at the same entry.
    let other = (0..3).find(|&i| i != leader && i != new_leader).unwrap();
    let follower = running[other].member().unwrap().books.clone();
    let mut compared = false;
    for _ in 0..250 {
        let (here, there) = (books.hashes_at().await, follower.hashes_at().await);
        if here.0 == there.0 {
            assert_eq!(here.1, there.1, "same books on both nodes at {:?}", here.0);
            compared = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(compared, "the follower caught up");
    assert_eq!(wrong, 0, "every balance as predicted ({} checked)", expected.balances.len());
    for r in running {
        r.stop().await.unwrap();
    }
}

/// A burst of full-size requests makes a group larger than one raft log
/// record: the leader proposes it as several entries, and every request is
/// answered (before, the oversized entry stopped the leader's raft).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_an_entry_is_split() {
    use harbour::client::Failover;
    use harbour::protocol::kind;
    use harbour::protocol::records::{self, Account, Balance, BalanceKey, Transfer, TransferResult};

    let dir = tempfile::tempdir().unwrap();
    let ports = ports(3);
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, "", 1 << 20).await;
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut failover = Failover::new(addrs, 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let account = Account { account_id: 9000, kind: 1, home_country: 344, ..Account::default() };
    failover.request(&mut client, kind::CREATE_ACCOUNTS, 1, &records::encode_all(&[account])).await.unwrap();
    let max = client.limits().max_batch as u128;
    let requests = 64u128;
    let bodies: Vec<Vec<u8>> = (0..requests)
        .map(|r| {
            let batch: Vec<Transfer> = (0..max)
                .map(|i| Transfer {
                    transfer_id: r * max + i + 1,
                    debit_account: harbour::engine::book::SETTLEMENT_IN,
                    credit_account: 9000,
                    amount: 1,
                    debit_currency: 344,
                    credit_currency: 344,
                    ..Transfer::default()
                })
                .collect();
            records::encode_all(&batch)
        })
        .collect();
    // The leader's books held for a moment stop its proposer (it reads
    // them between groups), so the burst below queues up whole and is
    // taken as one group larger than an entry.
    let leader = leader_of(&running).await;
    let books = running[leader].member().unwrap().books.clone();
    // Held from a thread of its own, so the runtime's workers (all three
    // nodes share them) keep raft's heartbeats going meanwhile.
    let held = tokio::task::spawn_blocking(move || {
        books.read_blocking(0, |_| std::thread::sleep(Duration::from_millis(1_000)))
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    // All in flight at once; whatever a leadership change right after the
    // start cut off goes again (an applied transfer answers ALREADY_EXISTS).
    let mut sent = Vec::new();
    for body in &bodies {
        sent.push(client.send(kind::SUBMIT_TRANSFERS, max as u32, body).await.map(|f| f.detach()));
    }
    held.await.unwrap();
    let mut answers = Vec::new();
    for (body, in_flight) in bodies.iter().zip(sent) {
        let answer = match in_flight {
            Ok(d) => d.wait().await,
            Err(e) => Err(e),
        };
        let answer = match answer {
            Err(e) if harbour::client::is_failover(&e) => {
                failover.request(&mut client, kind::SUBMIT_TRANSFERS, max as u32, body).await.unwrap()
            }
            other => other.expect("every request answered"),
        };
        answers.push(answer);
    }
    for answer in answers {
        assert!(records::decode_all::<TransferResult>(&answer.body).all(|r| r.code == 0 || r.code == 1));
    }
    let key = records::encode_all(&[BalanceKey { account_id: 9000, currency: 344 }]);
    let found = failover.request(&mut client, kind::LOOKUP_BALANCES, 1, &key).await.unwrap();
    let found: Vec<Balance> = records::decode_all(&found.body).collect();
    assert_eq!(found[0].balance as u128, requests * max);
    // Every node's raft still runs (an entry a log refused would have
    // stopped the leader's raft with a fatal storage error).
    for r in &running {
        use openraft::rt::WatchReceiver;
        let state = r.member().unwrap().raft.metrics().borrow_watched().running_state.clone();
        assert!(state.is_ok(), "a raft stopped: {state:?}");
    }
    let _ = leader;
    for r in running {
        r.stop().await.unwrap();
    }
}

/// Nodes of two shards with a remote AML scorer: a transfer crossing
/// shards, logged with its verdicts (SUBMIT_JUDGED), is answered POSTED
/// like any other; a request spanning both shards keeps its MULTI round
/// when its parts carry verdicts (each shard records the round, so a new
/// leader can finish it). A scoped channel's request keeps its scope there
/// too (SCOPED around the judged parts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_with_a_scorer_answer_posted_and_keep_their_rounds() {
    const CARDS_KEY: &str = "the-card-system-key-of-32-bytes-or-more";
    use harbour::client::Failover;
    use harbour::engine::shard_of;
    use harbour::protocol::kind;
    use harbour::protocol::records::{self, Account, STATE_POSTED, TransferResult};

    let scorer = common::scorer(Duration::ZERO, u64::MAX);
    let dir = tempfile::tempdir().unwrap();
    let ports = ports(3);
    // And a card system scoped to the accounts it opens (issue 16).
    let more = format!(
        "shards = 2\n[aml]\nscorer = \"{scorer}\"\nbudget_us = 200000\n\
         [[channels]]\nid = 4\nkey = \"{CARDS_KEY}\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\"]\nscope = \"own\"\n"
    );
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, &more, 65_536).await;
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut failover = Failover::new(addrs, 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let on = |shard: usize| (1024u64..).filter(move |&id| shard_of(id, 2) == shard);
    let (a, b) = (on(0).next().unwrap(), on(1).next().unwrap());
    let (a2, b2) = (on(0).nth(1).unwrap(), on(1).nth(1).unwrap());
    let accounts: Vec<Account> = [a, b, a2, b2]
        .iter()
        .map(|&account_id| Account { account_id, kind: 1, home_country: 344, ..Account::default() })
        .collect();
    failover.request(&mut client, kind::CREATE_ACCOUNTS, 4, &records::encode_all(&accounts)).await.unwrap();
    let deposits: Vec<_> =
        [a, b, a2, b2].iter().enumerate().map(|(i, &to)| common::deposit(i as u128 + 1, to, 10_000, 344)).collect();
    failover.request(&mut client, kind::SUBMIT_TRANSFERS, 4, &records::encode_all(&deposits)).await.unwrap();
    // One request, one transfer decided on each shard, each crossing to
    // the other: a round of two judged parts.
    let crossing = [common::transfer(10, a, b2, 300, 344), common::transfer(11, b, a2, 400, 344)];
    let answer =
        failover.request(&mut client, kind::SUBMIT_TRANSFERS, 2, &records::encode_all(&crossing)).await.unwrap();
    let results: Vec<TransferResult> = records::decode_all(&answer.body).collect();
    for r in &results {
        // ALREADY_EXISTS when a leader change under load made the client
        // resend it (contract §7: the applied transfer's answer).
        assert!(r.code == 0 || r.code == harbour::protocol::ResultCode::AlreadyExists.as_u16(), "{results:?}");
        assert_eq!(r.state, STATE_POSTED, "answered posted, not in flight: {results:?}");
    }
    let leader = leader_of(&running).await;
    let books = running[leader].member().unwrap().books.clone();
    let rounds = books.read_all(|e| e.multi().applied).await;
    assert!(rounds.iter().all(|&r| r >= 1), "both shards recorded the round: {rounds:?}");
    let balance = |account_id| harbour::protocol::records::BalanceKey { account_id, currency: 344 };
    let b2_balance = books.read(1, move |e| e.lookup_balance(&balance(b2)).balance).await.unwrap();
    assert_eq!(b2_balance, 10_300, "the credit landed on the other shard");

    // The scoped channel's request goes SCOPED through the proposers, with
    // its verdicts: another channel's customer is FORBIDDEN on its shard,
    // its own customer's crossing transfer posts.
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut cards = Failover::new(addrs, 4, CARDS_KEY.as_bytes());
    let mut card_client = cards.connect().await.unwrap();
    let c = on(1).nth(2).unwrap();
    let own = records::encode_all(&[Account { account_id: c, kind: 1, home_country: 344, ..Account::default() }]);
    cards.request(&mut card_client, kind::CREATE_ACCOUNTS, 1, &own).await.unwrap();
    failover
        .request(&mut client, kind::SUBMIT_TRANSFERS, 1, &records::encode_all(&[common::deposit(20, c, 500, 344)]))
        .await
        .unwrap();
    let mixed = [common::transfer(21, a, c, 100, 344), common::transfer(22, c, a, 100, 344)];
    let answer =
        cards.request(&mut card_client, kind::SUBMIT_TRANSFERS, 2, &records::encode_all(&mixed)).await.unwrap();
    let results: Vec<TransferResult> = records::decode_all(&answer.body).collect();
    let codes: Vec<u16> = results.iter().map(|r| r.code).collect();
    assert_eq!(codes, [harbour::protocol::ResultCode::Forbidden.as_u16(), 0], "{results:?}");
    assert_eq!(results[1].state, STATE_POSTED);
    let a_balance = books.read(0, move |e| e.lookup_balance(&balance(a)).balance).await.unwrap();
    assert_eq!(a_balance, 10_000 - 300 + 100, "only its own customer's transfer moved money");
    for r in running {
        r.stop().await.unwrap();
    }
}

/// Nodes of several shards dropped without `stop()` on the runtime's own
/// workers (as a connection task drops the last handle): the switch's
/// threads wait on that runtime, and dropping must not wedge it (it did:
/// both workers joined the lead watcher, whose timer they were to fire).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_of_several_shards_drop_without_wedging_their_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let ports = ports(3);
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, "shards = 2\n", 65_536).await;
    leader_of(&running).await;
    let mut drops = Vec::new();
    for r in running {
        drops.push(tokio::spawn(async move { drop(r) }));
    }
    for d in drops {
        tokio::time::timeout(Duration::from_secs(30), d).await.expect("dropped within 30 s").unwrap();
    }
}

/// The audit trail is replicated: an administrative act taken at the
/// leader is in the log with its channel, and every node writes it on its
/// own trail as it applies it (once, with two shards that both apply it),
/// and not again when the nodes restart and apply their log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_keeps_the_audit_trail() {
    use harbour::client::Failover;
    use harbour::protocol::kind;
    use harbour::protocol::records::{self, Account, FxRate};

    let dir = tempfile::tempdir().unwrap();
    let ports = ports(3);
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, "shards = 2\n", 65_536).await;
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    let mut failover = Failover::new(addrs.clone(), 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let rate = records::encode_all(&[FxRate { from: 840, to: 344, rate_e9: 7_800_000_000 }]);
    failover.request(&mut client, kind::SET_FX_RATES, 1, &rate).await.unwrap();
    let leader = leader_of(&running).await;
    let content: String = rate.iter().map(|b| format!("{b:02x}")).collect();
    let applied_lines = |node: usize| {
        let acts = harbour::audit::read(&dir.path().join(format!("node-{node}")), 0, u64::MAX).unwrap();
        acts.into_iter().filter(|a| a.kind == "SET_FX_RATES" && a.entry.is_some()).collect::<Vec<_>>()
    };
    // Once per entry that carries it (a request resent across an election
    // may be applied twice; rates are set alike), the same on every node.
    let entries = |node: usize| applied_lines(node).iter().map(|a| a.entry).collect::<Vec<_>>();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let alike = || !entries(1).is_empty() && entries(2) == entries(1) && entries(3) == entries(1);
    while !alike() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = entries(1);
    for node in 1..=3 {
        let lines = applied_lines(node);
        assert!(!lines.is_empty(), "node {node} wrote the act");
        assert!(lines.iter().all(|a| (a.channel, a.content.as_str()) == (1, content.as_str())), "node {node}");
        assert_eq!(entries(node), written, "node {node}: one line per entry, as the others");
    }
    let taken = harbour::audit::read(&dir.path().join(format!("node-{}", leader + 1)), 0, u64::MAX).unwrap();
    assert!(taken.iter().any(|a| a.entry.is_none() && !a.peer.is_empty()), "the leader wrote it when taken too");
    for r in running {
        r.stop().await.unwrap();
    }

    // Restarted, the nodes apply their logs again: nothing is written twice.
    let running = start_nodes_with(dir.path(), &ports, &[1, 2, 3], false, "shards = 2\n", 65_536).await;
    let mut failover = Failover::new(addrs, 1, KEY.as_bytes());
    let mut client = failover.connect().await.unwrap();
    let account =
        records::encode_all(&[Account { account_id: 5000, kind: 1, home_country: 344, ..Account::default() }]);
    failover.request(&mut client, kind::CREATE_ACCOUNTS, 1, &account).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for node in 1..=3 {
        assert_eq!(entries(node), written, "node {node} after the restart");
    }
    for r in running {
        r.stop().await.unwrap();
    }
}
