//! The bulkhead of one backend: how many of its requests may be in flight
//! and how many may wait, so that a slow backend fills only its own slots.
//!
//! The attempt loop calls [`Bulkhead::acquire`] once per request, after
//! the breaker and before the first attempt, and holds the permit until
//! the response body ends. With all `maxRequests` slots busy a request
//! waits, first come first served, at most `queueTimeout`; with
//! `maxPendingRequests` already waiting it gets [`Overflow`] at once. Both
//! mean a fast 503 with `vakt-error: overflow`, which is never retried
//! (case BR-15).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics::Counter;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};
use vakt_api::config::BackendLimits;

/// The slots and queue of one backend.
#[derive(Debug)]
pub struct Bulkhead {
    backend: Arc<str>,
    slots: Arc<Semaphore>,
    max_requests: u32,
    pending: AtomicU32,
    max_pending: u32,
    queue_timeout: Duration,
    queue_full: Counter,
    timed_out: Counter,
}

/// A slot in flight; dropping it frees the slot for the next in line.
#[derive(Debug)]
pub struct BulkheadPermit {
    _slot: OwnedSemaphorePermit,
}

/// A request refused by the bulkhead: 503 `vakt-error: overflow`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// `maxPendingRequests` were already waiting.
    #[error("backend queue full")]
    QueueFull,
    /// No slot freed within `queueTimeout`.
    #[error("no backend slot within the queue timeout")]
    QueueTimeout,
}

/// Occupancy for `/backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BulkheadSnapshot {
    pub in_flight: u32,
    pub max_requests: u32,
    pub pending: u32,
    pub max_pending_requests: u32,
}

/// Keeps the pending count right however the wait ends, dropped future
/// included.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Overflow {
    /// The metric label for this refusal.
    pub fn reason(self) -> &'static str {
        match self {
            Self::QueueFull => "queue-full",
            Self::QueueTimeout => "queue-timeout",
        }
    }
}

