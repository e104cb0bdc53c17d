//! Timeouts and deadlines through the real `vakt-proxy`, over HTTP/1.1
//! and h2c to HTTP/1.1 and HTTP/2 upstreams.
//!
//! Case BR-19: no response head within the request timeout gives a 504;
//! a body that stalls is cut off an idle timeout after its last chunk (an
//! HTTP/1 client sees no terminating chunk, an h2 client a reset); a slow
//! but steady stream outlives the request timeout, which runs only until
//! the response head. Also the per-attempt timeout, the connect timeout
//! and the downstream header-read timeout. Case BR-12: a caller's
//! `grpc-timeout` bounds the call, ends it with DEADLINE_EXCEEDED on HTTP
//! 200, and travels on smaller; an expired `vakt-deadline` is not sent.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use tokio::time::Instant;
use vakt_tests::body::{BoxBody, empty, full};
use vakt_tests::client::{Collected, HttpClient, RawClient};
use vakt_tests::fault::{Fault, FaultyUpstream};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const T: Duration = Duration::from_secs(10);

/// Hosts `h1` and `h2` reach the upstream over HTTP/1.1 and HTTP/2 with
/// `timeouts`; host `bare` reaches it over HTTP/2 with no timeout at all.
fn config(timeouts: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: h1
    hostnames: [h1]
    rules: [{{backendRefs: [{{name: up-h1}}], timeouts: {timeouts}}}]
  - name: h2
    hostnames: [h2]
    rules: [{{backendRefs: [{{name: up-h2}}], timeouts: {timeouts}}}]
  - name: bare
    hostnames: [bare]
    rules: [{{backendRefs: [{{name: up-h2}}]}}]
backends:
  - {{name: up-h1, endpoints: ["${{up}}"]}}
  - {{name: up-h2, endpoints: ["${{up}}"], protocol: http2}}
"#
    )
}

/// BR-19 scaled down: request timeout 1 s, idle timeout 700 ms.
const BR19: &str = "{request: 1s, idle: 700ms}";

async fn mesh(timeouts: &str, fault: Fault) -> (FaultyUpstream, Proxy) {
    let mut builder = ProxyBuilder::yaml(config(timeouts));
    let up = FaultyUpstream::start_at(builder.addr("up"), "up", fault).await;
    (up, builder.start().await.expect("proxy starts"))
}

/// Each client kind against each upstream protocol: (h2c client?, host).
const PAIRS: [(bool, &str); 4] = [(false, "h1"), (false, "h2"), (true, "h1"), (true, "h2")];

async fn client(proxy: &Proxy, h2c: bool) -> HttpClient {
    let c = match h2c {
        true => HttpClient::h2c(proxy.listener()).await,
        false => HttpClient::h1(proxy.listener()).await,
    };
    c.expect("client connects")
}

fn within(elapsed: Duration, lo_ms: u64, hi_ms: u64) -> bool {
    elapsed >= Duration::from_millis(lo_ms) && elapsed <= Duration::from_millis(hi_ms)
}

/// BR-19 (a): no response head: 504 `vakt-error: timeout` at the request
/// timeout.
#[tokio::test]
async fn no_response_head_gives_504_at_the_request_timeout() {
    let (up, proxy) = mesh(BR19, Fault::Hang).await;
    let calls = PAIRS.iter().map(|&(h2c, host)| {
        let proxy = &proxy;
        async move {
            let mut c = client(proxy, h2c).await;
            let started = Instant::now();
            let r = tokio::time::timeout(T, c.get(host, "/")).await;
            let r = r.expect("answer in time").expect("response");
            (h2c, host, r, started.elapsed())
        }
    });
    for (h2c, host, r, took) in futures_util::future::join_all(calls).await {
        let what = format!("h2c client {h2c}, {host} upstream");
        assert_eq!(r.status, 504, "{what}");
        assert_eq!(r.header("vakt-error"), Some("timeout"), "{what}");
        assert!(within(took, 950, 1_700), "{what}: 504 after {took:?}");
    }
    assert_eq!(up.count(), 4);
    let cut = wait_cut_off(&up, 4).await;
    assert_eq!(cut, 4, "the proxy lets go of the upstream requests");
    let m = proxy.metrics().await.unwrap();
    for b in ["up-h1", "up-h2"] {
        let n = m.sum("vakt_timeouts_total", &[("backend", b)]);
        assert_eq!(n, 2.0, "timeouts counted for {b}");
    }
}

async fn wait_cut_off(up: &FaultyUpstream, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(3);
    while up.cut_off().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.cut_off().len()
}

