//! How long to wait before the next attempt.
//!
//! The wait grows exponentially from the route's `retry.backoff` (the
//! Gateway API's minimum interval between attempts, default 25 ms) with
//! random jitter, up to a cap. A `Retry-After` from the upstream (delay
//! seconds or an HTTP-date, RFC 9110 section 10.2.3) lengthens the wait
//! when it asks for more. A wait that would end past the request's
//! deadline is not taken: the attempt loop gives up instead.
//!
//! One [`Backoff`] lives in each request's attempt loop; `delay` is called
//! once before each retry.

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use tokio::time::Instant;

/// The cap is the base times this: 32, so 800 ms for a 25 ms base.
pub const DEFAULT_CAP_FACTOR: u32 = 32;

/// Without a deadline, a `Retry-After` longer than this (30 s) ends the
/// retries instead of holding the request.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(30);

/// How the wait is spread.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform between the base and `base × 2^(n+1)` before retry `n`
    /// (counted from 0), capped.
    #[default]
    Full,
    /// Uniform between the base and three times the previous wait,
    /// capped; spreads clients that failed together more evenly.
    Decorrelated,
}

/// The waits of one request's retries.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
    retries: u32,
    previous: Duration,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Waits from `base` up to `base` × [`DEFAULT_CAP_FACTOR`].
    pub fn new(base: Duration, jitter: Jitter) -> Self {
        Self {
            base,
            cap: base.saturating_mul(DEFAULT_CAP_FACTOR),
            jitter,
            retries: 0,
            previous: base,
            rng: fastrand::Rng::new(),
        }
    }

    /// The longest wait; never below the base.
    pub fn with_cap(mut self, cap: Duration) -> Self {
        self.cap = cap.max(self.base);
        self
    }

    /// A fixed random sequence, for reproducible waits.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The next jittered wait, ignoring `Retry-After` and deadlines.
    pub fn next_wait(&mut self) -> Duration {
        let upper = match self.jitter {
            Jitter::Full => {
                let doublings = (self.retries + 1).min(30);
                self.base.saturating_mul(1 << doublings)
            }
            Jitter::Decorrelated => self.previous.saturating_mul(3),
        };
        let upper = upper.min(self.cap);
        let spread = upper.saturating_sub(self.base);
        let wait = self.base + spread.mul_f64(self.rng.f64());
        self.retries += 1;
        self.previous = wait;
        wait
    }

    /// The wait before the next retry, `None` when there must be none: a
    /// wait that would reach `deadline`, or, with no deadline, a
    /// `retry_after` beyond [`MAX_RETRY_AFTER`].
    pub fn delay(
        &mut self,
        retry_after: Option<Duration>,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Option<Duration> {
        let mut wait = self.next_wait();
        if let Some(asked) = retry_after {
            if deadline.is_none() && asked > MAX_RETRY_AFTER {
                return None;
            }
            wait = wait.max(asked);
        }
        match deadline {
            Some(at) if now + wait >= at => None,
            _ => Some(wait),
        }
    }
}

/// The wait a response's `Retry-After` asks for, `None` when absent or
/// malformed. A date in the past asks for no wait.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?;
    parse_retry_after(value.as_bytes(), now)
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP-date.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = value.trim_ascii();
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        // Ten digits is over 300 years; more is noise.
        let digits = &value[value.len().saturating_sub(10)..];
        let big = value.len() > 10 && value[..value.len() - 10].iter().any(|d| *d != b'0');
        let secs = digits
            .iter()
            .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Some(Duration::from_secs(if big { u64::MAX / 2 } else { secs }));
    }
    let text = std::str::from_utf8(value).ok()?;
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_millis(25);

    #[test]
    fn full_jitter_grows_within_bounds() {
        let mut b = Backoff::new(BASE, Jitter::Full).with_seed(7);
        for retry in 0..10u32 {
            let upper = (BASE * 2u32.pow(retry + 1)).min(BASE * 32);
            let wait = b.next_wait();
            assert!(wait >= BASE && wait <= upper, "retry {retry}: {wait:?}");
        }
    }

    #[test]
    fn full_jitter_reaches_the_cap_and_spreads() {
        let mut b = Backoff::new(BASE, Jitter::Full).with_cap(Duration::from_millis(200));
        let waits: Vec<_> = (0..200).map(|_| b.next_wait()).collect();
        let max = waits.iter().max().unwrap();
        assert!(*max <= Duration::from_millis(200));
        assert!(*max > Duration::from_millis(150), "{max:?}");
        let distinct: std::collections::HashSet<_> = waits.iter().collect();
        assert!(distinct.len() > 150, "jittered");
    }

    #[test]
    fn decorrelated_jitter_follows_the_previous_wait() {
        let mut b = Backoff::new(BASE, Jitter::Decorrelated).with_seed(3);
        let mut previous = BASE;
        for _ in 0..50 {
            let wait = b.next_wait();
            let upper = (previous * 3).min(BASE * 32);
            assert!(wait >= BASE && wait <= upper, "{wait:?} after {previous:?}");
            previous = wait;
        }
    }

    #[test]
    fn a_zero_base_waits_nothing() {
        let mut b = Backoff::new(Duration::ZERO, Jitter::Full);
        assert_eq!(b.next_wait(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_lengthens_the_wait() {
        let mut b = Backoff::new(BASE, Jitter::Full);
        let now = Instant::now();
        let asked = Some(Duration::from_secs(2));
        assert_eq!(b.delay(asked, now, None), Some(Duration::from_secs(2)));
        let short = Some(Duration::ZERO);
        let wait = b.delay(short, now, None).unwrap();
        assert!(wait >= BASE);
        assert_eq!(b.delay(Some(Duration::from_secs(31)), now, None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn never_beyond_the_deadline() {
        let mut b = Backoff::new(BASE, Jitter::Full);
        let now = Instant::now();
        let deadline = Some(now + Duration::from_secs(1));
        let asked = Some(Duration::from_millis(999));
        assert_eq!(
            b.delay(asked, now, deadline),
            Some(Duration::from_millis(999))
        );
        assert_eq!(b.delay(Some(Duration::from_secs(1)), now, deadline), None);
        let tight = Some(now + Duration::from_millis(20));
        assert_eq!(b.delay(None, now, tight), None, "wait is at least 25 ms");
        let far = Some(now + Duration::from_secs(3600));
        let long = Some(Duration::from_secs(60));
        assert_eq!(b.delay(long, now, far), Some(Duration::from_secs(60)));
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let parse = |v: &str| parse_retry_after(v.as_bytes(), now);
        assert_eq!(parse("120"), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 "), Some(Duration::ZERO));
        let later = parse("Sun, 06 Nov 1994 08:50:07 GMT");
        assert_eq!(later, Some(Duration::from_secs(30)));
        let past = parse("Sun, 06 Nov 1994 08:00:00 GMT");
        assert_eq!(past, Some(Duration::ZERO));
        assert!(parse("99999999999999999999").unwrap() > Duration::from_secs(1 << 40));
        assert_eq!(parse("000000000005"), Some(Duration::from_secs(5)));
        for bad in ["", "-1", "1.5", "soon", "Sun, 06 Nov 1994"] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers, now), None);
        headers.insert(http::header::RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&headers, now), Some(Duration::from_secs(3)));
    }
}
