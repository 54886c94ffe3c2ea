//! `sweep`: latency against load. A fresh switch per step (so each step's
//! fsync is its own baseline, and no step replays ids another stored):
//! first as fast as the connections go, which is saturation, then the same
//! traffic paced at each share of it. Each step reports the tester's
//! latency, how late it sent, and the switch's own stages from its metrics
//! (fsync among them); the steps are drawn as one plot.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use plotters::prelude::*;
use serde::Serialize;

use crate::report::{Shared, Summary};
use crate::run::{self, Pace, Target};

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepConfig {
    /// The `harbour` binary.
    pub harbour: PathBuf,
    /// `serve --config`, if any.
    pub config: Option<PathBuf>,
    pub shards: usize,
    /// Each step's data directory is made under it (and removed after).
    pub dir: PathBuf,
    /// The traffic file every step replays.
    pub file: PathBuf,
    /// Shares of saturation to offer, in (0, 1].
    pub shares: Vec<f64>,
    pub connections: usize,
    /// The switch on CPU 0, the tester on CPU 1.
    pub pin: bool,
    pub channel: u32,
    pub key: Vec<u8>,
}

/// One step's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Share of saturation offered (None: the saturation step itself).
    pub share: Option<f64>,
    /// Records per second offered (None: as fast as the connections go).
    pub offered: Option<f64>,
    pub records_per_second: f64,
    /// The tester's latency from each request's intended send time, µs.
    pub latency_us: BTreeMap<String, u64>,
    /// How late the tester sent, µs.
    pub sent_late_us: BTreeMap<String, f64>,
    /// The switch's stages over the step (`harbour_stage_seconds`): per
    /// stage, its p50, p99, p99.9 and max in µs (bucket upper bounds,
    /// 0-12.5% above the true value).
    pub stages_us: BTreeMap<String, [f64; 4]>,
}

impl Step {
    fn stage(&self, name: &str, q: usize) -> f64 {
        self.stages_us.get(name).map_or(0.0, |s| s[q])
    }
}

/// Runs the sweep; the saturation step comes first.
pub async fn sweep(c: &SweepConfig, progress: impl Fn(&Step)) -> Result<Vec<Step>, String> {
    if c.pin {
        pin_tester()?;
    }
    let mut steps = Vec::with_capacity(c.shares.len() + 1);
    let saturation = step(c, Pace::Max, None, 0).await?;
    let max = saturation.records_per_second;
    progress(&saturation);
    steps.push(saturation);
    for (i, &share) in c.shares.iter().enumerate() {
        let s = step(c, Pace::Rate(max * share), Some(share), i + 1).await?;
        progress(&s);
        steps.push(s);
    }
    Ok(steps)
}

async fn step(c: &SweepConfig, pace: Pace, share: Option<f64>, n: usize) -> Result<Step, String> {
    let data = c.dir.join(format!("step-{n}"));
    let _ = std::fs::remove_dir_all(&data);
    let metrics = free_port()?;
    let mut switch = Switch::start(c, &data, metrics)?;
    let target = Target::single(switch.addr, c.channel, &c.key);
    let file = std::fs::File::open(&c.file).map_err(|e| format!("{}: {e}", c.file.display()))?;
    let reader = harbour::traffic::TrafficReader::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    let replayed = run::replay(&target, reader, c.connections, pace, false).await;
    let scraped = harbour::top::scrape(metrics, None).map_err(|e| format!("metrics: {e}"));
    switch.stop();
    let _ = std::fs::remove_dir_all(&data);
    settle();
    let (shared, setup, elapsed) = replayed?;
    Ok(figures(&shared, setup, elapsed, share, pace, &harbour::top::parse(&scraped?)))
}

fn figures(
    shared: &Shared,
    setup: Duration,
    elapsed: Duration,
    share: Option<f64>,
    pace: Pace,
    metrics: &harbour::top::Samples,
) -> Step {
    let summary = Summary::of("sweep", 0, shared, elapsed, setup);
    let quantile = |stage: &str, q: &str| {
        metrics.get(&format!("harbour_stage_seconds_quantiles{{stage=\"{stage}\",quantile=\"{q}\"}}")).copied()
    };
    let stages_us = harbour::metrics::Stage::ALL
        .iter()
        .map(|s| s.name())
        .filter_map(|stage| {
            let qs = ["0.5", "0.99", "0.999", "1"].map(|q| quantile(stage, q).unwrap_or(0.0) * 1e6);
            (qs[3] > 0.0).then(|| (stage.to_string(), qs))
        })
        .collect();
    Step {
        share,
        offered: match pace {
            Pace::Rate(r) => Some(r),
            _ => None,
        },
        records_per_second: summary.records_per_second,
        latency_us: summary.latency_us,
        sent_late_us: summary.sent_late_us,
        stages_us,
    }
}

/// A switch of the sweep's, on its own data directory.
struct Switch {
    child: Child,
    addr: SocketAddr,
}

impl Switch {
    fn start(c: &SweepConfig, data: &Path, metrics: SocketAddr) -> Result<Self, String> {
        let mut command = Command::new(&c.harbour);
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--shards", &c.shards.to_string(), "--metrics"])
            .arg(metrics.to_string())
            .arg("--data")
            .arg(data)
            .env("HARBOUR_LOG", "warn")
            .stderr(Stdio::inherit());
        if let Some(config) = &c.config {
            command.arg("--config").arg(config);
        }
        if c.pin {
            on_cpu(&mut command, 0);
        }
        let (child, addr) = crate::torture::listening(command, &c.harbour)?;
        Ok(Self { child, addr })
    }

