//! What a run prints and writes: a progress line every second, a final
//! table, an `.hgrm` percentile file (the format HdrHistogram's plotters
//! read) and a JSON summary.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Result codes and request failures seen.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    /// Per-record result codes.
    pub codes: BTreeMap<u16, u64>,
    /// Whole requests that failed (an ERROR frame such as BUSY, a timeout).
    pub errors: BTreeMap<String, u64>,
    /// Submitted transfers by what became of them (`Transfers`).
    pub transfers: Transfers,
}

/// What became of submitted transfers: posted, held (by AML, or PENDING
/// by the client's own flag), or refused (a per-record code).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Transfers {
    pub posted: u64,
    /// Held by AML (FACE_REVIEW, SMS_OTP, COOLING_OFF, MANUAL_REVIEW).
    pub held: u64,
    /// PENDING by the client's own flag (CLIENT only).
    pub pending: u64,
    pub voided: u64,
    pub refused: u64,
}

impl Outcome {
    /// Counts the per-record codes of an answer body of `kind`, and what
    /// became of submitted transfers.
    pub fn count_codes(&mut self, kind: u16, body: &[u8]) {
        use harbour::protocol::records::{self, Record, TransferResult};
        let Some(codes) = harbour::protocol::kinds::result_codes(kind, body) else { return };
        for code in codes {
            *self.codes.entry(code).or_default() += 1;
        }
        if kind != harbour::protocol::kind::SUBMIT_TRANSFERS {
            return;
        }
        for r in body.chunks_exact(TransferResult::SIZE).map(TransferResult::decode) {
            let t = &mut self.transfers;
            match r.state {
                _ if r.code != 0 && r.code != harbour::protocol::ResultCode::AlreadyExists.as_u16() => t.refused += 1,
                records::STATE_POSTED => t.posted += 1,
                records::STATE_PENDING if r.holds == records::Holds::CLIENT.bits() => t.pending += 1,
                records::STATE_PENDING => t.held += 1,
                records::STATE_VOIDED => t.voided += 1,
                _ => t.refused += 1,
            }
        }
    }
}

/// What the collectors share.
pub struct Shared {
    pub histogram: Mutex<Histogram<u64>>,
    /// Latency per second of the run (for the plot).
    pub per_second: Mutex<BTreeMap<u64, Histogram<u64>>>,
    /// When the timed traffic started (the plot's time zero).
    pub traffic_started: Mutex<Option<Instant>>,
    pub outcome: Mutex<Outcome>,
    pub requests: AtomicU64,
    pub records: AtomicU64,
    pub errors: AtomicU64,
    /// Requests sent again to a new leader after a failover (clusters).
    pub resends: AtomicU64,
    /// How late each paced request was sent after its intended time, in
    /// ns: the tester's own share of the latency.
    pub sent_late: Mutex<Histogram<u64>>,
}

impl Shared {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("bounds")),
            per_second: Mutex::new(BTreeMap::new()),
            traffic_started: Mutex::new(None),
            outcome: Mutex::new(Outcome::default()),
            requests: AtomicU64::new(0),
            records: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            resends: AtomicU64::new(0),
            sent_late: Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds")),
        })
    }

    /// Notes how late a paced request went out.
    pub(crate) fn sent_late(&self, late: Duration) {
        let ns = u64::try_from(late.as_nanos()).unwrap_or(u64::MAX).clamp(1, 60_000_000_000);
        self.sent_late.lock().expect("not poisoned").record(ns).expect("within bounds");
    }

    /// Books one answer (or failure) and its latency in microseconds. Setup
    /// requests (`timed` false) count their codes but not toward the
    /// throughput or the latency, which are the traffic's.
    pub(crate) fn book(
        &self,
        kind: u16,
        result: Result<harbour::client::Response, String>,
        latency: Duration,
        timed: bool,
    ) {
        if timed {
            self.requests.fetch_add(1, Ordering::Relaxed);
        }
        match result {
            Ok(answer) => {
                if timed {
                    self.records.fetch_add(u64::from(answer.count), Ordering::Relaxed);
                }
                self.outcome.lock().expect("not poisoned").count_codes(kind, &answer.body);
                if timed {
                    let us = latency.as_micros().clamp(1, 3_600_000_000) as u64;
                    let _ = self.histogram.lock().expect("not poisoned").record(us);
                    let second =
                        self.traffic_started.lock().expect("not poisoned").map_or(0, |t| t.elapsed().as_secs());
                    let mut per_second = self.per_second.lock().expect("not poisoned");
                    let h = per_second
                        .entry(second)
                        .or_insert_with(|| Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("bounds"));
                    let _ = h.record(us);
                }
            }
            Err(e) => {
                self.errors.fetch_add(1, Ordering::Relaxed);
                *self.outcome.lock().expect("not poisoned").errors.entry(e).or_default() += 1;
            }
        }
    }
}

