//! Operators' counters, and the HTTP endpoint that exposes them in the
//! Prometheus text format.
//!
//! Counters are plain relaxed atomics: recording never locks and never
//! allocates. This is the first set (connections, requests, frame errors,
//! BUSY); per-stage latency histograms arrive with issue 7. The endpoint
//! answers any GET with the current values and closes the connection; it
//! never blocks the switch.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::protocol::frame::ErrorCode;

/// Every counter the switch keeps.
#[derive(Debug, Default)]
pub struct Metrics {
    pub connections_open: AtomicU64,
    pub connections_total: AtomicU64,
    pub connections_refused: AtomicU64,
    pub requests_total: AtomicU64,
    pub records_total: AtomicU64,
    pub busy_total: AtomicU64,
    /// ERROR frames sent, by code (index = code - 1).
    pub frame_errors: [AtomicU64; 13],
    /// New AML holds by kind: FACE_REVIEW (level 1), SMS_OTP (level 2),
    /// COOLING_OFF (level 3), MANUAL_REVIEW (no HKD rate, scorer, budget).
    pub aml_holds: [AtomicU64; 4],
    /// Transfers sent to the remote scorer.
    pub aml_scorer_evaluations: AtomicU64,
    /// Transfers held because the scorer's verdict missed the budget.
    pub aml_budget_fallbacks: AtomicU64,
    /// Transfers the remote scorer asked to review.
    pub aml_scorer_reviews: AtomicU64,
    /// Longest wait for the scorer, microseconds.
    pub aml_scorer_wait_max_us: AtomicU64,
}

/// Names of `Metrics::aml_holds`, in order.
const AML_HOLDS: [(crate::engine::holds::Holds, &str, &str); 4] = [
    (crate::engine::holds::Holds::FACE_REVIEW, "FACE_REVIEW", "1"),
    (crate::engine::holds::Holds::SMS_OTP, "SMS_OTP", "2"),
    (crate::engine::holds::Holds::COOLING_OFF, "COOLING_OFF", "3"),
    (crate::engine::holds::Holds::MANUAL_REVIEW, "MANUAL_REVIEW", "review"),
];

/// The process's counters.
pub static METRICS: Metrics = Metrics {
    connections_open: AtomicU64::new(0),
    connections_total: AtomicU64::new(0),
    connections_refused: AtomicU64::new(0),
    requests_total: AtomicU64::new(0),
    records_total: AtomicU64::new(0),
    busy_total: AtomicU64::new(0),
    frame_errors: [const { AtomicU64::new(0) }; 13],
    aml_holds: [const { AtomicU64::new(0) }; 4],
    aml_scorer_evaluations: AtomicU64::new(0),
    aml_budget_fallbacks: AtomicU64::new(0),
    aml_scorer_reviews: AtomicU64::new(0),
    aml_scorer_wait_max_us: AtomicU64::new(0),
};

impl Metrics {
    /// Counts one ERROR frame.
    pub fn frame_error(&self, code: ErrorCode) {
        self.frame_errors[code as usize - 1].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the AML holds of one new pending transfer.
    pub fn aml_holds(&self, holds: crate::engine::holds::Holds) {
        for (i, (hold, _, _)) in AML_HOLDS.iter().enumerate() {
            if holds.contains(*hold) {
                self.aml_holds[i].fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Publishes a shard's scorer-gate counters (one shard runs a gate
    /// until issue 8; with several, each publishes its own running totals
    /// and the largest wins).
    pub fn record_gate(&self, s: crate::aml::scorer::GateStats) {
        self.aml_scorer_evaluations.fetch_max(s.evaluations, Ordering::Relaxed);
        self.aml_budget_fallbacks.fetch_max(s.fallbacks, Ordering::Relaxed);
        self.aml_scorer_reviews.fetch_max(s.reviews, Ordering::Relaxed);
        self.aml_scorer_wait_max_us.fetch_max(s.wait_max_us, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of every counter.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        one("harbour_connections_open", "gauge", "Channel connections open now.", get(&self.connections_open));
        one("harbour_connections_total", "counter", "Channel connections accepted.", get(&self.connections_total));
        one(
            "harbour_connections_refused_total",
            "counter",
            "Connections refused at the connection limit.",
            get(&self.connections_refused),
        );
        one("harbour_requests_total", "counter", "Requests handed to the shards.", get(&self.requests_total));
        one("harbour_records_total", "counter", "Records in requests handed to the shards.", get(&self.records_total));
        one("harbour_busy_total", "counter", "Requests answered BUSY (nothing applied).", get(&self.busy_total));
        let _ = writeln!(
            out,
            "# HELP harbour_frame_errors_total ERROR frames sent, by code.\n# TYPE harbour_frame_errors_total counter"
        );
        for code in ErrorCode::ALL {
            let value = get(&self.frame_errors[code as usize - 1]);
            let _ = writeln!(out, "harbour_frame_errors_total{{code=\"{}\"}} {value}", code.name());
        }
        let _ = writeln!(
            out,
            "# HELP harbour_aml_holds_total Transfers AML held, by hold (level 1 FACE_REVIEW, 2 SMS_OTP, 3 \
             COOLING_OFF; MANUAL_REVIEW for no HKD rate, scorer or budget fallback).\n\
             # TYPE harbour_aml_holds_total counter"
        );
        for (i, (_, name, level)) in AML_HOLDS.iter().enumerate() {
            let value = get(&self.aml_holds[i]);
            let _ = writeln!(out, "harbour_aml_holds_total{{hold=\"{name}\",level=\"{level}\"}} {value}");
        }
        let mut one = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
        };
        one(
            "harbour_aml_scorer_evaluations_total",
            "counter",
            "Transfers sent to the remote AML scorer.",
            get(&self.aml_scorer_evaluations),
        );
        one(
            "harbour_aml_budget_fallbacks_total",
            "counter",
            "Transfers held for MANUAL_REVIEW because the scorer missed the AML budget.",
            get(&self.aml_budget_fallbacks),
        );
        one(
            "harbour_aml_scorer_reviews_total",
            "counter",
            "Transfers the remote scorer asked to review.",
            get(&self.aml_scorer_reviews),
        );
        one(
            "harbour_aml_scorer_wait_max_microseconds",
            "gauge",
            "Longest wait for the remote scorer's verdicts.",
            get(&self.aml_scorer_wait_max_us),
        );
        out
    }
}

/// Serves the counters over HTTP until the task is dropped, to at most
/// `max_connections` scrapers at once.
pub async fn serve(listener: TcpListener, max_connections: usize) {
    let places = std::sync::Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let Ok(place) = std::sync::Arc::clone(&places).try_acquire_owned() else { continue };
        tokio::spawn(async move {
            let _place = place;
            // Read (and ignore) the request head; any path gets the metrics.
            let mut head = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read(&mut head)).await;
            let body = METRICS.render();
            let response = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}

/// Binds the metrics endpoint.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
