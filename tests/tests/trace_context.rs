//! W3C trace context across a chain of real proxies: edge → outbound
//! sidecar → inbound sidecar → the example service. With tracing on,
//! every hop keeps the trace id and sends its own span id as the next
//! parent id, which its access-log line names; a request without a
//! valid `traceparent` gets a new one. With tracing off both headers
//! cross untouched.

use std::net::SocketAddr;
use std::time::Duration;

use http::Request;
use serde_json::Value;
use vakt_tests::body::empty;
use vakt_tests::client::{HttpClient, grpc_client_for};
use vakt_tests::example::{Echoed, ExampleConfig};
use vakt_tests::pb::EchoRequest;
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const T: Duration = Duration::from_secs(10);
const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";
const TRACING_ON: &str = "tracing: {enabled: true, sampleRate: 1}";

/// One proxy that sends everything on its `listener` to `next`.
fn hop(listener: &str, next: SocketAddr, protocol: &str, tracing: &str) -> ProxyBuilder {
    ProxyBuilder::yaml(format!(
        r#"
listeners: [{{name: {listener}, address: "${{listen}}"}}]
routes: [{{name: {listener}-all, rules: [{{backendRefs: [{{name: next}}]}}]}}]
backends: [{{name: next, endpoints: ["{next}"], protocol: {protocol}}}]
{tracing}
"#
    ))
}

/// Edge, outbound and inbound proxies in front of the example service,
/// started from the far end; `protocols` are what each hop speaks to the
/// next. Returned in request order.
async fn chain(protocols: [&str; 3], tracing: &str) -> (Vec<Proxy>, Upstream) {
    let app = Upstream::example(ExampleConfig::named("app")).await;
    let mut next = app.addr();
    let mut proxies = Vec::new();
    for (name, protocol) in ["inbound", "outbound", "edge"]
        .into_iter()
        .zip(protocols.into_iter().rev())
    {
        let proxy = hop(name, next, protocol, tracing)
            .start()
            .await
            .expect("proxy starts");
        next = proxy.listener();
        proxies.push(proxy);
    }
    proxies.reverse();
    (proxies, app)
}

async fn echo(proxy: &Proxy, headers: &[(&str, &str)]) -> Echoed {
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let mut req = Request::get("/echo").header("host", "app");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let rsp = c.send(req.body(empty()).unwrap()).await.unwrap();
    assert_eq!(rsp.status, 200, "{}", rsp.text());
    rsp.json().expect("echo JSON")
}

/// Each proxy's one access-log line, in request order.
async fn lines(proxies: &[Proxy]) -> Vec<Value> {
    let mut out = Vec::new();
    for p in proxies {
        let logs = p.wait_for_access_logs(1, T).await;
        assert_eq!(logs.len(), 1, "one request per proxy: {logs:?}");
        out.push(logs[0].clone());
    }
    out
}

fn field<'a>(line: &'a Value, key: &str) -> &'a str {
    line[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {line}"))
}

