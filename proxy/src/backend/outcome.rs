//! What one attempt says about the health of a backend and its endpoint.
//!
//! The attempt loop classifies each attempt once (from the response status,
//! a `grpc-status` in headers or trailers, or the error that ended it) and
//! hands the [`Outcome`] to the breaker and to the ejection state. Only
//! signs that the upstream is unwell count as failures: connect errors,
//! resets, timeouts, 5xx and the configured gRPC codes. A 4xx (429
//! included) shows the upstream is answering, so it is a success; a
//! client that hangs up says nothing about the upstream, so it is neutral.

use http::{HeaderMap, StatusCode};
use vakt_api::config::CircuitBreaker;

/// The gRPC codes that count as failures when none are configured:
/// DEADLINE_EXCEEDED (4), RESOURCE_EXHAUSTED (8), INTERNAL (13) and
/// UNAVAILABLE (14).
pub const DEFAULT_GRPC_FAILURE_CODES: [u32; 4] = [4, 8, 13, 14];

/// The verdict on one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered: any 1xx-4xx status, or a gRPC status not in
    /// the failure set.
    Success,
    /// The upstream is unwell.
    Failure(FailureReason),
    /// Nothing learned: the client went away, or the proxy stopped the
    /// attempt for its own reasons.
    Neutral,
}

/// Why an attempt failed; a bounded set, usable as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureReason {
    /// The connection could not be opened.
    Connect,
    /// The connection or stream was reset or closed early.
    Reset,
    /// The attempt ran out of time.
    Timeout,
    /// The upstream answered with a 5xx status.
    Status,
    /// The upstream answered with a gRPC status in the failure set.
    Grpc,
}

/// Classifies attempts for one backend; cheap to copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Classifier {
    /// Bit `n` set means gRPC code `n` is a failure (codes are 0..=16).
    grpc_failures: u32,
}

impl FailureReason {
    /// The metric label for this reason.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Timeout => "timeout",
            Self::Status => "status",
            Self::Grpc => "grpc",
        }
    }
}

impl Outcome {
    /// Whether this outcome counts against the upstream.
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Failure(_))
    }
}

impl Default for Classifier {
    fn default() -> Self {
        Self::new(&DEFAULT_GRPC_FAILURE_CODES)
    }
}

impl Classifier {
    /// A classifier treating `grpc_failure_codes` as failures; codes above
    /// 16 are not gRPC codes and are ignored.
    pub fn new(grpc_failure_codes: &[u32]) -> Self {
        let grpc_failures = grpc_failure_codes
            .iter()
            .filter(|c| **c <= 16)
            .fold(0u32, |mask, c| mask | (1 << c));
        Self { grpc_failures }
    }

    /// The classifier a backend's breaker config asks for; the default
    /// codes when the backend has no breaker.
    pub fn for_breaker(config: Option<&CircuitBreaker>) -> Self {
        config.map_or_else(Self::default, |c| Self::new(&c.grpc_failure_codes))
    }

    /// The outcome of an HTTP response status: 5xx fails, all else
    /// (4xx and 429 included) succeeds.
    pub fn http_status(&self, status: StatusCode) -> Outcome {
        if status.is_server_error() {
            Outcome::Failure(FailureReason::Status)
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a gRPC status code.
    pub fn grpc_status(&self, code: u32) -> Outcome {
        if code <= 16 && self.grpc_failures & (1 << code) != 0 {
            Outcome::Failure(FailureReason::Grpc)
        } else {
            Outcome::Success
        }
    }

    /// The outcome of a response head: a `grpc-status` header (a
    /// trailers-only gRPC response) decides when present, else the status.
    pub fn response(&self, status: StatusCode, headers: &HeaderMap) -> Outcome {
        if status.is_server_error() {
            return self.http_status(status);
        }
        match grpc_status(headers) {
            Some(code) => self.grpc_status(code),
            None => self.http_status(status),
        }
    }

    /// The outcome of response trailers, `None` when they carry no
    /// `grpc-status` (the response head then decided).
    pub fn trailers(&self, trailers: &HeaderMap) -> Option<Outcome> {
        grpc_status(trailers).map(|code| self.grpc_status(code))
    }
}

/// The numeric `grpc-status` in `headers`, `None` when absent or not a
/// number.
pub fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    let value = headers.get("grpc-status")?.as_bytes();
    if value.is_empty() || value.len() > 3 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(value.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grpc(code: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", code.parse().unwrap());
        h
    }

    #[test]
    fn client_errors_and_429_are_successes() {
        let c = Classifier::default();
        for code in [200, 204, 301, 400, 401, 403, 404, 409, 429, 499] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(c.http_status(status), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn server_errors_fail() {
        let c = Classifier::default();
        for code in [500, 501, 502, 503, 504, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            let want = Outcome::Failure(FailureReason::Status);
            assert_eq!(c.http_status(status), want, "{code}");
        }
    }

    #[test]
    fn default_grpc_codes() {
        let c = Classifier::default();
        for code in [4, 8, 13, 14] {
            assert!(c.grpc_status(code).is_failure(), "{code}");
        }
        for code in [0, 1, 2, 3, 5, 7, 12, 16, 17, 99] {
            assert_eq!(c.grpc_status(code), Outcome::Success, "{code}");
        }
    }

    #[test]
    fn configured_grpc_codes_replace_defaults() {
        let c = Classifier::new(&[2, 14, 40]);
        assert!(c.grpc_status(2).is_failure());
        assert!(c.grpc_status(14).is_failure());
        assert!(!c.grpc_status(13).is_failure());
        assert!(!c.grpc_status(40).is_failure());
    }

    #[test]
    fn trailers_only_response_uses_grpc_status() {
        let c = Classifier::default();
        let out = c.response(StatusCode::OK, &grpc("14"));
        assert_eq!(out, Outcome::Failure(FailureReason::Grpc));
        assert_eq!(c.response(StatusCode::OK, &grpc("0")), Outcome::Success);
        assert_eq!(
            c.response(StatusCode::OK, &HeaderMap::new()),
            Outcome::Success
        );
        let out = c.response(StatusCode::BAD_GATEWAY, &grpc("0"));
        assert!(out.is_failure());
    }

    #[test]
    fn status_in_trailers_counts() {
        let c = Classifier::default();
        assert!(c.trailers(&grpc("14")).unwrap().is_failure());
        assert_eq!(c.trailers(&grpc("5")), Some(Outcome::Success));
        assert_eq!(c.trailers(&HeaderMap::new()), None);
    }

    #[test]
    fn malformed_grpc_status_is_ignored() {
        for bad in ["", "x", "1a", "1234", "-1"] {
            let mut h = HeaderMap::new();
            h.insert("grpc-status", bad.parse().unwrap());
            assert_eq!(grpc_status(&h), None, "{bad:?}");
        }
    }

    #[test]
    fn reasons_have_labels() {
        assert_eq!(FailureReason::Timeout.as_str(), "timeout");
        assert!(!Outcome::Neutral.is_failure());
    }
}
