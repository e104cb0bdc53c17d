//! The seed scenario through the real `vakt-proxy`: "a failing or slow
//! service must not take its callers down. When the recommendations
//! backend times out, checkout keeps working at full speed and gets a
//! default answer for recommendations."
//!
//! Two backends behind one proxy. Checkout's latency and throughput are
//! measured alone, then again while recommendations hangs and its callers
//! keep calling; they must stay close (a generous bound: the machine is
//! small and shared). Recommendations' callers get the fallback within the
//! request timeout. When recommendations is healthy again, its breaker
//! closes by itself and real answers come back.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::time::Instant;
use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::fault::{Fault, FaultyUpstream, backend_view, breaker_state, wait_for_backend};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const CONFIG: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: checkout
    hostnames: [checkout]
    rules: [{backendRefs: [{name: checkout}]}]
  - name: recommendations
    hostnames: [recommendations]
    rules:
      - backendRefs: [{name: recommendations}]
        timeouts: {request: 300ms}
        fallback:
          status: 200
          headers: {content-type: application/json}
          body: '{"items":[]}'
backends:
  - name: checkout
    endpoints: ["${checkout}"]
  - name: recommendations
    endpoints: ["${recommendations}"]
    circuitBreaker: {consecutiveFailures: 5, openFor: 1s, maxOpenFor: 1s}
"#;

const CLIENTS: usize = 4;
const PER_CLIENT: usize = 50;
const T: Duration = Duration::from_secs(10);

