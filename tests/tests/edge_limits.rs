//! Rate limits and downstream protection through the real `vakt-proxy`.
//!
//! Rate limits use 0.1 requests per second, so no token refills during a
//! test and every count is exact: a fresh key passes exactly `burst`
//! requests and the next one is the first 429 (BR-24). Refill timing is
//! unit-tested on a paused clock in the proxy crate.
//!
//! Protection: oversize heads (431) and bodies (413, declared or
//! chunked), clients too slow to send their request head, connections
//! per client address, and `x-forwarded-for` from untrusted peers.

mod edge_common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use edge_common::{Conn, T, connect_from};
use http::Request;
use tokio::time::Instant;
use vakt_tests::body::{empty, full};
use vakt_tests::client::{Collected, HttpClient, Metrics, RawClient, RawResponse};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const CONFIG: &str = r#"
listeners:
  - name: edge
    address: "${edge}"
  - name: inner
    address: "${inner}"
    trustedProxies: ["127.0.0.1/32"]
limits:
  maxHeaderBytes: 8192
  maxBodyBytes: 1024
  headerReadTimeout: 1s
  maxConnectionsPerIp: 4
rateLimits:
  - name: shared
    requestsPerSecond: 0.1
    burst: 10
routes:
  - name: by-ip
    hostnames: [ip.edge.test]
    rateLimit: {requestsPerSecond: 0.1, burst: 5}
    rules: [{backendRefs: [{name: app}]}]
  - name: by-tenant
    hostnames: [tenant.edge.test]
    rateLimit: {requestsPerSecond: 0.1, burst: 3, key: "header:x-tenant"}
    rules: [{backendRefs: [{name: app}]}]
  - name: inline-1
    hostnames: [inline.edge.test]
    rateLimit: {requestsPerSecond: 0.1, burst: 3}
    rules:
      - matches: [{path: {type: PathPrefix, value: /r1}}]
        backendRefs: [{name: app}]
  - name: inline-2
    hostnames: [inline.edge.test]
    rateLimit: {requestsPerSecond: 0.1, burst: 3}
    rules:
      - matches: [{path: {type: PathPrefix, value: /r2}}]
        backendRefs: [{name: app}]
  - name: shared-1
    hostnames: [shared.edge.test]
    rateLimit: {policy: shared}
    rules:
      - matches: [{path: {type: PathPrefix, value: /r1}}]
        backendRefs: [{name: app}]
  - name: shared-2
    hostnames: [shared.edge.test]
    rateLimit: {policy: shared}
    rules:
      - matches: [{path: {type: PathPrefix, value: /r2}}]
        backendRefs: [{name: app}]
  - name: open
    hostnames: [open.edge.test]
    rules: [{backendRefs: [{name: app}]}]
backends:
  - name: app
    endpoints: ["${app}"]
"#;

async fn edge() -> (Upstream, Proxy) {
    let up = Upstream::named("app").await;
    let yaml = CONFIG.replace("${app}", &up.addr().to_string());
    let proxy = ProxyBuilder::yaml(yaml)
        .start()
        .await
        .expect("proxy starts");
    (up, proxy)
}

/// Sends `n` GETs on one connection; returns every response.
async fn burst(
    c: &mut Conn,
    host: &str,
    path: &str,
    n: usize,
    h: &[(&str, &str)],
) -> Vec<Collected> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(c.get(host, path, h).await.expect("answered"));
    }
    out
}

fn codes(rs: &[Collected]) -> Vec<u16> {
    rs.iter().map(|r| r.status.as_u16()).collect()
}

/// `pass` times 200, then `fail` times 429.
fn expect(pass: usize, fail: usize) -> Vec<u16> {
    let mut v = vec![200; pass];
    v.extend(std::iter::repeat_n(429, fail));
    v
}

async fn conn_from(ip: [u8; 4], addr: SocketAddr) -> Conn {
    let s = connect_from(IpAddr::V4(Ipv4Addr::from(ip)), addr)
        .await
        .expect("connect from a loopback address");
    Conn::h1(s, "http").await.unwrap()
}

fn limited(m: &Metrics, route: &str) -> f64 {
    m.sum("vakt_rate_limited_total", &[("route", route)])
}

/// A 429 names its reason and carries `Retry-After` and `RateLimit-*`
/// consistent with `burst` at 0.1 per second.
fn check_429(r: &Collected, burst: u32) {
    assert_eq!(r.status, 429);
    assert_eq!(r.header("vakt-error"), Some("rate-limited"));
    let num = |name: &str| -> u64 {
        let v = r
            .header(name)
            .unwrap_or_else(|| panic!("429 without {name}"));
        v.parse()
            .unwrap_or_else(|_| panic!("{name}: {v:?} is not whole seconds"))
    };
    let retry = num("retry-after");
    assert!(
        (1..=10).contains(&retry),
        "Retry-After {retry}: one token takes 10 s"
    );
    assert_eq!(num("ratelimit-limit"), u64::from(burst), "RateLimit-Limit");
    assert_eq!(num("ratelimit-remaining"), 0, "RateLimit-Remaining");
    let reset = num("ratelimit-reset");
    assert!(
        reset >= retry && reset <= 10 * u64::from(burst),
        "RateLimit-Reset {reset} against Retry-After {retry}"
    );
}

