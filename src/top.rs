//! `harbour top`: a live terminal view of the metrics endpoint, refreshed
//! every second: request and record rates, result codes, latency per stage
//! and per kind, AML holds, queues and the log.
//!
//! It reads the same Prometheus text the endpoint serves (so it shows
//! exactly what a dashboard would) with a small parser for that format's
//! sample lines, and keeps the previous scrape to turn counters into rates
//! and histograms into the last interval's latencies (the endpoint's own
//! quantiles are over the whole life of the process: shown only on the
//! first screen, and said so).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// One scrape: `name{labels}` → value.
pub type Samples = BTreeMap<String, f64>;

/// Parses the sample lines of a Prometheus text exposition.
#[must_use]
pub fn parse(text: &str) -> Samples {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (key, value) = l.rsplit_once(' ')?;
            Some((key.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// GETs the endpoint's text.
pub fn scrape(addr: SocketAddr, auth: Option<&str>) -> std::io::Result<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    let header =
        auth.map_or(String::new(), |a| format!("Authorization: Basic {}\r\n", crate::metrics::base64(a.as_bytes())));
    let request = format!("GET /metrics HTTP/1.1\r\nHost: harbour\r\n{header}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes())?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    Ok(text.split_once("\r\n\r\n").map_or(text.clone(), |(_, body)| body.to_string()))
}

fn seconds(v: f64) -> String {
    if v <= 0.0 {
        "-".into()
    } else if v < 1e-3 {
        format!("{:.0} µs", v * 1e6)
    } else if v < 1.0 {
        format!("{:.2} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// The screen for `now` given the previous scrape `before` taken
/// `elapsed` earlier (rates need both).
#[must_use]
pub fn render(now: &Samples, before: Option<&Samples>, elapsed: Duration) -> String {
    let get = |s: &Samples, k: &str| s.get(k).copied().unwrap_or(0.0);
    let rate = |k: &str| match before {
        Some(b) => (get(now, k) - get(b, k)).max(0.0) / elapsed.as_secs_f64().max(1e-9),
        None => 0.0,
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "harbour top  requests {:>10.0}/s  records {:>10.0}/s  BUSY {:>6.0}/s  connections {:>5.0}  queue {:>6.0}",
        rate("harbour_requests_total"),
        rate("harbour_records_total"),
        rate("harbour_busy_total"),
        get(now, "harbour_connections_open"),
        get(now, "harbour_queue_depth"),
    );
    let _ = writeln!(
        out,
        "log {:>8.1} MB/s  snapshot age {}",
        rate("harbour_log_bytes_total") / 1e6,
        match get(now, "harbour_snapshot_age_seconds") {
            a if a < 0.0 => "none yet".to_string(),
            a => format!("{a:.0} s"),
        }
    );
    let window = match before {
        Some(_) => format!("over the last {:.0} s (bucket upper bounds)", elapsed.as_secs_f64()),
        None => "since the switch started (the next screens: the last second)".to_string(),
    };
    let _ = writeln!(out, "\nlatency {window}");
    let _ = writeln!(out, "{:<16} {:>10} {:>10} {:>10} {:>10} {:>10}", "stage", "per s", "p50", "p99", "p99.9", "max");
    // A request's timeline in order: the gaps between stages are stages.
    for stage in crate::metrics::Stage::ALL.map(crate::metrics::Stage::name) {
        let label = format!("stage=\"{stage}\"");
        let q = |quantile: f64| match before {
            Some(b) => interval_quantile(now, b, "harbour_stage_seconds", &label, quantile),
            None => get(now, &format!("harbour_stage_seconds_quantiles{{{label},quantile=\"{quantile}\"}}")),
        };
        let _ = writeln!(
            out,
            "{stage:<16} {:>10.0} {:>10} {:>10} {:>10} {:>10}",
            rate(&format!("harbour_stage_seconds_count{{{label}}}")),
            seconds(q(0.5)),
            seconds(q(0.99)),
            seconds(q(0.999)),
            seconds(q(1.0))
        );
    }
    let _ = writeln!(out, "\n{:<20} {:>10} {:>10} {:>10}", "kind", "per s", "p50", "p99");
    let kinds: Vec<&String> = now.keys().filter(|k| k.starts_with("harbour_request_seconds_count{")).collect();
    for key in kinds {
        let kind = key.split('"').nth(1).unwrap_or("?");
        if get(now, key) == 0.0 {
            continue;
        }
        let label = format!("kind=\"{kind}\"");
        let q = |quantile: f64| match before {
            Some(b) => interval_quantile(now, b, "harbour_request_seconds", &label, quantile),
            None => get(now, &format!("harbour_request_seconds_quantiles{{{label},quantile=\"{quantile}\"}}")),
        };
        let _ = writeln!(out, "{kind:<20} {:>10.0} {:>10} {:>10}", rate(key), seconds(q(0.5)), seconds(q(0.99)));
    }
    let _ = writeln!(out, "\nresults (per s):");
    for (key, _) in now.iter().filter(|(k, _)| k.starts_with("harbour_results_total{")) {
        let code = key.split('"').nth(1).unwrap_or("?");
        let _ = writeln!(out, "  {code:<24} {:>10.0}", rate(key));
    }
    let _ = writeln!(out, "\nAML holds (total):");
    for (key, v) in now.iter().filter(|(k, _)| k.starts_with("harbour_aml_holds_total{")) {
        let hold = key.split('"').nth(1).unwrap_or("?");
        let _ = writeln!(out, "  {hold:<24} {v:>10.0}");
    }
    let _ = writeln!(out, "  budget fallbacks         {:>10.0}", get(now, "harbour_aml_budget_fallbacks_total"));
    out
}

/// The `quantile` of what histogram `name{label}` counted between two
/// scrapes: the upper bound of the first bucket that holds it (0: nothing
/// counted in between).
fn interval_quantile(now: &Samples, before: &Samples, name: &str, label: &str, quantile: f64) -> f64 {
    let prefix = format!("{name}_bucket{{{label},le=\"");
    let mut buckets: Vec<(f64, f64)> = now
        .iter()
        .filter_map(|(key, &count)| {
            let le = key.strip_prefix(&prefix)?.strip_suffix("\"}")?;
            let bound = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((bound, count - before.get(key).copied().unwrap_or(0.0)))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return 0.0;
    }
    let wanted = (quantile * total).max(1.0);
    // The last finite bound stands for +Inf (a value past every bucket).
    let finite = buckets.iter().rev().find(|b| b.0.is_finite()).map_or(0.0, |b| b.0);
    buckets.iter().find(|b| b.1 >= wanted).map_or(finite, |b| if b.0.is_finite() { b.0 } else { finite })
}

/// Runs the view until interrupted (or once, with `once`).
pub fn run(addr: SocketAddr, auth: Option<&str>, interval: Duration, once: bool) -> Result<(), String> {
    let mut before: Option<(Samples, Instant)> = None;
    loop {
        let text = scrape(addr, auth).map_err(|e| format!("metrics at {addr}: {e}"))?;
        let now = parse(&text);
        let (previous, elapsed) = match &before {
            Some((s, at)) => (Some(s), at.elapsed()),
            None => (None, interval),
        };
        let screen = render(&now, previous, elapsed);
        if once {
            print!("{screen}");
            return Ok(());
        }
        // Clear the terminal, home the cursor, draw.
        print!("\x1b[2J\x1b[H{screen}");
        let _ = std::io::stdout().flush();
        before = Some((now, Instant::now()));
        std::thread::sleep(interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rates_and_latencies_from_two_scrapes() {
        let before = parse("harbour_requests_total 100\nharbour_records_total 1000\n");
        let now = parse(
            "# TYPE x counter\nharbour_requests_total 300\nharbour_records_total 5000\n\
             harbour_stage_seconds_quantiles{stage=\"fsync\",quantile=\"0.99\"} 0.00025\n\
             harbour_results_total{code=\"OK\"} 10\n",
        );
        let screen = render(&now, Some(&before), Duration::from_secs(2));
        assert!(screen.contains("requests        100/s"), "{screen}");
        assert!(screen.contains("records       2000/s"), "{screen}");
        assert!(screen.contains("OK"), "{screen}");
        let first = render(&now, None, Duration::from_secs(1));
        assert!(first.contains("250 µs") && first.contains("since the switch started"), "{first}");
    }

    /// After the first screen, latencies are the last interval's, from the
    /// histograms' buckets: an idle interval shows none, whatever came
    /// before.
    #[test]
    fn latencies_are_the_last_intervals() {
        let bucket = |le: &str, n: u32| format!("harbour_stage_seconds_bucket{{stage=\"fsync\",le=\"{le}\"}} {n}\n");
        let before = parse(&[bucket("1e-4", 0), bucket("1e-3", 90), bucket("1e-2", 100), bucket("+Inf", 100)].concat());
        let busy = parse(&[bucket("1e-4", 0), bucket("1e-3", 180), bucket("1e-2", 200), bucket("+Inf", 200)].concat());
        assert_eq!(interval_quantile(&busy, &before, "harbour_stage_seconds", "stage=\"fsync\"", 0.5), 1e-3);
        assert_eq!(interval_quantile(&busy, &before, "harbour_stage_seconds", "stage=\"fsync\"", 0.99), 1e-2);
        assert_eq!(interval_quantile(&busy, &busy, "harbour_stage_seconds", "stage=\"fsync\"", 0.99), 0.0, "idle");
        let screen = render(&busy, Some(&busy), Duration::from_secs(1));
        assert!(screen.contains("over the last 1 s"), "{screen}");
    }
}
