//! Engine benchmarks, no I/O: transfers applied per second by one shard with
//! 1M accounts, and the memory each balance and stored transfer costs.
//!
//! Run: `cargo bench --bench engine`. Targets (issue 2): at least 5M
//! same-currency transfers/s per shard; at most 64 bytes per account-currency
//! balance and 96 bytes per stored transfer. Issue 5: with AML on, within
//! 1.5x of AML off (`same_currency_1M_accounts` against
//! `same_currency_aml_off_1M_accounts`).

use std::alloc::{GlobalAlloc, Layout};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{funding_bodies, transfer};
use criterion::{Criterion, Throughput};
use harbour::alloc::HugePageAlloc;
use harbour::aml::BehaviourModel;
use harbour::engine::{Engine, EngineConfig, multi};
use harbour::hash::mix64;
use harbour::protocol::kind;
use harbour::protocol::records::{
    CREDIT_AUTO_MICRO_CREDIT, CreditLine, Disburse, FxRate, STATE_POSTED, TRANSFER_AUTO_CREDIT, TRANSFER_PENDING,
    Transfer, TransferResult, encode_all,
};

#[path = "common/mod.rs"]
mod common;

/// Counts live heap bytes, to measure what the books cost; allocates as the
/// `harbour` binary does (huge-page advice on large blocks).
struct Counting;

