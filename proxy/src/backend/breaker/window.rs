//! The breaker's sliding window: attempts, failures and slow calls over
//! the last `window`, kept in ten buckets so that old results fall out a
//! tenth of the window at a time.

use std::time::Duration;

use tokio::time::Instant;

const BUCKETS: usize = 10;

/// Counts over the last `window`; the caller holds the breaker's lock.
#[derive(Debug)]
pub(super) struct Window {
    origin: Instant,
    bucket_nanos: u128,
    buckets: [Bucket; BUCKETS],
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    total: u32,
    failures: u32,
    slow: u32,
}

impl Window {
    pub(super) fn new(window: Duration, origin: Instant) -> Self {
        let bucket_nanos = (window.as_nanos() / BUCKETS as u128).max(1);
        Self {
            origin,
            bucket_nanos,
            buckets: [Bucket::default(); BUCKETS],
        }
    }

    /// Counts one attempt at `now`.
    pub(super) fn add(&mut self, now: Instant, failed: bool, slow: bool) {
        let epoch = self.epoch(now);
        let bucket = &mut self.buckets[(epoch % BUCKETS as u64) as usize];
        if bucket.epoch != epoch {
            *bucket = Bucket {
                epoch,
                ..Bucket::default()
            };
        }
        bucket.total += 1;
        bucket.failures += u32::from(failed);
        bucket.slow += u32::from(slow);
    }

    /// `(attempts, failures, slow calls)` within the window ending `now`.
    pub(super) fn sums(&self, now: Instant) -> (u32, u32, u32) {
        let epoch = self.epoch(now);
        let live = |b: &&Bucket| b.epoch <= epoch && b.epoch + (BUCKETS as u64) > epoch;
        self.buckets.iter().filter(live).fold((0, 0, 0), |acc, b| {
            (acc.0 + b.total, acc.1 + b.failures, acc.2 + b.slow)
        })
    }

    pub(super) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }

    fn epoch(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        (since / self.bucket_nanos) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn old_results_fall_out() {
        let mut w = Window::new(Duration::from_secs(10), Instant::now());
        w.add(Instant::now(), true, false);
        tokio::time::advance(Duration::from_secs(5)).await;
        w.add(Instant::now(), false, true);
        assert_eq!(w.sums(Instant::now()), (2, 1, 1));
        tokio::time::advance(Duration::from_millis(5500)).await;
        assert_eq!(w.sums(Instant::now()), (1, 0, 1));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(w.sums(Instant::now()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_reused_slot_starts_empty() {
        let mut w = Window::new(Duration::from_secs(10), Instant::now());
        w.add(Instant::now(), true, true);
        tokio::time::advance(Duration::from_secs(10)).await;
        w.add(Instant::now(), false, false);
        assert_eq!(w.sums(Instant::now()), (1, 0, 0));
        w.clear();
        assert_eq!(w.sums(Instant::now()), (0, 0, 0));
    }
}
