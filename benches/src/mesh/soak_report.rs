//! What a soak means: RSS at start and end, its range, the least-squares
//! slope after the warm-up and whether that counts as flat, p99 per
//! window and the errors, as Markdown and as the verdict table's row.
//!
//! Flat means the slope after the warm-up adds less than 1 % of the RSS at
//! the warm-up's end per 10 minutes. At half the saturating rate ten
//! minutes carry millions of requests, so a leak of even one byte per
//! request, or of one buffer per connection over the hundreds of
//! connections the windows open, grows RSS by far more; allocator arenas
//! settling move it by a few pages, far less.

use std::fmt::Write as _;

use serde::Serialize;

use super::soak::Soak;

/// Growth allowed per 10 minutes, as a share of the RSS after warm-up.
const FLAT_SHARE: f64 = 0.01;

/// The figures read off a soak.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// RSS at the first and last read, KiB.
    pub start_kib: u64,
    pub end_kib: u64,
    /// RSS at the first read after the warm-up, KiB.
    pub warm_kib: u64,
    pub min_kib: u64,
    pub max_kib: u64,
    /// Least-squares slope of RSS after the warm-up, KiB per minute.
    pub slope_kib_per_min: f64,
    /// The slope below which RSS counts as flat, KiB per minute.
    pub flat_below_kib_per_min: f64,
    pub flat: bool,
    pub requests: u64,
    pub errors: u64,
    /// Requests answered per second of wall time; below the rate when
    /// the client fell behind its schedule.
    pub delivered_rps: f64,
    /// Median and highest p99 over the windows, microseconds.
    pub p99_median_us: f64,
    pub p99_max_us: f64,
    /// Mean CPU of the proxy over the reads, percent of one core.
    pub cpu_mean_pct: f64,
}

/// Least-squares slope of `y` over `x`; `None` with fewer than 2 points.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

impl Soak {
    /// Seconds of warm-up left out of the slope.
    pub fn warmup_s(&self) -> f64 {
        self.plan.duration.as_secs_f64() * self.plan.warmup_share
    }

    /// The figures; `None` when the soak read nothing.
    pub fn summary(&self) -> Option<Summary> {
        let first = self.points.first()?;
        let warm: Vec<_> = self
            .points
            .iter()
            .filter(|p| p.t_s >= self.warmup_s())
            .collect();
        let warm_kib = warm.first().map_or(first.rss_kib, |p| p.rss_kib);
        let xy: Vec<(f64, f64)> = warm
            .iter()
            .map(|p| (p.t_s / 60.0, p.rss_kib as f64))
            .collect();
        let slope_kib_per_min = slope(&xy).unwrap_or(0.0);
        let flat_below_kib_per_min = warm_kib as f64 * FLAT_SHARE / 10.0;
        let mut p99: Vec<f64> = self.windows.iter().map(|w| w.p99_us).collect();
        p99.sort_by(f64::total_cmp);
        let cpu = self.points.iter().map(|p| p.cpu_pct).sum::<f64>();
        Some(Summary {
            start_kib: first.rss_kib,
            end_kib: self.points.last().map_or(0, |p| p.rss_kib),
            warm_kib,
            min_kib: self.points.iter().map(|p| p.rss_kib).min().unwrap_or(0),
            max_kib: self.points.iter().map(|p| p.rss_kib).max().unwrap_or(0),
            slope_kib_per_min,
            flat_below_kib_per_min,
            flat: xy.len() >= 2 && slope_kib_per_min < flat_below_kib_per_min,
            requests: self.windows.iter().map(|w| w.requests).sum(),
            errors: self.windows.iter().map(|w| w.errors).sum(),
            delivered_rps: self.windows.iter().map(|w| w.requests).sum::<u64>() as f64
                / self.windows.last().map_or(1.0, |w| w.end_s.max(1e-3)),
            p99_median_us: p99.get(p99.len() / 2).copied().unwrap_or(0.0),
            p99_max_us: p99.last().copied().unwrap_or(0.0),
            cpu_mean_pct: cpu / self.points.len() as f64,
        })
    }