/// BR-19 (b), HTTP/1.1 client: headers and one chunk, then a stall. The
/// proxy closes the connection an idle timeout later without the
/// terminating chunk, and closes the upstream connection.
#[tokio::test]
async fn a_stalled_body_is_cut_off_for_an_http1_client() {
    let (up, proxy) = mesh(BR19, Fault::Stall).await;
    for host in ["h1", "h2"] {
        let mut c = RawClient::connect(proxy.listener()).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        c.send(req.as_bytes()).await.unwrap();
        let started = Instant::now();
        let (bytes, closed) = c.read_to_end(Duration::from_secs(5)).await;
        let took = started.elapsed();
        let text = String::from_utf8_lossy(&bytes);
        assert!(text.starts_with("HTTP/1.1 200"), "{host}: {text}");
        assert!(text.contains("first\n"), "{host}: the first chunk: {text}");
        assert!(closed, "{host}: the proxy must close a stalled response");
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "{host}: a cut-off body must not end cleanly: {text:?}"
        );
        assert!(
            within(took, 600, 1_800),
            "{host}: closed {took:?} after the first chunk, idle is 700 ms"
        );
    }
    // The HTTP/1.1 upstream connection of the stalled response is closed.
    let deadline = Instant::now() + Duration::from_secs(3);
    while up.upstream().open_connections() > 1 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        up.upstream().open_connections() <= 1,
        "only the HTTP/2 connection may stay open, {} are",
        up.upstream().open_connections()
    );
}

/// BR-19 (b), h2c client: the stream is reset an idle timeout after the
/// first chunk.
#[tokio::test]
async fn a_stalled_body_resets_the_stream_for_an_h2_client() {
    let (_up, proxy) = mesh(BR19, Fault::Stall).await;
    for host in ["h1", "h2"] {
        let mut c = client(&proxy, true).await;
        let req = Request::get("/")
            .header("host", host)
            .body(empty())
            .unwrap();
        let rsp = c.send_streaming(req).await.expect("response head");
        assert_eq!(rsp.status(), 200, "{host}");
        let mut body = rsp.into_body();
        let first = body.frame().await.expect("a frame").expect("first chunk");
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"first\n"[..]));
        let started = Instant::now();
        let next = tokio::time::timeout(Duration::from_secs(5), body.frame()).await;
        let took = started.elapsed();
        let next = next.expect("the stream ends within 5 s");
        assert!(
            matches!(next, Some(Err(_))),
            "{host}: a stalled stream must be reset, not ended: {next:?}"
        );
        assert!(
            within(took, 600, 1_800),
            "{host}: reset {took:?} after the chunk, idle is 700 ms"
        );
    }
}

/// BR-19 (c): one chunk every 200 ms for 1.6 s, longer than the 1 s
/// request timeout, arrives whole.
#[tokio::test]
async fn a_slow_steady_stream_outlives_the_request_timeout() {
    let drip = Fault::Drip {
        every: Duration::from_millis(200),
        count: 9,
    };
    let (_up, proxy) = mesh(BR19, drip).await;
    let want: String = (0..9).map(|i| format!("chunk {i}\n")).collect();
    let calls = PAIRS.iter().map(|&(h2c, host)| {
        let proxy = &proxy;
        async move {
            let mut c = client(proxy, h2c).await;
            let started = Instant::now();
            let r = tokio::time::timeout(T, c.get(host, "/")).await;
            (h2c, host, r.expect("in time"), started.elapsed())
        }
    });
    for (h2c, host, r, took) in futures_util::future::join_all(calls).await {
        let what = format!("h2c client {h2c}, {host} upstream");
        let r: Collected = r.unwrap_or_else(|e| panic!("{what}: the stream broke: {e}"));
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.text(), want, "{what}");
        assert!(took >= Duration::from_millis(1_500), "{what}: {took:?}");
    }
}

