//! `harbour-loadtest`'s command line: generates traffic files, replays them
//! against a Harbour switch (open loop), runs a closed-loop peak-throughput
//! benchmark, and the harnesses. See `docs/loadtest.md`. In the library so
//! a test runs the README's commands as written (`tests/readme_loadtest.rs`).

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::report::{self, Summary};
use crate::run::{self, BenchConfig, Pace, Target};
use crate::workload::{self, GenConfig};
use clap::{Args, Parser, Subcommand};

/// The command line.
#[derive(Parser)]
#[command(name = "harbour-loadtest", version, about = "Load generator and replayer for the Harbour switch")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic workload to a traffic file (and
    /// FILE.expected, the balances it must leave).
    Gen(GenArgs),
    /// Replay a traffic file, open loop.
    Replay(ReplayArgs),
    /// Closed-loop peak throughput, like TigerBeetle's `benchmark`.
    Bench(BenchArgs),
    /// Kill real switches under mixed traffic, over and over, and check
    /// every answer after each restart (docs/reliability.md).
    Torture(TortureArgs),
    /// A three-node cluster under load, its leader killed again and again
    /// (followers wiped, rolling restarts): every answer kept, balances
    /// exact, nodes equal; failover times (docs/cluster.md).
    Failover(FailoverArgs),
    /// Overload: many connections keeping every place in flight taken with
    /// large requests, sampling the switch's memory (docs/reliability.md).
    Flood(FloodArgs),
    /// Latency against load: a fresh switch per step, first saturated, then
    /// the same traffic at each share of saturation, each step beside its
    /// own fsync; a table, JSON and a plot (docs/benchmarks.md).
    Sweep(SweepArgs),
    /// AML level 3 on both synthetic populations: anomalies caught by
    /// strength, mules caught and normal transfers held at each threshold;
    /// a table, JSON and a plot (docs/aml.md). Needs no switch.
    AmlCurve(AmlCurveArgs),
}

#[derive(Args)]
struct AmlCurveArgs {
    /// Customers of the first population (the second has half as many).
    #[arg(long, default_value_t = 4_000)]
    accounts: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Level 3's model (1, 2 or 3).
    #[arg(long, default_value_t = 3)]
    model: u32,
    /// Thresholds in points, in quarters.
    #[arg(long, value_delimiter = ',', default_value = "3,3.5,3.75,4,4.25,4.5,4.75,5,5.5,6")]
    thresholds: Vec<f64>,
    /// Write every point as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw detection against false holds (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// After each point, the mule patterns caught by kind and the
    /// commonest signals of its false holds.
    #[arg(long)]
    signals: bool,
}

