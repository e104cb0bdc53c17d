//! The breaker of one backend: closed, open, half-open.
//!
//! Before each attempt the attempt loop asks [`Breaker::try_acquire`] for a
//! [`Permit`]; an open breaker answers [`BreakerOpen`] at once (503
//! `vakt-error: breaker-open`, or the route's fallback). When the attempt
//! ends the loop records its [`Outcome`] on the permit. A permit dropped
//! without a record is neutral, as when the client hangs up.
//!
//! Closed, the breaker trips on any configured condition: consecutive
//! failures, a failure rate over a sliding window, or a slow-call rate
//! over the same window. Open, it fails fast for a period that starts at
//! `openFor` and doubles on each re-trip (less up to 10 % jitter, at most
//! `maxOpenFor`). Then it turns half-open and admits exactly
//! `halfOpenRequests` probes however many requests race for them; when all
//! of them succeed it closes, when one fails it opens again.
//!
//! Closed, `try_acquire` reads one atomic; all else takes a short lock
//! that is never held across an await.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use metrics::{Counter, Gauge};
use serde::Serialize;
use tokio::time::Instant;
use vakt_api::config::CircuitBreaker;

use super::outcome::Outcome;

mod window;

use window::Window;

/// Consecutive failures that trip a breaker configured with no condition.
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 5;

/// Length of the sliding window when no `failureRate.window` is set.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10);

/// The breaker of one backend; clones share the same state.
#[derive(Clone, Debug)]
pub struct Breaker {
    shared: Arc<Shared>,
}

/// The three states, as `/backends` and the state gauge show them (gauge
/// values 0, 1 and 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// Leave to send one attempt; record its outcome, or drop it to stay
/// neutral.
#[derive(Debug)]
#[must_use = "dropping a permit records a neutral outcome"]
pub struct Permit {
    shared: Arc<Shared>,
    generation: u64,
    probe: bool,
    started: Instant,
    recorded: bool,
}

/// The breaker refused an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("breaker open")]
pub struct BreakerOpen {
    /// When the breaker turns half-open, if it is open; `None` while
    /// half-open with every probe slot taken.
    pub until: Option<Instant>,
}

/// The breaker as `/backends` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSnapshot {
    pub state: BreakerState,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Attempts, failures and slow calls in the sliding window.
    pub window_requests: u32,
    pub window_failures: u32,
    pub window_slow_calls: u32,
    /// Trips since the breaker last closed; the open period grows with it.
    pub trips: u32,
    /// Milliseconds until an open breaker turns half-open.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_remaining_ms: Option<u64>,
    /// Probes granted in this half-open period, in flight or done.
    pub half_open_probes: u32,
    /// Attempts rejected because the breaker was open, since start.
    pub rejected_total: u64,
}

#[derive(Debug)]
struct Shared {
    backend: Arc<str>,
    settings: Settings,
    /// `generation << 2 | state`, read without the lock on the fast path.
    word: AtomicU64,
    rejected: AtomicU64,
    inner: Mutex<Inner>,
    metrics: BreakerMetrics,
}

#[derive(Clone, Debug)]
struct Settings {
    consecutive: Option<u32>,
    failure_rate: Option<RateRule>,
    slow_call: Option<(Duration, RateRule)>,
    open_for: Duration,
    max_open_for: Duration,
    half_open: u32,
}

#[derive(Clone, Copy, Debug)]
struct RateRule {
    percent: u32,
    min_requests: u32,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    generation: u64,
    consecutive: u32,
    window: Window,
    open_until: Instant,
    trips: u32,
    probes_granted: u32,
    probes_ok: u32,
    rng: fastrand::Rng,
}

#[derive(Debug)]
struct BreakerMetrics {
    to_closed: Counter,
    to_open: Counter,
    to_half_open: Counter,
    rejected: Counter,
    state: Gauge,
}

impl BreakerState {
    fn code(self) -> u64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half-open",
        }
    }
}

impl Settings {
    fn new(config: &CircuitBreaker) -> Self {
        let rate = |percent, min_requests| RateRule {
            percent,
            min_requests,
        };
        let failure_rate = config
            .failure_rate
            .as_ref()
            .map(|r| rate(r.percent, r.min_requests));
        let slow_call = config
            .slow_call
            .as_ref()
            .map(|s| (s.threshold.get(), rate(s.percent, s.min_requests)));
        let none_set =
            config.consecutive_failures.is_none() && failure_rate.is_none() && slow_call.is_none();
        let consecutive = match none_set {
            true => Some(DEFAULT_CONSECUTIVE_FAILURES),
            false => config.consecutive_failures,
        };
        Self {
            consecutive,
            failure_rate,
            slow_call,
            open_for: config.open_for.get(),
            max_open_for: config.max_open_for.get().max(config.open_for.get()),
            half_open: config.half_open_requests.max(1),
        }
    }
}

