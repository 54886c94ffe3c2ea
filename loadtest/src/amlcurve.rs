//! `aml-curve`: AML level 3's detection against its false holds as the
//! threshold moves, on both synthetic populations (`aml::synth` and
//! `aml::population`), as a table, JSON and a plot. No switch is needed:
//! each point runs a fresh engine over a population (`aml::measure`).

use std::path::Path;

use harbour::aml::measure::{self, Measured, Trial};
use harbour::aml::population::{self, PopulationConfig, Strength};
use harbour::aml::synth::{self, SynthConfig};
use harbour::aml::{AmlConfig, BehaviourModel, Reasons};
use plotters::prelude::*;
use serde::Serialize;

/// One threshold on one population.
#[derive(Clone, Debug, Serialize)]
pub struct Point {
    pub population: &'static str,
    pub model: u32,
    /// Points (the threshold in quarters ÷ 4).
    pub threshold: f64,
    /// Normal transfers held by false alarms, percent (the mule rule's
    /// holds included).
    pub false_holds_pct: f64,
    /// Of those, the mule rule's, percent of normal transfers.
    pub mule_false_holds_pct: f64,
    /// Normal transfers held in cooling-off periods true detections
    /// started, percent of normal transfers (not false holds).
    pub held_after_true_pct: f64,
    /// Anomalies caught by strength (full, half, quarter, eighth), percent.
    pub caught_pct: [f64; 4],
    /// Mule patterns caught, percent (none injected: 0).
    pub mules_pct: f64,
    /// Anomalies caught by kind and strength: (kind, strength, caught, injected).
    pub by_kind: Vec<(&'static str, &'static str, u64, u64)>,
    /// Mule patterns caught by kind: (kind, caught, injected).
    pub mules_by_kind: Vec<(&'static str, u64, u64)>,
    /// The commonest signals of the false holds: (rules, holds), most
    /// first, at most eight.
    pub false_signals: Vec<(String, u64)>,
}

/// The two populations of `accounts` customers (the second half as many),
/// from `seed`.
#[must_use]
pub fn trials(accounts: usize, seed: u64) -> Vec<Trial> {
    let s = SynthConfig { seed, accounts, ..SynthConfig::default() };
    let p = PopulationConfig { seed: seed + 4, accounts: accounts / 2, ..PopulationConfig::default() };
    vec![
        Trial::from_synth(&synth::generate(&s), s.start_ms),
        Trial::from_population(&population::generate(&p), p.start_ms),
    ]
}

fn point(trial: &Trial, model: BehaviourModel, threshold_q: u32, m: &Measured) -> Point {
    let pct = |x: f64| (x * 10_000.0).round() / 100.0;
    Point {
        population: trial.name,
        model: model.version(),
        threshold: f64::from(threshold_q) / 4.0,
        false_holds_pct: pct(m.false_hold_rate()),
        mule_false_holds_pct: pct(if m.normal == 0 { 0.0 } else { m.normal_held_mule as f64 / m.normal as f64 }),
        held_after_true_pct: pct(if m.normal == 0 { 0.0 } else { m.normal_held_after_true as f64 / m.normal as f64 }),
        caught_pct: Strength::ALL.map(|s| pct(m.strength(s).rate())),
        mules_pct: pct(m.all_mules().rate()),
        by_kind: m.anomalies.iter().map(|((k, st), t)| (*k, st.name(), t.caught, t.injected)).collect(),
        mules_by_kind: m.mules.iter().map(|(k, t)| (*k, t.caught, t.injected)).collect(),
        false_signals: signals(m),
    }
}

fn signals(m: &Measured) -> Vec<(String, u64)> {
    let mut by: Vec<(String, u64)> = m
        .false_trips
        .iter()
        .map(|(bits, n)| {
            let names: Vec<&str> =
                Reasons::NAMES.iter().filter(|(bit, _)| bits & bit != 0).map(|(_, name)| *name).collect();
            (names.join("+"), *n)
        })
        .collect();
    by.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    by.truncate(8);
    by
}

/// Every threshold (quarter points) on every trial, each point printed by
/// `progress` as it is measured.
pub fn curve(trials: &[Trial], model: BehaviourModel, thresholds_q: &[u32], progress: impl Fn(&Point)) -> Vec<Point> {
    let mut points = Vec::new();
    for trial in trials {
        for &q in thresholds_q {
            let aml = AmlConfig { model, threshold_q: q, ..AmlConfig::default() };
            let p = point(trial, model, q, &measure::measure(trial, aml));
            progress(&p);
            points.push(p);
        }
    }
    points
}

/// The table's header.
pub const HEADER: &str =
    "population  model threshold  false holds (mule rule) after true   full   half quarter eighth  mules";

/// One point as a table line.
#[must_use]
pub fn line(p: &Point) -> String {
    let [f, h, q, e] = p.caught_pct;
    format!(
        "{:11} {:5} {:9.2} {:11.3}% {:10.3}% {:9.3}% {:5.1}% {:5.1}% {:6.1}% {:5.1}% {:5.1}%",
        p.population,
        p.model,
        p.threshold,
        p.false_holds_pct,
        p.mule_false_holds_pct,
        p.held_after_true_pct,
        f,
        h,
        q,
        e,
        p.mules_pct
    )
}

/// Draws detection (percent caught, by strength) against false holds
/// (percent of normal transfers), a line per population and strength, each
/// point a threshold.
pub fn write_svg(path: &Path, points: &[Point]) -> Result<(), String> {
    let x_max = points.iter().map(|p| p.false_holds_pct).fold(0.0, f64::max).max(0.5) * 1.1;
    let root = SVGBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "AML level 3: anomalies caught against normal transfers held, as the threshold moves",
            ("sans-serif", 18),
        )
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..100f64)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("normal transfers held (%)")
        .y_desc("anomalies caught (%)")
        .draw()
        .map_err(|e| e.to_string())?;
    let colours = [GREEN, BLUE, MAGENTA, RED];
    let mut populations: Vec<&'static str> = points.iter().map(|p| p.population).collect();
    populations.dedup();
    for (n, population) in populations.iter().enumerate() {
        for (k, strength) in Strength::ALL.iter().enumerate() {
            let mut line: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.population == *population)
                .map(|p| (p.false_holds_pct, p.caught_pct[k]))
                .collect();
            line.sort_by(|a, b| a.0.total_cmp(&b.0));
            let style = if n == 0 { colours[k].stroke_width(2) } else { colours[k].mix(0.6).stroke_width(1) };
            let label = format!("{population}, {}", strength.name());
            chart
                .draw_series(LineSeries::new(line.clone(), style))
                .map_err(|e| e.to_string())?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
            chart
                .draw_series(line.into_iter().map(|p| {
                    if n == 0 {
                        Circle::new(p, 3, style.filled()).into_dyn()
                    } else {
                        TriangleMarker::new(p, 4, style.filled()).into_dyn()
                    }
                }))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