#[derive(Args)]
struct SweepArgs {
    /// The traffic file every step replays (from `gen`).
    file: PathBuf,
    /// The `harbour` binary to run.
    #[arg(long, default_value = "target/release/harbour")]
    harbour: PathBuf,
    /// The switch's configuration file (`serve --config`).
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Where the steps' data directories go (each removed after its step).
    #[arg(long, default_value = "target/sweep")]
    dir: PathBuf,
    /// Shares of saturation to offer, in percent.
    #[arg(long, value_delimiter = ',', default_value = "5,10,20,30,50,70,90,100")]
    shares: Vec<f64>,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 4)]
    connections: usize,
    /// The switch on CPU 0 and the tester on CPU 1.
    #[arg(long)]
    pin: bool,
    #[arg(long, default_value_t = 1)]
    channel: u32,
    #[arg(long, env = "HARBOUR_KEY", default_value = "hksw-dev-key", hide_env_values = true)]
    key: String,
    /// Write every step as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Draw latency against load (SVG).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct FailoverArgs {
    /// The `harbour` binary to run.
    #[arg(long, default_value = "target/release/harbour")]
    harbour: PathBuf,
    /// Working directory (the nodes' data and configurations); emptied first.
    #[arg(long)]
    dir: PathBuf,
    /// Leader kills.
    #[arg(long, default_value_t = 20)]
    kills: u64,
    /// Every N cycles a follower loses its data directory (0: never).
    #[arg(long, default_value_t = 4)]
    wipe_every: u64,
    /// Every N cycles every node is restarted in turn (0: never).
    #[arg(long, default_value_t = 7)]
    rolling_every: u64,
    /// Every N cycles the leader is cut off from both followers (0: never).
    #[arg(long, default_value_t = 5)]
    partition_every: u64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 4)]
    workers: usize,
    #[arg(long, default_value_t = 64)]
    accounts: u64,
    /// Shards per node.
    #[arg(long, default_value_t = 1)]
    shards: usize,
    /// Traffic between two faults, in ms.
    #[arg(long, default_value_t = 1_500)]
    between_ms: u64,
    /// Also write the report here (JSON).
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct FloodArgs {
    #[arg(long, default_value_t = 1_000)]
    connections: usize,
    /// Transfers per request.
    #[arg(long, default_value_t = 2_048)]
    batch: usize,
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// The switch's process id: its resident memory is sampled.
    #[arg(long)]
    pid: Option<u32>,
    /// Seconds to keep sampling after the load stops.
    #[arg(long, default_value_t = 10)]
    after: u64,
    /// Leave the accounts empty: every transfer is refused and nothing
    /// stored, so the memory measured is the switch's buffers alone.
    #[arg(long)]
    unfunded: bool,
    #[command(flatten)]
    conn: Conn,
}