/// Per-attempt timeout (`backendRequest`): a hanging endpoint costs one
/// attempt, then the retry goes to the other endpoint; without a retry
/// policy the client gets 504 at the attempt timeout.
#[tokio::test]
async fn the_per_attempt_timeout_ends_one_attempt() {
    let text = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: retry
    hostnames: [retry]
    rules:
      - backendRefs: [{name: svc}]
        timeouts: {backendRequest: 300ms}
        retry: {attempts: 1, codes: [503], backoff: 10ms}
  - name: once
    hostnames: [once]
    rules: [{backendRefs: [{name: svc}], timeouts: {backendRequest: 300ms}}]
backends:
  - {name: svc, loadBalancer: round-robin, endpoints: ["${a}", "${b}"]}
"#;
    let mut builder = ProxyBuilder::yaml(text);
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", Fault::Hang).await;
    let _b = FaultyUpstream::start_at(builder.addr("b"), "b", Fault::None).await;
    let proxy = builder.start().await.expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();

    // The routes share the backend's round robin, so each loop runs on
    // its own until a first attempt meets the hanging endpoint.
    let mut met_a = false;
    for _ in 0..4 {
        let before = a.count();
        let started = Instant::now();
        let r = tokio::time::timeout(T, c.get("retry", "/"))
            .await
            .unwrap()
            .unwrap();
        let took = started.elapsed();
        assert_eq!(
            r.status, 200,
            "the retry after a timed-out attempt succeeds"
        );
        if a.count() > before {
            assert!(
                within(took, 280, 1_200),
                "one 300 ms attempt, then b: {took:?}"
            );
            met_a = true;
            break;
        }
    }
    assert!(met_a, "no first attempt met the hanging endpoint");
    let mut timed_out = false;
    for _ in 0..4 {
        let started = Instant::now();
        let r = tokio::time::timeout(T, c.get("once", "/"))
            .await
            .unwrap()
            .unwrap();
        let took = started.elapsed();
        if r.status == 504 {
            assert_eq!(r.header("vakt-error"), Some("timeout"));
            assert!(
                within(took, 280, 1_000),
                "504 at the attempt timeout: {took:?}"
            );
            timed_out = true;
            break;
        }
        assert_eq!(r.status, 200);
    }
    assert!(timed_out, "without retries a hanging endpoint gives 504");
    let m = proxy.metrics().await.unwrap();
    assert!(m.sum("vakt_timeouts_total", &[("backend", "svc")]) >= 2.0);
}

/// A gRPC call (an unanswered unary request) with `grpc-timeout`.
fn grpc_request(host: &str, timeout: &str) -> Request<BoxBody> {
    let msg = Bytes::from_static(b"\0\0\0\0\x02hi");
    Request::post("/vakt.example.v1.Echo/Echo")
        .header("host", host)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(full(msg))
        .unwrap()
}

/// BR-12 (b) scaled down: the caller allows 600 ms and the upstream never
/// answers. At the deadline the caller gets DEADLINE_EXCEEDED on HTTP 200,
/// the upstream saw a smaller `grpc-timeout`, and its stream is dropped.
#[tokio::test]
async fn grpc_timeout_bounds_the_call_and_travels_smaller() {
    let (up, proxy) = mesh(BR19, Fault::Hang).await;
    for (h2c, host) in [(true, "bare"), (false, "bare"), (true, "h1")] {
        up.reset_counts();
        let mut c = client(&proxy, h2c).await;
        let started = Instant::now();
        let r = tokio::time::timeout(T, c.send(grpc_request(host, "600m"))).await;
        let took = started.elapsed();
        let r = r.expect("in time").expect("response");
        let what = format!("h2c client {h2c}, route {host}");
        assert_eq!(r.status, 200, "{what}: gRPC callers get HTTP 200");
        assert_eq!(
            r.header("grpc-status"),
            Some("4"),
            "{what}: DEADLINE_EXCEEDED"
        );
        assert_eq!(r.header("content-type"), Some("application/grpc"), "{what}");
        assert!(within(took, 550, 1_000), "{what}: answered after {took:?}");

        let got = up.traffic();
        assert_eq!(got.len(), 1, "{what}");
        let sent = got[0].header("grpc-timeout").unwrap_or("");
        let ms = sent.strip_suffix('m').and_then(|n| n.parse::<u64>().ok());
        assert!(
            ms.is_some_and(|ms| ms > 300 && ms <= 600),
            "{what}: upstream must get the time left, at most 600m, got {sent:?}"
        );
        let cut = wait_cut_off(&up, 1).await;
        assert_eq!(cut, 1, "{what}: the upstream request is dropped");
        let at = up.cut_off()[0] - got[0].at;
        assert!(
            at <= Duration::from_millis(1_000),
            "{what}: upstream dropped {at:?} after arrival"
        );
    }
}

#[tokio::test]
async fn an_expired_deadline_is_not_sent() {
    let (up, proxy) = mesh(BR19, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let req = Request::get("/")
        .header("host", "bare")
        .header("vakt-deadline", "0")
        .body(empty())
        .unwrap();
    let started = Instant::now();
    let r = c.send(req).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("vakt-error")),
        (504, Some("timeout"))
    );
    assert!(started.elapsed() < Duration::from_millis(300));

    let mut h2 = client(&proxy, true).await;
    let r = h2.send(grpc_request("bare", "0m")).await.unwrap();
    assert_eq!(
        (r.status.as_u16(), r.header("grpc-status")),
        (200, Some("4"))
    );
    assert_eq!(
        up.count(),
        0,
        "an expired request must not reach the upstream"
    );

    let req = Request::get("/")
        .header("host", "bare")
        .header("vakt-deadline", "2000")
        .body(empty())
        .unwrap();
    assert_eq!(c.send(req).await.unwrap().status, 200);
    let r = c.get("h1", "/").await.unwrap();
    assert_eq!(r.status, 200);
    let got = up.traffic();
    let left = |i: usize| -> u64 {
        let v = got[i].header("vakt-deadline").unwrap_or("");
        v.parse()
            .unwrap_or_else(|_| panic!("request {i}: vakt-deadline {v:?}"))
    };
    assert!(
        (1_500..=2_000).contains(&left(0)),
        "caller's 2000 ms: {}",
        left(0)
    );
    assert!((500..=1_000).contains(&left(1)), "route's 1 s: {}", left(1));
}

