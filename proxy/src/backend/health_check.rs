//! Active HTTP health checks of a backend's endpoints.
//!
//! When a backend sets `healthCheck`, one task per endpoint sends
//! `GET <path>` every `interval` over a fresh HTTP/1.1 connection and
//! waits at most `timeout` for the status. A 2xx is a pass; anything
//! else, a refused or stalled connection included, is a fail. After
//! `unhealthyThreshold` fails in a row the endpoint is marked unhealthy
//! in the backend's [`Ejection`] state, after `healthyThreshold` passes in
//! a row healthy again. Endpoints start healthy, so a new backend serves
//! at once.
//!
//! The core starts a [`HealthChecker`] when it builds a backend and drops
//! it (or awaits [`HealthChecker::stop`]) when the backend goes away.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use metrics::Counter;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::{CancellationToken, DropGuard};
use vakt_api::config::HealthCheck;

use super::ejection::Ejection;

/// The health-check tasks of one backend; dropping it stops them.
#[derive(Debug)]
pub struct HealthChecker {
    stop: DropGuard,
    tasks: Vec<JoinHandle<()>>,
}

/// Consecutive passes and fails of one endpoint against the thresholds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    healthy: bool,
    streak: u32,
    healthy_threshold: u32,
    unhealthy_threshold: u32,
}

/// What one endpoint's task needs.
struct Probe {
    backend: Arc<str>,
    endpoint: String,
    index: usize,
    config: HealthCheck,
    ejection: Arc<Ejection>,
    passed: Counter,
    failed: Counter,
}

/// Aborts the connection task of a check however the check ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Tally {
    /// A healthy endpoint with no streak.
    pub fn new(config: &HealthCheck) -> Self {
        Self {
            healthy: true,
            streak: 0,
            healthy_threshold: config.healthy_threshold.max(1),
            unhealthy_threshold: config.unhealthy_threshold.max(1),
        }
    }

    /// Counts one check; returns the new health when it changes.
    pub fn observe(&mut self, passed: bool) -> Option<bool> {
        if passed == self.healthy {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let threshold = match passed {
            true => self.healthy_threshold,
            false => self.unhealthy_threshold,
        };
        if self.streak < threshold {
            return None;
        }
        self.healthy = passed;
        self.streak = 0;
        Some(passed)
    }

    /// The health as last decided.
    pub fn healthy(&self) -> bool {
        self.healthy
    }
}

impl HealthChecker {
    /// Starts one check task per endpoint of `backend`, feeding
    /// `ejection` (whose endpoint order `endpoints` must follow).
    pub fn spawn(
        backend: &str,
        config: &HealthCheck,
        endpoints: &[String],
        ejection: Arc<Ejection>,
    ) -> Self {
        let token = CancellationToken::new();
        let backend: Arc<str> = backend.into();
        let counter = |result: &'static str| {
            metrics::counter!(
                "vakt_health_checks_total",
                "backend" => backend.to_string(),
                "result" => result
            )
        };
        let tasks = endpoints
            .iter()
            .enumerate()
            .map(|(index, endpoint)| {
                let probe = Probe {
                    backend: backend.clone(),
                    endpoint: endpoint.clone(),
                    index,
                    config: config.clone(),
                    ejection: ejection.clone(),
                    passed: counter("pass"),
                    failed: counter("fail"),
                };
                tokio::spawn(probe.run(token.clone()))
            })
            .collect();
        Self {
            stop: token.drop_guard(),
            tasks,
        }
    }

    /// Stops the checks and waits until every task has ended.
    pub async fn stop(self) {
        drop(self.stop);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        let mut tally = Tally::new(&self.config);
        let mut ticks = tokio::time::interval(self.config.interval.get());
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let check = async {
                ticks.tick().await;
                check_once(&self.endpoint, &self.config.path, self.config.timeout.get()).await
            };
            let passed = tokio::select! {
                _ = stop.cancelled() => return,
                passed = check => passed,
            };
            let counter = if passed { &self.passed } else { &self.failed };
            counter.increment(1);
            if let Some(healthy) = tally.observe(passed) {
                self.ejection.set_health(self.index, healthy);
                tracing::info!(
                    backend = %self.backend,
                    endpoint = %self.endpoint,
                    healthy,
                    "health check changed endpoint health"
                );
            }
        }
    }
}

/// One check: `GET path` to `endpoint` (`host:port`) on a new
/// connection; true for a 2xx within `timeout`.
pub async fn check_once(endpoint: &str, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let stream = TcpStream::connect(endpoint).await.ok()?;
        let io = TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.ok()?;
        let _conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = Request::get(path)
            .header(header::HOST, endpoint)
            .header(header::USER_AGENT, "vakt-health-check")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status().is_success())
    };
    let outcome = tokio::time::timeout(timeout, attempt).await;
    matches!(outcome, Ok(Some(true)))
}

#[cfg(test)]
mod tests;
