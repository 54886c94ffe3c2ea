//! Log benchmarks on this machine's disk: the raw fdatasync rate, the log's
//! group commit, and durable transfers through a shard (engine + log), with
//! both file backends. Every figure is printed next to the fdatasync latency
//! of the same disk measured in the same run, since these machines are
//! noisy.
//!
//! Run: `cargo bench --bench wal`. Target (issue 2): at least 1M durable
//! transfers per second through the log with group commit.

use std::fs::OpenOptions;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{fdatasync_latencies, funding_bodies, percentile, scratch_dir, transfer};
use criterion::{Criterion, Throughput};
use harbour::alloc::HugePageAlloc;
use harbour::clock::Clock;
use harbour::engine::EngineConfig;
use harbour::hash::mix64;
use harbour::protocol::kind;
use harbour::protocol::records::{Transfer, encode_all};
use harbour::shard::{Shard, SwitchConfig};
use harbour::wal::storage::{FileStorage, Storage, UringStorage};
use harbour::wal::{Wal, WalConfig};

#[path = "common/mod.rs"]
mod common;

#[global_allocator]
static ALLOCATOR: HugePageAlloc = HugePageAlloc;

const RECORD: usize = 64;
const GROUP: usize = 1000;
const ACCOUNTS: u64 = 100_000;
const TRANSFERS_PER_REQUEST: usize = 1000;
const REQUESTS_PER_GROUP: usize = 8;

fn storage(dir: &Path, uring: bool) -> Arc<dyn Storage> {
    if uring { Arc::new(UringStorage::new(dir).unwrap()) } else { Arc::new(FileStorage::new(dir).unwrap()) }
}

fn open_wal(storage: Arc<dyn Storage>) -> Wal {
    Wal::open(storage, WalConfig::default(), |_, _| Ok(()), |_| Ok(())).unwrap().0
}

/// Time to append `GROUP` records of 64 bytes and commit them.
fn group_commits(wal: &mut Wal, n: usize) -> Vec<Duration> {
    let body = [3u8; RECORD - harbour::wal::RECORD_HEADER_SIZE];
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        for _ in 0..GROUP {
            wal.append(kind::SUBMIT_TRANSFERS, 1, &body).unwrap();
        }
        wal.commit().unwrap();
        out.push(start.elapsed());
    }
    out.sort_unstable();
    out
}

/// A shard on real files with funded accounts.
fn funded_shard(storage: Arc<dyn Storage>, transfers: usize) -> Shard {
    let config = SwitchConfig {
        clock: Clock::System,
        snapshot_log_bytes: u64::MAX,
        engine: EngineConfig {
            accounts_capacity: ACCOUNTS as usize + 8,
            transfers_capacity: transfers + ACCOUNTS as usize,
            ..EngineConfig::default()
        },
        ..SwitchConfig::default()
    };
    let (mut shard, _) = Shard::open(storage, &config).unwrap();
    let ids: Vec<u64> = (1024..1024 + ACCOUNTS).collect();
    for chunk in ids.chunks(8000) {
        let (a, d) = funding_bodies(chunk);
        shard.process(&[(kind::CREATE_ACCOUNTS, &a), (kind::SUBMIT_TRANSFERS, &d)]).1.unwrap();
    }
    shard
}

/// Groups of `REQUESTS_PER_GROUP` requests of `TRANSFERS_PER_REQUEST`
/// random transfers, ids from `next`.
fn transfer_groups(next: &mut u64, groups: usize) -> Vec<Vec<Vec<u8>>> {
    (0..groups)
        .map(|_| {
            (0..REQUESTS_PER_GROUP)
                .map(|_| {
                    let ts: Vec<Transfer> = (0..TRANSFERS_PER_REQUEST)
                        .map(|_| {
                            *next += 1;
                            let r = mix64(*next);
                            let debit = 1024 + r % ACCOUNTS;
                            let credit = 1024 + (debit - 1024 + 1 + (r >> 32) % (ACCOUNTS - 1)) % ACCOUNTS;
                            transfer(u128::from(*next), debit, credit, 1 + r % 100)
                        })
                        .collect();
                    encode_all(&ts)
                })
                .collect()
        })
        .collect()
}

