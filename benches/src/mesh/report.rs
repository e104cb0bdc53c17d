//! The report of a run: medians over rounds per target and workload, as a
//! Markdown table with ratios to NGINX and HAProxy, the performance targets
//! marked met or missed, and the raw samples as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::run::{Memory, Plan, Sample, TARGETS, WORKLOADS};
use super::soak::Soak;

/// Everything a run measured and how.
#[derive(Debug, Serialize)]
pub struct Report {
    pub command: String,
    /// UTC, RFC 3339.
    pub finished: String,
    pub machine: String,
    pub versions: Vec<String>,
    pub plan: Plan,
    pub samples: Vec<Sample>,
    pub memory: Vec<Memory>,
    /// The soak, when this run held one (`--smoke` holds a short one).
    pub soak: Option<Soak>,
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

impl Report {
    /// Median over rounds of `f` for one target and workload.
    pub fn median(
        &self,
        target: &str,
        workload: &str,
        f: impl Fn(&Sample) -> Option<f64>,
    ) -> Option<f64> {
        median(
            self.samples
                .iter()
                .filter(|s| s.target == target && s.workload == workload)
                .filter_map(f)
                .collect(),
        )
    }

    /// p99 latency over direct's, microseconds.
    pub fn added_p99(&self, target: &str, workload: &str) -> Option<f64> {
        Some(
            self.median(target, workload, |s| Some(s.p99_us))?
                - self.median("direct", workload, |s| Some(s.p99_us))?,
        )
    }

    fn memory(&self, target: &str) -> Option<&Memory> {
        self.memory
            .iter()
            .find(|m| m.target == target && target != "direct")
    }

    fn rss_load(&self, target: &str) -> Option<f64> {
        self.samples
            .iter()
            .filter(|s| s.target == target)
            .filter_map(|s| s.rss_kib)
            .max()
            .map(|k| k as f64)
    }

    fn per_idle_conn_kib(&self, target: &str) -> Option<f64> {
        let m = self.memory(target)?;
        (m.idle_conns > 0).then(|| {
            (m.with_idle_conns_kib as f64 - m.before_idle_conns_kib as f64) / m.idle_conns as f64
        })
    }

    /// Median noise over all samples, percent of one core.
    pub fn noise(&self) -> f64 {
        median(self.samples.iter().map(|s| s.noise_pct).collect()).unwrap_or(0.0)
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "Command: `{}`  ", self.command);
        let _ = writeln!(md, "Finished {} on {}  ", self.finished, self.machine);
        let _ = writeln!(md, "{}  ", self.versions.join(" · "));
        let _ = writeln!(
            md,
            "{} rounds, {} s per load after {} s warm-up, {} connections ({} for h2c and gRPC, 10 streams each), proxies on core {}, upstream and client on core {}; \
             other tenants used a median {:.0} % of one core during the loads.\n",
            self.plan.rounds,
            self.plan.duration.as_secs_f64(),
            self.plan.duration.as_secs_f64() / 5.0,
            self.plan.conns,
            self.plan.conns,
            self.plan.proxy_cpu,
            self.plan.client_cpu,
            self.noise()
        );
        self.table(&mut md);
        md.push('\n');
        self.targets(&mut md);
        if let Some(soak) = &self.soak {
            md.push_str("\n### Soak\n\n");
            md.push_str(&soak.markdown());
        }
        md
    }

    fn table(&self, md: &mut String) {
        md.push_str("| workload | measure | direct | vakt | vakt, guards off | NGINX | HAProxy | vakt ÷ NGINX | vakt ÷ HAProxy |\n");
        md.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|\n");
        for w in &WORKLOADS {
            let key = w.key;
            if w.rate.is_none() {
                self.row(md, w.label, "req/s", 0, |t| {
                    self.median(t, key, |s| Some(s.rps))
                });
                self.row(md, "", "CPU s per 100k requests", 2, |t| {
                    self.median(t, key, |s| s.cpu_us_per_req.map(|u| u / 10.0))
                });
                self.row(md, "", "proxy core busy, %", 0, |t| {
                    self.median(t, key, |s| s.proxy_busy_pct)
                });
            }
            let label = if w.rate.is_some() { w.label } else { "" };
            self.latency_row(md, label, key);
            self.row(md, "", "p99 added over direct, ms", 3, |t| {
                (t != "direct")
                    .then(|| self.added_p99(t, key))
                    .flatten()
                    .map(|u| u / 1e3)
            });
        }
        self.row(md, "memory", "RSS idle, MiB", 1, |t| {
            self.memory(t).map(|m| m.idle_kib as f64 / 1024.0)
        });
        self.row(md, "", "RSS under load (peak sample), MiB", 1, |t| {
            self.rss_load(t).map(|k| k / 1024.0)
        });
        self.row(md, "", "RSS with the idle connections held, MiB", 1, |t| {
            self.memory(t)
                .map(|m| m.with_idle_conns_kib as f64 / 1024.0)
        });
        self.row(md, "", "idle connections held", 0, |t| {
            self.memory(t).map(|m| m.idle_conns as f64)
        });
        self.row(md, "", "KiB per idle connection", 1, |t| {
            self.per_idle_conn_kib(t)
        });
    }

