//! A brief run of the failover harness (`harbour-loadtest failover`): three
//! real `harbour serve` processes on loopback under load; the leader is
//! killed with SIGKILL, a follower loses its data directory and catches up
//! by snapshot, and every node is restarted in turn. Every answered
//! transfer must be on the cluster, every balance exact, and the stopped
//! nodes must replay to the same index and state hash. The long run's
//! figures are in docs/benchmarks.md.

use std::time::Duration;

use harbour_loadtest::failover::{self, FailoverConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_every_answer_through_kills_wipes_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = FailoverConfig {
        harbour: env!("CARGO_BIN_EXE_harbour").into(),
        dir: dir.path().to_path_buf(),
        kills: 3,
        wipe_every: 2,
        rolling_every: 3,
        seed: 11,
        workers: 3,
        accounts: 32,
        between: Duration::from_millis(800),
    };
    let report = failover::run(&config).await.expect("the harness runs");
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.kills, 3);
    assert!(report.wipes >= 1 && report.rolling_restarts >= 1, "{report:?}");
    assert!(report.transfers_answered > 1_000, "traffic ran: {report:?}");
    assert_eq!(report.nodes.len(), 3);
    assert!(report.nodes[0].0 > 100, "entries were committed: {report:?}");
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
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let ports: Vec<(u16, u16)> = (0..3).map(|_| (free(), free())).collect();
    let mut nodes = String::new();
    for (i, (channel, peer)) in ports.iter().enumerate() {
        nodes.push_str(&format!(
            "[[cluster.nodes]]\nid = {}\nchannel = \"127.0.0.1:{channel}\"\npeer = \"127.0.0.1:{peer}\"\n",
            i + 1
        ));
    }
    let mut running = Vec::new();
    for (i, (channel, _)) in ports.iter().enumerate() {
        let mut config = harbour::config::Config::default();
        let text = format!(
            "accounts_capacity = 1024\ntransfers_capacity = 4096\nmetrics = \"off\"\n\
             [[channels]]\nid = 1\nkey = \"cluster-test-key-0123456789abcdefgh\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\"]\n\
             [cluster]\nnode_id = {}\n{nodes}",
            i + 1
        );
        config.merge_toml(&text).unwrap();
        config.data = dir.path().join(format!("node-{i}"));
        config.listen = format!("127.0.0.1:{channel}").parse().unwrap();
        running.push(harbour::server::start(&config).await.unwrap());
    }
    let key = b"cluster-test-key-0123456789abcdefgh";
    let addrs: Vec<std::net::SocketAddr> = running.iter().map(|r| r.addr).collect();
    // The client finds the leader by itself, through refusals.
    let mut failover = Failover::new(addrs.clone(), 1, key);
    let mut client = failover.connect().await.unwrap();
    let account = Account { account_id: 5000, kind: 1, home_country: 344, ..Account::default() };
    let body = harbour::protocol::records::encode_all(&[account]);
    let created = failover.request(&mut client, harbour::protocol::kind::CREATE_ACCOUNTS, 1, &body).await.unwrap();
    assert_eq!(created.count, 1);
    let leader = running.iter().position(|r| r.member().unwrap().raft.is_leader()).expect("a leader");
    let follower = (leader + 1) % 3;
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
    single.data = cluster.data.clone();
    let refused = harbour::server::start(&single).await.err().expect("a cluster node's data refused").to_string();
    assert!(refused.contains("cluster node's data"), "{refused}");
}