static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged and only
// keeps a counter beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { HugePageAlloc.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { HugePageAlloc.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size, Ordering::Relaxed);
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { HugePageAlloc.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ACCOUNTS: u64 = 1_000_000;
const FIRST: u64 = 1024;
const BATCH: usize = 8189;
const HKD: u16 = 344;
const USD: u16 = 840;

fn funded_engine(transfers_capacity: usize, aml: bool) -> Engine {
    let aml = harbour::aml::AmlConfig { enabled: aml, ..harbour::aml::AmlConfig::default() };
    funded_engine_aml(transfers_capacity, aml)
}

/// The same, with these AML settings.
fn funded_engine_aml(transfers_capacity: usize, aml: harbour::aml::AmlConfig) -> Engine {
    engine_with(transfers_capacity, aml, true, false)
}

/// 1M accounts, funded or not, with or without a credit line each (HK$1M
/// limit, AUTO_MICRO_CREDIT up to HK$10,000, 10% APR).
fn engine_with(transfers_capacity: usize, aml: harbour::aml::AmlConfig, funded: bool, lines: bool) -> Engine {
    let mut config =
        EngineConfig { accounts_capacity: ACCOUNTS as usize + 8, transfers_capacity, aml, ..EngineConfig::default() };
    if lines {
        // Every AUTO_CREDIT transfer of the bench draws a loan.
        config.loans_capacity = 8_000_000;
    }
    let mut engine = Engine::new(config, 1);
    let mut out = Vec::new();
    for chunk in (FIRST..FIRST + ACCOUNTS).collect::<Vec<_>>().chunks(BATCH) {
        let (accounts, deposits) = funding_bodies(chunk);
        out.clear();
        engine.apply(kind::CREATE_ACCOUNTS, &accounts, 1, &mut out).unwrap();
        if funded {
            out.clear();
            engine.apply(kind::SUBMIT_TRANSFERS, &deposits, 1, &mut out).unwrap();
        }
        if lines {
            let lines: Vec<CreditLine> = chunk
                .iter()
                .map(|&account_id| CreditLine {
                    account_id,
                    currency: HKD,
                    flags: CREDIT_AUTO_MICRO_CREDIT,
                    apr_bps: 1_000,
                    limit: 100_000_000,
                    micro_credit_max: 1_000_000,
                })
                .collect();
            out.clear();
            engine.apply(kind::SET_CREDIT_LINES, &encode_all(&lines), 1, &mut out).unwrap();
        }
    }
    engine
}

/// A batch of disbursements of HK$1.00 to HK$100.00 to random accounts.
fn loans_batch(next: &mut u64) -> Vec<u8> {
    let ds: Vec<Disburse> = (0..BATCH)
        .map(|_| {
            *next += 1;
            let r = mix64(*next);
            let account_id = FIRST + r % ACCOUNTS;
            Disburse {
                loan_id: u128::from(*next),
                account_id,
                currency: HKD,
                term_days: 30,
                principal: 100 + r % 10_000,
            }
        })
        .collect();
    encode_all(&ds)
}

/// Gives each record of `body` a fresh id from `next` (in place), through
/// `id`, the record's id field.
fn renumber_with<R: harbour::protocol::records::Record>(body: &mut [u8], next: &mut u64, id: fn(&mut R) -> &mut u128) {
    for chunk in body.chunks_exact_mut(R::SIZE) {
        let mut r = R::decode(chunk);
        *next += 1;
        *id(&mut r) = u128::from(*next);
        r.encode(chunk);
    }
}

/// Gives each disbursement of `body` a fresh loan id from `next`.
fn renumber_loans(body: &mut [u8], next: &mut u64) {
    renumber_with::<Disburse>(body, next, |d| &mut d.loan_id);
}

/// A batch of transfers between uniformly random accounts, ids from `next`;
/// with `to` the credit side is in that currency (a conversion from HKD).
fn batch(next: &mut u64, flags: u16, to: u16) -> Vec<u8> {
    let ts: Vec<Transfer> = (0..BATCH)
        .map(|_| {
            *next += 1;
            let r = mix64(*next);
            let debit = FIRST + r % ACCOUNTS;
            let credit = FIRST + (r >> 32) % ACCOUNTS;
            let credit = if credit == debit { FIRST + (debit - FIRST + 1) % ACCOUNTS } else { credit };
            // Amounts of HK$1.00 to HK$100.00, so conversions never round to zero.
            Transfer { flags, credit_currency: to, ..transfer(u128::from(*next), debit, credit, 100 + r % 10_000) }
        })
        .collect();
    encode_all(&ts)
}

/// Gives each transfer of `body` a fresh id from `next` (in place).
fn renumber(body: &mut [u8], next: &mut u64) {
    renumber_with::<Transfer>(body, next, |t| &mut t.transfer_id);
}

/// Times `apply` over `iters` batches from `pool`, in turn; each batch is
/// first given fresh ids by `renumber`, outside the timed region.
fn time_pool(
    iters: u64,
    pool: &mut [Vec<u8>],
    turn: &mut usize,
    mut renumber: impl FnMut(&mut [u8]),
    mut apply: impl FnMut(&[u8]),
) -> Duration {
    let mut elapsed = Duration::ZERO;
    for _ in 0..iters {
        let len = pool.len();
        let body = &mut pool[*turn % len];
        *turn += 1;
        renumber(body);
        let start = Instant::now();
        apply(black_box(body));
        elapsed += start.elapsed();
    }
    elapsed
}

/// The "engine" group: batches of `BATCH` transfers, 20 samples of 4 s.
fn engine_group(c: &mut Criterion) -> criterion::BenchmarkGroup<'_, criterion::measurement::WallTime> {
    let mut group = c.benchmark_group("engine");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(BATCH as u64));
    group
}