    fn row(
        &self,
        md: &mut String,
        label: &str,
        measure: &str,
        digits: usize,
        f: impl Fn(&str) -> Option<f64>,
    ) {
        let values: Vec<Option<f64>> = TARGETS.iter().map(|t| f(t)).collect();
        let cell = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
        let ratio = |i: usize| match (values[1], values[i]) {
            (Some(a), Some(b)) if b.abs() > f64::EPSILON => format!("{:.2}", a / b),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {label} | {measure} | {} | {} |",
            values
                .iter()
                .map(|v| cell(*v))
                .collect::<Vec<_>>()
                .join(" | "),
            [ratio(3), ratio(4)].join(" | ")
        );
    }

    fn latency_row(&self, md: &mut String, label: &str, key: &str) {
        let cell = |t: &str| {
            let q = |f: fn(&Sample) -> f64| self.median(t, key, |s| Some(f(s)));
            match (q(|s| s.p50_us), q(|s| s.p99_us), q(|s| s.p999_us)) {
                (Some(a), Some(b), Some(c)) => {
                    format!("{:.3} / {:.3} / {:.3}", a / 1e3, b / 1e3, c / 1e3)
                }
                _ => "–".to_owned(),
            }
        };
        let p99 = |t: &str| self.median(t, key, |s| Some(s.p99_us));
        let ratio = |peer: &str| match (p99("vakt"), p99(peer)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "–".to_owned(),
        };
        let _ = writeln!(
            md,
            "| {label} | p50 / p99 / p99.9, ms | {} | {} | {} |",
            TARGETS.map(cell).join(" | "),
            ratio("nginx"),
            ratio("haproxy")
        );
    }

    fn targets(&self, md: &mut String) {
        md.push_str(
            "| target (vakt, guards on) | vakt | bound | goal | result |\n|---|--:|--:|--:|---|\n",
        );
        let best_low = |f: &dyn Fn(&str) -> Option<f64>| match (f("nginx"), f("haproxy")) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        for (label, key) in [
            ("CPU per request, HTTP/1.1, µs", "h1-sat"),
            ("CPU per request, h2c, µs", "h2c-sat"),
        ] {
            let f = |t: &str| self.median(t, key, |s| s.cpu_us_per_req);
            let bound = best_low(&f);
            verdict(md, label, f("vakt"), bound, bound.map(|b| b * 0.75), true);
        }
        for (label, key) in [
            ("req/s at saturation, HTTP/1.1", "h1-sat"),
            ("req/s at saturation, h2c", "h2c-sat"),
        ] {
            let f = |t: &str| self.median(t, key, |s| Some(s.rps));
            let best = match (f("nginx"), f("haproxy")) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            };
            verdict(md, label, f("vakt"), best.map(|b| b * 0.95), None, false);
        }
        for (label, key) in [
            ("p99 added at 1,000 req/s, µs", "h1-1k"),
            ("p99 added at 5,000 req/s, µs", "h1-5k"),
        ] {
            let bound = self.added_p99("nginx", key).map(|b| b.max(0.0));
            verdict(
                md,
                label,
                self.added_p99("vakt", key),
                bound,
                bound.map(|b| b / 2.0),
                true,
            );
        }
        let idle = self.memory("vakt").map(|m| m.idle_kib as f64 / 1024.0);
        verdict(md, "RSS idle, MiB", idle, Some(16.0), Some(8.0), true);
        verdict(
            md,
            "KiB per idle keep-alive connection",
            self.per_idle_conn_kib("vakt"),
            Some(4.0),
            None,
            true,
        );
        match &self.soak {
            Some(soak) => md.push_str(&soak.verdict_row()),
            None => md.push_str(
                "| RSS flat over a 10-minute soak at half the saturating rate | – | – | – | \
                 not in this run: `benches/run.sh --soak` writes soak.md |\n",
            ),
        }
    }
}

fn verdict(
    md: &mut String,
    label: &str,
    value: Option<f64>,
    bound: Option<f64>,
    goal: Option<f64>,
    lower: bool,
) {
    let fmt = |v: Option<f64>| v.map_or("–".to_owned(), |v| format!("{v:.1}"));
    let ok = |limit: f64, v: f64| if lower { v <= limit } else { v >= limit };
    let result = match (value, bound) {
        (Some(v), Some(b)) if ok(b, v) => match goal {
            Some(g) if ok(g, v) => "**met**, goal met too",
            Some(_) => "**met**, goal missed",
            None => "**met**",
        },
        (Some(_), Some(_)) => "**missed**",
        _ => "not measured",
    };
    let _ = writeln!(
        md,
        "| {label} | {} | {} | {} | {result} |",
        fmt(value),
        fmt(bound),
        fmt(goal)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![]), None);
    }

    #[test]
    fn verdict_reads_direction() {
        let mut md = String::new();
        verdict(&mut md, "x", Some(10.0), Some(12.0), Some(9.0), true);
        verdict(&mut md, "y", Some(10.0), Some(12.0), None, false);
        assert!(md.lines().next().is_some_and(|l| l.contains("goal missed")));
        assert!(md.lines().nth(1).is_some_and(|l| l.contains("**missed**")));
    }
}
