//! One transfer, one connection, no batching: the round trip a channel sees
//! (TCP, session checks, shard queue, apply, log write, fdatasync, answer),
//! next to the fdatasync latency of the same disk measured in the same run.
//!
//! Run: `cargo bench --bench roundtrip`. Target (issue 3): p50 within 1.5x
//! of fdatasync p50.

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{customer, fdatasync_latencies, percentile, scratch_dir, transfer};
use harbour::alloc::HugePageAlloc;
use harbour::client::Client;
use harbour::config::Config;
use harbour::protocol::records::Account;
use harbour::shard::Backend;

#[global_allocator]
static ALLOCATOR: HugePageAlloc = HugePageAlloc;

const ROUND_TRIPS: usize = 3000;

async fn round_trips(backend: Backend) -> Vec<Duration> {
    let dir = scratch_dir();
    let mut config = Config {
        data: dir.path().to_path_buf(),
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics: None,
        backend,
        ..Config::default()
    };
    config.switch.engine.accounts_capacity = 1 << 16;
    config.switch.engine.transfers_capacity = 1 << 16;
    let running = harbour::server::start(&config).await.expect("starts");
    let client = Client::connect(running.addr, 1, b"hksw-dev-key").await.expect("connects");
    let accounts: Vec<Account> = (1024..1026).map(customer).collect();
    client.create_accounts(&accounts).await.unwrap();
    client.submit_transfers(&[transfer(1, 4, 1024, 1_000_000_000)]).await.unwrap();
    let mut pings = Vec::with_capacity(ROUND_TRIPS);
    for _ in 0..ROUND_TRIPS {
        let start = Instant::now();
        client.ping().await.unwrap();
        pings.push(start.elapsed());
    }
    pings.sort_unstable();
    println!(
        "  PING round trip (network and session only, no shard, no disk): p50 {:?}, p99 {:?}",
        percentile(&pings, 0.5),
        percentile(&pings, 0.99)
    );
    let mut out = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..ROUND_TRIPS as u128 {
        let t = transfer(10 + i, 1024, 1025, 1);
        let start = Instant::now();
        let r = client.submit_transfers(&[t]).await.unwrap();
        out.push(start.elapsed());
        assert_eq!(r[0].code, 0);
    }
    drop(client);
    running.stop().await.unwrap();
    out.sort_unstable();
    out
}

fn main() {
    let workers: usize = std::env::var("RT_WORKERS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build().unwrap();
    let dir = scratch_dir();
    let sync = fdatasync_latencies(dir.path(), 3000);
    let sync_p50 = percentile(&sync, 0.5);
    println!(
        "fdatasync (64 B write + fdatasync), {} runs: p50 {:?}, p99 {:?}",
        sync.len(),
        sync_p50,
        percentile(&sync, 0.99)
    );
    for (name, backend) in [("std", Backend::Std), ("io_uring", Backend::Uring)] {
        let rt = runtime.block_on(round_trips(backend));
        let (p50, p99) = (percentile(&rt, 0.5), percentile(&rt, 0.99));
        println!(
            "round trip [{name}] one transfer per request, one connection, {} requests: p50 {:?} ({:.2}x fdatasync p50), p99 {:?}, max {:?}",
            rt.len(),
            p50,
            p50.as_secs_f64() / sync_p50.as_secs_f64(),
            p99,
            rt[rt.len() - 1]
        );
    }
}
