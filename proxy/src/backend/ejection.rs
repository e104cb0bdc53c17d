//! Which endpoints of a backend the balancer may pick.
//!
//! An endpoint is out while any of three sources holds it out:
//! - outlier detection: after `consecutiveFailures` failed attempts in a
//!   row it is ejected for `ejectionTime` × the times it has been ejected
//!   (at most [`MAX_EJECTION_TIME`], or `ejectionTime` when larger), and
//!   never while that would put more than `maxEjectionPercent` of the
//!   backend's endpoints out; each `ejectionTime` spent back in service
//!   forgives one past ejection;
//! - active health checks ([`Ejection::set_health`]);
//! - fleet health pushed by the control plane ([`Ejection::set_fleet`]).
//!
//! Panic mode: when fewer than half of the endpoints are in (or none),
//! every endpoint counts as available, so clients get what the upstream
//! says rather than a proxy-made 503 (case BR-20).
//!
//! The balancer calls [`Ejection::is_available`] for each candidate and
//! the attempt loop calls [`Ejection::record`] with each outcome. Both
//! read and write atomics only; the scan for panic mode runs only when
//! the candidate itself is out.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use metrics::Counter;
use serde::Serialize;
use tokio::time::Instant;
use vakt_api::config::OutlierDetection;

use super::outcome::Outcome;

/// Longest ejection, unless `ejectionTime` itself is longer: 300 s.
pub const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

/// The availability of each endpoint of one backend, by index in the
/// backend's endpoint list.
#[derive(Debug)]
pub struct Ejection {
    backend: Arc<str>,
    outlier: Option<OutlierDetection>,
    origin: Instant,
    endpoints: Box<[EndpointState]>,
    /// Serialises ejection decisions so the cap holds under races.
    eject_lock: Mutex<()>,
    ejections: Counter,
}

/// One endpoint as `/backends` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointSnapshot {
    pub address: String,
    /// Whether the balancer may pick it now (panic mode included).
    pub available: bool,
    /// Milliseconds left of the current ejection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_remaining_ms: Option<u64>,
    /// Past ejections not yet forgiven; the next one lasts one longer.
    pub times_ejected: u32,
    pub consecutive_failures: u32,
    /// As the active health check last decided; true without checks.
    pub healthy: bool,
    /// As fleet health last said; true until told otherwise.
    pub fleet_healthy: bool,
    pub ejections_total: u64,
}

/// All endpoints of one backend as `/backends` shows them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EjectionSnapshot {
    /// True when too few endpoints are in and all are used.
    pub panic: bool,
    pub endpoints: Vec<EndpointSnapshot>,
}

#[derive(Debug)]
struct EndpointState {
    address: Box<str>,
    consecutive: AtomicU32,
    /// Milliseconds since `origin` when the ejection ends; 0 if never.
    ejected_until: AtomicU64,
    times: AtomicU32,
    unhealthy: AtomicBool,
    fleet_down: AtomicBool,
    ejections_total: AtomicU64,
    /// Attempts and failures since the counts were last taken.
    attempts: AtomicU64,
    failures: AtomicU64,
}