/// Result codes by count, as `(name, count)`, largest first.
#[must_use]
pub fn codes_by_count(codes: &BTreeMap<u16, u64>) -> Vec<(String, u64)> {
    let mut all: Vec<(String, u64)> = codes
        .iter()
        .map(|(c, n)| {
            let name = harbour::protocol::ResultCode::from_u16(*c)
                .map_or_else(|| format!("code {c}"), |r| r.name().to_string());
            (name, *n)
        })
        .collect();
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all
}

/// Prints a line a second: records, records/s over the last second,
/// refused records (per-record codes other than OK and ALREADY_EXISTS) and
/// failed requests (ERROR frames, timeouts), p99 so far. Runs until
/// aborted.
pub async fn progress(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut last = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let records = shared.records.load(Ordering::Relaxed);
        let p99 = shared.histogram.lock().expect("not poisoned").value_at_quantile(0.99);
        let (refused, held) = {
            let outcome = shared.outcome.lock().expect("not poisoned");
            let refused: u64 = outcome.codes.iter().filter(|(c, _)| **c > 1).map(|(_, n)| n).sum();
            (refused, outcome.transfers.held)
        };
        eprintln!(
            "[{:>4}s] {:>10} records {:>10} records/s  refused {:>8}  held {:>8}  failed requests {:>6}  p99 {}",
            started.elapsed().as_secs(),
            records,
            records - last,
            refused,
            held,
            shared.errors.load(Ordering::Relaxed),
            micros(p99)
        );
        last = records;
    }
}

/// A latency in µs as text with a fitting unit.
#[must_use]
pub fn micros(us: u64) -> String {
    if us >= 10_000 { format!("{:.1} ms", us as f64 / 1000.0) } else { format!("{us} µs") }
}

/// The JSON summary of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub mode: String,
    pub connections: usize,
    pub requests: u64,
    pub records: u64,
    pub errors: u64,
    /// Requests sent again to a new leader after a failover.
    pub resends: u64,
    pub seconds: f64,
    pub setup_seconds: f64,
    pub records_per_second: f64,
    /// Latency percentiles in microseconds.
    pub latency_us: BTreeMap<String, u64>,
    /// How late paced requests were sent after their intended time (the
    /// tester's own overhead, inside the latency), percentiles in
    /// microseconds; empty for a run without pacing.
    pub sent_late_us: BTreeMap<String, f64>,
    pub codes: BTreeMap<String, u64>,
    pub request_errors: BTreeMap<String, u64>,
    /// Submitted transfers by what became of them.
    pub transfers: Transfers,
}