fn bench_apply(c: &mut Criterion) {
    let mut group = engine_group(c);
    // AML judges every one of these (customer to customer); the first runs
    // without it, as the baseline of the 1.5x target.
    let cases = [
        ("same_currency_aml_off_1M_accounts", 0, HKD, false),
        ("same_currency_1M_accounts", 0, HKD, true),
        ("cross_currency_1M_accounts", 0, USD, true),
        ("pending_1M_accounts", TRANSFER_PENDING, HKD, true),
    ];
    for (name, flags, to, aml) in cases {
        let mut engine = funded_engine(40_000_000, aml);
        bench_transfers(&mut group, &mut engine, name, flags, to);
    }
    // Issue 20: what level 3's models 2 and 3 and the mule rule cost,
    // against model 1 alone (the AML before them) in the same run.
    let variants = [
        ("same_currency_aml_model_1_no_mule_1M_accounts", BehaviourModel::V1, false),
        ("same_currency_aml_model_2_no_mule_1M_accounts", BehaviourModel::V2, false),
        ("same_currency_aml_model_3_no_mule_1M_accounts", BehaviourModel::V3, false),
    ];
    for (name, model, mule) in variants {
        let aml = harbour::aml::AmlConfig { model, mule, threshold_q: 16, ..harbour::aml::AmlConfig::default() };
        let mut engine = funded_engine_aml(40_000_000, aml);
        bench_transfers(&mut group, &mut engine, name, 0, HKD);
    }
    // Issue 6: a disbursement, and an AUTO_CREDIT payment from an empty
    // account (every one draws a micro-loan for its whole amount), each
    // against `same_currency_1M_accounts` (target: within 2x).
    let mut engine = engine_with(40_000_000, harbour::aml::AmlConfig::default(), false, true);
    bench_transfers(&mut group, &mut engine, "auto_credit_1M_accounts", TRANSFER_AUTO_CREDIT, HKD);
    drop(engine);
    let mut engine = engine_with(1 << 20, harbour::aml::AmlConfig::default(), false, true);
    let mut next = 1u64 << 40;
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| loans_batch(&mut next)).collect();
    let mut turn = 0usize;
    let mut out = Vec::with_capacity(BATCH * 64);
    group.bench_function("disburse_1M_accounts", |b| {
        b.iter_custom(|iters| {
            time_pool(
                iters,
                &mut pool,
                &mut turn,
                |body| renumber_loans(body, &mut next),
                |body| {
                    out.clear();
                    engine.apply(kind::DISBURSE_LOANS, body, 1, &mut out).unwrap();
                },
            )
        });
    });
    group.finish();
}

fn bench_transfers(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    engine: &mut Engine,
    name: &str,
    flags: u16,
    to: u16,
) {
    let mut out = Vec::new();
    let rate = encode_all(&[FxRate { from: HKD, to: USD, rate_e9: 128_000_000 }]);
    engine.apply(kind::SET_FX_RATES, &rate, 1, &mut out).unwrap();
    // A pool of batches between random accounts; each use renumbers its
    // ids (outside the timed region) so every transfer is new.
    let mut next = 1u64;
    let mut pool: Vec<Vec<u8>> = (0..256).map(|_| batch(&mut next, flags, to)).collect();
    let mut turn = 0usize;
    let mut out = Vec::with_capacity(BATCH * 64);
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            time_pool(
                iters,
                &mut pool,
                &mut turn,
                |body| renumber(body, &mut next),
                |body| {
                    out.clear();
                    engine.apply(kind::SUBMIT_TRANSFERS, body, 1, &mut out).unwrap();
                },
            )
        });
    });
}

/// Live heap bytes per balance and per stored transfer, measured, not
/// computed from struct sizes.
fn report_memory() {
    // Sized as an operator would: capacities for what the shard will hold.
    const STORED: usize = 3_000_000;
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut engine = funded_engine(STORED, true);
    let with_accounts = LIVE_BYTES.load(Ordering::Relaxed);
    let books = engine.book().allocated_bytes();
    let mut next = 1u64;
    let mut out = Vec::new();
    while engine.transfers().len() + BATCH <= STORED {
        out.clear();
        engine.apply(kind::SUBMIT_TRANSFERS, &batch(&mut next, 0, HKD), 1, &mut out).unwrap();
    }
    let stored = engine.transfers().len();
    let store_bytes = engine.transfers().allocated_bytes();
    let heap = with_accounts - before;
    println!(
        "memory: {:.1} bytes per account with its balance ({} accounts, one currency each; heap {:.1} MiB with the store)",
        books as f64 / ACCOUNTS as f64,
        ACCOUNTS,
        heap as f64 / (1 << 20) as f64
    );
    println!(
        "memory: {:.1} bytes per account for its AML state (day total, behaviour profile, mule rule's inbound state)",
        engine.profiles_allocated_bytes() as f64 / ACCOUNTS as f64
    );
    println!(
        "memory: {:.1} bytes per stored transfer ({stored} stored, store sized for {STORED}; index load {:.2})",
        store_bytes as f64 / stored as f64,
        stored as f64 / (engine.transfers().index_slots() as f64)
    );
    // What a snapshot costs the shard thread: copying the state (the helper
    // thread then encodes and writes the copy).
    let start = Instant::now();
    let mut copy = black_box(engine.clone());
    let first = start.elapsed();
    let start = Instant::now();
    copy.clone_from(black_box(&engine));
    println!(
        "snapshot: copying {} accounts and {stored} transfers stops the shard for {:?} (first), {:?} (later, reusing the copy)",
        ACCOUNTS,
        first,
        start.elapsed()
    );
    drop(copy);
    // Encoding, on the helper thread (or inline with snapshot_in_background off).
    let start = Instant::now();
    let mut state = Vec::new();
    engine.encode_state(&mut state);
    println!(
        "snapshot: encoding {} accounts and {stored} transfers took {:?} ({:.0} MiB)",
        ACCOUNTS,
        start.elapsed(),
        state.len() as f64 / (1 << 20) as f64
    );
}