    /// SIGTERM, and the wait for its clean exit.
    fn stop(&mut self) {
        // SAFETY: a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// Lets the disk finish what the step left (the removed directory's
/// blocks, the page cache's writeback) before the next step measures it.
fn settle() {
    // SAFETY: sync(2) takes nothing and cannot fail.
    unsafe { libc::sync() };
    std::thread::sleep(Duration::from_secs(1));
}

/// A port free for the switch's metrics endpoint.
fn free_port() -> Result<SocketAddr, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.local_addr().map_err(|e| e.to_string())
}

/// Runs `command` on `cpu` alone.
fn on_cpu(command: &mut Command, cpu: usize) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: between fork and exec only sched_setaffinity runs, a plain
    // system call on the child's own CPU set.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Moves every thread of the tester (and those it starts later) to CPU 1.
fn pin_tester() -> Result<(), String> {
    // SAFETY: sysconf reads a number.
    if unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } < 2 {
        return Err("--pin needs two CPUs: the switch on 0, the tester on 1".into());
    }
    let tasks = std::fs::read_dir("/proc/self/task").map_err(|e| format!("/proc/self/task: {e}"))?;
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse::<libc::pid_t>().ok()) else { continue };
        // SAFETY: a CPU set built on the stack, for a thread of this process.
        let done = unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(1, &mut set);
            libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
        };
        if done != 0 {
            return Err(format!("pinning thread {tid}: {}", std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// One line of the sweep's table.
#[must_use]
pub fn line(s: &Step) -> String {
    let share = s.share.map_or("max".to_string(), |x| format!("{:.0}%", x * 100.0));
    let l = |q: &str| s.latency_us.get(q).copied().unwrap_or(0);
    let late = s.sent_late_us.get("p50").map_or("-".to_string(), |v| format!("{v:.0}"));
    format!(
        "{share:>5} {:>12.0} {:>9} {:>9} {:>9} {:>9.0} {:>9.0} {:>7}   p50 {:.2}x  p99 {:.2}x fsync",
        s.records_per_second,
        l("p50"),
        l("p99"),
        l("p99.9"),
        s.stage("fsync", 0),
        s.stage("fsync", 1),
        late,
        l("p50") as f64 / s.stage("fsync", 0).max(1e-9),
        l("p99") as f64 / s.stage("fsync", 1).max(1e-9),
    )
}

/// The table's header.
pub const HEADER: &str =
    "share    records/s   p50 µs    p99 µs  p99.9 µs fsync p50 fsync p99 late µs   (client ÷ same run's fsync)";

/// A plot's line: its label, points and style.
type Series = (&'static str, Vec<(f64, f64)>, ShapeStyle);

/// Draws latency against the offered share of saturation: the tester's
/// p50, p99 and p99.9, and the same steps' fsync p50 and p99, on a log
/// scale.
pub fn write_svg(path: &Path, title: &str, steps: &[Step]) -> Result<(), String> {
    let paced: Vec<&Step> = steps.iter().filter(|s| s.share.is_some()).collect();
    let ms = |us: f64| us / 1000.0;
    let all: Vec<f64> = paced
        .iter()
        .flat_map(|s| {
            let l = |q: &str| s.latency_us.get(q).copied().unwrap_or(0) as f64;
            [l("p50"), l("p99"), l("p99.9"), s.stage("fsync", 0), s.stage("fsync", 1)]
        })
        .filter(|v| *v > 0.0)
        .map(ms)
        .collect();
    let low = all.iter().copied().fold(f64::INFINITY, f64::min).min(0.1) * 0.8;
    let high = all.iter().copied().fold(0.0, f64::max).max(1.0) * 1.25;
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("{title}: latency against load"), ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..100f64, (low..high).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("offered load (% of saturation)")
        .y_desc("latency (ms, log)")
        .draw()
        .map_err(|e| e.to_string())?;
    let x = |s: &Step| s.share.unwrap_or(1.0) * 100.0;
    let client = |q: &'static str| move |s: &&Step| (x(s), ms(s.latency_us.get(q).copied().unwrap_or(0) as f64));
    let fsync = |q: usize| move |s: &&Step| (x(s), ms(s.stage("fsync", q)));
    let grey = RGBColor(120, 120, 120);
    let series: [Series; 5] = [
        ("p99.9", paced.iter().map(client("p99.9")).collect(), RED.stroke_width(2)),
        ("p99", paced.iter().map(client("p99")).collect(), BLUE.stroke_width(2)),
        ("p50", paced.iter().map(client("p50")).collect(), GREEN.stroke_width(2)),
        ("fsync p99", paced.iter().map(fsync(1)).collect(), grey.stroke_width(1)),
        ("fsync p50", paced.iter().map(fsync(0)).collect(), BLACK.stroke_width(1)),
    ];
    for (label, points, style) in series {
        let points: Vec<(f64, f64)> = points.into_iter().filter(|p| p.1 > 0.0).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, style.filled()))).map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