#[derive(Args)]
struct TortureArgs {
    /// The `harbour` binary to run.
    #[arg(long, default_value = "target/release/harbour")]
    harbour: PathBuf,
    /// Working directory (data, configuration, disk filler); emptied first.
    #[arg(long)]
    dir: PathBuf,
    /// Kill cycles.
    #[arg(long, default_value_t = 100)]
    cycles: u64,
    #[arg(long, default_value_t = 2)]
    shards: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Client connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Longest traffic before a kill, in ms.
    #[arg(long, default_value_t = 600)]
    run_ms: u64,
    /// Every n-th cycle fills the disk past the reserve (0: never).
    #[arg(long, default_value_t = 10)]
    disk_full_every: u64,
    /// Every n-th cycle runs with slow fsyncs (0: never).
    #[arg(long, default_value_t = 7)]
    slow_disk_every: u64,
    /// Each shard's transfer capacity.
    #[arg(long, default_value_t = 2_097_152)]
    transfers_capacity: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct GenArgs {
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    #[arg(long, default_value_t = 100_000)]
    transfers: u64,
    /// Records per request.
    #[arg(long, default_value_t = 1_000)]
    batch: u64,
    /// The pace the file records, in records per second.
    #[arg(long, default_value_t = 200_000.0)]
    rate: f64,
    /// Zipf exponent of account activity (0 = uniform).
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Share of remittances sent to a high-risk country (AML level 2;
    /// default 0.1 for stress, 0.01 for realistic).
    #[arg(long)]
    aml_share: Option<f64>,
    /// realistic: customers with habits and a few injected anomalies
    /// (what AML should see); stress: random payees at any rate, whose
    /// busy payers pass the day limit (the hold path's cost).
    #[arg(long, default_value = "realistic")]
    profile: String,
    /// Realistic profile: share of customers with one injected anomaly.
    #[arg(long, default_value_t = 0.005)]
    anomaly_share: f64,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

#[derive(Args, Clone)]
struct Conn {
    /// The switch; for a cluster, repeat --addr with every node: requests
    /// go to the leader and follow it through a failover (or HARBOUR_ADDR,
    /// commas between nodes).
    #[arg(long, env = "HARBOUR_ADDR", value_delimiter = ',', default_value = "127.0.0.1:7400")]
    addr: Vec<SocketAddr>,
    #[arg(long, default_value_t = 1)]
    channel: u32,
    #[arg(long, env = "HARBOUR_KEY", default_value = "hksw-dev-key", hide_env_values = true)]
    key: String,
    /// TLS 1.3: the CA that signs the switch's certificate (with
    /// --tls-cert, --tls-key and --tls-name; `harbour certs dev`).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// The channel's certificate.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// The channel's key.
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// The name the switch's certificate carries.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
}

#[derive(Args)]
struct Outputs {
    /// Write the JSON summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the latency percentile distribution (.hgrm) here.
    #[arg(long)]
    hgrm: Option<PathBuf>,
    /// Draw the latency plot (SVG: percentile spectrum, latency over time).
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayArgs {
    /// The traffic file (from `gen` or `harbour serve --record`).
    file: PathBuf,
    /// Connections.
    #[arg(long, short = 'c', default_value_t = 4)]
    connections: usize,
    /// Replay at this multiple of the recorded pace ...
    #[arg(long, default_value_t = 1.0)]
    speed: f64,
    /// ... or at a fixed rate, e.g. 200000/s (records per second) ...
    #[arg(long)]
    rate: Option<String>,
    /// ... or as fast as the connections go.
    #[arg(long)]
    max: bool,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    outputs: Outputs,
}

#[derive(Args)]
struct BenchArgs {
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    #[arg(long, default_value_t = 10_000_000)]
    transfers: u64,
    #[arg(long, default_value_t = 8_189)]
    batch: u64,
    /// Zipfian account choice instead of uniform.
    #[arg(long)]
    zipf: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    outputs: Outputs,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches("/s");
    number.parse::<f64>().ok().filter(|r| *r > 0.0).ok_or_else(|| format!("rate {text:?}: e.g. 200000/s"))
}

/// Prints a harness's report as JSON (and writes it to `json`); an error
/// if it found violations.
fn print_report(
    report: &impl serde::Serialize,
    json: Option<&std::path::Path>,
    violations: usize,
) -> Result<(), String> {
    let text = serde_json::to_string_pretty(report).map_err(|e| e.to_string())?;
    println!("{text}");
    if let Some(path) = json {
        std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if violations > 0 {
        return Err(format!("{violations} violations"));
    }
    Ok(())
}

fn target(c: &Conn) -> Result<Target, String> {
    let tls = match (&c.tls_ca, &c.tls_cert, &c.tls_key) {
        (Some(ca), Some(cert), Some(key)) => Some(harbour::client::Tls::from_pem_files(ca, cert, key, &c.tls_name)?),
        _ => None,
    };
    Ok(Target {
        addr: c.addr[0],
        others: c.addr[1..].to_vec(),
        tls,
        channel: c.channel,
        key: c.key.clone().into_bytes(),
    })
}

fn write_outputs(summary: &Summary, shared: &report::Shared, outputs: &Outputs) -> Result<(), String> {
    summary.print(&mut std::io::stdout()).map_err(|e| e.to_string())?;
    if let Some(path) = &outputs.json {
        std::fs::write(path, summary.to_json()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if let Some(path) = &outputs.hgrm {
        let mut file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
        report::write_hgrm(&shared.histogram.lock().expect("not poisoned"), &mut file).map_err(|e| e.to_string())?;
    }
    if let Some(path) = &outputs.plot {
        let all = shared.histogram.lock().expect("not poisoned");
        let per_second = shared.per_second.lock().expect("not poisoned");
        crate::plot::write_svg(path, &summary.mode, &all, &per_second)?;
    }
    Ok(())
}

/// Runs a command line.
pub async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Gen(a) => {
            let profile = match a.profile.as_str() {
                "realistic" => workload::Profile::Realistic,
                "stress" => workload::Profile::Stress,
                other => return Err(format!("--profile {other:?}: realistic or stress")),
            };
            let default_aml_share = if profile == workload::Profile::Stress { 0.1 } else { 0.01 };
            let config = GenConfig {
                profile,
                anomaly_share: a.anomaly_share,
                seed: a.seed,
                accounts: a.accounts,
                transfers: a.transfers,
                batch: a.batch.max(1),
                rate: a.rate,
                zipf: a.zipf,
                aml_share: a.aml_share.unwrap_or(default_aml_share),
                ..GenConfig::default()
            };
            let file = std::fs::File::create(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
            let now =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            let expected = workload::generate(&config, std::io::BufWriter::new(file), now)
                .map_err(|e| format!("{}: {e}", a.out.display()))?;
            let mut path = a.out.clone().into_os_string();
            path.push(".expected");
            let mut out = std::fs::File::create(&path).map_err(|e| e.to_string())?;
            expected.write(&mut out).map_err(|e| e.to_string())?;
            eprintln!(
                "{} transfers in {} requests written to {}",
                expected.transfers,
                expected.requests,
                a.out.display()
            );
            Ok(())
        }
        Command::Replay(a) => {
            let pace = match (&a.rate, a.max) {
                (_, true) => Pace::Max,
                (Some(r), false) => Pace::Rate(parse_rate(r)?),
                (None, false) => Pace::Recorded(a.speed),
            };
            let file = std::fs::File::open(&a.file).map_err(|e| format!("{}: {e}", a.file.display()))?;
            let reader =
                harbour::traffic::TrafficReader::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
            let (shared, setup, elapsed) = run::replay(&target(&a.conn)?, reader, a.connections, pace, true).await?;
            let summary = Summary::of("replay", a.connections, &shared, elapsed, setup);
            write_outputs(&summary, &shared, &a.outputs)
        }
        Command::Flood(a) => {
            let config = crate::flood::FloodConfig {
                connections: a.connections,
                batch: a.batch,
                duration: std::time::Duration::from_secs(a.seconds),
                accounts: a.accounts.max(2),
                pid: a.pid,
                after: std::time::Duration::from_secs(a.after),
                unfunded: a.unfunded,
            };
            let report = crate::flood::flood(&target(&a.conn)?, &config).await?;
            println!("{}", serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?);
            Ok(())
        }
        Command::Torture(a) => {
            let _ = std::fs::remove_dir_all(&a.dir);
            let config = crate::torture::TortureConfig {
                harbour: a.harbour,
                dir: a.dir,
                cycles: a.cycles,
                shards: a.shards,
                seed: a.seed,
                connections: a.connections,
                run_max: std::time::Duration::from_millis(a.run_ms.max(20)),
                disk_full_every: a.disk_full_every,
                slow_disk_every: a.slow_disk_every,
                transfers_capacity: a.transfers_capacity,
                progress: Some(|r| {
                    eprintln!(
                        "cycle {}: {} answered, {} unanswered ({} applied whole, {} not at all), {} checked, {} violations, {:.0} s",
                        r.cycles,
                        r.requests_answered,
                        r.requests_unanswered,
                        r.unanswered_applied,
                        r.unanswered_not_applied,
                        r.effects_checked,
                        r.violations.len(),
                        r.seconds
                    );
                }),
            };
            let report = crate::torture::run(&config).await?;
            print_report(&report, a.json.as_deref(), report.violations.len())
        }
        Command::Failover(a) => {
            let _ = std::fs::remove_dir_all(&a.dir);
            let config = crate::failover::FailoverConfig {
                harbour: a.harbour,
                dir: a.dir,
                kills: a.kills,
                wipe_every: a.wipe_every,
                rolling_every: a.rolling_every,
                partition_every: a.partition_every,
                seed: a.seed,
                workers: a.workers,
                accounts: a.accounts.max(2),
                shards: a.shards,
                between: std::time::Duration::from_millis(a.between_ms),
                progress: true,
            };
            let report = crate::failover::run(&config).await?;
            print_report(&report, a.json.as_deref(), report.violations.len())
        }
        Command::AmlCurve(a) => {
            let model = harbour::aml::BehaviourModel::from_version(a.model)
                .ok_or_else(|| format!("--model {}: a model is 1, 2 or 3", a.model))?;
            let mut thresholds_q = Vec::new();
            for t in &a.thresholds {
                let q = t * 4.0;
                if q.fract() != 0.0 || !(4.0..=160.0).contains(&q) {
                    return Err(format!("--thresholds: {t} is not a threshold (points from 1 to 40, in quarters)"));
                }
                thresholds_q.push(q as u32);
            }
            let trials = crate::amlcurve::trials(a.accounts, a.seed);
            println!("{}", crate::amlcurve::HEADER);
            let points = crate::amlcurve::curve(&trials, model, &thresholds_q, |p| {
                println!("{}", crate::amlcurve::line(p));
                if a.signals {
                    for (kind, strength, caught, injected) in &p.by_kind {
                        println!("    {kind} {strength}: {caught} of {injected}");
                    }
                    for (kind, caught, injected) in &p.mules_by_kind {
                        println!("    mules {kind}: {caught} of {injected}");
                    }
                    for (rules, n) in &p.false_signals {
                        println!("    false holds {rules}: {n}");
                    }
                }
            });
            if let Some(path) = &a.json {
                let json = serde_json::to_string_pretty(&points).map_err(|e| e.to_string())?;
                std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if let Some(path) = &a.plot {
                crate::amlcurve::write_svg(path, &points)?;
            }
            Ok(())
        }
        Command::Sweep(a) => {
            if a.shares.iter().any(|s| !(*s > 0.0 && *s <= 100.0)) {
                return Err("--shares are percentages in (0, 100]".into());
            }
            let config = crate::sweep::SweepConfig {
                harbour: a.harbour,
                config: a.config,
                shards: a.shards,
                dir: a.dir,
                file: a.file,
                shares: a.shares.iter().map(|s| s / 100.0).collect(),
                connections: a.connections,
                pin: a.pin,
                channel: a.channel,
                key: a.key.into_bytes(),
            };
            println!("{}", crate::sweep::HEADER);
            let steps = crate::sweep::sweep(&config, |s| println!("{}", crate::sweep::line(s))).await?;
            if let Some(path) = &a.json {
                let json = serde_json::to_string_pretty(&steps).map_err(|e| e.to_string())?;
                std::fs::write(path, json).map_err(|e| format!("{}: {e}", path.display()))?;
            }
            if let Some(path) = &a.plot {
                let title =
                    if config.pin { "switch on CPU 0, tester on CPU 1" } else { "switch and tester share the CPUs" };
                crate::sweep::write_svg(path, title, &steps)?;
            }
            Ok(())
        }
        Command::Bench(a) => {
            let config = BenchConfig {
                accounts: a.accounts,
                transfers: a.transfers,
                batch: a.batch,
                zipf: a.zipf,
                seed: a.seed,
            };
            let (shared, setup, elapsed) = run::bench(&target(&a.conn)?, &config).await?;
            let h = shared.histogram.lock().expect("not poisoned").clone();
            let t = shared.outcome.lock().expect("not poisoned").transfers;
            let per_s = |n: u64| n as f64 / elapsed.as_secs_f64();
            println!(
                "{} batches in {:.2} s (setup {:.2} s: {} accounts created and funded)",
                h.len(),
                elapsed.as_secs_f64(),
                setup.as_secs_f64(),
                a.accounts
            );
            println!("load accepted = {:.0} tx/s", per_s(a.transfers));
            println!(
                "posted {} ({:.0} tx/s), held by AML {}, pending {}, refused {}",
                t.posted,
                per_s(t.posted),
                t.held,
                t.pending,
                t.refused
            );
            for (name, q) in [("p1", 0.01), ("p50", 0.5), ("p99", 0.99), ("p100", 1.0)] {
                println!("batch latency {name} = {} ms", h.value_at_quantile(q) / 1000);
            }
            let summary = Summary::of("bench", 1, &shared, elapsed, setup);
            write_outputs(&summary, &shared, &a.outputs)
        }
    }
}
