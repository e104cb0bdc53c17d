//! Prometheus metrics: names, buckets, and handles cached off the request
//! path.
//!
//! Series are registered once per (listener, route, backend) and looked up
//! by status code from a small table, so recording a request formats no
//! strings and allocates nothing.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::edge::auth::AuthOutcome;

pub const REQUESTS: &str = "vakt_requests_total";
pub const REQUEST_DURATION: &str = "vakt_request_duration_seconds";
pub const UPSTREAM_CONNECTIONS: &str = "vakt_upstream_connections";
pub const CONFIG_RELOADS: &str = "vakt_config_reloads_total";
pub const CONFIG_LAST_RELOAD_OK: &str = "vakt_config_last_reload_success";
pub const AUTH: &str = "vakt_auth_total";
pub const TIMEOUTS: &str = "vakt_timeouts_total";
pub const FALLBACKS: &str = "vakt_fallbacks_total";
pub const RATE_LIMITED: &str = "vakt_rate_limited_total";
pub const TCP_CONNECTIONS: &str = "vakt_tcp_connections_total";
pub const TCP_ACTIVE: &str = "vakt_tcp_active_connections";
pub const TCP_SENT: &str = "vakt_tcp_bytes_sent_total";
pub const TCP_RECEIVED: &str = "vakt_tcp_bytes_received_total";

/// Latency buckets in seconds, from 0.5 ms to 30 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status codes whose counters are cached; others are looked up.
const COMMON_CODES: [u16; 16] = [
    200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 429, 500, 502, 503, 504,
];

/// Installs the global recorder; the handle renders `/metrics`.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), BUCKETS)?
        .install_recorder()?;
    describe();
    // The process only gets this far with a config it accepted.
    metrics::gauge!(CONFIG_LAST_RELOAD_OK).set(1.0);
    Ok(handle)
}

fn describe() {
    metrics::describe_counter!(REQUESTS, "Requests handled, by final status code");
    metrics::describe_histogram!(
        REQUEST_DURATION,
        metrics::Unit::Seconds,
        "Time from request head to the end of the response body"
    );
    metrics::describe_gauge!(UPSTREAM_CONNECTIONS, "Open upstream connections");
    metrics::describe_counter!(CONFIG_RELOADS, "Config reloads, by result");
    metrics::describe_gauge!(
        CONFIG_LAST_RELOAD_OK,
        "1 when the last config file read was applied, 0 when it was refused"
    );
    metrics::describe_counter!(AUTH, "Authentication checks, by result");
    metrics::describe_counter!(TIMEOUTS, "Requests or attempts that ran out of time");
    metrics::describe_counter!(FALLBACKS, "Fallback responses served, by reason");
    metrics::describe_counter!(RATE_LIMITED, "Requests refused by a rate limit");
    metrics::describe_counter!(TCP_CONNECTIONS, "Connections proxied as TCP");
    metrics::describe_gauge!(TCP_ACTIVE, "Connections proxied as TCP, open now");
    metrics::describe_counter!(
        TCP_SENT,
        metrics::Unit::Bytes,
        "Bytes sent upstream on connections proxied as TCP"
    );
    metrics::describe_counter!(
        TCP_RECEIVED,
        metrics::Unit::Bytes,
        "Bytes received from upstream on connections proxied as TCP"
    );
}

/// Request counters and durations of one (listener, route, backend); on
/// a transparent listener also labelled with its `direction`.
#[derive(Debug)]
pub struct RequestMetrics {
    labels: Vec<Label>,
    common: [OnceLock<Counter>; COMMON_CODES.len()],
    durations: [OnceLock<Histogram>; 5],
}

impl RequestMetrics {
    pub fn new(listener: &str, route: &str, backend: &str) -> Self {
        Self::with_direction(listener, None, route, backend)
    }

    /// Series with a `direction` label (`outbound`, `inbound`) when one
    /// is given; HTTP listeners give none and keep their label set.
    pub fn with_direction(
        listener: &str,
        direction: Option<&'static str>,
        route: &str,
        backend: &str,
    ) -> Self {
        let mut labels = vec![
            Label::new("listener", listener.to_string()),
            Label::new("route", route.to_string()),
            Label::new("backend", backend.to_string()),
        ];
        if let Some(d) = direction {
            labels.push(Label::new("direction", d));
        }
        Self {
            labels,
            common: Default::default(),
            durations: Default::default(),
        }
    }

