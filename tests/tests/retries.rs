//! Retries through the real `vakt-proxy`, counted at the upstreams: a 503
//! is retried on the other endpoint; a refused connection is always tried
//! again; a POST that reached the upstream is retried only with an
//! `Idempotency-Key`; a body under the replay limit arrives byte for byte
//! on the second attempt, one over it is not retried; `Retry-After` is
//! honoured; the retry budget caps extra attempts in a failure burst; and
//! a gRPC UNAVAILABLE is retried whether it comes trailers-only or in
//! trailers after the headers, but not after a message was passed on
//! (case BR-11).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::join_all;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use vakt_tests::body::{BoxBody, BoxError, boxed, empty, full};
use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::example::sha256_hex;
use vakt_tests::fault::{Fault, FaultyUpstream};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::server::handler;
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

const T: Duration = Duration::from_secs(10);

/// Backend `svc` (round robin over `endpoints`, placeholder names) behind
/// a route with `retry`; `extra` goes at backend level.
fn config(endpoints: &[&str], retry: &str, extra: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"${{{e}}}\"")).collect();
    let retry = match retry {
        "" => String::new(),
        r => format!(", retry: {r}"),
    };
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: svc
    rules: [{{backendRefs: [{{name: svc}}]{retry}}}]
backends:
  - name: svc
    loadBalancer: round-robin
    endpoints: [{}]
{extra}
"#,
        list.join(", ")
    )
}

const RETRY_503: &str = "{attempts: 1, codes: [503], backoff: 10ms}";

async fn two(a: Fault, b: Fault, retry: &str) -> (FaultyUpstream, FaultyUpstream, Proxy) {
    let mut builder = ProxyBuilder::yaml(config(&["a", "b"], retry, ""));
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", a).await;
    let b = FaultyUpstream::start_at(builder.addr("b"), "b", b).await;
    (a, b, builder.start().await.expect("proxy starts"))
}

async fn send(c: &mut HttpClient, req: Request<BoxBody>) -> Collected {
    let r = tokio::time::timeout(T, c.send(req)).await;
    r.expect("answer in time").expect("response")
}

fn get(id: &str) -> Request<BoxBody> {
    let req = Request::get("/").header("host", "svc");
    req.header("x-request-id", id).body(empty()).unwrap()
}

fn post(id: &str, body: &'static str, key: Option<&str>) -> Request<BoxBody> {
    let mut req = Request::post("/")
        .header("host", "svc")
        .header("x-request-id", id);
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    req.body(full(body)).unwrap()
}

/// The request ids an upstream received, in order.
fn ids(up: &FaultyUpstream) -> Vec<String> {
    let ids = up.traffic().into_iter().map(|r| {
        let id = r.header("x-request-id").unwrap_or("");
        id.to_owned()
    });
    ids.collect()
}

fn metric(proxy_metrics: &vakt_tests::client::Metrics, name: &str) -> f64 {
    proxy_metrics.sum(name, &[("backend", "svc")])
}

#[tokio::test]
async fn a_503_is_retried_on_the_other_endpoint() {
    let (a, b, proxy) = two(Fault::Status(503), Fault::None, RETRY_503).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for i in 0..10 {
        let r = send(&mut c, get(&format!("r{i}"))).await;
        assert_eq!(r.status, 200, "request r{i}: {}", r.text());
        assert_eq!(r.header("x-served-by"), Some("b"));
    }
    let (at_a, at_b) = (ids(&a), ids(&b));
    assert!(
        at_a.len() >= 5,
        "round robin sends first attempts to a: {at_a:?}"
    );
    assert_eq!(at_b.len(), 10, "every request ends at b once: {at_b:?}");
    for id in &at_a {
        assert!(
            at_b.contains(id),
            "{id} failed at a and was not retried at b"
        );
    }
    let unique: std::collections::HashSet<_> = at_a.iter().collect();
    assert_eq!(unique.len(), at_a.len(), "a retry never goes back to a");
    let m = proxy.metrics().await.unwrap();
    assert_eq!(metric(&m, "vakt_retries_total"), at_a.len() as f64);
}

/// A refused connection sent nothing, so even a POST on a route without
/// a retry policy goes to the next endpoint.
#[tokio::test]
async fn a_refused_connection_is_always_tried_again() {
    let mut builder = ProxyBuilder::yaml(config(&["dead", "b"], "", ""));
    let _nothing_listens = builder.addr("dead");
    let b = FaultyUpstream::start_at(builder.addr("b"), "b", Fault::None).await;
    let proxy = builder.start().await.expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for i in 0..10 {
        let r = send(&mut c, post(&format!("p{i}"), "hello", None)).await;
        assert_eq!(
            (r.status.as_u16(), r.header("vakt-error")),
            (200, None),
            "POST p{i} after a refused connection"
        );
    }
    let got = b.traffic();
    assert_eq!(got.len(), 10);
    assert!(got.iter().all(|r| r.body == b"hello"), "bodies intact");
}

