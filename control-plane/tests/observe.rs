//! A real Prometheus scrapes a running mesh: the control plane, one proxy
//! connected to it, and three backends (one healthy and slow, one failing
//! one request in four, one down behind a breaker), with traffic. Through
//! Prometheus' HTTP API the recording rules of `deploy/prometheus` must
//! give the success rates and latencies the backends were built to have,
//! the breaker alert must fire, and every expression of the Grafana
//! dashboard must evaluate to data.
//!
//! The rule files are used as written except for the alerts' `for:`,
//! which is minutes in the file (an operator does not want to be paged for
//! a blip); the copy given to this Prometheus holds each alert for 5 s, so
//! a bounded test can see the alert go from pending to firing. The
//! expressions are the file's own. Scrapes and rule evaluations run every
//! second.
//!
//! Needs Debian's `prometheus` (skips without it unless
//! `VAKT_REQUIRE_PROMETHEUS` is set) and the `vakt-proxy` binary, which
//! the test kit builds when missing.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::prometheus::{Prometheus, dashboard_exprs, deploy_dir, find, grafana_dir};
use common::*;
use vakt_tests::fault::{Fault, FaultyUpstream};

/// One wait for a series or an alert gives up after this long.
const LIMIT: Duration = Duration::from_secs(60);

/// The whole test gives up after this long; dropping what it started
/// stops Prometheus, the proxy and the upstreams.
const TOTAL: Duration = Duration::from_secs(240);

fn mesh_yaml(slow: SocketAddr, flaky: SocketAddr, down: SocketAddr) -> String {
    format!(
        r#"
backends:
  - {{name: slow, endpoints: ["{slow}"]}}
  - {{name: flaky, endpoints: ["{flaky}"]}}
  - name: down
    endpoints: ["{down}"]
    circuitBreaker: {{consecutiveFailures: 3, openFor: 30s, maxOpenFor: 60s}}
routes:
  - {{name: slow, hostnames: [slow], rules: [{{backendRefs: [{{name: slow}}]}}]}}
  - {{name: flaky, hostnames: [flaky], rules: [{{backendRefs: [{{name: flaky}}]}}]}}
  - {{name: down, hostnames: [down], rules: [{{backendRefs: [{{name: down}}]}}]}}
"#
    )
}

fn prometheus_yml(proxy_admin: SocketAddr, control: SocketAddr) -> String {
    format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
         rule_files: [recording.yml, alerts.yml]\n\
         scrape_configs:\n\
         \x20 - job_name: vakt-proxy\n\
         \x20   static_configs: [{{targets: ['{proxy_admin}']}}]\n\
         \x20 - job_name: vakt-control\n\
         \x20   static_configs: [{{targets: ['{control}']}}]\n"
    )
}

