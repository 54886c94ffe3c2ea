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

    // Percentile spectrum: x = log10(1 / (1 - p)), out to the largest
    // value (at p = 1 - 1/count, the last request), so the axis ends where
    // the data does.
    let count = all.len().max(1) as f64;
    let x_end = count.log10().max(1.0);
    let mut points: Vec<(f64, f64)> = all
        .iter_quantiles(1)
        .map(|v| v.quantile_iterated_to())
        .zip(all.iter_quantiles(1).map(|v| ms(v.value_iterated_to())))
        .filter(|&(q, _)| q < 1.0)
        .map(|(q, v)| ((1.0 / (1.0 - q)).log10().min(x_end), v))
        .collect();
    points.push((x_end, ms(all.max())));
    let y_max = points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.05 + 0.001;
    let decades = x_end.ceil();
    let mut chart = ChartBuilder::on(&top)
        .caption(format!("{title}: latency by percentile"), ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..decades, 0f64..y_max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (ms)")
        // One tick a decade: 0%, 90%, 99%, 99.9%, ...
        .x_labels(decades as usize + 1)
        .x_label_formatter(&|x| {
            let k = x.round();
            if (x - k).abs() > 1e-6 {
                return String::new();
            }
            match k as i32 {
                0 => "0%".into(),
                n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n)),
            }
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart.draw_series(LineSeries::new(points, BLUE.stroke_width(2))).map_err(|e| e.to_string())?;

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
    // Max first, light and thin, so p99 and p50 are drawn over it (where
    // they meet, p99 shows).
    let light_red = RGBColor(240, 150, 150);
    for (label, q, style) in [
        ("max", 1.0, light_red.stroke_width(1)),
        ("p99", 0.99, BLUE.stroke_width(2)),
        ("p50", 0.5, GREEN.stroke_width(2)),
    ] {
        let series = per_second.iter().map(|(s, h)| (*s as f64, ms(h.value_at_quantile(q))));
        chart
            .draw_series(LineSeries::new(series, style))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
    }
    chart.configure_series_labels().border_style(BLACK).draw().map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
