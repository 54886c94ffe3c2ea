//! The inline AML check alone: one outgoing transfer judged against its
//! account's AML state (levels 1, 2 and 3), over 1M accounts with history, so
//! every judgement is a cache miss on a cold profile as in production.
//!
//! Run: `cargo bench --bench aml`. Target (issue 5): p99.9 below 10 µs per
//! transfer for the built-in rules. Prints the latency distribution of
//! single judgements (each timed on its own), then criterion's mean.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use harbour::aml::{AmlConfig, AmlState, Outgoing};
use harbour::fx::RateTable;
use harbour::hash::mix64;
use harbour::money::CurrencyIndex;

#[path = "common/mod.rs"]
mod common;

const ACCOUNTS: usize = 1_000_000;
const HISTORY: u64 = 20;
const SAMPLES: usize = 2_000_000;
/// A day and a half apart on average, at HK office hours.
const START_MS: u64 = 1_788_192_000_000;

fn outgoing(r: u64, now_ms: u64) -> Outgoing {
    let country = [0u16, 0, 0, 608, 156, 408][(r % 6) as usize];
    Outgoing {
        now_ms,
        debit_currency: CurrencyIndex::HKD,
        debit_amount: 1_000 + (r >> 8) % 50_000,
        credit_account: 1024 + (r >> 24) % 64,
        credit_currency: CurrencyIndex::HKD,
        destination_country: country,
    }
}

/// 1M AML states, each with `HISTORY` transfers behind it.
fn profiles(config: &AmlConfig, rates: &RateTable) -> Vec<AmlState> {
    let mut profiles = vec![AmlState::default(); ACCOUNTS];
    for h in 0..HISTORY {
        let now = START_MS + h * 86_400_000;
        for (i, p) in profiles.iter_mut().enumerate() {
            black_box(p.judge(config, rates, &outgoing(mix64(i as u64 ^ (h << 40)), now)));
        }
    }
    profiles
}

fn main() {
    let config = AmlConfig::default();
    let rates = RateTable::default();
    let mut profiles = profiles(&config, &rates);
    let mut now = START_MS + HISTORY * 86_400_000;
    // Single judgements, each timed, at random accounts.
    let mut latencies = Vec::with_capacity(SAMPLES);
    for s in 0..SAMPLES as u64 {
        let r = mix64(s ^ 0xabcdef);
        let at = (r % ACCOUNTS as u64) as usize;
        now += 1 + r % 1_000;
        let o = outgoing(r >> 7, now);
        let start = Instant::now();
        black_box(profiles[at].judge(&config, &rates, black_box(&o)));
        latencies.push(start.elapsed());
    }
    latencies.sort_unstable();
    let p = |q: f64| common::percentile(&latencies, q);
    // The timer's own cost, to read the figures against.
    let mut timer = Vec::with_capacity(100_000);
    for _ in 0..100_000 {
        let start = Instant::now();
        timer.push(black_box(start).elapsed());
    }
    timer.sort_unstable();
    println!(
        "aml judge, {SAMPLES} single judgements over {ACCOUNTS} profiles: p50 {:?} p99 {:?} p99.9 {:?} p99.99 {:?} \
         max {:?} (an empty timed region: p50 {:?})",
        p(0.5),
        p(0.99),
        p(0.999),
        p(0.9999),
        latencies[latencies.len() - 1],
        common::percentile(&timer, 0.5)
    );
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("aml");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(4));
    let mut s = 0u64;
    group.bench_function("judge_random_account_1M", |b| {
        b.iter(|| {
            s += 1;
            let r = mix64(s);
            now += 1 + r % 1_000;
            let at = (r % ACCOUNTS as u64) as usize;
            black_box(profiles[at].judge(&config, &rates, &outgoing(r >> 7, now)))
        });
    });
    group.finish();
    c.final_summary();
}
