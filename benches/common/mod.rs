//! Shared by the benches: the raw fdatasync baseline every disk figure is
//! reported against, and percentiles.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Duration;

use harbour::engine::book::SETTLEMENT_IN;
use harbour::protocol::records::{ACCOUNT_KIND_CUSTOMER, Account, Transfer, encode_all};

/// A scratch directory under `target/`, on the same disk as `./data`.
pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir")
}

/// Latency of `write 64 B + fdatasync` on a fresh file, `n` times, sorted.
pub fn fdatasync_latencies(dir: &Path, n: usize) -> Vec<Duration> {
    let file = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(dir.join("raw")).unwrap();
    let buf = [7u8; 64];
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let start = std::time::Instant::now();
        file.write_all_at(&buf, (i * 64) as u64).unwrap();
        file.sync_data().unwrap();
        out.push(start.elapsed());
    }
    out.sort_unstable();
    out
}

/// The `p` quantile (0..=1) of sorted durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

/// A same-currency HKD transfer.
pub fn transfer(id: u128, debit: u64, credit: u64, amount: u64) -> Transfer {
    Transfer {
        transfer_id: id,
        debit_account: debit,
        credit_account: credit,
        amount,
        debit_currency: 344,
        credit_currency: 344,
        ..Transfer::default()
    }
}

/// A Hong Kong customer account.
pub fn customer(id: u64) -> Account {
    Account { account_id: id, kind: ACCOUNT_KIND_CUSTOMER, flags: 0, home_country: 344, customer_ref: id }
}

/// Encoded CREATE_ACCOUNTS and SUBMIT_TRANSFERS bodies that open `ids` and
/// fund each with HK$10,000,000.00 from SETTLEMENT_IN.
pub fn funding_bodies(ids: &[u64]) -> (Vec<u8>, Vec<u8>) {
    let accounts: Vec<Account> = ids.iter().map(|&id| customer(id)).collect();
    let deposits: Vec<Transfer> =
        ids.iter().map(|&id| transfer(u128::from(id) << 64, SETTLEMENT_IN, id, 1_000_000_000)).collect();
    (encode_all(&accounts), encode_all(&deposits))
}
