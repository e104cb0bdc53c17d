//! The retry budget of one backend: retries may add at most `percent` %
//! to the requests a backend received over the last ten seconds, or
//! `minRetriesPerSecond` per second when that is more, so retries never
//! multiply load on a backend that is already failing.
//!
//! The attempt loop calls [`Budget::deposit`] once per request (its first
//! attempt) and [`Budget::try_withdraw`] before each retry; a refused
//! retry returns the last attempt's response or error as it is.
//!
//! Counts live in ten one-second buckets of atomics, each tagged with its
//! second, so neither call takes a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use metrics::Counter;
use serde::Serialize;
use tokio::time::Instant;
use vakt_api::config::RetryBudget;

/// The span over which requests and retries are counted: 10 s.
pub const WINDOW: Duration = Duration::from_secs(WINDOW_SECS);

const WINDOW_SECS: u64 = 10;
const BUCKETS: usize = WINDOW_SECS as usize;

/// The retry budget of one backend.
#[derive(Debug)]
pub struct Budget {
    percent: u64,
    min_per_second: u64,
    origin: Instant,
    requests: Buckets,
    retries: Buckets,
    granted: Counter,
    refused: Counter,
}

/// Counts over the window, for `/backends`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSnapshot {
    pub requests: u64,
    pub retries: u64,
    /// Retries the window allows in all.
    pub allowed: u64,
}

/// Per-second counts; each word is `(second + 1) << 32 | count`, so a
/// word from an older second reads as empty.
#[derive(Debug, Default)]
struct Buckets([AtomicU64; BUCKETS]);

impl Buckets {
    fn add(&self, second: u64) {
        let slot = &self.0[second as usize % BUCKETS];
        let tag = (second + 1) << 32;
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let next = if word >> 32 == second + 1 {
                word + 1
            } else {
                tag | 1
            };
            match slot.compare_exchange_weak(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(seen) => word = seen,
            }
        }
    }

    /// The count in `word` if its second is within the window ending at
    /// `second`.
    fn read(word: u64, second: u64) -> u64 {
        let tagged = word >> 32;
        let live = tagged != 0 && tagged <= second + 1 && tagged + WINDOW_SECS > second + 1;
        if live { word & 0xffff_ffff } else { 0 }
    }

    fn sum(&self, second: u64) -> u64 {
        self.sum_except(second, BUCKETS)
    }

    /// The window's count leaving out the bucket at index `skip`.
    fn sum_except(&self, second: u64, skip: usize) -> u64 {
        let words = self.0.iter().enumerate().filter(|(i, _)| *i != skip);
        words
            .map(|(_, w)| Self::read(w.load(Ordering::Acquire), second))
            .sum()
    }
}

impl Budget {
    /// An empty budget for `backend`.
    pub fn new(backend: &str, config: &RetryBudget) -> Self {
        let label = || backend.to_owned();
        Self {
            percent: u64::from(config.percent),
            min_per_second: u64::from(config.min_retries_per_second),
            origin: Instant::now(),
            requests: Buckets::default(),
            retries: Buckets::default(),
            granted: metrics::counter!("vakt_retries_total", "backend" => label()),
            refused: metrics::counter!(
                "vakt_retries_refused_total", "backend" => label()
            ),
        }
    }

    /// Counts one request toward the share that retries may add.
    pub fn deposit(&self) {
        self.requests.add(self.second());
    }

    /// Takes one retry from the budget; false when it is spent. Exact
    /// under concurrency: the check and the count are one atomic step.
    pub fn try_withdraw(&self) -> bool {
        let second = self.second();
        let allowed = self.allowed(second);
        let index = second as usize % BUCKETS;
        let slot = &self.retries.0[index];
        // Earlier seconds no longer change; only this second's bucket
        // races, and the compare-exchange below settles that.
        let others = self.retries.sum_except(second, index);
        let mut word = slot.load(Ordering::Acquire);
        loop {
            let current = Buckets::read(word, second);
            if others + current >= allowed {
                self.refused.increment(1);
                return false;
            }
            let next = (second + 1) << 32 | (current + 1);
            match slot.compare_exchange(word, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.granted.increment(1);
                    return true;
                }
                Err(seen) => word = seen,
            }
        }
    }

    /// The window's counts now.
    pub fn snapshot(&self) -> BudgetSnapshot {
        let second = self.second();
        BudgetSnapshot {
            requests: self.requests.sum(second),
            retries: self.retries.sum(second),
            allowed: self.allowed(second),
        }
    }

    fn allowed(&self, second: u64) -> u64 {
        let share = self.requests.sum(second) * self.percent / 100;
        share.max(self.min_per_second * WINDOW_SECS)
    }

    fn second(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.origin)
            .as_secs()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::time::advance;

    use super::*;

    fn budget(percent: u32, min: u32) -> Budget {
        let config = RetryBudget {
            percent,
            min_retries_per_second: min,
        };
        Budget::new("api", &config)
    }

    fn withdraw_all(b: &Budget) -> usize {
        (0..100_000).take_while(|_| b.try_withdraw()).count()
    }

    #[tokio::test(start_paused = true)]
    async fn the_floor_applies_without_traffic() {
        let b = budget(20, 10);
        assert_eq!(withdraw_all(&b), 100, "10 per second over 10 s");
        assert!(!b.try_withdraw());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_a_share_of_requests() {
        let b = budget(20, 1);
        for _ in 0..1000 {
            b.deposit();
        }
        assert_eq!(withdraw_all(&b), 200);
        let snap = b.snapshot();
        assert_eq!(
            (snap.requests, snap.retries, snap.allowed),
            (1000, 200, 200)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn spent_retries_come_back_as_the_window_slides() {
        let b = budget(20, 1);
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(withdraw_all(&b), 20);
        advance(Duration::from_secs(5)).await;
        for _ in 0..100 {
            b.deposit();
        }
        assert_eq!(withdraw_all(&b), 20, "200 requests allow 40");
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.snapshot().requests, 100, "first second left the window");
        assert_eq!(withdraw_all(&b), 0, "20 of 20 still in the window");
        advance(Duration::from_secs(5)).await;
        assert_eq!(b.snapshot().requests, 0);
        assert_eq!(withdraw_all(&b), 10, "back to the floor");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_bucket_starts_empty() {
        let b = budget(0, 1);
        assert_eq!(withdraw_all(&b), 10);
        advance(Duration::from_secs(10)).await;
        assert_eq!(b.snapshot().retries, 0);
        assert_eq!(withdraw_all(&b), 10);
    }

    #[test]
    fn racing_threads_never_overdraw() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let b = Arc::new(rt.block_on(async { budget(20, 0) }));
        let _clock = rt.enter();
        for _ in 0..500 {
            b.deposit();
        }
        let granted: usize = std::thread::scope(|s| {
            let workers: Vec<_> = (0..8)
                .map(|_| {
                    let (b, handle) = (b.clone(), rt.handle().clone());
                    s.spawn(move || {
                        let _clock = handle.enter();
                        (0..1000).filter(|_| b.try_withdraw()).count()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).sum()
        });
        assert_eq!(granted, 100);
    }
}