/// `(trace id, parent id, flags)` of a `traceparent`.
fn split(traceparent: &str) -> (String, String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(parts[0], "00");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

/// Every line is in `trace`, each hop's parent is the previous hop's
/// span, and the app's parent is the last hop's span.
fn assert_chain(lines: &[Value], trace: &str, first_parent: Option<&str>, app_parent: &str) {
    let mut parent = first_parent.map(String::from);
    let mut spans = Vec::new();
    for line in lines {
        assert_eq!(field(line, "trace_id"), trace, "{line}");
        assert_eq!(line["parent_span_id"].as_str(), parent.as_deref(), "{line}");
        let span = field(line, "span_id").to_owned();
        assert_eq!(span.len(), 16);
        assert!(!spans.contains(&span) && Some(&span) != parent.as_ref());
        spans.push(span.clone());
        parent = Some(span);
    }
    assert_eq!(parent.as_deref(), Some(app_parent), "the app's parent id");
}

#[tokio::test]
async fn a_traceparent_keeps_its_trace_and_gets_a_new_parent_per_hop() {
    let (proxies, _app) = chain(["http1", "http2", "http1"], TRACING_ON).await;
    let sent = format!("00-{TRACE}-{CALLER}-01");
    let got = echo(
        &proxies[0],
        &[("traceparent", &sent), ("tracestate", "x=1,y=2")],
    )
    .await;

    let (trace, parent, flags) = split(got.header("traceparent").expect("traceparent"));
    assert_eq!(trace, TRACE);
    assert_eq!(flags, "01");
    assert_ne!(parent, CALLER);
    assert_eq!(got.header("tracestate"), Some("x=1,y=2"));
    assert_chain(&lines(&proxies).await, TRACE, Some(CALLER), &parent);
}

#[tokio::test]
async fn a_request_without_a_valid_traceparent_gets_a_new_trace() {
    let (proxies, _app) = chain(["http1", "http1", "http1"], TRACING_ON).await;
    // All-zero trace id: invalid, so replaced, and its tracestate dropped.
    let invalid = format!("00-{}-{CALLER}-01", "0".repeat(32));
    let got = echo(
        &proxies[0],
        &[("traceparent", &invalid), ("tracestate", "x=1")],
    )
    .await;

    let (trace, parent, flags) = split(got.header("traceparent").expect("traceparent"));
    assert_eq!(trace.len(), 32);
    assert_ne!(trace, "0".repeat(32));
    assert_eq!(flags, "01", "sampleRate 1 samples every new trace");
    assert_eq!(got.header("tracestate"), None);
    assert_chain(&lines(&proxies).await, &trace, None, &parent);
}

#[tokio::test]
async fn grpc_calls_carry_the_trace_over_http2_hops() {
    let (proxies, app) = chain(["http2", "http2", "http2"], TRACING_ON).await;
    let mut c = grpc_client_for(proxies[0].listener(), "app").await.unwrap();
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        ..Default::default()
    });
    let sent = format!("00-{TRACE}-{CALLER}-00");
    req.metadata_mut()
        .insert("traceparent", sent.parse().unwrap());
    c.echo(req).await.expect("echo through three proxies");

    let recorded = app.log().wait_for(1, T).await;
    let (trace, parent, flags) = split(recorded[0].header("traceparent").unwrap());
    assert_eq!(trace, TRACE);
    assert_eq!(flags, "00", "an unsampled trace stays unsampled");
    assert_chain(&lines(&proxies).await, TRACE, Some(CALLER), &parent);
}

#[tokio::test]
async fn with_tracing_off_both_headers_cross_untouched() {
    let (proxies, _app) = chain(["http1", "http2", "http1"], "").await;
    // Invalid on purpose: the proxy does not judge what it does not use.
    let sent = format!("00-{TRACE}-{CALLER}-01-extra");
    let got = echo(
        &proxies[0],
        &[("traceparent", &sent), ("tracestate", "x=1")],
    )
    .await;
    assert_eq!(got.header("traceparent"), Some(sent.as_str()));
    assert_eq!(got.header("tracestate"), Some("x=1"));

    let got = echo(&proxies[0], &[]).await;
    assert_eq!(got.header("traceparent"), None);
    for line in proxies[0].wait_for_access_logs(2, T).await {
        assert!(line.get("trace_id").is_none(), "{line}");
        assert!(line.get("span_id").is_none(), "{line}");
    }
}

#[tokio::test]
async fn the_otlp_endpoint_flag_turns_tracing_on_and_is_checked() {
    let app = Upstream::example(ExampleConfig::named("app")).await;
    // A collector address nothing answers on: spans are dropped, requests
    // are not held.
    let proxy = hop("edge", app.addr(), "http1", "")
        .arg("--otlp-endpoint")
        .arg("http://127.0.0.1:9")
        .start()
        .await
        .expect("proxy starts");
    let got = echo(&proxy, &[]).await;
    let (trace, _, _) = split(got.header("traceparent").expect("a new trace"));
    let line = &proxy.wait_for_access_logs(1, T).await[0];
    assert_eq!(field(line, "trace_id"), trace);

    let mut bad = hop("edge", app.addr(), "http1", "")
        .env("VAKT_OTLP_ENDPOINT", "collector:4317")
        .spawn()
        .await
        .unwrap();
    let status = bad.wait_exit(T).await.expect("exits");
    assert_eq!(status.code(), Some(1));
    let log = bad.stderr_lines().join("\n");
    assert!(log.contains("tracing.otlp.endpoint"), "{log}");
}