/// A POST whose connection is reset after the upstream read it may have
/// been acted on: it is not retried, unless it carries an
/// `Idempotency-Key`.
#[tokio::test]
async fn a_post_reset_after_sending_is_retried_only_with_an_idempotency_key() {
    let a = RawUpstream::start(|_| RawReply::new().read_body().reset()).await;
    let b = FaultyUpstream::start("b", Fault::None).await;
    let text = config(&["a", "b"], RETRY_503, "")
        .replace("${a}", &a.addr().to_string())
        .replace("${b}", &b.addr().to_string());
    let proxy = ProxyBuilder::yaml(text)
        .start()
        .await
        .expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();

    let mut reset = 0;
    for i in 0..6 {
        let r = send(&mut c, post(&format!("n{i}"), "order", None)).await;
        match r.status.as_u16() {
            200 => {}
            502 => {
                assert_eq!(r.header("vakt-error"), Some("upstream-reset"));
                reset += 1;
            }
            s => panic!("POST n{i}: unexpected {s}"),
        }
    }
    let at_a = a.requests().len();
    assert!(at_a >= 1, "round robin sends some POSTs to a");
    assert_eq!(
        reset, at_a,
        "every POST a reset after reading it must fail, not be retried"
    );
    assert_eq!(b.count() + at_a, 6, "no POST was sent twice");

    let before_a = a.requests().len();
    let before_b = b.count();
    for i in 0..6 {
        let r = send(
            &mut c,
            post(&format!("k{i}"), "order", Some(&format!("key-{i}"))),
        )
        .await;
        assert_eq!(
            r.status,
            200,
            "POST k{i} with an Idempotency-Key is retried after a reset: {:?}",
            r.header("vakt-error")
        );
    }
    assert!(
        a.requests().len() > before_a,
        "some keyed POSTs met a first"
    );
    assert_eq!(b.count() - before_b, 6);
    assert!(b.traffic().iter().all(|r| r.body == b"order"));
}

/// A POST answered 503 is not retried without a key: the upstream saw it.
#[tokio::test]
async fn a_post_answered_503_is_retried_only_with_an_idempotency_key() {
    let (a, b, proxy) = two(Fault::Status(503), Fault::None, RETRY_503).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let mut failed = 0;
    for i in 0..6 {
        let r = send(&mut c, post(&format!("n{i}"), "pay", None)).await;
        if r.status == 503 {
            assert_eq!(r.header("x-served-by"), Some("a"));
            failed += 1;
        }
    }
    assert!(a.count() >= 1);
    assert_eq!(failed, a.count(), "a POST without a key is never retried");
    assert_eq!(a.count() + b.count(), 6);

    for i in 0..6 {
        let r = send(&mut c, post(&format!("k{i}"), "pay", Some("same-key"))).await;
        assert_eq!(r.status, 200, "keyed POST k{i}");
    }
    assert_eq!(b.count(), 6 - failed + 6);
}

/// A body streamed in chunks, `len` bytes in all.
fn chunked_body(len: usize) -> (Bytes, BoxBody) {
    let data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
    let data = Bytes::from(data);
    let chunks: Vec<Bytes> = data.chunks(4000).map(Bytes::copy_from_slice).collect();
    let stream = futures_util::stream::unfold(chunks.into_iter(), |mut it| async move {
        let next = it.next()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
        Some((Ok::<_, BoxError>(Frame::data(next)), it))
    });
    (data, boxed(StreamBody::new(stream)))
}

