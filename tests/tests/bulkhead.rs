//! Bulkheads through the real `vakt-proxy` (case BR-15, small numbers): a
//! slow backend fills only its own `maxRequests` slots and
//! `maxPendingRequests` queue; what does not fit gets a fast 503
//! `vakt-error: overflow` that is never retried, a queued request that
//! waits past `queueTimeout` gets the same, and another backend's traffic
//! is not slowed.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use vakt_tests::client::HttpClient;
use vakt_tests::fault::{Fault, FaultyUpstream, backend_view};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const T: Duration = Duration::from_secs(10);

/// Host `slow` to backend `slow` with `limits`, retrying 503s; host
/// `fast` to backend `fast` with default limits.
fn config(limits: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: slow
    hostnames: [slow]
    rules:
      - backendRefs: [{{name: slow}}]
        retry: {{attempts: 2, codes: [503], backoff: 10ms}}
  - name: fast
    hostnames: [fast]
    rules: [{{backendRefs: [{{name: fast}}]}}]
backends:
  - name: slow
    endpoints: ["${{slow}}"]
    limits: {limits}
  - name: fast
    endpoints: ["${{fast}}"]
"#
    )
}

async fn mesh(limits: &str, delay: Duration) -> (FaultyUpstream, FaultyUpstream, Proxy) {
    let mut builder = ProxyBuilder::yaml(config(limits));
    let slow = FaultyUpstream::start_at(builder.addr("slow"), "slow", Fault::Delay(delay)).await;
    let fast = FaultyUpstream::start_at(builder.addr("fast"), "fast", Fault::None).await;
    (slow, fast, builder.start().await.expect("proxy starts"))
}

/// One GET on its own connection: status, `vakt-error`, time taken.
async fn call(proxy: &Proxy, host: &str) -> (u16, Option<String>, Duration) {
    let mut c = HttpClient::h1(proxy.listener()).await.expect("connects");
    let started = Instant::now();
    let r = tokio::time::timeout(T, c.get(host, "/")).await;
    let r = r.expect("answer in time").expect("response");
    let reason = r.header("vakt-error").map(str::to_owned);
    (r.status.as_u16(), reason, started.elapsed())
}

/// 40 at once against 10 slots and 20 places in line: 10 fast overflows,
/// 30 served, the upstream never sees more than 10 at once.
#[tokio::test]
async fn beyond_slots_and_queue_requests_overflow_fast() {
    let limits = "{maxRequests: 10, maxPendingRequests: 20, queueTimeout: 5s}";
    let (slow, fast, proxy) = mesh(limits, Duration::from_millis(600)).await;

    let burst = join_all((0..40).map(|_| call(&proxy, "slow")));
    let others = async {
        // Meanwhile another backend is served at full speed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
        let mut worst = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            let r = c.get("fast", "/").await.unwrap();
            assert_eq!(r.status, 200);
            worst = worst.max(started.elapsed());
        }
        let view = backend_view(&proxy, "slow").await;
        (worst, view)
    };
    let (answers, (worst, view)) = tokio::join!(burst, others);

    let overflow: Vec<_> = answers
        .iter()
        .filter(|(_, reason, _)| reason.as_deref() == Some("overflow"))
        .collect();
    let served = answers.iter().filter(|(s, ..)| *s == 200).count();
    assert_eq!(
        (overflow.len(), served),
        (10, 30),
        "40 = 10 in flight + 20 queued + 10 overflow"
    );
    for (status, _, took) in &overflow {
        assert_eq!(*status, 503);
        assert!(
            *took < Duration::from_millis(400),
            "an overflow must be fast, took {took:?}"
        );
    }
    assert_eq!(
        slow.count(),
        30,
        "overflow 503s are never retried and never reach the upstream"
    );
    assert!(slow.peak() <= 10, "upstream saw {} at once", slow.peak());
    assert_eq!(slow.peak(), 10, "all 10 slots are used");
    assert!(
        worst < Duration::from_millis(250),
        "the other backend slowed to {worst:?} per request"
    );
    assert_eq!(fast.count(), 20);
    let limits = &view["limits"];
    assert_eq!(limits["inFlight"], 10, "mid-burst: {view}");
    assert_eq!(limits["maxRequests"], 10, "{view}");
    assert_eq!(limits["maxPendingRequests"], 20, "{view}");

    let m = proxy.metrics().await.unwrap();
    let full = [("backend", "slow"), ("reason", "queue-full")];
    assert_eq!(m.get("vakt_overflow_total", &full), Some(10.0));
    assert_eq!(m.sum("vakt_overflow_total", &[("backend", "fast")]), 0.0);
}

/// Requests that wait in line longer than `queueTimeout` get an overflow
/// at that moment.
#[tokio::test]
async fn a_queued_request_overflows_at_the_queue_timeout() {
    let limits = "{maxRequests: 2, maxPendingRequests: 5, queueTimeout: 300ms}";
    let (slow, _fast, proxy) = mesh(limits, Duration::from_millis(1500)).await;
    let answers = join_all((0..4).map(|_| call(&proxy, "slow"))).await;
    let mut timed_out = 0;
    for (status, reason, took) in &answers {
        if reason.as_deref() == Some("overflow") {
            assert_eq!(*status, 503);
            assert!(
                *took >= Duration::from_millis(280) && *took < Duration::from_millis(1_000),
                "overflow at the 300 ms queue timeout, took {took:?}"
            );
            timed_out += 1;
        } else {
            assert_eq!(*status, 200);
        }
    }
    assert_eq!(timed_out, 2, "2 in flight, 2 queued until the timeout");
    assert_eq!(slow.count(), 2);
    let m = proxy.metrics().await.unwrap();
    let late = [("backend", "slow"), ("reason", "queue-timeout")];
    assert_eq!(m.get("vakt_overflow_total", &late), Some(2.0));
}