/// Polls `expr` until `ok` holds for its samples; the last samples seen.
async fn wait_for(
    prom: &Prometheus,
    expr: &str,
    ok: impl Fn(&[(serde_json::Value, f64)]) -> bool,
) -> Vec<(serde_json::Value, f64)> {
    let end = tokio::time::Instant::now() + LIMIT;
    loop {
        let samples = prom.query(expr).await;
        if ok(&samples) || tokio::time::Instant::now() > end {
            return samples;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn single(samples: &[(serde_json::Value, f64)]) -> Option<f64> {
    match samples {
        [(_, v)] => Some(*v),
        _ => None,
    }
}

async fn breaker_alert(prom: &Prometheus) -> Option<serde_json::Value> {
    let end = tokio::time::Instant::now() + LIMIT;
    while tokio::time::Instant::now() < end {
        let firing = prom
            .alerts()
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "VaktBreakerOpen" && a["state"] == "firing");
        if firing.is_some() {
            return firing;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_the_mesh_through_the_recording_rules_alerts_and_dashboard() {
    let Some(bin) = find("prometheus") else {
        return;
    };
    let run = tokio::time::timeout(TOTAL, observe(bin));
    run.await.expect("the test finishes in time");
}

async fn observe(bin: std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let cp = vakt_control::start(opts).await.unwrap();

    let slow = FaultyUpstream::start("slow", Fault::Delay(Duration::from_millis(60))).await;
    let flaky = one_in_four_fails().await;
    let down = FaultyUpstream::start("down", Fault::Status(503)).await;
    let mut c = client(cp.addr).await;
    apply(&mut c, &mesh_yaml(slow.addr(), flaky.addr(), down.addr()))
        .await
        .unwrap();
    let proxy = proxy_of(cp.addr, dir.path()).await;

    let rules = deploy_dir().join("rules");
    let recording = std::fs::read_to_string(rules.join("recording.yml")).unwrap();
    let alerts = std::fs::read_to_string(rules.join("alerts.yml")).unwrap();
    let alerts = common::prometheus::shorten_for(&alerts, "5s");
    let config = prometheus_yml(proxy.admin(), cp.metrics_addr.unwrap());
    let files = [("recording.yml", recording), ("alerts.yml", alerts)];
    let prom = Prometheus::start(&bin, &config, &files).await;

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = ["slow", "flaky", "down"]
        .into_iter()
        .map(|h| traffic(proxy.listener(), h, stop.clone()))
        .collect();

    let up = wait_for(&prom, "up == 1", |s| s.len() == 2).await;
    assert_eq!(up.len(), 2, "both targets scraped: {up:?}");

    let flaky_ok = "backend:vakt_requests_success:ratio_rate1m{backend=\"flaky\"}";
    let near = |s: &[_]| single(s).is_some_and(|v| (v - 0.75f64).abs() < 0.03);
    let s = wait_for(&prom, flaky_ok, near).await;
    assert!(near(&s), "one request in four fails: {s:?}");
    let route_ok = "route:vakt_requests_success:ratio_rate1m{route=\"flaky\"}";
    let s = wait_for(&prom, route_ok, near).await;
    assert!(near(&s), "the route sees the same: {s:?}");

    let slow_ok = "backend:vakt_requests_success:ratio_rate1m{backend=\"slow\"}";
    let all = |s: &[_]| single(s) == Some(1.0);
    let s = wait_for(&prom, slow_ok, all).await;
    assert!(all(&s), "the slow backend never fails: {s:?}");
    let down_ok = "backend:vakt_requests_success:ratio_rate1m{backend=\"down\"}";
    let none = |s: &[_]| single(s) == Some(0.0);
    let s = wait_for(&prom, down_ok, none).await;
    assert!(none(&s), "every request to the down backend fails: {s:?}");

    // 60 ms answers: the median falls in the (50 ms, 100 ms] bucket; the
    // p99 is above 50 ms, its top left loose for a loaded machine.
    for (q, top) in [("p50", 0.1), ("p99", 2.5)] {
        let expr = format!("route:vakt_request_duration_seconds:{q}_1m{{route=\"slow\"}}");
        let in_range = |s: &[_]| single(s).is_some_and(|v| v > 0.05 && v <= top);
        let s = wait_for(&prom, &expr, in_range).await;
        assert!(in_range(&s), "{q} of 60 ms answers: {s:?}");
    }
    let flaky_rate = "backend:vakt_requests:rate1m{backend=\"flaky\"}";
    let s = wait_for(&prom, flaky_rate, |s| single(s).is_some_and(|v| v > 1.0)).await;
    assert!(single(&s).is_some_and(|v| v > 1.0), "request rate: {s:?}");

    let alert = breaker_alert(&prom).await.expect("VaktBreakerOpen fires");
    assert_eq!(alert["labels"]["backend"], "down", "{alert}");
    assert_eq!(alert["labels"]["job"], "vakt-proxy", "{alert}");

    check_dashboard(&prom).await;

    stop.store(true, Ordering::Relaxed);
    for s in senders {
        assert!(s.await.unwrap() > 0);
    }
    drop(prom);
    cp.shutdown().await;
}

/// Every expression of the dashboard parses and returns data.
async fn check_dashboard(prom: &Prometheus) {
    let path = grafana_dir().join("dashboards/vakt-mesh.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs = dashboard_exprs(&dashboard);
    assert!(exprs.len() >= 10, "too few expressions found: {exprs:?}");
    for expr in &exprs {
        let s = wait_for(prom, expr, |s| !s.is_empty()).await;
        assert!(
            !s.is_empty(),
            "dashboard expression returns no data: {expr}"
        );
    }
}
