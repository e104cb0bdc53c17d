//! Span export over OTLP/gRPC (feature `otlp`).
//!
//! The request path only converts a finished, sampled span and puts it on
//! a bounded queue; when the queue is full the span is dropped and
//! counted (`vakt_trace_spans_dropped_total`), so a slow collector never
//! holds a request. One task on the proxy's runtime drains the queue in
//! batches of up to 512 spans, at least once a second, and calls the
//! collector's `TraceService/Export`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span::SpanKind, status::StatusCode,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use vakt_api::config::Otlp;

use super::trace::FinishedSpan;

/// Spans waiting for export; more are dropped.
const QUEUE: usize = 2048;
/// Spans in one export call.
const BATCH: usize = 512;
/// The longest a span waits in a partial batch.
const INTERVAL: Duration = Duration::from_secs(1);
/// `flags` bits saying whether the parent span is remote (OTLP 1.4).
const PARENT_KNOWN: u32 = 0x100;
const PARENT_REMOTE: u32 = 0x200;

/// The handle the request path holds: a queue to the export task.
pub struct Exporter {
    queue: mpsc::Sender<Command>,
}

enum Command {
    Span(Box<Span>),
    /// Export what is queued now, then answer.
    Flush(oneshot::Sender<()>),
}

impl Exporter {
    /// Starts the export task on the current tokio runtime; `None` (with
    /// a warning) outside one.
    pub fn spawn(config: &Otlp) -> Option<Self> {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no runtime to export spans on");
            return None;
        };
        let endpoint = match Endpoint::from_shared(config.endpoint.clone()) {
            Ok(e) => e.timeout(config.timeout.get()),
            Err(e) => {
                tracing::error!(endpoint = %config.endpoint, error = %e, "bad OTLP endpoint");
                return None;
            }
        };
        // The lazy channel starts its worker on the runtime entered here.
        let channel = {
            let _entered = runtime.enter();
            endpoint.connect_lazy()
        };
        let (queue, rx) = mpsc::channel(QUEUE);
        let resource = resource(&config.service_name);
        runtime.spawn(run(TraceServiceClient::new(channel), rx, resource));
        tracing::info!(endpoint = %config.endpoint, "exporting spans over OTLP");
        Some(Self { queue })
    }

    /// Queues a span for export, or drops it when the queue is full.
    pub fn send(&self, span: &FinishedSpan<'_>) {
        if self
            .queue
            .try_send(Command::Span(Box::new(to_proto(span))))
            .is_err()
        {
            dropped("queue_full", 1);
        }
    }

    /// Exports the queued spans, waiting at most `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let (done, wait) = oneshot::channel();
        let flushed = async {
            if self.queue.send(Command::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        };
        let _ = tokio::time::timeout(timeout, flushed).await;
    }
}

/// The export task: batches spans until the queue closes.
async fn run(
    mut client: TraceServiceClient<Channel>,
    mut rx: mpsc::Receiver<Command>,
    resource: Resource,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut open = true;
    while open {
        let mut flush = None;
        match rx.recv().await {
            None => return,
            Some(Command::Span(s)) => batch.push(*s),
            Some(Command::Flush(done)) => flush = Some(done),
        }
        let until = Instant::now() + INTERVAL;
        while flush.is_none() && batch.len() < BATCH {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(Command::Span(s)) => batch.push(*s),
                    Some(Command::Flush(done)) => flush = Some(done),
                    None => {
                        open = false;
                        break;
                    }
                },
                _ = tokio::time::sleep_until(until) => break,
            }
        }
        if !batch.is_empty() {
            export(&mut client, &resource, std::mem::take(&mut batch)).await;
        }
        if let Some(done) = flush {
            let _ = done.send(());
        }
    }
}

async fn export(client: &mut TraceServiceClient<Channel>, resource: &Resource, spans: Vec<Span>) {
    let n = spans.len();
    let scope = InstrumentationScope {
        name: "vakt-proxy".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    if let Err(status) = client.export(request).await {
        tracing::warn!(spans = n, error = %status.message(), "span export failed");
        dropped("export_failed", n as u64);
    }
}

fn dropped(reason: &'static str, n: u64) {
    metrics::counter!("vakt_trace_spans_dropped_total", "reason" => reason).increment(n);
}

fn resource(service_name: &str) -> Resource {
    Resource {
        attributes: vec![string("service.name", service_name)],
        ..Default::default()
    }
}

/// The OTLP form of a span: a server span named after the method and
/// route, with HTTP semantic-convention attributes and vakt's own.
fn to_proto(s: &FinishedSpan<'_>) -> Span {
    let c = &s.context;
    let mut attributes = vec![
        string("http.request.method", s.method),
        string("url.path", s.path),
        int("http.response.status_code", i64::from(s.status)),
        int("vakt.attempts", i64::from(s.attempts)),
    ];
    let optional = [
        ("vakt.route", s.route),
        ("vakt.backend", s.backend),
        ("vakt.endpoint", s.endpoint),
        ("vakt.error", s.error),
    ];
    for (key, value) in optional {
        if let Some(v) = value {
            attributes.push(string(key, v));
        }
    }
    let name = match s.route {
        Some(route) => format!("{} {route}", s.method),
        None => s.method.to_owned(),
    };
    let status = match s.status >= 500 {
        true => Some(Status {
            code: StatusCode::Error as i32,
            message: s.error.unwrap_or_default().to_owned(),
        }),
        false => None,
    };
    let remote = match c.parent_id {
        Some(_) => PARENT_KNOWN | PARENT_REMOTE,
        None => PARENT_KNOWN,
    };
    Span {
        trace_id: c.trace_id.to_vec(),
        span_id: c.span_id.to_vec(),
        parent_span_id: c.parent_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: u32::from(c.flags) | remote,
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: unix_nanos(s.start),
        end_time_unix_nano: unix_nanos(s.start + s.duration),
        attributes,
        status,
        ..Default::default()
    }
}

fn unix_nanos(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn string(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