/// Seconds to apply and durably commit every group through a shard.
fn durable_run(shard: &mut Shard, groups: &[Vec<Vec<u8>>]) -> Duration {
    let start = Instant::now();
    for group in groups {
        let view: Vec<(u16, &[u8])> = group.iter().map(|b| (kind::SUBMIT_TRANSFERS, b.as_slice())).collect();
        let (replies, result) = shard.process(&view);
        result.unwrap();
        black_box(replies);
    }
    start.elapsed()
}

/// The table the docs quote: every figure beside fdatasync's in this run.
fn report() {
    let dir = scratch_dir();
    let sync = fdatasync_latencies(dir.path(), 2000);
    let sync_p50 = percentile(&sync, 0.5);
    println!("fdatasync (64 B write + fdatasync), 2000 runs: p50 {:?}, p99 {:?}", sync_p50, percentile(&sync, 0.99));
    println!("  raw rate: {:.0} syncs/s at p50", 1.0 / sync_p50.as_secs_f64());
    for (name, uring) in [("std", false), ("io_uring", true)] {
        let dir = scratch_dir();
        let mut wal = open_wal(storage(dir.path(), uring));
        let commits = group_commits(&mut wal, 500);
        let p50 = percentile(&commits, 0.5);
        println!(
            "log [{name}] group commit of {GROUP} x 64 B records: p50 {:?} ({:.2}x fdatasync p50), {:.2}M records/s",
            p50,
            p50.as_secs_f64() / sync_p50.as_secs_f64(),
            GROUP as f64 / p50.as_secs_f64() / 1e6
        );
        let dir = scratch_dir();
        let mut next = 1u64;
        let groups = transfer_groups(&mut next, 250);
        let mut shard = funded_shard(storage(dir.path(), uring), 250 * REQUESTS_PER_GROUP * TRANSFERS_PER_REQUEST);
        let took = durable_run(&mut shard, &groups);
        let n = groups.len() * REQUESTS_PER_GROUP * TRANSFERS_PER_REQUEST;
        let per_group = took / groups.len() as u32;
        println!(
            "shard [{name}] durable transfers ({REQUESTS_PER_GROUP} requests x {TRANSFERS_PER_REQUEST} per sync): \
             {:.2}M transfers/s, {:?} per group ({:.1}x fdatasync p50)",
            n as f64 / took.as_secs_f64() / 1e6,
            per_group,
            per_group.as_secs_f64() / sync_p50.as_secs_f64()
        );
    }
}

fn bench_criterion(c: &mut Criterion) {
    let mut group = c.benchmark_group("wal");
    group.sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4));
    let dir = scratch_dir();
    group.throughput(Throughput::Elements(1));
    group.bench_function("fdatasync_64B", |b| {
        let file = OpenOptions::new().create(true).truncate(true).write(true).open(dir.path().join("c")).unwrap();
        b.iter(|| {
            file.write_all_at(&[1u8; RECORD], 0).unwrap();
            file.sync_data().unwrap();
        });
    });
    group.throughput(Throughput::Elements(GROUP as u64));
    for (name, uring) in [("group_commit_1000x64B_std", false), ("group_commit_1000x64B_uring", true)] {
        let dir = scratch_dir();
        let mut wal = open_wal(storage(dir.path(), uring));
        group.bench_function(name, |b| b.iter_custom(|iters| group_commits(&mut wal, iters as usize).iter().sum()));
    }
    group.throughput(Throughput::Elements((REQUESTS_PER_GROUP * TRANSFERS_PER_REQUEST) as u64));
    let dir = scratch_dir();
    let mut shard = funded_shard(storage(dir.path(), false), 20_000_000);
    let mut next = 1u64 << 40;
    group.bench_function("shard_durable_8x1000_transfers_std", |b| {
        b.iter_custom(|iters| {
            let groups = transfer_groups(&mut next, iters as usize);
            durable_run(&mut shard, &groups)
        });
    });
    group.finish();
}

fn main() {
    report();
    let mut c = Criterion::default().configure_from_args();
    bench_criterion(&mut c);
    c.final_summary();
}
