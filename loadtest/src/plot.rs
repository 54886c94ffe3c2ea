//! The latency plot of a run, as SVG: the percentile spectrum (latency
//! against percentile, on HdrHistogram's "1/(1-p)" axis, where the tail is
//! visible) and latency over time (p50, p99 and max each second).

use std::collections::BTreeMap;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::prelude::*;

/// Draws both panels into an SVG file.
pub fn write_svg(
    path: &Path,
    title: &str,
    all: &Histogram<u64>,
    per_second: &BTreeMap<u64, Histogram<u64>>,
) -> Result<(), String> {
    let root = SVGBackend::new(path, (1000, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (top, bottom) = root.split_vertically(400);
    let ms = |us: u64| us as f64 / 1000.0;

    // Percentile spectrum: x = log10(1 / (1 - p)), from p0 to p99.999.
    let points: Vec<(f64, f64)> = all
        .iter_quantiles(1)
        .filter(|v| v.quantile_iterated_to() < 0.99999)
        .map(|v| ((1.0 / (1.0 - v.quantile_iterated_to())).log10(), ms(v.value_iterated_to())))
        .collect();
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max).max(ms(all.max())) * 1.05 + 0.001;
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: latency by percentile"), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..5f64, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .x_label_formatter(&|x| {
            let p = 100.0 * (1.0 - 10f64.powf(-x));
            if p < 99.0 { format!("{p:.0}%") } else { format!("{p:.3}%") }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(points, &BLUE)).map_err(|e| e.to_string())?;

    // Latency over time.
    let seconds = per_second.keys().last().copied().unwrap_or(0) as f64 + 1.0;
    let y_max = per_second.values().map(|h| ms(h.max())).fold(0.0, f64::max) * 1.05 + 0.001;
    let mut chart = ChartBuilder::on(&bottom)
        .caption("latency over time", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..seconds, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart.configure_mesh().x_desc("seconds").y_desc("latency (ms)").draw().map_err(|e| e.to_string())?;
    for (label, q, color) in [("p50", 0.5, &GREEN), ("p99", 0.99, &BLUE), ("max", 1.0, &RED)] {
        let series = per_second.iter().map(|(s, h)| (*s as f64, ms(h.value_at_quantile(q))));
        chart
            .draw_series(LineSeries::new(series, color))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