#[tokio::test]
async fn client_ip_bucket_passes_exactly_the_burst_whatever_x_forwarded_for_says() {
    let (up, proxy) = edge().await;
    let mut c = conn_from([127, 0, 0, 1], proxy.listener()).await;
    let mut rs = Vec::new();
    for i in 0..8 {
        // A client cannot pick its bucket by sending x-forwarded-for.
        let xff = format!("198.51.100.{i}");
        let h = [("x-forwarded-for", xff.as_str())];
        rs.push(c.get("ip.edge.test", "/", &h).await.unwrap());
    }
    assert_eq!(
        codes(&rs),
        expect(5, 3),
        "burst 5: exactly 5 pass, the 6th is the first 429"
    );
    check_429(&rs[5], 5);
    assert_eq!(up.request_count(), 5, "a 429 reached the upstream");

    // Another client address has its own bucket.
    let mut other = conn_from([127, 0, 0, 2], proxy.listener()).await;
    let rs = burst(&mut other, "ip.edge.test", "/", 6, &[]).await;
    assert_eq!(codes(&rs), expect(5, 1), "127.0.0.2 has a fresh bucket");
    let m = proxy.metrics().await.unwrap();
    assert_eq!(limited(&m, "by-ip"), 4.0, "vakt_rate_limited_total");
}

#[tokio::test]
async fn header_keyed_buckets_are_independent_per_value() {
    let (up, proxy) = edge().await;
    let mut c = conn_from([127, 0, 0, 1], proxy.listener()).await;
    let a = burst(&mut c, "tenant.edge.test", "/", 5, &[("x-tenant", "acme")]).await;
    let b = burst(
        &mut c,
        "tenant.edge.test",
        "/",
        5,
        &[("x-tenant", "globex")],
    )
    .await;
    assert_eq!(codes(&a), expect(3, 2), "tenant acme");
    assert_eq!(
        codes(&b),
        expect(3, 2),
        "tenant globex is not charged for acme"
    );
    check_429(&a[3], 3);
    let none = burst(&mut c, "tenant.edge.test", "/", 4, &[]).await;
    assert_eq!(
        codes(&none),
        expect(3, 1),
        "requests without the header share one bucket"
    );
    assert_eq!(up.request_count(), 9);
}

#[tokio::test]
async fn equal_inline_limits_on_two_routes_are_not_shared() {
    let (up, proxy) = edge().await;
    let mut c = conn_from([127, 0, 0, 1], proxy.listener()).await;
    let r1 = burst(&mut c, "inline.edge.test", "/r1", 4, &[]).await;
    let r2 = burst(&mut c, "inline.edge.test", "/r2", 4, &[]).await;
    assert_eq!(codes(&r1), expect(3, 1), "/r1");
    assert_eq!(
        codes(&r2),
        expect(3, 1),
        "/r2 has its own bucket though its inline limit equals /r1's"
    );
    assert_eq!(up.request_count(), 6);
    let m = proxy.metrics().await.unwrap();
    assert_eq!(limited(&m, "inline-1"), 1.0);
    assert_eq!(limited(&m, "inline-2"), 1.0);
}

#[tokio::test]
async fn br24_a_named_policy_on_two_routes_is_one_bucket() {
    let (up, proxy) = edge().await;
    let mut c = conn_from([127, 0, 0, 1], proxy.listener()).await;
    let mut rs = Vec::new();
    for i in 0..20 {
        let path = if i % 2 == 0 { "/r1" } else { "/r2" };
        rs.push(c.get("shared.edge.test", path, &[]).await.unwrap());
    }
    assert_eq!(
        codes(&rs),
        expect(10, 10),
        "10 to /r1 and 10 to /r2 under one policy of burst 10: exactly 10 pass, the 11th is the first 429"
    );
    for r in &rs[10..] {
        check_429(r, 10);
    }
    assert_eq!(up.request_count(), 10);
    let m = proxy.metrics().await.unwrap();
    assert_eq!(limited(&m, "shared-1") + limited(&m, "shared-2"), 10.0);
}