/// What a fixed load of checkout requests measured.
#[derive(Debug)]
struct Run {
    p50: Duration,
    p99: Duration,
    wall: Duration,
    ok: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// `CLIENTS` connections sending `PER_CLIENT` checkout requests each.
async fn checkout_load(proxy: &Proxy) -> Run {
    let listener = proxy.listener();
    let started = Instant::now();
    let clients = (0..CLIENTS).map(|_| async move {
        let mut c = HttpClient::h1(listener).await.unwrap();
        let mut out = Vec::with_capacity(PER_CLIENT);
        for _ in 0..PER_CLIENT {
            let t = Instant::now();
            let r = tokio::time::timeout(T, c.get("checkout", "/")).await;
            let r = r.expect("checkout answers in time").expect("response");
            out.push((r.status.as_u16(), t.elapsed()));
        }
        out
    });
    let all: Vec<_> = join_all(clients).await.into_iter().flatten().collect();
    let wall = started.elapsed();
    let ok = all.iter().filter(|(s, _)| *s == 200).count();
    let mut lat: Vec<Duration> = all.iter().map(|(_, d)| *d).collect();
    lat.sort();
    Run {
        p50: percentile(&lat, 0.50),
        p99: percentile(&lat, 0.99),
        wall,
        ok,
    }
}

/// Recommendations callers: one request every 20 ms per client until
/// `stop` turns true; every answer with its latency.
async fn recommendation_callers(
    proxy: &Proxy,
    clients: usize,
    stop: watch::Receiver<bool>,
) -> Vec<(Collected, Duration)> {
    let listener = proxy.listener();
    let callers = (0..clients).map(|_| {
        let stop = stop.clone();
        async move {
            let mut c = HttpClient::h1(listener).await.unwrap();
            let mut out = Vec::new();
            while !*stop.borrow() {
                let t = Instant::now();
                let r = tokio::time::timeout(T, c.get("recommendations", "/")).await;
                let r = r
                    .expect("recommendations answers in time")
                    .expect("response");
                out.push((r, t.elapsed()));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            out
        }
    });
    join_all(callers).await.into_iter().flatten().collect()
}

#[tokio::test]
async fn a_hanging_backend_does_not_slow_its_neighbour() {
    let mut builder = ProxyBuilder::yaml(CONFIG);
    let checkout =
        FaultyUpstream::start_at(builder.addr("checkout"), "checkout", Fault::None).await;
    let recs_addr = builder.addr("recommendations");
    let recs = FaultyUpstream::start_at(recs_addr, "recommendations", Fault::Hang).await;
    let proxy = builder.start().await.expect("proxy starts");

    // Warm up connections, then measure checkout alone.
    checkout_load(&proxy).await;
    let alone = checkout_load(&proxy).await;
    assert_eq!(alone.ok, CLIENTS * PER_CLIENT);

    let (stop_tx, stop) = watch::channel(false);
    let callers = recommendation_callers(&proxy, 6, stop);
    let load = async {
        // Checkout starts while recommendations requests hang.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let run = checkout_load(&proxy).await;
        // Callers go on until the breaker has opened and answered some.
        let open = wait_for_backend(&proxy, "recommendations", T, |v| {
            v["breaker"]["rejectedTotal"].as_u64() >= Some(4)
        })
        .await;
        stop_tx.send_replace(true);
        (run, open)
    };
    let (recs_answers, (beside, open)) = tokio::join!(callers, load);
    open.expect("the breaker opens and refuses");
    eprintln!("checkout alone: {alone:?}\ncheckout beside a hanging backend: {beside:?}");

    assert_eq!(
        beside.ok,
        CLIENTS * PER_CLIENT,
        "every checkout request succeeds"
    );
    let bound = |base: Duration, slack_ms: u64| base * 3 + Duration::from_millis(slack_ms);
    assert!(
        beside.p50 <= bound(alone.p50, 5),
        "checkout p50 {:?} beside a hanging backend, {:?} alone",
        beside.p50,
        alone.p50
    );
    assert!(
        beside.p99 <= bound(alone.p99, 50),
        "checkout p99 {:?} beside a hanging backend, {:?} alone",
        beside.p99,
        alone.p99
    );
    assert!(
        beside.wall <= bound(alone.wall, 200),
        "{} checkout requests took {:?} beside a hanging backend, {:?} alone",
        CLIENTS * PER_CLIENT,
        beside.wall,
        alone.wall
    );
    assert_eq!(checkout.count(), 3 * CLIENTS * PER_CLIENT);

    assert!(
        recs_answers.len() >= 8,
        "{} recommendations calls",
        recs_answers.len()
    );
    for (r, took) in &recs_answers {
        let reason = r.header("vakt-fallback").unwrap_or("");
        assert_eq!(r.status, 200, "recommendations callers get the fallback");
        assert!(
            ["timeout", "breaker-open"].contains(&reason),
            "fallback reason {reason:?}"
        );
        assert_eq!(r.text(), r#"{"items":[]}"#);
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(
            *took <= Duration::from_millis(800),
            "the fallback must come within the 300 ms timeout, took {took:?}"
        );
    }
    let opened = recs_answers
        .iter()
        .filter(|(r, _)| r.header("vakt-fallback") == Some("breaker-open"))
        .count();
    assert!(opened > 0, "the breaker opened and answers fast");
    let m = proxy.metrics().await.unwrap();
    let fallbacks = m.sum("vakt_fallbacks_total", &[("backend", "recommendations")]);
    assert_eq!(fallbacks, recs_answers.len() as f64);
    assert!(
        recs.count() < recs_answers.len(),
        "the breaker spares the upstream"
    );

    recovers(&proxy, &recs).await;
}

/// Recommendations answers again: with callers still calling, the breaker
/// closes by itself and the real answer comes back.
async fn recovers(proxy: &Proxy, recs: &FaultyUpstream) {
    recs.set(Fault::None);
    let (stop_tx, stop) = watch::channel(false);
    let callers = recommendation_callers(proxy, 1, stop);
    let watch_breaker = async {
        let closed = wait_for_backend(proxy, "recommendations", Duration::from_secs(6), |v| {
            breaker_state(v) == "closed"
        })
        .await;
        stop_tx.send_replace(true);
        closed
    };
    let (_, closed) = tokio::join!(callers, watch_breaker);
    if let Err(view) = closed {
        panic!("the breaker did not close after recovery: {view}");
    }
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let r = c.get("recommendations", "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("vakt-fallback"), None, "a real answer again");
    assert_eq!(r.text(), "recommendations\n");
    let view = backend_view(proxy, "recommendations").await;
    assert_eq!(view["breaker"]["consecutiveFailures"], 0, "{view}");
}
