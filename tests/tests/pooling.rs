//! Upstream connection pooling of the real `vakt-proxy`: keep-alive reuse
//! across client connections, HTTP/2 multiplexing, the pool's idle
//! timeout, the `vakt_upstream_connections` gauge, and stale keep-alive
//! connections closed by the upstream (BR-13) never surfacing as errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use vakt_tests::client::HttpClient;
use vakt_tests::example::ExampleConfig;
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

const T: Duration = Duration::from_secs(10);

fn config(up: SocketAddr, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: all
    rules: [{{backendRefs: [{{name: up}}]}}]
backends:
  - name: up
    endpoints: ["{up}"]
{extra}
"#
    )
}

async fn start(up: SocketAddr, extra: &str) -> Proxy {
    ProxyBuilder::yaml(config(up, extra))
        .start()
        .await
        .expect("proxy starts")
}

/// The gauge of open upstream connections of backend `up`.
async fn gauge(proxy: &Proxy) -> f64 {
    let m = proxy.metrics().await.unwrap();
    m.get("vakt_upstream_connections", &[("backend", "up")])
        .unwrap_or_else(|| panic!("no vakt_upstream_connections{{backend=\"up\"}}"))
}

/// Polls `f` every 20 ms until it holds or `timeout` passes.
async fn eventually<F, Fut>(timeout: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn sequential_requests_reuse_one_upstream_connection() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = start(up.addr(), "").await;

    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for i in 0..100 {
        let r = c.get("svc", "/").await.unwrap();
        assert_eq!(r.status, 200, "request {i}");
    }
    // Other client connections, one request each, share the pool.
    for i in 0..50 {
        let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
        assert_eq!(c.get("svc", "/").await.unwrap().status, 200, "client {i}");
        let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
        assert_eq!(c.get("svc", "/").await.unwrap().status, 200, "h2c {i}");
    }
    assert_eq!(up.request_count(), 200);
    assert_eq!(
        up.connections(),
        1,
        "200 sequential requests opened {} upstream connections",
        up.connections()
    );
    assert_eq!(gauge(&proxy).await, 1.0, "gauge vs the one open connection");
}

/// Sends 50 requests at once, each on its own client connection, to an
/// upstream that takes 300 ms to answer; returns how long they took.
async fn burst(proxy: &Proxy) -> Duration {
    let listener = proxy.listener();
    let started = Instant::now();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = HttpClient::h1(listener).await.unwrap();
                c.get("svc", "/?delay_ms=300").await.unwrap().status
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(tokio::time::timeout(T, t).await.unwrap().unwrap(), 200);
    }
    started.elapsed()
}

#[tokio::test]
async fn concurrent_requests_share_one_warm_http2_connection() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = start(up.addr(), "    protocol: http2").await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    assert_eq!(c.get("svc", "/").await.unwrap().status, 200);

    let took = burst(&proxy).await;
    assert_eq!(up.request_count(), 51);
    assert!(
        up.requests()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2)
    );
    assert_eq!(
        up.connections(),
        1,
        "50 concurrent requests to an HTTP/2 backend with a pooled connection \
         opened {} connections",
        up.connections()
    );
    // 50 x 300 ms one after another would take 15 s.
    assert!(took < Duration::from_secs(5), "not multiplexed: {took:?}");
    assert_eq!(gauge(&proxy).await, 1.0);
}

#[tokio::test]
async fn a_burst_on_a_cold_http2_pool_opens_one_connection() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = start(up.addr(), "    protocol: http2").await;
    let took = burst(&proxy).await;
    assert_eq!(up.request_count(), 50);
    assert_eq!(
        up.connections(),
        1,
        "50 concurrent first requests to an HTTP/2 backend opened {} connections \
         instead of waiting for the one being established",
        up.connections()
    );
    assert!(took < Duration::from_secs(5), "not multiplexed: {took:?}");
}

#[tokio::test]
async fn idle_timeout_closes_pooled_connections() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = start(up.addr(), "    connectionPool: {idleTimeout: 500ms}").await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    assert_eq!(c.get("svc", "/").await.unwrap().status, 200);
    assert_eq!(up.open_connections(), 1);
    assert_eq!(gauge(&proxy).await, 1.0, "gauge with one pooled connection");

    let closed = eventually(Duration::from_secs(3), || async {
        up.open_connections() == 0
    })
    .await;
    assert!(
        closed,
        "pooled connection still open 3 s after a 500 ms idle timeout"
    );
    let zero = eventually(Duration::from_secs(2), || async {
        gauge(&proxy).await == 0.0
    })
    .await;
    assert!(
        zero,
        "gauge still {} after the pool closed",
        gauge(&proxy).await
    );

    assert_eq!(c.get("svc", "/").await.unwrap().status, 200);
    assert_eq!(
        up.connections(),
        2,
        "a fresh connection after the idle close"
    );
}

/// Sends `n` GETs one after another on one connection, then `m` at once
/// on their own connections; returns the count of each status.
async fn sequential_then_concurrent(proxy: &Proxy, n: usize, m: usize) -> BTreeMap<u16, usize> {
    let mut statuses = BTreeMap::new();
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for _ in 0..n {
        let r = tokio::time::timeout(T, c.get("svc", "/")).await.unwrap();
        *statuses
            .entry(r.map_or(0, |r| r.status.as_u16()))
            .or_default() += 1;
    }
    let listener = proxy.listener();
    let tasks: Vec<_> = (0..m)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = HttpClient::h1(listener).await.unwrap();
                let r = tokio::time::timeout(T, c.get("svc", "/")).await.unwrap();
                r.map_or(0, |r| r.status.as_u16())
            })
        })
        .collect();
    for t in tasks {
        *statuses.entry(t.await.unwrap()).or_default() += 1;
    }
    statuses
}

async fn stale_keep_alive(reply: RawReply, what: &str) {
    let up = RawUpstream::start(move |_| reply.clone()).await;
    let proxy = start(up.addr(), "").await;
    let statuses = sequential_then_concurrent(&proxy, 500, 50).await;
    assert_eq!(
        statuses,
        BTreeMap::from([(200, 550)]),
        "{what}: statuses (0 = client error) over 550 GETs"
    );
    assert_eq!(
        up.requests().len(),
        550,
        "{what}: upstream request count must equal the client's"
    );
}

#[tokio::test]
async fn upstream_closing_after_each_response_gives_no_errors() {
    // 200 with Content-Length, then FIN, without `Connection: close`.
    stale_keep_alive(RawReply::ok("ok").close(), "FIN").await;
}

#[tokio::test]
async fn upstream_resetting_after_each_response_gives_no_errors() {
    stale_keep_alive(RawReply::ok("ok").reset(), "RST").await;
}

#[tokio::test]
async fn upstream_closing_idle_connections_gives_no_errors() {
    // The upstream closes each connection 200 ms after answering; the
    // client asks every 350 ms, within the proxy's idle timeout.
    let reply = RawReply::ok("ok").sleep(Duration::from_millis(200)).close();
    let up = RawUpstream::start(move |_| reply.clone()).await;
    let proxy = start(up.addr(), "").await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let mut statuses = BTreeMap::new();
    for _ in 0..8 {
        let r = tokio::time::timeout(T, c.get("svc", "/")).await.unwrap();
        *statuses
            .entry(r.map_or(0, |r| r.status.as_u16()))
            .or_default() += 1;
        tokio::time::sleep(Duration::from_millis(350)).await;
    }
    assert_eq!(statuses, BTreeMap::from([(200, 8)]));
    assert_eq!(up.requests().len(), 8);
}