    /// The verdict table's row for the soak.
    pub fn verdict_row(&self) -> String {
        let minutes = self.plan.duration.as_secs_f64() / 60.0;
        let Some(s) = self.summary() else {
            return format!(
                "| RSS flat over a {minutes:.1}-minute soak, KiB/min | – | – | – | not measured |\n"
            );
        };
        let result = match (s.flat, s.errors) {
            (true, 0) => "**met**",
            (true, _) => "**met**, with errors",
            (false, _) => "**missed**",
        };
        format!(
            "| RSS slope over a {minutes:.1}-minute soak at {} req/s, KiB/min | {:.1} | {:.1} | – | {result} |\n",
            self.rate, s.slope_kib_per_min, s.flat_below_kib_per_min
        )
    }

    /// The soak as Markdown.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let Some(s) = self.summary() else {
            return "The soak read nothing.\n".into();
        };
        let sat = self
            .saturating_rps
            .map_or("given".to_owned(), |r| format!("half of {r:.0} req/s"));
        let mib = |k: u64| k as f64 / 1024.0;
        let _ = writeln!(
            md,
            "vakt-proxy, guards on, HTTP/1.1 open-loop at {} req/s ({sat}) for {:.0} s over {} connections, \
             fresh every {:.0} s; RSS read every {:.2} s; the slope leaves out the first {:.0} s. \
             Other tenants used {:.0} % of one core meanwhile.\n",
            self.rate,
            self.plan.duration.as_secs_f64(),
            self.plan.conns,
            self.plan.window.as_secs_f64(),
            self.plan.every.as_secs_f64(),
            self.warmup_s(),
            self.noise_pct
        );
        md.push_str("| measure | value |\n|---|--:|\n");
        let rows = [
            (
                "RSS idle, before the load, MiB",
                format!("{:.1}", mib(self.idle_kib)),
            ),
            (
                "RSS at start / after warm-up / at end, MiB",
                format!(
                    "{:.1} / {:.1} / {:.1}",
                    mib(s.start_kib),
                    mib(s.warm_kib),
                    mib(s.end_kib)
                ),
            ),
            (
                "RSS min / max, MiB",
                format!("{:.1} / {:.1}", mib(s.min_kib), mib(s.max_kib)),
            ),
            (
                "RSS slope after warm-up, KiB/min",
                format!("{:.2}", s.slope_kib_per_min),
            ),
            (
                "flat below, KiB/min (1 % of RSS per 10 min)",
                format!("{:.2}", s.flat_below_kib_per_min),
            ),
            (
                "requests / errors",
                format!("{} / {}", s.requests, s.errors),
            ),
            (
                "req/s delivered (requests over wall time)",
                format!("{:.0}", s.delivered_rps),
            ),
            (
                "p99 per window, median / max, ms",
                format!("{:.3} / {:.3}", s.p99_median_us / 1e3, s.p99_max_us / 1e3),
            ),
            (
                "proxy CPU, mean, % of one core",
                format!("{:.0}", s.cpu_mean_pct),
            ),
        ];
        for (k, v) in rows {
            let _ = writeln!(md, "| {k} | {v} |");
        }
        md.push_str("\n| target (vakt, guards on) | vakt | bound | goal | result |\n|---|--:|--:|--:|---|\n");
        md.push_str(&self.verdict_row());
        md.push_str("\n| window end, s | requests | errors | p99, ms |\n|--:|--:|--:|--:|\n");
        for w in &self.windows {
            let _ = writeln!(
                md,
                "| {:.0} | {} | {} | {:.3} |",
                w.end_s,
                w.requests,
                w.errors,
                w.p99_us / 1e3
            );
        }
        md
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_too_few_points() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), None);
    }
}