    /// Counts one finished request.
    pub fn record(&self, code: u16, elapsed: Duration) {
        match COMMON_CODES.iter().position(|c| *c == code) {
            Some(i) => self.common[i]
                .get_or_init(|| self.counter(code))
                .increment(1),
            None => self.counter(code).increment(1),
        }
        let class = (code / 100).clamp(1, 5) as usize - 1;
        self.durations[class]
            .get_or_init(|| self.histogram(class))
            .record(elapsed.as_secs_f64());
    }

    fn counter(&self, code: u16) -> Counter {
        let mut labels = self.labels.clone();
        labels.push(Label::new("code", code.to_string()));
        metrics::counter!(REQUESTS, labels)
    }

    fn histogram(&self, class: usize) -> Histogram {
        const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
        let mut labels = self.labels.clone();
        labels.push(Label::new("code_class", CLASSES[class]));
        metrics::histogram!(REQUEST_DURATION, labels)
    }
}

/// Per-route edge counters: auth outcomes and rate-limited requests.
#[derive(Debug)]
pub struct RouteMetrics {
    route: String,
    auth: [OnceLock<Counter>; 9],
    rate_limited: OnceLock<Counter>,
}

impl RouteMetrics {
    pub fn new(route: &str) -> Self {
        Self {
            route: route.to_string(),
            auth: Default::default(),
            rate_limited: OnceLock::new(),
        }
    }

    /// Counts `vakt_auth_total{route,result}`.
    pub fn auth(&self, outcome: AuthOutcome) {
        let slot = &self.auth[outcome as usize % 9];
        slot.get_or_init(
            || metrics::counter!(AUTH, "route" => self.route.clone(), "result" => outcome.as_str()),
        )
        .increment(1);
    }

    /// Counts `vakt_rate_limited_total{route}`.
    pub fn rate_limited(&self) {
        self.rate_limited
            .get_or_init(|| metrics::counter!(RATE_LIMITED, "route" => self.route.clone()))
            .increment(1);
    }
}

/// `vakt_upstream_connections{backend}`: up while a connection is open.
#[derive(Clone, Debug)]
pub struct ConnectionGauge(Gauge);

/// Holds one count of [`ConnectionGauge`] until dropped.
pub struct ConnectionOpen(Gauge);

impl ConnectionGauge {
    pub fn new(backend: &Arc<str>) -> Self {
        Self(metrics::gauge!(UPSTREAM_CONNECTIONS, "backend" => backend.to_string()))
    }

    pub fn opened(&self) -> ConnectionOpen {
        self.0.increment(1.0);
        ConnectionOpen(self.0.clone())
    }
}

impl Drop for ConnectionOpen {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Counts a config reload by result (`success` or `failure`) and sets
/// `vakt_config_last_reload_success` to match.
pub fn config_reload(ok: bool) {
    let result = if ok { "success" } else { "failure" };
    metrics::counter!(CONFIG_RELOADS, "result" => result).increment(1);
    metrics::gauge!(CONFIG_LAST_RELOAD_OK).set(f64::from(u8::from(ok)));
}

/// Counts `vakt_timeouts_total{backend}`; off the fast path.
pub fn timeout(backend: &str) {
    metrics::counter!(TIMEOUTS, "backend" => backend.to_string()).increment(1);
}

/// Counts `vakt_fallbacks_total{backend,reason}`; off the fast path.
pub fn fallback(backend: &str, reason: &'static str) {
    metrics::counter!(FALLBACKS, "backend" => backend.to_string(), "reason" => reason).increment(1);
}

/// `vakt_tcp_*{direction,backend}` of one (direction, backend): registered
/// once, so a connection formats no label.
#[derive(Debug)]
pub struct TcpMetrics {
    pub connections: Counter,
    pub active: Gauge,
    /// Bytes from the client sent upstream.
    pub sent: Counter,
    /// Bytes from upstream sent to the client.
    pub received: Counter,
}

impl TcpMetrics {
    pub fn new(direction: &'static str, backend: &str) -> Self {
        let labels = [
            Label::new("direction", direction),
            Label::new("backend", backend.to_string()),
        ];
        Self {
            connections: metrics::counter!(TCP_CONNECTIONS, labels.iter()),
            active: metrics::gauge!(TCP_ACTIVE, labels.iter()),
            sent: metrics::counter!(TCP_SENT, labels.iter()),
            received: metrics::counter!(TCP_RECEIVED, labels.iter()),
        }
    }

    /// Counts a connection opened; the gauge stays up until the returned
    /// guard drops.
    pub fn opened(&self) -> ConnectionOpen {
        self.connections.increment(1);
        self.active.increment(1.0);
        ConnectionOpen(self.active.clone())
    }
}
