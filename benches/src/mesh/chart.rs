//! The latency chart: p50 to p99.9 of each target at the fixed rates, one
//! panel per rate, drawn as SVG with plotters (no system fonts needed).

use std::path::Path;

use plotters::prelude::*;

use super::report::Report;

const TARGETS: [(&str, &str, RGBColor); 4] = [
    ("direct", "direct", RGBColor(120, 120, 120)),
    ("vakt", "vakt", RGBColor(214, 39, 40)),
    ("nginx", "NGINX", RGBColor(44, 160, 44)),
    ("haproxy", "HAProxy", RGBColor(31, 119, 180)),
];

const PERCENTILES: [&str; 4] = ["p50", "p90", "p99", "p99.9"];

/// Writes the chart to `file`.
pub fn draw(report: &Report, file: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    for (area, (key, title)) in panels.iter().zip([
        ("h1-1k", "HTTP/1.1 at 1,000 req/s, open loop"),
        ("h1-5k", "HTTP/1.1 at 5,000 req/s, open loop"),
    ]) {
        panel(report, area, key, title)?;
    }
    root.present()?;
    Ok(())
}

fn series(report: &Report, target: &str, key: &str) -> Vec<(usize, f64)> {
    let pick: [fn(&super::run::Sample) -> f64; 4] =
        [|s| s.p50_us, |s| s.p90_us, |s| s.p99_us, |s| s.p999_us];
    pick.iter()
        .enumerate()
        .filter_map(|(i, f)| Some((i, report.median(target, key, |s| Some(f(s)))? / 1e3)))
        .collect()
}

fn panel(
    report: &Report,
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    key: &str,
    title: &str,
) -> anyhow::Result<()> {
    let top = TARGETS
        .iter()
        .flat_map(|(t, _, _)| series(report, t, key))
        .map(|(_, v)| v)
        .fold(0.1_f64, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0usize..3usize, 0.0..top * 1.1)?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|i| PERCENTILES.get(*i).copied().unwrap_or("").to_owned())
        .y_desc("latency, ms")
        .draw()?;
    for (target, label, color) in TARGETS {
        let points = series(report, target, key);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

/// Writes the soak's RSS over time to `file`, with the warm-up shaded.
pub fn draw_soak(soak: &super::soak::Soak, file: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(file, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let points: Vec<(f64, f64)> = soak
        .points
        .iter()
        .map(|p| (p.t_s / 60.0, p.rss_kib as f64 / 1024.0))
        .collect();
    let right = (soak.plan.duration.as_secs_f64() / 60.0).max(1e-3);
    let top = points.iter().map(|p| p.1).fold(1.0_f64, f64::max) * 1.2;
    let title = format!("vakt-proxy RSS at {} req/s, HTTP/1.1 open loop", soak.rate);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..right, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("minutes")
        .y_desc("RSS, MiB")
        .draw()?;
    let warm = soak.warmup_s() / 60.0;
    chart.draw_series(std::iter::once(Rectangle::new(
        [(0.0, 0.0), (warm, top)],
        RGBColor(230, 230, 230).filled(),
    )))?;
    let red = RGBColor(214, 39, 40);
    chart.draw_series(LineSeries::new(points, red.stroke_width(2)))?;
    root.present()?;
    Ok(())
}