/// Retries stop at the deadline: 200 ms attempts against hanging
/// endpoints within a 500 ms `vakt-deadline` end by 500 ms.
#[tokio::test]
async fn retries_never_outlive_the_deadline() {
    let text = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: svc
    rules:
      - backendRefs: [{name: svc}]
        timeouts: {backendRequest: 200ms}
        retry: {attempts: 5, codes: [503], backoff: 10ms}
backends:
  - {name: svc, endpoints: ["${a}", "${b}"]}
"#;
    let mut builder = ProxyBuilder::yaml(text);
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", Fault::Hang).await;
    let b = FaultyUpstream::start_at(builder.addr("b"), "b", Fault::Hang).await;
    let proxy = builder.start().await.expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let req = Request::get("/")
        .header("host", "svc")
        .header("vakt-deadline", "500")
        .body(empty())
        .unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(T, c.send(req)).await.unwrap().unwrap();
    let took = started.elapsed();
    assert_eq!(
        (r.status.as_u16(), r.header("vakt-error")),
        (504, Some("timeout"))
    );
    assert!(
        within(took, 450, 800),
        "the deadline is 500 ms, answered after {took:?}"
    );
    let attempts: Vec<_> = a.traffic().into_iter().chain(b.traffic()).collect();
    assert!(
        (2..=3).contains(&attempts.len()),
        "200 ms attempts in 500 ms: {}",
        attempts.len()
    );
    for r in &attempts {
        let left: u64 = r
            .header("vakt-deadline")
            .unwrap_or("0")
            .parse()
            .unwrap_or(0);
        assert!(
            left > 0 && left <= 500,
            "each attempt carries the time left: {left}"
        );
    }
}

/// A listener whose accept queue is full: the kernel drops new SYNs, so
/// connecting to it hangs. The returned sockets keep the queue full.
fn black_hole() -> (socket2::Socket, SocketAddr, Vec<std::net::TcpStream>) {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut held = Vec::new();
    for _ in 0..8 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(c) => held.push(c),
            Err(_) => return (s, addr, held),
        }
    }
    panic!("the accept queue of a backlog-0 listener never filled");
}

#[tokio::test]
async fn the_connect_timeout_bounds_a_connection_attempt() {
    let (_listener, addr, _held) = black_hole();
    let text = format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: svc
    rules: [{{backendRefs: [{{name: svc}}]}}]
backends:
  - {{name: svc, endpoints: ["{addr}"], connectTimeout: 250ms}}
"#
    );
    let proxy = ProxyBuilder::yaml(text)
        .start()
        .await
        .expect("proxy starts");
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let started = Instant::now();
    let r = tokio::time::timeout(T, c.get("svc", "/"))
        .await
        .unwrap()
        .unwrap();
    let took = started.elapsed();
    assert_eq!(
        (r.status.as_u16(), r.header("vakt-error")),
        (502, Some("connect-failed"))
    );
    assert!(
        within(took, 240, 2_500),
        "connect attempts of 250 ms each, a few at most: {took:?}"
    );
}

/// A client that never finishes its request head is dropped after
/// `limits.headerReadTimeout`; nothing reaches the upstream.
#[tokio::test]
async fn a_slow_request_head_is_dropped() {
    let text = format!("{}\nlimits: {{headerReadTimeout: 500ms}}\n", config(BR19));
    let mut builder = ProxyBuilder::yaml(text);
    let up = FaultyUpstream::start_at(builder.addr("up"), "up", Fault::None).await;
    let proxy = builder.start().await.expect("proxy starts");
    let mut c = RawClient::connect(proxy.listener()).await.unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: h1\r\n").await.unwrap();
    let started = Instant::now();
    let closed = c.closed_within(Duration::from_secs(4)).await;
    let took = started.elapsed();
    assert!(
        closed,
        "a request head unfinished after headerReadTimeout 500ms must be dropped; the \
         connection is still open after 4 s"
    );
    assert!(
        within(took, 400, 2_000),
        "dropped after {took:?}, timeout 500 ms"
    );
    assert_eq!(up.count(), 0);
}