/// The conversion alone: direct and through HKD.
fn bench_convert(c: &mut Criterion) {
    use harbour::fx::{Rate, Side, convert};
    use harbour::money::CurrencyIndex;
    let (hkd, usd, cny) = (CurrencyIndex::HKD, CurrencyIndex::of(USD).unwrap(), CurrencyIndex::of(156).unwrap());
    let mut group = c.benchmark_group("fx");
    group.throughput(Throughput::Elements(1));
    let mut amount = 1_000u64;
    group.bench_function("convert_direct", |b| {
        b.iter(|| {
            amount = amount.wrapping_mul(6364136223846793005).wrapping_add(1) % 1_000_000_000 + 100;
            black_box(convert(black_box(amount), Side::Debit, hkd, usd, Rate::direct(128_000_000)))
        });
    });
    group.bench_function("convert_cross_credit_side", |b| {
        b.iter(|| {
            amount = amount.wrapping_mul(6364136223846793005).wrapping_add(1) % 1_000_000_000 + 100;
            black_box(convert(black_box(amount), Side::Credit, usd, cny, Rate::cross(7_780_000_000, 923_456_789)))
        });
    });
    group.finish();
}

/// Delivers link messages both ways until neither shard has anything
/// unacknowledged: what the two shard threads do, without the queues.
fn settle_links(shards: &mut [Engine], sent: &mut [u64; 2], body: &mut Vec<u8>, out: &mut Vec<u8>) {
    loop {
        for from in 0..2 {
            let to = 1 - from;
            let (ack, entries) = shards[from].links().message(to as u16, sent[from]);
            if let Some(last) = entries.last() {
                sent[from] = last.seq;
            }
            body.clear();
            harbour::engine::links::encode_link_in(from as u16, ack, &entries, body);
            out.clear();
            shards[to].apply(kind::LINK_IN, body, 1, out).unwrap();
        }
        if shards.iter().all(|s| s.links().unacked() == 0) {
            return;
        }
    }
}

