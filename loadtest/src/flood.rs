//! Overload: many connections each keeping as many large SUBMIT_TRANSFERS
//! requests in flight as the switch allows, far past what it can apply,
//! while the switch's memory is sampled from `/proc` (issue 15: memory
//! bounded by configuration under any load). See `docs/reliability.md`,
//! "Memory under overload".

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use harbour::client::ClientError;
use harbour::protocol::accounts::SETTLEMENT_IN;
use harbour::protocol::frame::ErrorCode;
use harbour::protocol::kind;
use harbour::protocol::records::{ACCOUNT_KIND_CUSTOMER, Account, Record, Transfer, encode_all};
use serde::Serialize;

use crate::run::Target;

const HKD: u16 = 344;

/// What to send.
#[derive(Clone, Debug)]
pub struct FloodConfig {
    pub connections: usize,
    /// Transfers per request.
    pub batch: usize,
    pub duration: Duration,
    pub accounts: u64,
    /// The switch's process, whose memory is sampled.
    pub pid: Option<u32>,
    /// How long to keep sampling after the load stops.
    pub after: Duration,
    /// Leave the accounts empty: every transfer is refused (logged, not
    /// stored), so the memory measured is the switch's buffers alone, not
    /// its growing books.
    pub unfunded: bool,
}

/// What happened.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FloodReport {
    pub connections_opened: u64,
    pub requests_sent: u64,
    pub requests_ok: u64,
    pub busy: u64,
    pub too_many_in_flight: u64,
    pub other_errors: u64,
    pub transfers_offered_per_s: f64,
    pub transfers_applied_per_s: f64,
    /// The switch's resident memory before the load, at its peak, at the
    /// end of the load, and `after` later (MiB, from /proc/PID/status).
    pub rss_before_mib: f64,
    pub rss_peak_mib: f64,
    pub rss_end_mib: f64,
    pub rss_after_mib: f64,
    pub seconds: f64,
}

#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    ok: AtomicU64,
    busy: AtomicU64,
    too_many: AtomicU64,
    other: AtomicU64,
    opened: AtomicU64,
}

/// Resident memory of `pid` in MiB (`VmRSS`).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 =
        status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// Runs the flood; the accounts are created and funded first.
pub async fn flood(target: &Target, c: &FloodConfig) -> Result<FloodReport, String> {
    let setup = target.connect().await?;
    let accounts: Vec<Account> = (0..c.accounts)
        .map(|i| Account {
            account_id: 1024 + i,
            kind: ACCOUNT_KIND_CUSTOMER,
            flags: 0,
            home_country: 344,
            customer_ref: i,
        })
        .collect();
    setup
        .batch::<_, harbour::protocol::records::RecordResult>(kind::CREATE_ACCOUNTS, &accounts)
        .await
        .map_err(|e| e.to_string())?;
    // Ids from 2^64 on are the flood's; below, the funding's.
    let funding: Vec<Transfer> = if c.unfunded {
        Vec::new()
    } else {
        (0..c.accounts).map(|i| transfer(u128::from(i + 1), SETTLEMENT_IN, 1024 + i, 1 << 40)).collect()
    };
    if !funding.is_empty() {
        setup
            .batch::<_, harbour::protocol::records::TransferResult>(kind::SUBMIT_TRANSFERS, &funding)
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(setup);

    let mut report = FloodReport::default();
    let sample = |r: &mut f64| {
        if let Some(m) = c.pid.and_then(rss_mib) {
            *r = m;
        }
    };
    sample(&mut report.rss_before_mib);
    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(c.connections);
    for conn in 0..c.connections as u64 {
        let (target, counts, stop, c) = (target.clone(), Arc::clone(&counts), Arc::clone(&stop), c.clone());
        tasks.push(tokio::spawn(async move { connection(&target, conn, &c, &counts, &stop).await }));
    }
    let mut peak = 0.0f64;
    while began.elapsed() < c.duration {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(m) = c.pid.and_then(rss_mib) {
            peak = peak.max(m);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let seconds = began.elapsed().as_secs_f64();
    sample(&mut report.rss_end_mib);
    for t in tasks {
        let _ = t.await;
    }
    let settle = Instant::now();
    while settle.elapsed() < c.after {
        tokio::time::sleep(Duration::from_millis(250)).await;
        if let Some(m) = c.pid.and_then(rss_mib) {
            peak = peak.max(m);
        }
    }
    sample(&mut report.rss_after_mib);
    report.rss_peak_mib = peak.max(report.rss_end_mib);
    report.connections_opened = counts.opened.load(Ordering::Relaxed);
    report.requests_sent = counts.sent.load(Ordering::Relaxed);
    report.requests_ok = counts.ok.load(Ordering::Relaxed);
    report.busy = counts.busy.load(Ordering::Relaxed);
    report.too_many_in_flight = counts.too_many.load(Ordering::Relaxed);
    report.other_errors = counts.other.load(Ordering::Relaxed);
    report.transfers_offered_per_s = (report.requests_sent * c.batch as u64) as f64 / seconds;
    report.transfers_applied_per_s = (report.requests_ok * c.batch as u64) as f64 / seconds;
    report.seconds = seconds;
    Ok(report)
}

fn transfer(id: u128, debit: u64, credit: u64, amount: u64) -> Transfer {
    Transfer {
        transfer_id: id,
        debit_account: debit,
        credit_account: credit,
        amount,
        debit_currency: HKD,
        credit_currency: HKD,
        destination_country: 0,
        flags: 0,
        fx_quote_id: 0,
        user_data: 0,
    }
}

/// One connection: keeps every place in flight taken with fresh requests
/// until `stop`, and counts the answers.
async fn connection(target: &Target, conn: u64, c: &FloodConfig, counts: &Arc<Counts>, stop: &AtomicBool) {
    let Ok(client) = target.connect().await else {
        counts.other.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counts.opened.fetch_add(1, Ordering::Relaxed);
    let batch = c.batch.min(client.limits().max_batch as usize).max(1);
    let items: Vec<Transfer> = (0..batch as u64)
        .map(|i| transfer(0, 1024 + (conn * 7 + i) % c.accounts, 1024 + (conn * 13 + i * 3 + 1) % c.accounts, 1))
        .collect();
    let mut body = encode_all(&items);
    let mut next: u128 = (u128::from(conn + 1) << 64) | 1;
    let mut waiting = tokio::task::JoinSet::new();
    while !stop.load(Ordering::Relaxed) {
        // Fresh ids in place: a resend would not be logged.
        for at in (0..body.len()).step_by(Transfer::SIZE) {
            body[at..at + 16].copy_from_slice(&next.to_le_bytes());
            next += 1;
        }
        match client.send(kind::SUBMIT_TRANSFERS, batch as u32, &body).await {
            Ok(in_flight) => {
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let answer = in_flight.detach();
                let counts = Arc::clone(counts);
                waiting.spawn(async move {
                    let counter = match answer.wait().await {
                        Ok(_) => &counts.ok,
                        Err(ClientError::Refused { code, .. }) if code == ErrorCode::Busy as u16 => &counts.busy,
                        Err(ClientError::Refused { code, .. }) if code == ErrorCode::TooManyInFlight as u16 => {
                            &counts.too_many
                        }
                        Err(_) => &counts.other,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                });
            }
            Err(_) => {
                counts.other.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        while waiting.try_join_next().is_some() {}
    }
    while waiting.join_next().await.is_some() {}
}
