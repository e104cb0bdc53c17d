//! Span export over OTLP (feature `otlp`): a proxy served in-process sends
//! its span of each request to an in-process OTLP/gRPC collector, with
//! the ids it propagated upstream and the route, backend, attempts and
//! status as attributes.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use vakt_proxy::listener;
use vakt_proxy::state::Proxy;

const T: Duration = Duration::from_secs(10);

/// Keeps every exported span with its resource's `service.name`.
struct Collector {
    spans: mpsc::UnboundedSender<(String, Span)>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for rs in req.into_inner().resource_spans {
            let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
            let service = string_attr(&attrs, "service.name").unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    let _ = self.spans.send((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn start_collector() -> (SocketAddr, mpsc::UnboundedReceiver<(String, Span)>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    let service = TraceServiceServer::new(Collector { spans: tx });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(socket)),
    );
    (addr, rx)
}

/// An upstream that answers 200 and keeps each `traceparent` it gets.
async fn start_upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            let record = record.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let tp = req
                    .headers()
                    .get("traceparent")
                    .map(|v| v.to_str().unwrap().to_owned());
                record.lock().unwrap().push(tp.unwrap_or_default());
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    (addr, seen)
}

/// Serves `config` in-process; returns the listener's address and the
/// sender that stops it.
async fn start_proxy(config: &str) -> (SocketAddr, watch::Sender<bool>) {
    let config = vakt_api::load_str(config).expect("config loads");
    let proxy = Proxy::new(config).expect("proxy state");
    let socket = listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = socket.local_addr().unwrap();
    let (stop, stopped) = watch::channel(false);
    tokio::spawn(listener::serve(proxy, 0, socket, stopped, T));
    (addr, stop)
}

async fn get(addr: SocketAddr, path: &str, traceparent: Option<&str>) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::get(path).header("host", "shop");
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    let rsp = send
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = rsp.status().as_u16();
    // The span ends when the response body does.
    rsp.into_body().collect().await.unwrap();
    status
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn int_attr(attrs: &[KeyValue], key: &str) -> Option<i64> {
    let kv = attrs.iter().find(|kv| kv.key == key)?;
    match kv.value.as_ref()?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn next_span(rx: &mut mpsc::UnboundedReceiver<(String, Span)>) -> (String, Span) {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a span within 10 s")
        .expect("collector running")
}

const CONFIG: &str = r#"
listeners: [{name: edge, address: "127.0.0.1:1"}]
routes:
  - name: shop
    rules:
      - matches: [{path: {type: PathPrefix, value: /down}}]
        backendRefs: [{name: down}]
      - backendRefs: [{name: up}]
backends:
  - {name: up, endpoints: ["${up}"]}
  - {name: down, endpoints: ["${down}"]}
tracing:
  enabled: true
  sampleRate: 1
  otlp: {endpoint: "http://${collector}", serviceName: edge-proxy}
"#;

#[tokio::test]
async fn the_proxy_span_reaches_the_collector_with_its_ids_and_attributes() {
    let (collector, mut spans) = start_collector().await;
    let (up, seen) = start_upstream().await;
    // A port nothing listens on: every attempt fails to connect.
    let down = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let down_addr = down.local_addr().unwrap();
    drop(down);
    let config = CONFIG
        .replace("${up}", &up.to_string())
        .replace("${down}", &down_addr.to_string())
        .replace("${collector}", &collector.to_string());
    let (proxy, _stop) = start_proxy(&config).await;

    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert_eq!(get(proxy, "/orders", Some(incoming)).await, 200);
    let (service, span) = next_span(&mut spans).await;
    assert_eq!(service, "edge-proxy");
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
    let sent = seen.lock().unwrap()[0].clone();
    assert_eq!(
        sent,
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&span.span_id)
        ),
        "the upstream's parent id is the exported span's id"
    );
    assert_eq!(span.name, "GET shop");
    assert_eq!(span.kind, SpanKind::Server as i32);
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
    assert!(span.start_time_unix_nano > 0);
    let a = &span.attributes;
    assert_eq!(string_attr(a, "vakt.route").as_deref(), Some("shop"));
    assert_eq!(string_attr(a, "vakt.backend").as_deref(), Some("up"));
    assert_eq!(string_attr(a, "vakt.endpoint"), Some(up.to_string()));
    assert_eq!(int_attr(a, "vakt.attempts"), Some(1));
    assert_eq!(int_attr(a, "http.response.status_code"), Some(200));
    assert_eq!(string_attr(a, "url.path").as_deref(), Some("/orders"));
    assert_eq!(string_attr(a, "vakt.error"), None);
    assert!(span.status.is_none());

    // A new trace, answered by the proxy after failed attempts.
    assert_eq!(get(proxy, "/down", None).await, 502);
    let (_, span) = next_span(&mut spans).await;
    assert!(span.parent_span_id.is_empty());
    assert_eq!(span.trace_id.len(), 16);
    assert_ne!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    let a = &span.attributes;
    assert_eq!(string_attr(a, "vakt.backend").as_deref(), Some("down"));
    assert_eq!(
        string_attr(a, "vakt.error").as_deref(),
        Some("connect-failed")
    );
    assert_eq!(int_attr(a, "http.response.status_code"), Some(502));
    assert!(int_attr(a, "vakt.attempts").unwrap() >= 1, "{a:?}");
    assert_eq!(span.status.map(|s| s.code), Some(2), "error status");

    // An unsampled trace is propagated but not exported.
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_eq!(get(proxy, "/orders", Some(unsampled)).await, 200);
    assert_eq!(get(proxy, "/orders", Some(incoming)).await, 200);
    let (_, span) = next_span(&mut spans).await;
    assert_eq!(hex(&span.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    let sent = seen.lock().unwrap()[1].clone();
    assert!(sent.starts_with("00-0af7651916cd43dd8448eb211c80319c-"));
    assert!(sent.ends_with("-00"));
}

#[tokio::test]
async fn flush_exports_queued_spans_at_once() {
    use vakt_proxy::telemetry::otlp::Exporter;
    use vakt_proxy::telemetry::trace::{FinishedSpan, SpanContext};

    let (collector, mut spans) = start_collector().await;
    let config = vakt_api::config::Otlp::new(format!("http://{collector}"));
    let exporter = Exporter::spawn(&config).expect("exporter starts");
    let context = SpanContext {
        trace_id: [7; 16],
        span_id: [8; 8],
        parent_id: None,
        flags: 1,
    };
    exporter.send(&FinishedSpan {
        context,
        start: std::time::SystemTime::now(),
        duration: Duration::from_millis(3),
        method: "POST",
        path: "/pay",
        route: None,
        backend: None,
        endpoint: None,
        attempts: 0,
        status: 404,
        error: Some("no-route"),
    });
    // Well inside the one-second batch interval.
    let started = tokio::time::Instant::now();
    exporter.flush(T).await;
    assert!(started.elapsed() < Duration::from_millis(900));
    let (service, span) = spans.try_recv().expect("exported by the flush");
    assert_eq!(service, "vakt-proxy");
    assert_eq!(span.name, "POST");
    assert_eq!(span.trace_id, vec![7; 16]);
    assert_eq!(
        span.end_time_unix_nano - span.start_time_unix_nano,
        3_000_000
    );
    assert_eq!(
        string_attr(&span.attributes, "vakt.error").as_deref(),
        Some("no-route")
    );
    assert!(span.status.is_none(), "a 404 is not a server error");
}