#[tokio::test]
async fn bodies_under_the_replay_limit_are_replayed_byte_for_byte() {
    let retry = "{attempts: 1, codes: [503], backoff: 10ms, replayLimitBytes: 65536}";
    let mut builder = ProxyBuilder::yaml(config(&["a"], retry, ""));
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", Fault::Status(503)).await;
    let proxy = builder.start().await.expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();

    let (sent, body) = chunked_body(40_000);
    let req = Request::put("/").header("host", "svc").body(body).unwrap();
    let r = send(&mut c, req).await;
    assert_eq!(r.status, 503, "both attempts fail");
    let got = a.traffic();
    assert_eq!(
        got.len(),
        2,
        "a 40 kB PUT under the 64 KiB limit is retried"
    );
    for (i, attempt) in got.iter().enumerate() {
        assert_eq!(
            (attempt.body.len(), sha256_hex(&attempt.body)),
            (sent.len(), sha256_hex(&sent)),
            "attempt {i} body differs from what the client sent"
        );
    }

    let (sent, body) = chunked_body(100_000);
    let req = Request::put("/").header("host", "svc").body(body).unwrap();
    let r = send(&mut c, req).await;
    assert_eq!(r.status, 503, "the upstream's answer comes back as it is");
    let got = a.traffic();
    assert_eq!(got.len(), 3, "a 100 kB body over the limit is not retried");
    assert_eq!(
        sha256_hex(&got[2].body),
        sha256_hex(&sent),
        "a body over the replay limit still reaches the upstream whole"
    );
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let wait = Fault::StatusWith(503, "retry-after", "1");
    let (a, b, proxy) = two(wait, Fault::None, RETRY_503).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for i in 0..3 {
        let id = format!("w{i}");
        let r = send(&mut c, get(&id)).await;
        assert_eq!(r.status, 200);
        let first = a
            .traffic()
            .into_iter()
            .find(|r| r.header("x-request-id") == Some(&id));
        let Some(first) = first else { continue };
        let second = b
            .traffic()
            .into_iter()
            .find(|r| r.header("x-request-id") == Some(&id));
        let gap = second.expect("retried at b").at - first.at;
        assert!(
            gap >= Duration::from_millis(950),
            "Retry-After: 1 asks for 1 s between attempts, waited {gap:?}"
        );
        assert!(gap < Duration::from_secs(3), "waited {gap:?}");
        return;
    }
    panic!("no request met a first in 3 tries");
}

/// Both endpoints fail every request; 3 retries each would be 400
/// attempts for 100 requests, but a 20 % budget (at least 1 retry a
/// second over its 10 s window) allows only 20 extra attempts.
#[tokio::test]
async fn the_budget_caps_retries_in_a_failure_burst() {
    let retry = "{attempts: 3, codes: [503], backoff: 1ms}";
    let budget = "    retryBudget: {percent: 20, minRetriesPerSecond: 1}";
    let mut builder = ProxyBuilder::yaml(config(&["a", "b"], retry, budget));
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", Fault::Status(503)).await;
    let b = FaultyUpstream::start_at(builder.addr("b"), "b", Fault::Status(503)).await;
    let proxy = builder.start().await.expect("proxy starts");

    let listener = proxy.listener();
    let clients = (0..10).map(|i| async move {
        let mut c = HttpClient::h1(listener).await.unwrap();
        let mut statuses = Vec::new();
        for j in 0..10 {
            statuses.push(send(&mut c, get(&format!("c{i}-{j}"))).await.status);
        }
        statuses
    });
    let statuses: Vec<_> = join_all(clients).await.into_iter().flatten().collect();
    assert_eq!(statuses.len(), 100);
    assert!(statuses.iter().all(|s| *s == 503));

    let attempts = a.count() + b.count();
    assert!(
        (110..=120).contains(&attempts),
        "100 requests with a 20 % budget (floor 10) must make 110 to 120 attempts, made {attempts}"
    );
    let m = proxy.metrics().await.unwrap();
    assert_eq!(metric(&m, "vakt_retries_total"), (attempts - 100) as f64);
    assert!(metric(&m, "vakt_retries_refused_total") >= 1.0);
}

/// How the first attempt of a gRPC call fails (BR-11).
#[derive(Clone, Copy, Debug)]
enum FirstAttempt {
    /// HEADERS with `grpc-status: 14` and END_STREAM.
    TrailersOnly,
    /// HEADERS without a status, then trailers with `grpc-status: 14`.
    StatusInTrailers,
    /// HEADERS, one message, then trailers with `grpc-status: 14`.
    AfterAMessage,
}

/// A length-prefixed gRPC message.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

fn grpc_head(rsp: &mut Response<BoxBody>) {
    let ct = HeaderValue::from_static("application/grpc");
    rsp.headers_mut().insert("content-type", ct);
}

fn status_trailers(code: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static(code));
    t
}

/// A body of `data` then `code` in trailers, 20 ms apart.
fn grpc_body(data: Option<Bytes>, code: &'static str) -> BoxBody {
    let mut frames = Vec::new();
    if let Some(d) = data {
        frames.push(Frame::data(d));
    }
    frames.push(Frame::trailers(status_trailers(code)));
    let stream = futures_util::stream::unfold(frames.into_iter(), |mut it| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Some((Ok::<_, BoxError>(it.next()?), it))
    });
    boxed(StreamBody::new(stream))
}