impl Bulkhead {
    /// Empty slots and queue per `limits`. `maxConnections` belongs to the
    /// connection pool and is not read here.
    pub fn new(backend: &str, limits: &BackendLimits) -> Self {
        let overflow = |reason: &'static str| {
            metrics::counter!(
                "vakt_overflow_total",
                "backend" => backend.to_owned(),
                "reason" => reason
            )
        };
        Self {
            backend: backend.into(),
            slots: Arc::new(Semaphore::new(limits.max_requests as usize)),
            max_requests: limits.max_requests,
            pending: AtomicU32::new(0),
            max_pending: limits.max_pending_requests,
            queue_timeout: limits.queue_timeout.get(),
            queue_full: overflow(Overflow::QueueFull.reason()),
            timed_out: overflow(Overflow::QueueTimeout.reason()),
        }
    }

    /// A slot now, a slot after waiting in line at most `queueTimeout`,
    /// or [`Overflow`] at once when the line is full.
    pub async fn acquire(&self) -> Result<BulkheadPermit, Overflow> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => return Ok(BulkheadPermit { _slot: slot }),
            Err(TryAcquireError::Closed) => unreachable!("the semaphore is never closed"),
            Err(TryAcquireError::NoPermits) => {}
        }
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.queue_full.increment(1);
            tracing::debug!(backend = %self.backend, "backend queue full");
            return Err(Overflow::QueueFull);
        }
        let _waiting = Waiting(&self.pending);
        let wait = self.slots.clone().acquire_owned();
        match tokio::time::timeout(self.queue_timeout, wait).await {
            Ok(Ok(slot)) => Ok(BulkheadPermit { _slot: slot }),
            Ok(Err(_)) => unreachable!("the semaphore is never closed"),
            Err(_) => {
                self.timed_out.increment(1);
                tracing::debug!(backend = %self.backend, "backend queue timeout");
                Err(Overflow::QueueTimeout)
            }
        }
    }

    /// Slots and queue as they are now.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let free = self.slots.available_permits() as u32;
        BulkheadSnapshot {
            in_flight: self.max_requests.saturating_sub(free),
            max_requests: self.max_requests,
            pending: self.pending.load(Ordering::Acquire),
            max_pending_requests: self.max_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use tokio::time::{Instant, advance, sleep};
    use vakt_api::Duration as ConfigDuration;

    use super::*;

    fn limits(max: u32, pending: u32, queue_timeout_ms: u64) -> BackendLimits {
        BackendLimits {
            max_requests: max,
            max_pending_requests: pending,
            queue_timeout: ConfigDuration::from_millis(queue_timeout_ms),
            ..BackendLimits::default()
        }
    }

    #[derive(Default)]
    struct Tally {
        fast_overflow: AtomicUsize,
        late_overflow: AtomicUsize,
        served: AtomicUsize,
        in_flight: AtomicUsize,
        peak: AtomicUsize,
    }

    /// C concurrent requests, each holding its slot for 200 ms.
    async fn burst(bulkhead: Arc<Bulkhead>, c: usize) -> Arc<Tally> {
        let tally = Arc::new(Tally::default());
        let tasks: Vec<_> = (0..c)
            .map(|_| {
                let (b, t) = (bulkhead.clone(), tally.clone());
                tokio::spawn(async move {
                    let start = Instant::now();
                    match b.acquire().await {
                        Ok(_slot) => {
                            let now = t.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                            t.peak.fetch_max(now, Ordering::SeqCst);
                            sleep(Duration::from_millis(200)).await;
                            t.in_flight.fetch_sub(1, Ordering::SeqCst);
                            t.served.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) if start.elapsed().is_zero() => {
                            t.fast_overflow.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => {
                            t.late_overflow.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        tally
    }

    #[tokio::test(start_paused = true)]
    async fn br15_sheds_exactly_what_exceeds_slots_and_queue() {
        for (c, shed) in [(500, 0), (1100, 0), (1500, 400)] {
            let b = Arc::new(Bulkhead::new("api", &limits(100, 1000, 3000)));
            let t = burst(b.clone(), c).await;
            let load = |a: &AtomicUsize| a.load(Ordering::SeqCst);
            assert_eq!(load(&t.fast_overflow), shed, "C={c}");
            assert_eq!(load(&t.late_overflow), 0, "C={c}: none timed out");
            assert_eq!(load(&t.served), c - shed, "C={c}");
            assert_eq!(load(&t.peak), c.min(100), "C={c}");
            assert_eq!(b.snapshot().in_flight, 0);
            assert_eq!(b.snapshot().pending, 0);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_give_up_after_queue_timeout() {
        let b = Bulkhead::new("api", &limits(1, 5, 1000));
        let _held = b.acquire().await.unwrap();
        let start = Instant::now();
        assert_eq!(b.acquire().await.unwrap_err(), Overflow::QueueTimeout);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        assert_eq!(b.snapshot().pending, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_freed_slot_goes_to_the_first_in_line() {
        let b = Arc::new(Bulkhead::new("api", &limits(1, 5, 1000)));
        let held = b.acquire().await.unwrap();
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.acquire().await.map(|_| Instant::now()) }
        });
        advance(Duration::from_millis(10)).await;
        assert_eq!(b.snapshot().pending, 1);
        advance(Duration::from_millis(290)).await;
        drop(held);
        let admitted = first.await.unwrap().expect("admitted when freed");
        assert!(admitted.elapsed() < Duration::from_millis(1));
        let snap = b.snapshot();
        assert_eq!((snap.in_flight, snap.pending), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let b = Bulkhead::new("api", &limits(1, 1, 1000));
        let _held = b.acquire().await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(10), b.acquire()).await;
        assert!(gave_up.is_err());
        assert_eq!(b.snapshot().pending, 0);
        assert_eq!(b.acquire().await.unwrap_err(), Overflow::QueueTimeout);
    }

    #[tokio::test(start_paused = true)]
    async fn no_queue_means_immediate_overflow() {
        let b = Bulkhead::new("api", &limits(2, 0, 1000));
        let _a = b.acquire().await.unwrap();
        let _b = b.acquire().await.unwrap();
        assert_eq!(b.acquire().await.unwrap_err(), Overflow::QueueFull);
        assert_eq!(Overflow::QueueFull.reason(), "queue-full");
        assert_eq!(b.snapshot().in_flight, 2);
    }
}
