//! One access-log line per request, as JSON with the keys of Istio's JSON
//! access log, so existing log pipelines parse it unchanged.
//!
//! Lines go to the tracing target `vakt::access`; `RUST_LOG` can turn
//! them off (`vakt::access=off`). The same record feeds the request
//! metrics and, with tracing on, ends the request's span when the
//! response ends; lines then carry `trace_id`, `span_id` and
//! `parent_span_id` (the caller's span, when one arrived).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use http::{HeaderValue, Method, Uri, Version};
use serde::{Serialize, Serializer};
use tokio::time::Instant;

use super::metrics::RequestMetrics;
use super::trace::{self, FinishedSpan, RequestTrace};
use crate::http::body::BodyEnd;

/// The tracing target of access-log lines.
pub const TARGET: &str = "vakt::access";

static ENABLED: AtomicBool = AtomicBool::new(true);

/// Whether access-log lines are written; when not, a request's log keeps
/// only what its metrics need.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turns access-log lines on or off for the whole process.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// What is known of a request, finished when its response body ends.
pub struct RequestLog {
    pub started: Instant,
    pub wall: SystemTime,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub authority: Option<HeaderValue>,
    pub user_agent: Option<HeaderValue>,
    pub forwarded_for: Option<HeaderValue>,
    pub request_id: Option<HeaderValue>,
    pub peer: SocketAddr,
    pub bytes_received: u64,
    pub route: Option<Arc<str>>,
    pub backend: Option<Arc<str>>,
    pub upstream_host: Option<Arc<str>>,
    pub upstream_time: Option<Duration>,
    pub status: u16,
    /// Why the proxy answered itself (`vakt-error`), or `-`.
    pub flags: &'static str,
    pub metrics: Option<Arc<RequestMetrics>>,
    /// Attempts sent to endpoints.
    pub attempts: u32,
    /// The proxy's span, when tracing is on.
    pub trace: Option<RequestTrace>,
}

#[derive(Serialize)]
struct Line<'a> {
    start_time: String,
    method: &'a str,
    path: &'a str,
    protocol: &'static str,
    response_code: u16,
    response_flags: &'a str,
    response_code_details: &'static str,
    bytes_received: u64,
    bytes_sent: u64,
    duration: u64,
    upstream_service_time: Option<u64>,
    x_forwarded_for: Option<&'a str>,
    user_agent: Option<&'a str>,
    request_id: Option<&'a str>,
    authority: Option<&'a str>,
    upstream_host: Option<&'a str>,
    upstream_cluster: Option<&'a str>,
    route_name: Option<&'a str>,
    downstream_remote_address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    trace_id: Option<Hex<16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    span_id: Option<Hex<8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<Hex<8>>,
}

/// Bytes written as lowercase hex without an allocation.
struct Hex<const N: usize>([u8; N]);

impl RequestLog {
    /// Records metrics and writes the access-log line.
    pub fn finish(self, bytes_sent: u64, end: BodyEnd) {
        let elapsed = self.started.elapsed();
        if let Some(m) = &self.metrics {
            m.record(self.status, elapsed);
        }
        if let Some(t) = &self.trace {
            t.tracer.finish(&self.span(t, elapsed));
        }
        if ENABLED.load(Ordering::Relaxed)
            && tracing::enabled!(target: TARGET, tracing::Level::INFO)
        {
            let line = self.line(bytes_sent, end, elapsed);
            if let Ok(json) = serde_json::to_string(&line) {
                tracing::info!(target: TARGET, "{json}");
            }
        }
    }

    fn span(&self, t: &RequestTrace, elapsed: Duration) -> FinishedSpan<'_> {
        FinishedSpan {
            context: t.span,
            start: self.wall,
            duration: elapsed,
            method: self.method.as_str(),
            path: self.uri.path(),
            route: self.route.as_deref(),
            backend: self.backend.as_deref(),
            endpoint: self.upstream_host.as_deref(),
            attempts: self.attempts,
            status: self.status,
            error: (self.flags != "-").then_some(self.flags),
        }
    }

    fn line(&self, bytes_sent: u64, end: BodyEnd, elapsed: Duration) -> Line<'_> {
        let details = match end {
            BodyEnd::Complete => "via_upstream",
            BodyEnd::Failed => "upstream_reset_after_response_started",
            BodyEnd::ClientGone => "downstream_remote_disconnect",
        };
        Line {
            start_time: rfc3339(self.wall),
            method: self.method.as_str(),
            path: self.uri.path_and_query().map_or("/", |p| p.as_str()),
            protocol: protocol(self.version),
            response_code: self.status,
            response_flags: self.flags,
            response_code_details: if self.flags == "-" { details } else { "proxy" },
            bytes_received: self.bytes_received,
            bytes_sent,
            duration: elapsed.as_millis() as u64,
            upstream_service_time: self.upstream_time.map(|d| d.as_millis() as u64),
            x_forwarded_for: header_str(&self.forwarded_for),
            user_agent: header_str(&self.user_agent),
            request_id: header_str(&self.request_id),
            authority: header_str(&self.authority),
            upstream_host: self.upstream_host.as_deref(),
            upstream_cluster: self.backend.as_deref(),
            route_name: self.route.as_deref(),
            downstream_remote_address: self.peer.to_string(),
            trace_id: self.trace.as_ref().map(|t| Hex(t.span.trace_id)),
            span_id: self.trace.as_ref().map(|t| Hex(t.span.span_id)),
            parent_span_id: self.trace.as_ref().and_then(|t| t.span.parent_id).map(Hex),
        }
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 32];
        let out = &mut buf[..N * 2];
        trace::hex(&self.0, out);
        s.serialize_str(std::str::from_utf8(out).unwrap_or_default())
    }
}

fn header_str(v: &Option<HeaderValue>) -> Option<&str> {
    v.as_ref().and_then(|v| v.to_str().ok())
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "-",
    }
}

/// `2026-12-04T16:51:58.123Z`.
fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_timestamps() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_millis(1_796_403_118_123);
        assert_eq!(rfc3339(t), "2026-12-04T16:51:58.123Z");
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