/// Issue 8: what a cross-shard transfer costs in the engines, against a
/// same-shard one (`same_currency_1M_accounts`): two shards of 500k
/// accounts each, every transfer from a customer of shard 0 to one of
/// shard 1, timed from the decision on shard 0 to its posting after shard
/// 1's acknowledgement (both shards' work, logs and queues left out).
fn bench_cross_shard(c: &mut Criterion) {
    let mut group = engine_group(c);
    let mut shards: Vec<Engine> = (0..2u16)
        .map(|shard| {
            let config = EngineConfig {
                accounts_capacity: ACCOUNTS as usize + 8,
                transfers_capacity: 8_000_000,
                shard,
                shards: 2,
                ..EngineConfig::default()
            };
            Engine::new(config, 1)
        })
        .collect();
    let mut out = Vec::new();
    let ids: Vec<u64> = (FIRST..FIRST + ACCOUNTS).collect();
    let mut owned: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
    for &id in &ids {
        owned[harbour::engine::shard_of(id, 2)].push(id);
    }
    let (mut sent, mut body) = ([0u64; 2], Vec::new());
    for (s, mine) in owned.iter().enumerate() {
        for chunk in mine.chunks(BATCH) {
            let (accounts, deposits) = funding_bodies(chunk);
            shards[s].apply(kind::CREATE_ACCOUNTS, &accounts, 1, &mut out).unwrap();
            shards[s].apply(kind::SUBMIT_TRANSFERS, &deposits, 1, &mut out).unwrap();
            // The other shard learns of the accounts.
            settle_links(&mut shards, &mut sent, &mut body, &mut out);
        }
    }
    let mut next = 1u64 << 40;
    let make = |next: &mut u64| -> Vec<u8> {
        let ts: Vec<Transfer> = (0..BATCH)
            .map(|_| {
                *next += 1;
                let r = mix64(*next);
                let debit = owned[0][(r % owned[0].len() as u64) as usize];
                let credit = owned[1][((r >> 32) % owned[1].len() as u64) as usize];
                transfer(u128::from(*next), debit, credit, 100 + r % 10_000)
            })
            .collect();
        encode_all(&ts)
    };
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| make(&mut next)).collect();
    let mut turn = 0usize;
    group.bench_function("cross_shard_1M_accounts", |b| {
        b.iter_custom(|iters| {
            time_pool(
                iters,
                &mut pool,
                &mut turn,
                |batch| renumber(batch, &mut next),
                |batch| {
                    out.clear();
                    shards[0].apply(kind::SUBMIT_TRANSFERS, batch, 1, &mut out).unwrap();
                    settle_links(&mut shards, &mut sent, &mut body, &mut out);
                },
            )
        });
    });
    group.finish();
}

/// Issue 13: what the router's claims cost per transfer with 4 shards:
/// routing a batch of new transfers between random accounts (a claim per
/// id, the batch split into MULTI records for the shards it spans) and
/// settling the claims from the shards' answers, against a table that
/// already holds 4M stored ids and is sized, as the switch sizes it, for
/// its shards' transfer capacity. Compare with `same_currency_1M_accounts`
/// (one shard's engine applying the same batch).
fn bench_claims(c: &mut Criterion) {
    use harbour::router::{Routed, Router};
    let mut group = engine_group(c);
    let shards = 4;
    let mut router = Router::new(shards, 1);
    // Sized as `harbour serve` sizes it: 4 shards of 4M transfers.
    router.reserve(shards * (1 << 22));
    for s in 0..shards {
        let stored = (0..1_000_000u128).map(|i| (1u128 << 100) + i * shards as u128 + s as u128);
        router.restore_stored(s, stored, std::iter::empty());
    }
    // Every record answered OK and POSTED.
    let posted = TransferResult { code: 0, state: STATE_POSTED, ..TransferResult::default() };
    let answers = encode_all(&vec![posted; BATCH]);
    let mut next = 1u64;
    let mut pool: Vec<Vec<u8>> = (0..64).map(|_| batch(&mut next, 0, HKD)).collect();
    let mut turn = 0usize;
    group.bench_function("claims_route_settle_4_shards", |b| {
        b.iter_custom(|iters| {
            time_pool(
                iters,
                &mut pool,
                &mut turn,
                |body| renumber(body, &mut next),
                |body| {
                    let Ok(Routed::Plan { parts, .. }) = router.route(kind::SUBMIT_TRANSFERS, body, 1, 30_000, None)
                    else {
                        panic!("one batch at a time is never contended")
                    };
                    for part in parts {
                        let records = multi::decode(&part.body).map_or(part.body.len(), |m| m.mine.len()) / 64;
                        router.settle(part.claimed.outcomes(Some(&answers[..records * 64])));
                    }
                },
            )
        });
    });
    group.finish();
}

fn main() {
    // `ENGINE_BENCH_SKIP_MEMORY=1` skips the memory report (for profiling
    // one bench with `--profile-time`).
    if std::env::var_os("ENGINE_BENCH_SKIP_MEMORY").is_none() {
        report_memory();
    }
    let mut c = Criterion::default().configure_from_args();
    bench_convert(&mut c);
    bench_apply(&mut c);
    bench_cross_shard(&mut c);
    bench_claims(&mut c);
    c.final_summary();
}