impl EndpointState {
    fn new(address: &str) -> Self {
        Self {
            address: address.into(),
            consecutive: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            times: AtomicU32::new(0),
            unhealthy: AtomicBool::new(false),
            fleet_down: AtomicBool::new(false),
            ejections_total: AtomicU64::new(0),
            attempts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    fn ejected(&self, now_ms: u64) -> bool {
        self.ejected_until.load(Ordering::Acquire) > now_ms
    }

    fn up(&self, now_ms: u64) -> bool {
        !self.ejected(now_ms)
            && !self.unhealthy.load(Ordering::Acquire)
            && !self.fleet_down.load(Ordering::Acquire)
    }
}

impl Ejection {
    /// Every endpoint in; `outlier` `None` turns outlier detection off
    /// (health marks still apply).
    pub fn new(backend: &str, outlier: Option<&OutlierDetection>, endpoints: &[String]) -> Self {
        let ejections = metrics::counter!(
            "vakt_ejections_total", "backend" => backend.to_owned()
        );
        Self {
            backend: backend.into(),
            outlier: outlier.cloned(),
            origin: Instant::now(),
            endpoints: endpoints.iter().map(|a| EndpointState::new(a)).collect(),
            eject_lock: Mutex::new(()),
            ejections,
        }
    }

    /// Number of endpoints.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// Whether the backend has no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// Whether the balancer may pick endpoint `index` at `now`: it is in,
    /// or the backend is in panic mode. Unknown indexes are unavailable.
    pub fn is_available(&self, index: usize, now: Instant) -> bool {
        let now_ms = self.millis(now);
        match self.endpoints.get(index) {
            Some(e) if e.up(now_ms) => true,
            Some(_) => self.panic_at(now_ms),
            None => false,
        }
    }

    /// Whether no endpoint is in, so all are used: traffic to endpoints
    /// that may fail beats no traffic at all.
    pub fn in_panic(&self, now: Instant) -> bool {
        self.panic_at(self.millis(now))
    }

    /// Endpoints in at `now`, panic mode aside.
    pub fn up_count(&self, now: Instant) -> usize {
        let now_ms = self.millis(now);
        self.endpoints.iter().filter(|e| e.up(now_ms)).count()
    }

    /// Feeds one attempt's outcome on endpoint `index` to outlier
    /// detection.
    pub fn record(&self, index: usize, outcome: Outcome, now: Instant) {
        if let Some(e) = self.endpoints.get(index)
            && outcome != Outcome::Neutral
        {
            e.attempts.fetch_add(1, Ordering::Relaxed);
            if outcome.is_failure() {
                e.failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        let (Some(outlier), Some(e)) = (&self.outlier, self.endpoints.get(index)) else {
            return;
        };
        match outcome {
            Outcome::Neutral => {}
            Outcome::Success => e.consecutive.store(0, Ordering::Relaxed),
            Outcome::Failure(_) => {
                let n = e.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= outlier.consecutive_failures {
                    self.try_eject(index, outlier, now);
                }
            }
        }
    }

    /// Attempts and failures on endpoint `index` since the last call, for
    /// reports to the control plane.
    pub fn take_counts(&self, index: usize) -> (u64, u64) {
        self.endpoints.get(index).map_or((0, 0), |e| {
            (
                e.attempts.swap(0, Ordering::Relaxed),
                e.failures.swap(0, Ordering::Relaxed),
            )
        })
    }

    /// Whether endpoint `index` is ejected by outlier detection now.
    pub fn is_ejected(&self, index: usize, now: Instant) -> bool {
        let now_ms = self.millis(now);
        self.endpoints.get(index).is_some_and(|e| e.ejected(now_ms))
    }

    /// Sets what the active health check decided for endpoint `index`.
    pub fn set_health(&self, index: usize, healthy: bool) {
        if let Some(e) = self.endpoints.get(index) {
            e.unhealthy.store(!healthy, Ordering::Release);
        }
    }

    /// Sets what fleet health says of endpoint `index`.
    pub fn set_fleet(&self, index: usize, healthy: bool) {
        if let Some(e) = self.endpoints.get(index) {
            e.fleet_down.store(!healthy, Ordering::Release);
        }
    }

    /// Every endpoint's state for `/backends`.
    pub fn snapshot(&self, now: Instant) -> EjectionSnapshot {
        let now_ms = self.millis(now);
        let panic = self.panic_at(now_ms);
        let endpoints = self.endpoints.iter().map(|e| {
            let until = e.ejected_until.load(Ordering::Acquire);
            EndpointSnapshot {
                address: e.address.to_string(),
                available: panic || e.up(now_ms),
                ejected_remaining_ms: until.checked_sub(now_ms).filter(|ms| *ms > 0),
                times_ejected: e.times.load(Ordering::Relaxed),
                consecutive_failures: e.consecutive.load(Ordering::Relaxed),
                healthy: !e.unhealthy.load(Ordering::Relaxed),
                fleet_healthy: !e.fleet_down.load(Ordering::Relaxed),
                ejections_total: e.ejections_total.load(Ordering::Relaxed),
            }
        });
        EjectionSnapshot {
            panic,
            endpoints: endpoints.collect(),
        }
    }

    fn panic_at(&self, now_ms: u64) -> bool {
        let up = self.endpoints.iter().filter(|e| e.up(now_ms)).count();
        up == 0
    }

    fn try_eject(&self, index: usize, outlier: &OutlierDetection, now: Instant) {
        let _guard = self.eject_lock.lock().unwrap_or_else(|e| e.into_inner());
        let now_ms = self.millis(now);
        let e = &self.endpoints[index];
        if e.ejected(now_ms) {
            return;
        }
        let ejected = self.endpoints.iter().filter(|e| e.ejected(now_ms)).count();
        let cap = self.endpoints.len() * outlier.max_ejection_percent as usize;
        if (ejected + 1) * 100 > cap {
            tracing::debug!(backend = %self.backend, endpoint = %e.address, "ejection cap reached");
            return;
        }
        let base = outlier.ejection_time.get();
        let times = self.forgiven(e, base, now_ms) + 1;
        let period = base.saturating_mul(times).min(MAX_EJECTION_TIME.max(base));
        e.times.store(times, Ordering::Relaxed);
        e.consecutive.store(0, Ordering::Relaxed);
        let until = now_ms + period.as_millis() as u64;
        e.ejected_until.store(until, Ordering::Release);
        e.ejections_total.fetch_add(1, Ordering::Relaxed);
        self.ejections.increment(1);
        tracing::info!(
            backend = %self.backend,
            endpoint = %e.address,
            ejection_ms = period.as_millis() as u64,
            times,
            "endpoint ejected"
        );
    }

    /// Past ejections less one per `base` spent in service since the last
    /// one ended.
    fn forgiven(&self, e: &EndpointState, base: Duration, now_ms: u64) -> u32 {
        let times = e.times.load(Ordering::Relaxed);
        let last_end = e.ejected_until.load(Ordering::Relaxed);
        let base_ms = (base.as_millis() as u64).max(1);
        let quiet = now_ms.saturating_sub(last_end) / base_ms;
        times.saturating_sub(u32::try_from(quiet).unwrap_or(u32::MAX))
    }

    fn millis(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }
}

#[cfg(test)]
mod tests;