#[tokio::test]
async fn x_forwarded_for_is_replaced_from_untrusted_peers_and_kept_from_trusted() {
    let (up, proxy) = edge().await;
    let spoof = [("x-forwarded-for", "203.0.113.50")];
    let mut outside = conn_from([127, 0, 0, 1], proxy.listener_named("edge")).await;
    assert_eq!(
        outside
            .get("open.edge.test", "/", &spoof)
            .await
            .unwrap()
            .status,
        200
    );
    let got = up.requests().pop().unwrap();
    assert_eq!(
        got.header_all("x-forwarded-for"),
        ["127.0.0.1"],
        "x-forwarded-for from an untrusted peer must be replaced by its address"
    );

    let mut trusted = conn_from([127, 0, 0, 1], proxy.listener_named("inner")).await;
    assert_eq!(
        trusted
            .get("open.edge.test", "/", &spoof)
            .await
            .unwrap()
            .status,
        200
    );
    let got = up.requests().pop().unwrap();
    assert_eq!(
        got.header_all("x-forwarded-for"),
        ["203.0.113.50, 127.0.0.1"],
        "a trusted peer's x-forwarded-for is kept and the peer appended"
    );

    // Behind a trusted proxy the forwarded client is the rate-limit key.
    for client in ["203.0.113.7", "203.0.113.8"] {
        let h = [("x-forwarded-for", client)];
        let rs = burst(&mut trusted, "ip.edge.test", "/", 6, &h).await;
        assert_eq!(
            codes(&rs),
            expect(5, 1),
            "client {client} behind the trusted peer"
        );
    }
}

/// Writes `bytes` on a new connection and reads one response.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let mut c = RawClient::connect(addr).await.unwrap();
    c.send(bytes).await.unwrap();
    c.read_response(T).await.expect("a response")
}

#[tokio::test]
async fn oversize_request_heads_get_431() {
    let (up, proxy) = edge().await;
    let small = "a".repeat(4000);
    let head = format!("GET / HTTP/1.1\r\nHost: open.edge.test\r\nx-pad: {small}\r\n\r\n");
    let r = raw_exchange(proxy.listener(), head.as_bytes()).await;
    assert_eq!(r.status, 200, "a 4 kB head is under the 8 kB limit");

    let big = "b".repeat(12_000);
    let head = format!("GET / HTTP/1.1\r\nHost: open.edge.test\r\nx-pad: {big}\r\n\r\n");
    let r = raw_exchange(proxy.listener(), head.as_bytes()).await;
    assert_eq!(r.status, 431, "a 12 kB head over the 8 kB limit");
    assert_eq!(
        up.request_count(),
        1,
        "the oversize head reached the upstream"
    );
    assert_eq!(
        r.header("vakt-error"),
        Some("headers-too-large"),
        "431 is made by hyper's HTTP/1 parser, not by the proxy's error path, so it lacks \
         the `vakt-error: headers-too-large` the contract lists (respond.rs has \
         ProxyError::HeadersTooLarge but nothing produces it)"
    );
}