impl RateRule {
    fn exceeded(self, hits: u32, total: u32) -> bool {
        total > 0
            && total >= self.min_requests
            && u64::from(hits) * 100 >= u64::from(self.percent) * u64::from(total)
    }
}

impl BreakerMetrics {
    fn new(backend: &str) -> Self {
        let to = |state: &'static str| {
            metrics::counter!(
                "vakt_breaker_transitions_total",
                "backend" => backend.to_owned(),
                "to" => state
            )
        };
        let backend = backend.to_owned();
        Self {
            to_closed: to("closed"),
            to_open: to("open"),
            to_half_open: to("half-open"),
            rejected: metrics::counter!(
                "vakt_breaker_rejected_total", "backend" => backend.clone()
            ),
            state: metrics::gauge!("vakt_breaker_state", "backend" => backend),
        }
    }
}

impl Breaker {
    /// A closed breaker for `backend`. Metric handles are taken from the
    /// recorder installed at this moment.
    pub fn new(backend: &str, config: &CircuitBreaker) -> Self {
        let settings = Settings::new(config);
        let window_len = config
            .failure_rate
            .as_ref()
            .map_or(DEFAULT_WINDOW, |r| r.window.get());
        let metrics = BreakerMetrics::new(backend);
        metrics.state.set(0.0);
        let inner = Inner {
            state: BreakerState::Closed,
            generation: 0,
            consecutive: 0,
            window: Window::new(window_len, Instant::now()),
            open_until: Instant::now(),
            trips: 0,
            probes_granted: 0,
            probes_ok: 0,
            rng: fastrand::Rng::new(),
        };
        let shared = Shared {
            backend: backend.into(),
            settings,
            word: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            inner: Mutex::new(inner),
            metrics,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// Leave for one attempt, or [`BreakerOpen`] when the breaker is open
    /// or every half-open probe slot is taken.
    pub fn try_acquire(&self) -> Result<Permit, BreakerOpen> {
        let word = self.shared.word.load(Ordering::Acquire);
        if word & 3 == BreakerState::Closed.code() {
            return Ok(self.permit(word >> 2, false));
        }
        self.acquire_slow(Instant::now())
    }

    /// The state now; an open breaker whose period is over reads as
    /// half-open.
    pub fn state(&self) -> BreakerState {
        let inner = self.shared.lock();
        match inner.state {
            BreakerState::Open if Instant::now() >= inner.open_until => BreakerState::HalfOpen,
            state => state,
        }
    }

    /// The state and counters for `/backends`.
    pub fn snapshot(&self) -> BreakerSnapshot {
        let now = Instant::now();
        let inner = self.shared.lock();
        let (requests, failures, slow) = inner.window.sums(now);
        // An open period that is over shows as half-open: that is what the
        // next request finds.
        let state = match inner.state {
            BreakerState::Open if now >= inner.open_until => BreakerState::HalfOpen,
            state => state,
        };
        let open = state == BreakerState::Open;
        let remaining = inner.open_until.saturating_duration_since(now);
        BreakerSnapshot {
            state,
            consecutive_failures: inner.consecutive,
            window_requests: requests,
            window_failures: failures,
            window_slow_calls: slow,
            trips: inner.trips,
            open_remaining_ms: open.then_some(remaining.as_millis() as u64),
            half_open_probes: inner.probes_granted,
            rejected_total: self.shared.rejected.load(Ordering::Relaxed),
        }
    }

    fn permit(&self, generation: u64, probe: bool) -> Permit {
        Permit {
            shared: self.shared.clone(),
            generation,
            probe,
            started: Instant::now(),
            recorded: false,
        }
    }

    fn acquire_slow(&self, now: Instant) -> Result<Permit, BreakerOpen> {
        let mut inner = self.shared.lock();
        if inner.state == BreakerState::Open {
            if now < inner.open_until {
                return Err(self.shared.reject(Some(inner.open_until)));
            }
            self.shared
                .transition(&mut inner, BreakerState::HalfOpen, now);
        }
        match inner.state {
            BreakerState::Closed => Ok(self.permit(inner.generation, false)),
            _ if inner.probes_granted < self.shared.settings.half_open => {
                inner.probes_granted += 1;
                Ok(self.permit(inner.generation, true))
            }
            _ => Err(self.shared.reject(None)),
        }
    }
}

impl Permit {
    /// Records how the attempt went. Slow calls are measured from the
    /// moment the permit was granted.
    pub fn record(mut self, outcome: Outcome) {
        self.recorded = true;
        let elapsed = self.started.elapsed();
        self.shared
            .record(self.generation, self.probe, outcome, elapsed);
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.recorded {
            let shared = &self.shared;
            shared.record(
                self.generation,
                self.probe,
                Outcome::Neutral,
                Duration::ZERO,
            );
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the counters inconsistent enough
        // to matter; keep serving.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reject(&self, until: Option<Instant>) -> BreakerOpen {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected.increment(1);
        BreakerOpen { until }
    }

    fn record(&self, generation: u64, probe: bool, outcome: Outcome, elapsed: Duration) {
        let now = Instant::now();
        let mut inner = self.lock();
        if inner.generation != generation {
            // Granted before the last transition: it says nothing about
            // the current state.
            return;
        }
        if probe {
            self.record_probe(&mut inner, outcome, now);
        } else if inner.state == BreakerState::Closed {
            self.record_closed(&mut inner, outcome, elapsed, now);
        }
    }

    fn record_probe(&self, inner: &mut Inner, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Neutral => inner.probes_granted -= 1,
            Outcome::Failure(_) => self.transition(inner, BreakerState::Open, now),
            Outcome::Success => {
                inner.probes_ok += 1;
                if inner.probes_ok >= self.settings.half_open {
                    self.transition(inner, BreakerState::Closed, now);
                }
            }
        }
    }

    fn record_closed(&self, inner: &mut Inner, outcome: Outcome, elapsed: Duration, now: Instant) {
        let failed = match outcome {
            Outcome::Neutral => return,
            Outcome::Success => false,
            Outcome::Failure(_) => true,
        };
        inner.consecutive = if failed { inner.consecutive + 1 } else { 0 };
        let slow = matches!(self.settings.slow_call, Some((t, _)) if elapsed >= t);
        inner.window.add(now, failed, slow);
        if self.should_trip(inner, now) {
            self.transition(inner, BreakerState::Open, now);
        }
    }

    fn should_trip(&self, inner: &Inner, now: Instant) -> bool {
        let s = &self.settings;
        if matches!(s.consecutive, Some(n) if inner.consecutive >= n) {
            return true;
        }
        let (total, failures, slow) = inner.window.sums(now);
        let rate = s.failure_rate.is_some_and(|r| r.exceeded(failures, total));
        rate || s.slow_call.is_some_and(|(_, r)| r.exceeded(slow, total))
    }

    fn transition(&self, inner: &mut Inner, to: BreakerState, now: Instant) {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.consecutive = 0;
        inner.probes_granted = 0;
        inner.probes_ok = 0;
        inner.window.clear();
        let mut open_ms = 0;
        match to {
            BreakerState::Open => {
                inner.trips += 1;
                let period = self.open_period(inner);
                open_ms = period.as_millis() as u64;
                inner.open_until = now + period;
                self.metrics.to_open.increment(1);
            }
            BreakerState::HalfOpen => self.metrics.to_half_open.increment(1),
            BreakerState::Closed => {
                inner.trips = 0;
                self.metrics.to_closed.increment(1);
            }
        }
        let word = inner.generation << 2 | to.code();
        self.word.store(word, Ordering::Release);
        self.metrics.state.set(to.code() as f64);
        tracing::info!(
            backend = %self.backend,
            from = from.as_str(),
            to = to.as_str(),
            open_ms,
            "breaker state changed"
        );
    }

    /// `openFor` doubled for each trip after the first, capped at
    /// `maxOpenFor`, then shortened by up to 10 % so that proxies that
    /// tripped together do not probe together.
    fn open_period(&self, inner: &mut Inner) -> Duration {
        let s = &self.settings;
        let doublings = inner.trips.saturating_sub(1).min(20);
        let grown = s.open_for.saturating_mul(1 << doublings);
        let base = grown.min(s.max_open_for);
        base.mul_f64(1.0 - 0.1 * inner.rng.f64())
    }
}

#[cfg(test)]
mod tests;