/// An h2c upstream: the first call fails as `first` says, later ones
/// answer one message and OK.
async fn grpc_upstream(first: FirstAttempt) -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let n = calls.clone();
    let h = handler(move |req: Request<BoxBody>| {
        let call = n.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = req.into_body().collect().await;
            let reply = Some(grpc_frame(b"reply"));
            let mut rsp = match (call, first) {
                (0, FirstAttempt::TrailersOnly) => {
                    let mut r = Response::new(empty());
                    r.headers_mut()
                        .insert("grpc-status", HeaderValue::from_static("14"));
                    r
                }
                (0, FirstAttempt::StatusInTrailers) => Response::new(grpc_body(None, "14")),
                (0, FirstAttempt::AfterAMessage) => Response::new(grpc_body(reply, "14")),
                _ => Response::new(grpc_body(reply, "0")),
            };
            grpc_head(&mut rsp);
            rsp
        }
    });
    (Upstream::start(h).await, calls)
}

/// Calls through a proxy to `first`'s upstream; returns the gRPC status,
/// the messages received and the upstream attempts.
async fn grpc_call(first: FirstAttempt, key: Option<&str>) -> (Option<String>, usize, usize) {
    let (up, calls) = grpc_upstream(first).await;
    let text = config(
        &["up"],
        "{attempts: 1, codes: [503], backoff: 10ms}",
        "    protocol: http2",
    )
    .replace("${up}", &up.addr().to_string());
    let proxy = ProxyBuilder::yaml(text)
        .start()
        .await
        .expect("proxy starts");
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let mut req = Request::post("/vakt.example.v1.Echo/Echo")
        .header("host", "svc")
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let req = req.body(full(grpc_frame(b"hello"))).unwrap();
    let r = send(&mut c, req).await;
    assert_eq!(r.status, 200, "{first:?}: gRPC answers are HTTP 200");
    let status = r
        .trailers
        .as_ref()
        .and_then(|t| t.get("grpc-status"))
        .or_else(|| r.headers.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        count_messages(&r.body),
        calls.load(Ordering::SeqCst),
    )
}

fn count_messages(mut body: &[u8]) -> usize {
    let mut n = 0;
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        body = &body[(5 + len).min(body.len())..];
        n += 1;
    }
    n
}

#[tokio::test]
async fn grpc_unavailable_trailers_only_is_retried() {
    let (status, messages, attempts) = grpc_call(FirstAttempt::TrailersOnly, None).await;
    assert_eq!(
        (status.as_deref(), messages, attempts),
        (Some("0"), 1, 2),
        "a trailers-only UNAVAILABLE on a unary call must be retried (BR-11); a gRPC \
         call is a POST and the proxy retries a POST only with an Idempotency-Key: \
         (grpc-status, messages, upstream attempts)"
    );
}

#[tokio::test]
async fn grpc_unavailable_in_trailers_after_headers_is_retried() {
    let (status, messages, attempts) = grpc_call(FirstAttempt::StatusInTrailers, None).await;
    assert_eq!(
        (status.as_deref(), messages, attempts),
        (Some("0"), 1, 2),
        "UNAVAILABLE in trailers after headers with no message must be retried (BR-11); \
         the proxy neither retries a gRPC POST without an Idempotency-Key nor reads \
         its trailers ahead: (grpc-status, messages, upstream attempts)"
    );
}

#[tokio::test]
async fn grpc_unavailable_after_a_message_is_not_retried() {
    let (status, messages, attempts) = grpc_call(FirstAttempt::AfterAMessage, None).await;
    assert_eq!(
        (status.as_deref(), messages, attempts),
        (Some("14"), 1, 1),
        "a message already passed on: the client gets 14 after one attempt"
    );
}

/// The same calls with an `Idempotency-Key`, which the proxy's method
/// rule accepts for a POST.
#[tokio::test]
async fn grpc_status_read_from_trailers_with_an_idempotency_key() {
    for first in [FirstAttempt::TrailersOnly, FirstAttempt::StatusInTrailers] {
        let got = grpc_call(first, Some("call-1")).await;
        assert_eq!(
            (got.0.as_deref(), got.1, got.2),
            (Some("0"), 1, 2),
            "{first:?}"
        );
    }
    let got = grpc_call(FirstAttempt::AfterAMessage, Some("call-2")).await;
    assert_eq!((got.0.as_deref(), got.1, got.2), (Some("14"), 1, 1));
}
