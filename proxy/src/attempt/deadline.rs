//! The deadline of a request, carried from hop to hop.
//!
//! A request's deadline is the earliest of: the caller's `grpc-timeout`
//! or `vakt-deadline` (each capped at the listener's maximum), and the
//! route's `timeouts.request`. The attempt loop computes it once when the
//! request arrives ([`Deadline::from_request`]), refuses to send an
//! attempt once it has passed ([`Deadline::expired`]: 504, or gRPC
//! DEADLINE_EXCEEDED), bounds each attempt and each backoff by it, and
//! writes the time left, not the original value, into the upstream
//! request ([`Deadline::apply`]), so no hop waits longer than its caller.
//!
//! Header formats:
//! - `grpc-timeout`: one to eight digits and a unit, `H` hours, `M`
//!   minutes, `S` seconds, `m` milliseconds, `u` microseconds, `n`
//!   nanoseconds (gRPC over HTTP/2, "Requests").
//! - `vakt-deadline`: the milliseconds left as plain digits (`1500`), or
//!   a duration as config files write it (`1500ms`, `2s`, `1m30s`). The
//!   proxy always sends plain milliseconds.

use std::str::FromStr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// The gRPC deadline header.
pub const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The deadline header for plain HTTP requests.
pub const VAKT_DEADLINE: HeaderName = HeaderName::from_static("vakt-deadline");

const MAX_DIGITS: u64 = 99_999_999;

/// When a request must be done by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline {
    at: Instant,
}

/// A deadline header that is not well formed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed deadline header")]
pub struct MalformedDeadline;

/// The deadline has passed: the request must not be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("deadline exceeded")]
pub struct DeadlineExceeded;

impl Deadline {
    /// The deadline `timeout` after `now`.
    pub fn after(now: Instant, timeout: Duration) -> Self {
        Self { at: now + timeout }
    }

    /// The deadline for a request that arrived at `now` with `headers`:
    /// the earliest of its `grpc-timeout` and `vakt-deadline` (each at
    /// most `max`) and `route_timeout`. `None` when nothing bounds it.
    /// Malformed headers are ignored, as the gRPC spec allows.
    pub fn from_request(
        headers: &HeaderMap,
        now: Instant,
        route_timeout: Option<Duration>,
        max: Option<Duration>,
    ) -> Option<Self> {
        type Parse = fn(&[u8]) -> Result<Duration, MalformedDeadline>;
        let header = |name: &HeaderName, parse: Parse| {
            let parsed = parse(headers.get(name)?.as_bytes());
            if parsed.is_err() {
                tracing::debug!(header = %name, "ignoring malformed deadline");
            }
            parsed.ok()
        };
        let grpc = header(&GRPC_TIMEOUT, parse_grpc_timeout);
        let vakt = header(&VAKT_DEADLINE, parse_vakt_deadline);
        let caller = match (grpc, vakt) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let caller = caller.map(|d| max.map_or(d, |m| d.min(m)));
        let timeout = match (caller, route_timeout) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(Self::after(now, timeout))
    }

    /// The instant itself, for `tokio::time::timeout_at`.
    pub fn instant(&self) -> Instant {
        self.at
    }

    /// The time left at `now`; zero once passed.
    pub fn remaining(&self, now: Instant) -> Duration {
        self.at.saturating_duration_since(now)
    }

    /// Whether the deadline has passed at `now`.
    pub fn expired(&self, now: Instant) -> bool {
        now >= self.at
    }

    /// When one attempt starting at `now` must end: the deadline, or
    /// `per_attempt` (`timeouts.backendRequest`) from now if sooner.
    pub fn attempt_end(&self, now: Instant, per_attempt: Option<Duration>) -> Instant {
        per_attempt.map_or(self.at, |t| self.at.min(now + t))
    }

    /// Writes the time left into an upstream request: `grpc-timeout` for
    /// gRPC, `vakt-deadline` (milliseconds) otherwise; a header of the
    /// other kind the caller sent is rewritten too, so no larger value
    /// travels on. Fails once nothing is left to send.
    pub fn apply(
        &self,
        headers: &mut HeaderMap,
        now: Instant,
        grpc: bool,
    ) -> Result<(), DeadlineExceeded> {
        let left = self.remaining(now);
        let millis = left.as_millis() as u64;
        if left.is_zero() || (!grpc && millis == 0) {
            return Err(DeadlineExceeded);
        }
        if grpc || headers.contains_key(GRPC_TIMEOUT) {
            headers.insert(
                GRPC_TIMEOUT,
                encode_grpc_timeout(left).ok_or(DeadlineExceeded)?,
            );
        }
        if !grpc || headers.contains_key(VAKT_DEADLINE) {
            let millis = millis.max(1);
            headers.insert(VAKT_DEADLINE, HeaderValue::from(millis));
        }
        Ok(())
    }
}

/// Parses a `grpc-timeout` value such as `100m` or `30S`.
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, MalformedDeadline> {
    let (&unit, digits) = value.split_last().ok_or(MalformedDeadline)?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return Err(MalformedDeadline);
    }
    let n = digits
        .iter()
        .fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
    Ok(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(MalformedDeadline),
    })
}

/// Renders `left` as a `grpc-timeout` value: milliseconds when they fit
/// eight digits, else a finer or coarser unit; always rounded down so a
/// hop never gets more than was left. `None` for zero.
pub fn encode_grpc_timeout(left: Duration) -> Option<HeaderValue> {
    let millis = left.as_millis() as u64;
    let (n, unit) = if millis == 0 {
        match left.as_micros() as u64 {
            0 => (left.as_nanos() as u64, 'n'),
            micros => (micros, 'u'),
        }
    } else if millis <= MAX_DIGITS {
        (millis, 'm')
    } else {
        let secs = left.as_secs();
        if secs <= MAX_DIGITS {
            (secs, 'S')
        } else if secs / 60 <= MAX_DIGITS {
            (secs / 60, 'M')
        } else {
            ((secs / 3600).min(MAX_DIGITS), 'H')
        }
    };
    if n == 0 {
        return None;
    }
    let mut text = [0u8; 9];
    let len = write_digits(n, &mut text);
    text[len] = unit as u8;
    HeaderValue::from_bytes(&text[..=len]).ok()
}

/// Parses a `vakt-deadline` value: plain digits are milliseconds, else
/// a config duration such as `2s`.
pub fn parse_vakt_deadline(value: &[u8]) -> Result<Duration, MalformedDeadline> {
    if !value.is_empty() && value.len() <= 12 && value.iter().all(u8::is_ascii_digit) {
        let n = value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        return Ok(Duration::from_millis(n));
    }
    let text = std::str::from_utf8(value).map_err(|_| MalformedDeadline)?;
    let parsed = vakt_api::Duration::from_str(text).map_err(|_| MalformedDeadline)?;
    Ok(parsed.get())
}

/// Writes `n` (at most eight digits) in decimal; returns the length.
fn write_digits(mut n: u64, out: &mut [u8; 9]) -> usize {
    let mut len = 0;
    loop {
        out[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out[..len].reverse();
    len
}

#[cfg(test)]
mod tests;