#[tokio::test]
async fn declared_oversize_bodies_get_413_before_the_upstream_sees_anything() {
    let (up, proxy) = edge().await;
    let fits = "x".repeat(1024);
    let head = format!(
        "POST /echo HTTP/1.1\r\nHost: open.edge.test\r\nContent-Length: 1024\r\n\r\n{fits}"
    );
    let r = raw_exchange(proxy.listener(), head.as_bytes()).await;
    assert_eq!(r.status, 200, "exactly maxBodyBytes is allowed");
    assert_eq!(up.request_count(), 1);

    let body = "y".repeat(5000);
    let req = format!(
        "POST /echo HTTP/1.1\r\nHost: open.edge.test\r\nContent-Length: 5000\r\n\r\n{body}"
    );
    let r = raw_exchange(proxy.listener(), req.as_bytes()).await;
    assert_eq!(r.status, 413, "{}", r.body_text());
    assert_eq!(r.header("vakt-error"), Some("body-too-large"));

    let mut h2 = HttpClient::h2c(proxy.listener()).await.unwrap();
    let req = Request::post("/echo")
        .header("host", "open.edge.test")
        .header("content-length", "5000")
        .body(full(body.clone()))
        .unwrap();
    let r = h2.send(req).await.unwrap();
    assert_eq!(r.status, 413, "over HTTP/2");
    assert_eq!(
        up.request_count(),
        1,
        "an oversize body reached the upstream"
    );
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_never_reaches_the_upstream_whole() {
    let (up, proxy) = edge().await;
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: open.edge.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    for _ in 0..4 {
        req.extend_from_slice(format!("3e8\r\n{}\r\n", "z".repeat(1000)).as_bytes());
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = raw_exchange(proxy.listener(), &req).await;
    assert_eq!(r.status, 413, "{}", r.body_text());
    assert_eq!(r.header("vakt-error"), Some("body-too-large"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    for got in up.requests() {
        assert!(
            got.body.len() < 4000,
            "the upstream received all {} bytes of an oversize body",
            got.body.len()
        );
    }
}

/// Sends `bytes` one at a time, `every` apart, until the proxy closes the
/// connection or `give_up` passes; returns when it closed, if it did.
async fn trickle(
    addr: SocketAddr,
    bytes: &[u8],
    every: Duration,
    give_up: Duration,
) -> Option<Duration> {
    let mut c = RawClient::connect(addr).await.unwrap();
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < give_up {
        if i < bytes.len() && c.send(&bytes[i..=i]).await.is_err() {
            return Some(started.elapsed());
        }
        i += 1;
        if c.closed_within(every).await {
            return Some(started.elapsed());
        }
    }
    None
}

#[tokio::test]
async fn a_client_sending_its_head_byte_by_byte_is_dropped() {
    let (up, proxy) = edge().await;
    let head = b"GET / HTTP/1.1\r\nHost: open.edge.test\r\nUser-Agent: slow-loris/1.0\r\n\r\n";
    let closed = trickle(
        proxy.listener(),
        head,
        Duration::from_millis(100),
        Duration::from_secs(5),
    )
    .await;
    let closed = closed.expect(
        "a head taking 7 s to arrive was not cut off within 5 s with headerReadTimeout 1 s: \
         whatever reads the head before hyper's HTTP/1 parser (version detection, a framing \
         check that holds the head back) must enforce the deadline itself",
    );
    assert!(
        closed >= Duration::from_millis(800) && closed <= Duration::from_secs(3),
        "closed after {closed:?}; headerReadTimeout is 1 s"
    );
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_is_dropped() {
    let (_up, proxy) = edge().await;
    let mut idle = RawClient::connect(proxy.listener()).await.unwrap();
    let started = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(4)).await,
        "a plain connection that sends nothing was still open after 4 s with headerReadTimeout \
         1 s: the listener's HTTP version detection (hyper-util auto::Builder) reads the first \
         bytes with no deadline, so listener.rs never applies headerReadTimeout to it"
    );
    assert!(started.elapsed() >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_client_trickling_the_http2_preface_is_dropped() {
    let (up, proxy) = edge().await;
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let closed = trickle(
        proxy.listener(),
        preface,
        Duration::from_millis(150),
        Duration::from_secs(5),
    )
    .await;
    assert!(
        closed.is_some_and(|t| t <= Duration::from_secs(3)),
        "an h2c preface sent one byte per 150 ms was not cut off (closed: {closed:?}); \
         headerReadTimeout covers only HTTP/1 heads, not version detection or the HTTP/2 \
         preface and SETTINGS (listener.rs http_builder)"
    );
    assert_eq!(up.request_count(), 0);
}

#[tokio::test]
async fn connections_per_client_address_are_capped() {
    let (_up, proxy) = edge().await;
    let addr = proxy.listener();
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = conn_from([127, 0, 0, 3], addr).await;
        assert_eq!(c.get("open.edge.test", "/", &[]).await.unwrap().status, 200);
        held.push(c);
    }
    let s = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), addr)
        .await
        .unwrap();
    let fifth = async {
        let mut c = Conn::h1(s, "http").await?;
        c.get("open.edge.test", "/", &[]).await
    };
    let r = fifth.await;
    assert!(
        r.is_err(),
        "a 5th connection from 127.0.0.3 was served with maxConnectionsPerIp 4: {r:?}"
    );

    let mut other = conn_from([127, 0, 0, 4], addr).await;
    let r = other.get("open.edge.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 200, "another address is not affected");

    drop(held.pop());
    let freed = Instant::now();
    let mut served = false;
    while !served && freed.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut c = conn_from([127, 0, 0, 3], addr).await;
        served = c.get("open.edge.test", "/", &[]).await.is_ok();
    }
    assert!(
        served,
        "a slot was not given back after a connection closed"
    );
    for c in &mut held {
        assert_eq!(c.get("open.edge.test", "/", &[]).await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn grpc_callers_get_resource_exhausted_when_rate_limited() {
    let (_up, proxy) = edge().await;
    let mut h2 = HttpClient::h2c(proxy.listener()).await.unwrap();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let req = Request::post("/vakt.example.v1.Echo/Echo")
            .header("host", "ip.edge.test")
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let r = h2.send(req).await.unwrap();
        let grpc = r
            .header("grpc-status")
            .or_else(|| r.trailers.as_ref()?.get("grpc-status")?.to_str().ok())
            .map(str::to_owned);
        statuses.push((r.status.as_u16(), grpc));
    }
    assert_eq!(
        statuses[5],
        (200, Some("8".to_owned())),
        "the 6th call gets RESOURCE_EXHAUSTED: {statuses:?}"
    );
}
