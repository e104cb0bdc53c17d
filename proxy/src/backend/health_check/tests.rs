use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::time::Instant;
use vakt_api::Duration as ConfigDuration;

use super::*;

fn config(interval_ms: u64) -> HealthCheck {
    HealthCheck {
        path: "/healthz".into(),
        interval: ConfigDuration::from_millis(interval_ms),
        timeout: ConfigDuration::from_millis(500),
        unhealthy_threshold: 3,
        healthy_threshold: 2,
    }
}

/// An endpoint answering `/healthz` with whatever `status` holds (0:
/// accept and never answer); counts the checks it receives.
struct Upstream {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    checks: Arc<AtomicUsize>,
}

async fn upstream(status: u16) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let status = Arc::new(AtomicU16::new(status));
    let checks = Arc::new(AtomicUsize::new(0));
    let (s, c) = (status.clone(), checks.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (s, c) = (s.clone(), c.clone());
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (s, c) = (s.clone(), c.clone());
                async move {
                    assert_eq!(req.uri().path(), "/healthz");
                    assert_eq!(req.headers()["user-agent"], "vakt-health-check");
                    c.fetch_add(1, Ordering::SeqCst);
                    let code = s.load(Ordering::SeqCst);
                    if code == 0 {
                        std::future::pending::<()>().await;
                    }
                    let mut resp = Response::new(Full::new(Bytes::from_static(b"ok")));
                    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Upstream {
        addr,
        status,
        checks,
    }
}

#[test]
fn thresholds_decide_changes() {
    let mut t = Tally::new(&config(5000));
    assert!(t.healthy());
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None, "a pass breaks the streak");
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(false), Some(false), "third fail in a row");
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None);
    assert_eq!(t.observe(false), None);
    assert_eq!(t.observe(true), None);
    assert_eq!(t.observe(true), Some(true), "second pass in a row");
    assert!(t.healthy());
}

#[tokio::test]
async fn a_check_passes_only_on_2xx() {
    let up = upstream(200).await;
    let endpoint = up.addr.to_string();
    let timeout = Duration::from_secs(2);
    assert!(check_once(&endpoint, "/healthz", timeout).await);
    up.status.store(204, Ordering::SeqCst);
    assert!(check_once(&endpoint, "/healthz", timeout).await);
    for code in [301, 404, 500, 503] {
        up.status.store(code, Ordering::SeqCst);
        assert!(!check_once(&endpoint, "/healthz", timeout).await, "{code}");
    }
    assert_eq!(up.checks.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_refused_connection_fails() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    assert!(!check_once(&addr.to_string(), "/healthz", Duration::from_secs(2)).await);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_endpoint_fails_at_the_timeout() {
    let up = upstream(0).await;
    let start = Instant::now();
    let passed = check_once(&up.addr.to_string(), "/healthz", Duration::from_secs(1)).await;
    assert!(!passed);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(up.checks.load(Ordering::SeqCst), 1, "the request arrived");
}

/// Waits (bounded) until `ejection` shows endpoint `index` as `healthy`.
async fn wait_for(ejection: &Ejection, index: usize, healthy: bool) {
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let snap = ejection.snapshot(Instant::now());
            if snap.endpoints[index].healthy == healthy {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    waited.await.expect("health did not change within 10 s");
}

#[tokio::test]
async fn checks_take_an_endpoint_out_and_put_it_back() {
    let good = upstream(200).await;
    let flaky = upstream(200).await;
    let endpoints = vec![good.addr.to_string(), flaky.addr.to_string()];
    let ejection = Arc::new(Ejection::new("api", None, &endpoints));
    let checker = HealthChecker::spawn("api", &config(20), &endpoints, ejection.clone());

    flaky.status.store(503, Ordering::SeqCst);
    let before = flaky.checks.load(Ordering::SeqCst);
    wait_for(&ejection, 1, false).await;
    assert!(flaky.checks.load(Ordering::SeqCst) >= before + 3);
    assert!(!ejection.is_available(1, Instant::now()));
    assert!(ejection.is_available(0, Instant::now()));

    flaky.status.store(200, Ordering::SeqCst);
    wait_for(&ejection, 1, true).await;
    assert!(ejection.is_available(1, Instant::now()));

    checker.stop().await;
    let after = (
        good.checks.load(Ordering::SeqCst),
        flaky.checks.load(Ordering::SeqCst),
    );
    tokio::task::yield_now().await;
    let later = (
        good.checks.load(Ordering::SeqCst),
        flaky.checks.load(Ordering::SeqCst),
    );
    assert_eq!(after, later, "no checks once stopped");
}

#[tokio::test(start_paused = true)]
async fn dropping_the_checker_stops_its_tasks() {
    let endpoints = vec!["127.0.0.1:9".to_string()];
    let ejection = Arc::new(Ejection::new("api", None, &endpoints));
    let checker = HealthChecker::spawn("api", &config(5000), &endpoints, ejection.clone());
    let tasks: Vec<_> = checker.tasks.iter().map(|t| t.abort_handle()).collect();
    drop(checker);
    tokio::task::yield_now().await;
    assert!(tasks.iter().all(|t| t.is_finished()));
    assert_eq!(Arc::strong_count(&ejection), 1, "tasks released the state");
}
