//! `harbour serve --shards 2` killed with SIGKILL under load that crosses
//! shards, restarted, killed again: every answered request is there in
//! full, and every unanswered one is there entirely or not at all
//! (contract §6). Issue 13 found 17 of 208 unanswered requests half
//! applied this way, before requests spanning shards became MULTI rounds.

mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{HKD, account, deposit, transfer};
use harbour::client::Client;
use harbour::protocol::ResultCode;
use harbour::protocol::records::Transfer;
use harbour::shard::shard_of;

const BIN: &str = env!("CARGO_BIN_EXE_harbour");
const SHARDS: usize = 2;
/// Chains per request; each is four transfers (below).
const CHAINS: u64 = 4;
const CONNECTIONS: usize = 4;

fn serve(data: &std::path::Path, config: &std::path::Path) -> (Child, SocketAddr) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--metrics", "off"])
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("harbour runs");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("a line");
    let addr = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected: {line:?}"));
    (child, addr.parse().expect("an address"))
}

/// The customers, split by shard.
fn customers() -> [Vec<u64>; SHARDS] {
    let mut by_shard: [Vec<u64>; SHARDS] = Default::default();
    for id in 1024..1024 + 64 {
        by_shard[shard_of(id, SHARDS)].push(id);
    }
    by_shard
}

/// Request `r`: `CHAINS` chains of a deposit into a customer on shard 0,
/// a deposit into one on shard 1 (so the request is decided on both
/// shards), a transfer of the first deposit to a customer on shard 1, and
/// on to another customer on shard 0. The last transfer debits a balance
/// credited across shards earlier in the same request, so the request
/// goes in two rounds; every transfer is funded by its own chain, so each
/// is accepted whatever else runs beside it (AML level 3 is off).
fn request(r: u64, by_shard: &[Vec<u64>; SHARDS]) -> Vec<Transfer> {
    let pick = |s: usize, i: u64| by_shard[s][((r * 7 + i * 13) % by_shard[s].len() as u64) as usize];
    let mut batch = Vec::new();
    for c in 0..CHAINS {
        let id = u128::from((r * CHAINS + c) * 4 + 1);
        let (a, b, a2) = (pick(0, c), pick(1, c), pick(0, c + 1));
        let amount = 100 + r % 50;
        batch.push(deposit(id, a, amount, HKD));
        batch.push(deposit(id + 1, pick(1, c + 1), amount, HKD));
        batch.push(transfer(id + 2, a, b, amount, HKD));
        batch.push(transfer(id + 3, b, a2, amount, HKD));
    }
    batch
}

/// Sends requests from `CONNECTIONS` connections until `stop`; returns
/// every request sent, with whether it was answered (all OK), and counts
/// the answered ones in `answered` as they come.
async fn load(addr: SocketAddr, first: u64, stop: Arc<AtomicBool>, answered: Arc<AtomicUsize>) -> Vec<(u64, bool)> {
    let by_shard = Arc::new(customers());
    let mut tasks = Vec::new();
    for conn in 0..CONNECTIONS as u64 {
        let (stop, by_shard, answered) = (Arc::clone(&stop), Arc::clone(&by_shard), Arc::clone(&answered));
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            let Ok(c) = Client::connect(addr, 1, b"hksw-dev-key").await else { return sent };
            let c = c.with_timeout(Duration::from_secs(30));
            let mut r = first + conn;
            while !stop.load(Ordering::Relaxed) {
                let batch = request(r, &by_shard);
                sent.push((r, false));
                match c.submit_transfers(&batch).await {
                    Ok(results) => {
                        for (t, res) in batch.iter().zip(&results) {
                            assert_eq!(res.code, 0, "transfer {} of request {r}: {res:?}", t.transfer_id);
                        }
                        sent.last_mut().expect("just pushed").1 = true;
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    // The switch was killed.
                    Err(_) => break,
                }
                r += CONNECTIONS as u64;
            }
            sent
        }));
    }
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.expect("a load task"));
    }
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_switch_keeps_every_request_spanning_shards_whole() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("harbour.toml");
    std::fs::write(
        &config,
        format!(
            "shards = {SHARDS}\naccounts_capacity = 1024\ntransfers_capacity = 65536\npending_capacity = 1024\n\
             [aml]\nbehaviour = false\n[wal]\nsegment_bytes_max = 1048576\n\
             [[channels]]\nid = 1\nkey = \"hksw-dev-key\"\nroles = [\"ACCOUNTS\", \"PAYMENTS\"]\n"
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let by_shard = customers();
    assert!(by_shard.iter().all(|s| s.len() >= 8), "both shards have customers");

    let (mut child, mut addr) = serve(&data, &config);
    let c = Client::connect(addr, 1, b"hksw-dev-key").await.unwrap();
    let accounts: Vec<_> = by_shard.iter().flatten().map(|&id| account(id)).collect();
    assert!(c.create_accounts(&accounts).await.unwrap().iter().all(|r| r.code == 0));
    drop(c);

    let mut sent = Vec::new();
    let mut first = 0;
    for cycle in 0..3 {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(AtomicUsize::new(0));
        let loader = tokio::spawn(load(addr, first, Arc::clone(&stop), Arc::clone(&answered)));
        // Kill once some requests were answered, with more in flight.
        let enough = 30 * (cycle + 1);
        for _ in 0..3000 {
            if answered.load(Ordering::Relaxed) >= enough {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("killed");
        stop.store(true, Ordering::Relaxed);
        let this = loader.await.expect("the load");
        assert!(this.iter().any(|&(_, answered)| answered), "cycle {cycle}: the load ran");
        first = this.iter().map(|&(r, _)| r).max().expect("sent") + 1;
        first += CONNECTIONS as u64 - first % CONNECTIONS as u64;
        sent.extend(this);

        let (next, next_addr) = serve(&data, &config);
        (child, addr) = (next, next_addr);
        let c = Client::connect(addr, 1, b"hksw-dev-key").await.unwrap();
        let (mut answered, mut whole, mut none) = (0, 0, 0);
        for &(r, was_answered) in &sent {
            let ids: Vec<u128> = request(r, &by_shard).iter().map(|t| t.transfer_id).collect();
            let found = c.lookup_transfers(&ids).await.unwrap();
            let stored = found.iter().filter(|f| f.code == 0).count();
            for f in &found {
                assert!(
                    f.code == 0 || f.code == ResultCode::TransferNotFound.as_u16(),
                    "request {r}: lookup answered {f:?}"
                );
            }
            if was_answered {
                assert_eq!(stored, ids.len(), "request {r} was answered, so every transfer of it is stored");
                answered += 1;
            } else if stored == ids.len() {
                whole += 1;
            } else {
                assert_eq!(stored, 0, "request {r} unanswered: {stored} of {} transfers stored", ids.len());
                none += 1;
            }
        }
        eprintln!("after kill {cycle}: {answered} answered, unanswered {whole} applied whole, {none} not at all");
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("killed");
}