impl Summary {
    /// Builds the summary of a finished run.
    #[must_use]
    pub fn of(mode: &str, connections: usize, shared: &Shared, elapsed: Duration, setup: Duration) -> Self {
        let h = shared.histogram.lock().expect("not poisoned");
        let outcome = shared.outcome.lock().expect("not poisoned");
        let records = shared.records.load(Ordering::Relaxed);
        let mut latency_us = BTreeMap::new();
        for (name, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999), ("p99.99", 0.9999)] {
            latency_us.insert(name.to_string(), h.value_at_quantile(q));
        }
        latency_us.insert("max".into(), h.max());
        latency_us.insert("min".into(), h.min());
        let late = shared.sent_late.lock().expect("not poisoned");
        let mut sent_late_us = BTreeMap::new();
        if !late.is_empty() {
            for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
                sent_late_us.insert(name.to_string(), late.value_at_quantile(q) as f64 / 1e3);
            }
            sent_late_us.insert("max".into(), late.max() as f64 / 1e3);
        }
        let codes = codes_by_count(&outcome.codes).into_iter().collect();
        Self {
            mode: mode.into(),
            connections,
            requests: shared.requests.load(Ordering::Relaxed),
            records,
            errors: shared.errors.load(Ordering::Relaxed),
            resends: shared.resends.load(Ordering::Relaxed),
            seconds: elapsed.as_secs_f64(),
            setup_seconds: setup.as_secs_f64(),
            records_per_second: records as f64 / elapsed.as_secs_f64().max(1e-9),
            latency_us,
            sent_late_us,
            codes,
            request_errors: outcome.errors.clone(),
            transfers: outcome.transfers,
        }
    }

    /// The summary as pretty JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a summary serializes")
    }

    /// The final table, for people.
    pub fn print(&self, out: &mut impl Write) -> std::io::Result<()> {
        writeln!(
            out,
            "{} over {} connection(s), {:.2} s (setup {:.2} s)",
            self.mode, self.connections, self.seconds, self.setup_seconds
        )?;
        writeln!(
            out,
            "  throughput   {:>12.0} records/s  ({} requests, {} records)",
            self.records_per_second, self.requests, self.records
        )?;
        let t = &self.transfers;
        if t.posted + t.held + t.pending + t.voided + t.refused > 0 {
            writeln!(
                out,
                "  transfers    {} posted, {} held by AML, {} pending (client), {} voided, {} refused",
                t.posted, t.held, t.pending, t.voided, t.refused
            )?;
        }
        writeln!(out, "  latency (per request, from its intended send time):")?;
        for name in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            writeln!(out, "    {name:<7} {:>12}", micros(self.latency_us[name]))?;
        }
        if !self.sent_late_us.is_empty() {
            let late = |q: &str| self.sent_late_us[q];
            writeln!(
                out,
                "  pacing (sent after the intended time, the tester's own): p50 {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs, \
                 max {}",
                late("p50"),
                late("p99"),
                late("p99.9"),
                micros(late("max") as u64)
            )?;
        }
        writeln!(out, "  result codes:")?;
        let mut codes: Vec<_> = self.codes.iter().collect();
        codes.sort_by(|a, b| b.1.cmp(a.1));
        for (name, n) in codes {
            writeln!(out, "    {name:<24} {n:>12}")?;
        }
        if !self.request_errors.is_empty() {
            writeln!(out, "  failed requests: {} ", self.errors)?;
            for (why, n) in &self.request_errors {
                writeln!(out, "    {why}: {n}")?;
            }
        }
        Ok(())
    }
}

/// Writes the percentile distribution in HdrHistogram's `.hgrm` text
/// format: values in milliseconds, `TotalCount` cumulative (the count at
/// or below the value), as HdrHistogram's plotters read it.
pub fn write_hgrm(h: &Histogram<u64>, out: &mut impl Write) -> std::io::Result<()> {
    writeln!(out, "{:>12} {:>14} {:>10} {:>14}\n", "Value", "Percentile", "TotalCount", "1/(1-Percentile)")?;
    let mut total = 0u64;
    for v in h.iter_quantiles(1) {
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 { format!("{:14.2}", 1.0 / (1.0 - q)) } else { String::new() };
        total += v.count_since_last_iteration();
        writeln!(out, "{:12.3} {:14.12} {:10} {}", v.value_iterated_to() as f64 / 1000.0, q, total, inverse)?;
    }
    writeln!(
        out,
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n\
         #[Values in milliseconds: each request's latency from its intended send time]",
        h.mean() / 1000.0,
        h.stdev() / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )?;
    Ok(())
}
