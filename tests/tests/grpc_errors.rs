//! gRPC calls whose upstream dies, through the real `vakt-proxy` (case
//! BR-08): the client must always get a gRPC status, UNAVAILABLE (14)
//! with a message, never OK, CANCELLED or UNKNOWN, and never a bare
//! transport error.
//!
//! Each case is checked twice: with tonic, as an application sees it, and
//! with a plain h2c client, which shows the wire shape (trailers after the
//! messages, or a trailers-only response) instead of a stream reset.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::Request;
use prost::Message;
use vakt_tests::body::full;
use vakt_tests::client::{Collected, HttpClient, grpc_client_for};
use vakt_tests::pb::{EchoRequest, StreamRequest};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::server::{Connection, handler};
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

/// Bound on one call.
const T: Duration = Duration::from_secs(10);

const CONFIG: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: route-g
    hostnames: [svc-g]
    rules:
      - backendRefs: [{name: backend-g}]
backends:
  - name: backend-g
    endpoints: ["@g"]
    protocol: http2
"#;

async fn proxy_to(upstream: SocketAddr) -> Proxy {
    let config = CONFIG.replace("@g", &upstream.to_string());
    ProxyBuilder::yaml(config).start().await.unwrap()
}

/// How a server-streaming call ended, as tonic reports it.
#[derive(Debug)]
struct StreamEnd {
    messages: usize,
    code: tonic::Code,
    message: String,
}

async fn tonic_stream(proxy: &Proxy, req: StreamRequest) -> StreamEnd {
    let mut c = grpc_client_for(proxy.listener(), "svc-g").await.unwrap();
    let call = async {
        let mut stream = match c.stream(req).await {
            Ok(s) => s.into_inner(),
            Err(s) => return (0, s),
        };
        let mut n = 0;
        loop {
            match stream.message().await {
                Ok(Some(_)) => n += 1,
                Ok(None) => return (n, tonic::Status::ok("")),
                Err(s) => return (n, s),
            }
        }
    };
    let (messages, status) = tokio::time::timeout(T, call)
        .await
        .expect("the call ends in time");
    StreamEnd {
        messages,
        code: status.code(),
        message: status.message().to_owned(),
    }
}

/// A gRPC message with its 5-byte length prefix.
fn frame(msg: &impl Message) -> Bytes {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(body.len() + 5);
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    out.extend_from_slice(&body);
    out.into()
}

/// The number of whole gRPC messages in `body`; `None` if it ends inside
/// one.
fn count_frames(mut body: &[u8]) -> Option<usize> {
    let mut n = 0;
    while !body.is_empty() {
        if body.len() < 5 {
            return None;
        }
        body.advance(1);
        let len = body.get_u32() as usize;
        if body.len() < len {
            return None;
        }
        body.advance(len);
        n += 1;
    }
    Some(n)
}

