//! Counters summed per route and per backend, the change between two
//! scrapes, and the table drawn from it.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

const REQUESTS: &str = "vakt_requests_total";
const DURATION: &str = "vakt_request_duration_seconds";

/// What a row is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Route,
    Backend,
}

/// Cumulative counts of one route or backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    pub requests: f64,
    /// Requests whose status was 5xx.
    pub errors: f64,
    /// Cumulative histogram: (upper bound in seconds, requests at or
    /// under it), `+Inf` included.
    pub buckets: BTreeMap<Bound, f64>,
}

/// A bucket's upper bound, ordered as a number.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bound(pub f64);

impl Eq for Bound {}

impl PartialOrd for Bound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Bound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// Counts of every route and backend, summed over the scrapes added.
#[derive(Clone, Debug, Default)]
pub struct Totals(pub BTreeMap<(Kind, String), Counts>);

impl Totals {
    /// Adds one proxy's `/metrics` text.
    pub fn add_text(&mut self, text: &str) -> std::io::Result<()> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let scrape = Scrape::parse(lines)?;
        for s in &scrape.samples {
            self.add_sample(s);
        }
        Ok(())
    }

    fn add_sample(&mut self, s: &prometheus_parse::Sample) {
        let keys = [
            (Kind::Route, s.labels.get("route")),
            (Kind::Backend, s.labels.get("backend")),
        ];
        for (kind, name) in keys {
            // Requests no route matched carry empty labels.
            let Some(name) = name.filter(|n| !n.is_empty()) else {
                continue;
            };
            let counts = self.0.entry((kind, name.to_owned())).or_default();
            match (&s.value, s.metric.as_str()) {
                (Value::Counter(v) | Value::Untyped(v), REQUESTS) => {
                    counts.requests += v;
                    if s.labels.get("code").is_some_and(|c| c.starts_with('5')) {
                        counts.errors += v;
                    }
                }
                (Value::Histogram(h), DURATION) => {
                    for b in h {
                        *counts.buckets.entry(Bound(b.less_than)).or_default() += b.count;
                    }
                }
                _ => {}
            }
        }
    }
}

/// The change between two scrapes, over `elapsed`.
#[derive(Clone, Debug)]
pub struct Window {
    pub elapsed: Duration,
    pub rows: BTreeMap<(Kind, String), Counts>,
}

impl Window {
    /// What changed from `before` to `now`. A count that went down (the
    /// proxy restarted) counts from zero.
    pub fn between(before: &Totals, now: &Totals, elapsed: Duration) -> Self {
        let rows = now
            .0
            .iter()
            .map(|(key, cur)| {
                let old = before.0.get(key).cloned().unwrap_or_default();
                (key.clone(), delta(&old, cur))
            })
            .collect();
        Self { elapsed, rows }
    }

    /// Requests per second of one row.
    pub fn rate(&self, c: &Counts) -> f64 {
        c.requests / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The table: one line per route, then one per backend.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (kind, title) in [(Kind::Route, "ROUTE"), (Kind::Backend, "BACKEND")] {
            let _ = writeln!(
                out,
                "{title:<24} {:>10} {:>9} {:>10}",
                "RPS", "SUCCESS", "P99"
            );
            for ((k, name), c) in &self.rows {
                if *k != kind {
                    continue;
                }
                let success = success(c).map_or("-".into(), |s| format!("{:.1}%", s * 100.0));
                let p99 = quantile(0.99, &c.buckets).map_or("-".into(), seconds);
                let rate = self.rate(c);
                let _ = writeln!(out, "{name:<24} {rate:>10.1} {success:>9} {p99:>10}");
            }
            out.push('\n');
        }
        out
    }
}

fn delta(old: &Counts, cur: &Counts) -> Counts {
    let reset = cur.requests < old.requests;
    let d = |o: f64, c: f64| if reset { c } else { (c - o).max(0.0) };
    let buckets = cur
        .buckets
        .iter()
        .map(|(le, c)| (*le, d(old.buckets.get(le).copied().unwrap_or(0.0), *c)))
        .collect();
    Counts {
        requests: d(old.requests, cur.requests),
        errors: d(old.errors, cur.errors),
        buckets,
    }
}

/// The share of requests that were not 5xx; `None` without requests.
pub fn success(c: &Counts) -> Option<f64> {
    (c.requests > 0.0).then(|| 1.0 - c.errors / c.requests)
}

/// The `q` quantile of a cumulative histogram, interpolated linearly
/// inside its bucket as Prometheus' `histogram_quantile` does; `None`
/// when empty. Past the last finite bound it is that bound.
pub fn quantile(q: f64, buckets: &BTreeMap<Bound, f64>) -> Option<f64> {
    let total = *buckets.get(&Bound(f64::INFINITY))?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (Bound(upper), count) in buckets {
        if *count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            let share = (rank - below) / (count - below).max(f64::MIN_POSITIVE);
            return Some(lower + (upper - lower) * share);
        }
        (lower, below) = (*upper, *count);
    }
    Some(lower)
}

/// `0.8ms`, `12.5ms`, `1.25s`.
fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.1}ms", s * 1000.0)
    } else {
        format!("{s:.2}s")
    }
}

#[cfg(test)]
mod tests;
