//! W3C trace context (Trace Context Level 1): the proxy's span of each
//! request, and the `traceparent` it sends upstream.
//!
//! With tracing off there is no [`Tracer`] and both headers cross the
//! proxy untouched. With it on, [`Tracer::start`] reads the client's
//! `traceparent` when the request arrives: a valid one keeps its trace id
//! and sampled flag, and its parent id becomes the span's parent; an
//! absent or invalid one starts a new trace, sampled at `sampleRate`. The
//! span gets a new span id, which [`SpanContext::inject`] writes upstream
//! as the parent id, so every hop shows a new parent id under one trace
//! id. `tracestate` is forwarded as it came when the trace continues and
//! dropped when the proxy starts a new one, since it belongs to the old
//! trace. Ids are encoded into fixed buffers: no formatting per request.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use vakt_api::config::Tracing;

/// The `traceparent` request header.
pub static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` request header.
pub static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// The `sampled` bit of the trace flags.
const SAMPLED: u8 = 0x01;
/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// Tracing as the running proxy does it; exists only when tracing is on.
pub struct Tracer {
    sample_rate: f64,
    #[cfg(feature = "otlp")]
    exporter: Option<super::otlp::Exporter>,
}

/// The proxy's span of one request: the ids it carries and sends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanContext {
    pub trace_id: [u8; 16],
    /// The proxy's own span, the parent id sent upstream.
    pub span_id: [u8; 8],
    /// The caller's span, when a valid `traceparent` arrived.
    pub parent_id: Option<[u8; 8]>,
    /// Trace flags; only the sampled bit is sent on.
    pub flags: u8,
}

/// What is known of a finished span, for its export.
pub struct FinishedSpan<'a> {
    pub context: SpanContext,
    /// When the request arrived (wall clock).
    pub start: SystemTime,
    /// From arrival to the end of the response body.
    pub duration: Duration,
    pub method: &'a str,
    pub path: &'a str,
    pub route: Option<&'a str>,
    pub backend: Option<&'a str>,
    /// The endpoint of the attempt that answered.
    pub endpoint: Option<&'a str>,
    /// Attempts sent to endpoints; 0 when none was.
    pub attempts: u32,
    /// The status code the client got.
    pub status: u16,
    /// The `vakt-error` reason when the proxy answered itself.
    pub error: Option<&'a str>,
}

/// A request's span and where it goes when it ends.
pub struct RequestTrace {
    pub span: SpanContext,
    pub tracer: Arc<Tracer>,
}

impl Tracer {
    /// The tracer of a config, or `None` when tracing is off. With an
    /// OTLP endpoint and the `otlp` feature, starts the exporter on the
    /// current tokio runtime.
    pub fn from_config(config: &Tracing) -> Option<Arc<Self>> {
        if !config.enabled {
            return None;
        }
        #[cfg(not(feature = "otlp"))]
        if config.otlp.is_some() {
            tracing::warn!("built without the otlp feature: spans are not exported");
        }
        Some(Arc::new(Self {
            sample_rate: config.sample_rate,
            #[cfg(feature = "otlp")]
            exporter: config.otlp.as_ref().and_then(super::otlp::Exporter::spawn),
        }))
    }

    /// Starts the proxy's span for a request with these headers.
    pub fn start(&self, headers: &HeaderMap) -> SpanContext {
        let span_id = new_span_id();
        match incoming(headers) {
            Some(parent) => SpanContext {
                trace_id: parent.trace_id,
                span_id,
                parent_id: Some(parent.span_id),
                flags: parent.flags & SAMPLED,
            },
            None => SpanContext {
                trace_id: new_trace_id(),
                span_id,
                parent_id: None,
                flags: if fastrand::f64() < self.sample_rate {
                    SAMPLED
                } else {
                    0
                },
            },
        }
    }

    /// Hands a finished, sampled span to the exporter, if there is one.
    pub fn finish(&self, span: &FinishedSpan<'_>) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.exporter
            && span.context.sampled()
        {
            exporter.send(span);
        }
        #[cfg(not(feature = "otlp"))]
        let _ = span;
    }

    /// Sends what is queued for export, waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        #[cfg(feature = "otlp")]
        if let Some(exporter) = &self.exporter {
            exporter.flush(timeout).await;
        }
        #[cfg(not(feature = "otlp"))]
        let _ = timeout;
    }
}

impl SpanContext {
    /// Whether the trace is sampled (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// Sets the upstream request's `traceparent` to this span; removes
    /// `tracestate` when the trace started here.
    pub fn inject(&self, headers: &mut HeaderMap) {
        if self.parent_id.is_none() {
            headers.remove(&TRACESTATE);
        }
        headers.insert(TRACEPARENT.clone(), self.traceparent());
    }

    /// `00-<trace id>-<span id>-<flags>`, lowercase hex.
    pub fn traceparent(&self) -> HeaderValue {
        let mut buf = [0u8; TRACEPARENT_LEN];
        buf[..3].copy_from_slice(b"00-");
        hex(&self.trace_id, &mut buf[3..35]);
        buf[35] = b'-';
        hex(&self.span_id, &mut buf[36..52]);
        buf[52] = b'-';
        hex(&[self.flags], &mut buf[53..55]);
        HeaderValue::from_bytes(&buf).expect("hex digits and dashes")
    }
}

/// The caller's span as a `traceparent` names it.
#[derive(Debug, PartialEq, Eq)]
struct Parent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    flags: u8,
}

/// The one valid `traceparent` among the request's headers. Two of them
/// are as good as none: which one holds cannot be told.
fn incoming(headers: &HeaderMap) -> Option<Parent> {
    let mut all = headers.get_all(&TRACEPARENT).iter();
    let value = all.next()?;
    if all.next().is_some() {
        return None;
    }
    parse(value.as_bytes())
}

/// Parses a `traceparent` value (W3C Trace Context §3.2). A version this
/// proxy does not know is read as version `00` when its first fields fit,
/// as the spec asks; version `ff` and all-zero ids are invalid.
fn parse(v: &[u8]) -> Option<Parent> {
    if v.len() < TRACEPARENT_LEN || v[2] != b'-' || v[35] != b'-' || v[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&v[..2])?[0];
    let exact = v.len() == TRACEPARENT_LEN;
    match version {
        0xff => return None,
        0 if !exact => return None,
        _ if !exact && v[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    let trace_id = unhex::<16>(&v[3..35])?;
    let span_id = unhex::<8>(&v[36..52])?;
    let flags = unhex::<1>(&v[53..55])?[0];
    if trace_id == [0; 16] || span_id == [0; 8] {
        return None;
    }
    Some(Parent {
        trace_id,
        span_id,
        flags,
    })
}

fn new_trace_id() -> [u8; 16] {
    fastrand::u128(1..).to_be_bytes()
}

fn new_span_id() -> [u8; 8] {
    fastrand::u64(1..).to_be_bytes()
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Lowercase hex of `bytes` into `out`, which is twice as long.
pub fn hex(bytes: &[u8], out: &mut [u8]) {
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 0x0f)];
    }
}

/// `N` bytes from `2 * N` lowercase hex digits; uppercase is refused, as
/// the spec's grammar allows only lowercase.
fn unhex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    for (o, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