/// Calls `method` over a plain h2c connection and reads the whole response.
async fn h2_call(proxy: &Proxy, method: &str, msg: Bytes) -> Result<Collected, String> {
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let req = Request::post(format!("http://svc-g/vakt.example.v1.Echo/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(msg))
        .unwrap();
    match tokio::time::timeout(T, c.send(req)).await {
        Err(_) => Err(format!("no response within {T:?}")),
        Ok(Err(e)) => Err(format!("transport error instead of a gRPC status: {e}")),
        Ok(Ok(r)) => Ok(r),
    }
}

/// The `grpc-status` and `grpc-message` of a response: from its trailers,
/// or from its headers when it is trailers-only.
fn grpc_status(r: &Collected) -> (Option<String>, Option<String>) {
    let field = |name: &str| {
        let from = r.trailers.as_ref().and_then(|t| t.get(name));
        let v = from.or_else(|| r.headers.get(name));
        v.and_then(|v| v.to_str().ok()).map(str::to_owned)
    };
    (field("grpc-status"), field("grpc-message"))
}

/// Upstream deaths after some stream messages: `(name, messages sent,
/// whole connection reset)`.
const STREAM_CUTS: [(&str, u32, bool); 4] = [
    ("TCP reset after 3 messages", 3, true),
    ("stream reset after 3 messages", 3, false),
    ("TCP reset before any message", 0, true),
    ("TCP reset after 1 message", 1, true),
];

fn cut_request(sent: u32, reset_connection: bool) -> StreamRequest {
    StreamRequest {
        message: "m".into(),
        count: sent + 5,
        fail_after: Some(sent),
        reset_connection,
        ..Default::default()
    }
}

#[tokio::test]
async fn a_stream_cut_by_its_upstream_ends_with_unavailable() {
    let up = Upstream::named("g").await;
    let proxy = proxy_to(up.addr()).await;
    let mut report = Vec::new();
    for (name, sent, reset_connection) in STREAM_CUTS {
        let end = tonic_stream(&proxy, cut_request(sent, reset_connection)).await;
        let ok = end.messages == sent as usize
            && end.code == tonic::Code::Unavailable
            && !end.message.is_empty();
        if !ok {
            report.push(format!(
                "  {name}: {} messages then {:?} {:?}, want {sent} then \
                 Unavailable with a message",
                end.messages, end.code, end.message
            ));
        }
    }
    assert!(
        report.is_empty(),
        "BR-08 (tonic): a stream whose upstream dies must end with status \
         14, never 0, 1 or 2:\n{}",
        report.join("\n")
    );
}

#[tokio::test]
async fn a_cut_stream_ends_with_status_trailers_not_a_reset() {
    let up = Upstream::named("g").await;
    let proxy = proxy_to(up.addr()).await;
    let mut report = Vec::new();
    for (name, sent, reset_connection) in STREAM_CUTS {
        let msg = frame(&cut_request(sent, reset_connection));
        let r = match h2_call(&proxy, "Stream", msg).await {
            Ok(r) => r,
            Err(e) => {
                report.push(format!("  {name}: {e}"));
                continue;
            }
        };
        let (status, message) = grpc_status(&r);
        let frames = count_frames(&r.body);
        let ok = r.status == 200
            && status.as_deref() == Some("14")
            && message.as_deref().is_some_and(|m| !m.is_empty())
            && frames == Some(sent as usize);
        if !ok {
            report.push(format!(
                "  {name}: HTTP {}, {frames:?} whole messages, grpc-status \
                 {status:?}, grpc-message {message:?}",
                r.status
            ));
        }
    }
    assert!(
        report.is_empty(),
        "BR-08 (h2): the proxy must end a broken stream with trailers \
         `grpc-status: 14` and a message, after the messages it got:\n{}",
        report.join("\n")
    );
}

/// Upstreams that die before sending response headers.
async fn dead_upstreams() -> Vec<(&'static str, Box<dyn std::any::Any + Send>, SocketAddr)> {
    let mut out: Vec<(&'static str, Box<dyn std::any::Any + Send>, SocketAddr)> = Vec::new();

    // Resets the TCP connection on the HTTP/2 preface.
    let raw = RawUpstream::start(|_| RawReply::new().reset()).await;
    let addr = raw.addr();
    out.push(("TCP reset on the preface", Box::new(raw), addr));

    // Closes (FIN) on the preface.
    let raw = RawUpstream::start(|_| RawReply::new().close()).await;
    let addr = raw.addr();
    out.push(("FIN on the preface", Box::new(raw), addr));

    // Reads the request headers, then resets the TCP connection.
    let h2 = Upstream::start(handler(|req| async move {
        if let Some(conn) = req.extensions().get::<Connection>() {
            conn.reset_after(Duration::ZERO);
        }
        std::future::pending().await
    }))
    .await;
    let addr = h2.addr();
    out.push(("TCP reset after the request headers", Box::new(h2), addr));
    out
}

#[tokio::test]
async fn a_unary_call_whose_upstream_dies_gets_a_trailers_only_unavailable() {
    let mut report = Vec::new();
    for (name, _upstream, addr) in dead_upstreams().await {
        let proxy = proxy_to(addr).await;
        let msg = EchoRequest {
            message: "hi".into(),
            ..Default::default()
        };

        let mut c = grpc_client_for(proxy.listener(), "svc-g").await.unwrap();
        let got = tokio::time::timeout(T, c.echo(msg.clone()))
            .await
            .expect("the call ends in time");
        match got {
            Ok(_) => report.push(format!("  {name} (tonic): OK from a dead upstream")),
            Err(s) if s.code() == tonic::Code::Unavailable && !s.message().is_empty() => {}
            Err(s) => report.push(format!(
                "  {name} (tonic): {:?} {:?}, want Unavailable with a message",
                s.code(),
                s.message()
            )),
        }

        match h2_call(&proxy, "Echo", frame(&msg)).await {
            Err(e) => report.push(format!("  {name} (h2): {e}")),
            Ok(r) => {
                let content_type = r.header("content-type").map(str::to_owned);
                let status = r.header("grpc-status").map(str::to_owned);
                let ok = r.status == 200
                    && content_type.as_deref() == Some("application/grpc")
                    && status.as_deref() == Some("14")
                    && r.body.is_empty()
                    && r.trailers.is_none();
                if !ok {
                    report.push(format!(
                        "  {name} (h2): HTTP {}, content-type {content_type:?}, \
                         grpc-status in headers {status:?}, {} body bytes, \
                         trailers {:?}; want a trailers-only 200 with \
                         application/grpc and grpc-status 14",
                        r.status,
                        r.body.len(),
                        r.trailers
                    ));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "BR-08 unary: an upstream that dies before its headers:\n{}",
        report.join("\n")
    );
}
