//! Operating the real `vakt-proxy`: admin endpoints and metric series,
//! reloads (SIGHUP under load, a refused invalid file, a file change alone),
//! refusing an invalid config at start and with `--check`, draining on
//! SIGTERM, and the access-log keys.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use vakt_tests::client::HttpClient;
use vakt_tests::proxy::{self, Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const T: Duration = Duration::from_secs(10);

/// Route `web` on listener `main` to backend `svc` at `endpoint`; backend
/// `other` at `spare` is configured but unused.
fn config(endpoint: SocketAddr, spare: SocketAddr, extra: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: web
    rules: [{{backendRefs: [{{name: svc}}]}}]
backends:
  - {{name: svc, endpoints: ["{endpoint}"]}}
  - {{name: other, endpoints: ["{spare}"]}}
{extra}
"#
    )
}

async fn two_upstreams() -> (Upstream, Upstream) {
    (Upstream::named("a").await, Upstream::named("b").await)
}

/// One GET on a new connection: the `x-served-by` name, or why not.
async fn probe(listener: SocketAddr) -> Result<String, String> {
    let mut c = HttpClient::h1(listener).await.map_err(|e| e.to_string())?;
    let r = tokio::time::timeout(T, c.get("svc", "/"))
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    match (r.status.as_u16(), r.header("x-served-by")) {
        (200, Some(name)) => Ok(name.to_owned()),
        (code, _) => Err(format!("status {code}: {}", r.text())),
    }
}

/// Waits up to 5 s until new connections are served by `name`.
async fn wait_served_by(proxy: &Proxy, name: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = Err(String::new());
    while Instant::now() < deadline {
        last = probe(proxy.listener()).await;
        if last.as_deref() == Ok(name) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("traffic did not move to {name}; last probe {last:?}");
}

async fn reloads(proxy: &Proxy, result: &str) -> f64 {
    let m = proxy.metrics().await.unwrap();
    m.get("vakt_config_reloads_total", &[("result", result)])
        .unwrap_or(0.0)
}

#[tokio::test]
async fn live_ready_and_metric_series_with_their_labels() {
    let (a, b) = two_upstreams().await;
    let text = config(a.addr(), b.addr(), "");
    let proxy = ProxyBuilder::yaml(text.clone()).start().await.unwrap();
    assert_eq!(proxy.admin_get("/live").await.unwrap().status, 200);
    assert_eq!(proxy.admin_get("/ready").await.unwrap().status, 200);

    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(c.get("svc", "/").await.unwrap().status, 200);
    }
    assert_eq!(c.get("svc", "/?status=503").await.unwrap().status, 503);

    let m = proxy.metrics().await.unwrap();
    let ok = [
        ("listener", "main"),
        ("route", "web"),
        ("backend", "svc"),
        ("code", "200"),
    ];
    assert_eq!(
        m.get("vakt_requests_total", &ok),
        Some(3.0),
        "{:?}",
        m.samples
    );
    let failed = [("route", "web"), ("backend", "svc"), ("code", "503")];
    assert_eq!(m.get("vakt_requests_total", &failed), Some(1.0));

    let class = |c| {
        [
            ("listener", "main"),
            ("route", "web"),
            ("backend", "svc"),
            ("code_class", c),
        ]
    };
    let count = "vakt_request_duration_seconds_count";
    assert_eq!(
        m.get(count, &class("2xx")),
        Some(3.0),
        "histogram count of 2xx"
    );
    assert_eq!(
        m.get(count, &class("5xx")),
        Some(1.0),
        "histogram count of 5xx"
    );
    let ok_class = class("2xx");
    let inf = m.find("vakt_request_duration_seconds_bucket", &ok_class);
    let inf: Vec<_> = inf.filter(|s| s.label("le") == Some("+Inf")).collect();
    assert_eq!(inf.len(), 1, "one +Inf bucket for 2xx");
    assert_eq!(inf[0].value, 3.0);
    let sum = m.get("vakt_request_duration_seconds_sum", &class("2xx"));
    assert!(sum.is_some_and(|s| s > 0.0), "duration sum {sum:?}");

    let conns = m.get("vakt_upstream_connections", &[("backend", "svc")]);
    assert_eq!(conns, Some(1.0), "open upstream connections of svc");

    proxy.reload().unwrap();
    let deadline = Instant::now() + T;
    while reloads(&proxy, "success").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no vakt_config_reloads_total{{result=\"success\"}}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn backends_and_config_are_served_as_json() {
    let (a, b) = two_upstreams().await;
    let proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), ""))
        .start()
        .await
        .unwrap();

    let r = proxy.admin_get("/backends").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").is_some_and(|v| v.contains("json")));
    let v: Value = r.json().expect("/backends is JSON");
    let list = v["backends"].as_array().expect("a `backends` list");
    for (name, addr) in [("svc", a.addr()), ("other", b.addr())] {
        let backend = list
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("/backends lacks {name}: {v}"));
        let endpoints = backend["endpoints"].as_array().expect("endpoints");
        assert_eq!(endpoints.len(), 1, "{name}: {backend}");
        assert_eq!(endpoints[0]["address"], addr.to_string(), "{name}");
        let state = ["state", "health", "healthy", "status"]
            .iter()
            .any(|k| endpoints[0].get(*k).is_some());
        assert!(
            state,
            "/backends endpoint of {name} carries no health state \
             (state/health/healthy/status): {}",
            endpoints[0]
        );
    }

    let r = proxy.admin_get("/config").await.unwrap();
    assert_eq!(r.status, 200);
    let v: Value = r.json().expect("/config is JSON");
    let config = v.get("config").unwrap_or(&v);
    assert_eq!(config["listeners"][0]["name"], "main", "{v}");
    assert_eq!(config["routes"][0]["name"], "web");
    let names: Vec<_> = config["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .map(|b| b["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["svc", "other"]);
    assert_eq!(config["backends"][0]["endpoints"][0], a.addr().to_string());
}

#[tokio::test]
async fn reloads_under_load_fail_no_request() {
    let (a, b) = two_upstreams().await;
    let mut proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), ""))
        .start()
        .await
        .unwrap();
    let mut early = HttpClient::h1(proxy.listener()).await.unwrap();
    assert_eq!(early.get("svc", "/").await.unwrap().status, 200);

    let stop = Arc::new(AtomicBool::new(false));
    let listener = proxy.listener();
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let (mut done, mut failures) = (0usize, Vec::new());
                let mut c = HttpClient::h1(listener).await.unwrap();
                while !stop.load(Ordering::SeqCst) {
                    // Every fifth request on a new connection.
                    if done % 5 == 4 {
                        c = HttpClient::h1(listener).await.unwrap();
                    }
                    let r = tokio::time::timeout(T, c.get("svc", "/")).await;
                    match r {
                        Ok(Ok(r)) if r.status == 200 => {}
                        other => failures.push(format!("{other:?}")),
                    }
                    done += 1;
                }
                (done, failures)
            })
        })
        .collect();

    for i in 1..=7 {
        let (to, name) = if i % 2 == 1 {
            (b.addr(), "b")
        } else {
            (a.addr(), "a")
        };
        proxy.reload_with(&config(to, a.addr(), "")).unwrap();
        wait_served_by(&proxy, name).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut total = 0;
    for l in loops {
        let (done, failures) = l.await.unwrap();
        assert!(
            failures.is_empty(),
            "requests failed across reloads: {failures:?}"
        );
        total += done;
    }
    assert!(total > 100, "the client loops ran only {total} requests");
    assert!(reloads(&proxy, "success").await >= 7.0);

    // After the last reload, every request goes to b, also on a
    // connection opened before any reload.
    let before = a.request_count();
    for _ in 0..20 {
        let r = early.get("svc", "/").await.unwrap();
        assert_eq!(r.header("x-served-by"), Some("b"));
        assert_eq!(probe(proxy.listener()).await.as_deref(), Ok("b"));
    }
    assert_eq!(
        a.request_count(),
        before,
        "the old backend still got traffic"
    );
}

#[tokio::test]
async fn an_invalid_file_on_reload_is_refused_and_the_old_config_serves() {
    let (a, b) = two_upstreams().await;
    let mut proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), ""))
        .start()
        .await
        .unwrap();
    let last_ok = "vakt_config_last_reload_success";
    let m = proxy.metrics().await.unwrap();
    assert_eq!(m.get(last_ok, &[]), Some(1.0), "the starting config");
    let broken = config(a.addr(), b.addr(), "").replace("{name: svc}", "{name: ghost}");
    proxy.reload_with(&broken).unwrap();

    let deadline = Instant::now() + T;
    while reloads(&proxy, "failure").await < 1.0 {
        assert!(
            Instant::now() < deadline,
            "no vakt_config_reloads_total{{result=\"failure\"}} after an invalid reload"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let m = proxy.metrics().await.unwrap();
    assert_eq!(m.get(last_ok, &[]), Some(0.0), "a stale config is flagged");
    let logged = proxy.wait_for_line(T, |l| l.contains("ghost")).await;
    assert!(
        logged.is_some(),
        "the refused reload's problem is not logged"
    );
    for _ in 0..10 {
        assert_eq!(probe(proxy.listener()).await.as_deref(), Ok("a"));
    }
    assert_eq!(proxy.ready_status().await.unwrap(), 200);
    let v: Value = proxy.admin_get("/config").await.unwrap().json().unwrap();
    let routes = v.get("config").unwrap_or(&v)["routes"].to_string();
    assert!(!routes.contains("ghost"), "/config shows the refused file");
}

#[tokio::test]
async fn a_file_change_without_sighup_is_picked_up() {
    let (a, b) = two_upstreams().await;
    let mut proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), ""))
        .start()
        .await
        .unwrap();
    assert_eq!(probe(proxy.listener()).await.as_deref(), Ok("a"));
    proxy.write_config(&config(b.addr(), a.addr(), "")).unwrap();
    wait_served_by(&proxy, "b").await;
    assert!(reloads(&proxy, "success").await >= 1.0);
}

/// Has a problem under each of listeners, backends and routes.
const BROKEN: &str = r#"
listeners:
  - name: main
    address: "not-an-address"
routes:
  - name: web
    rules:
      - matches: [{path: {type: PathPrefix, value: nope}}]
        backendRefs: [{name: ghost}]
backends:
  - {name: empty, endpoints: []}
"#;

const BROKEN_PATHS: [&str; 4] = [
    "listeners[main].address",
    "backends[empty].endpoints",
    "routes[web].rules[0].matches[0].path.value",
    "routes[web].rules[0].backendRefs[0].name",
];

#[tokio::test]
async fn an_invalid_config_at_start_exits_non_zero_naming_every_problem() {
    let mut proxy = ProxyBuilder::yaml(BROKEN).spawn().await.unwrap();
    let status = proxy.wait_exit(T).await.expect("the proxy exits");
    assert!(!status.success(), "an invalid config started: {status:?}");
    assert_eq!(status.code(), Some(1), "exit status {status:?}");
    // The pipe reader may lag the exit a little.
    let _ = proxy
        .wait_for_line(Duration::from_secs(2), |l| l.contains(BROKEN_PATHS[3]))
        .await;
    let stderr = proxy.stderr_lines().join("\n");
    for path in BROKEN_PATHS {
        assert!(
            stderr.contains(path),
            "stderr does not name {path}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn check_flag_validates_without_serving() {
    let out = proxy::check(BROKEN).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "--check on a broken file: {out:?}"
    );
    let said = format!("{}\n{}", out.stdout, out.stderr);
    for path in BROKEN_PATHS {
        assert!(said.contains(path), "--check does not name {path}:\n{said}");
    }

    let spare = vakt_tests::ports::free_addr();
    let good = config(spare, spare, "");
    let out = proxy::check(&good).await.unwrap();
    assert!(out.status.success(), "--check on a valid file: {out:?}");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (a, b) = two_upstreams().await;
    let drain = "drain: {delay: 1s, timeout: 10s}";
    let mut proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), drain))
        .start()
        .await
        .unwrap();
    let listener = proxy.listener();
    let in_flight: Vec<_> = (0..3)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = HttpClient::h1(listener).await.unwrap();
                c.get("svc", "/?delay_ms=2500").await
            })
        })
        .collect();
    a.log().wait_for(3, T).await;
    assert_eq!(a.request_count(), 3, "requests in flight before SIGTERM");

    let sent = Instant::now();
    proxy.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let mut ready = 0;
    while sent.elapsed() < Duration::from_millis(800) {
        ready = proxy.ready_status().await.unwrap_or(0);
        if ready == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready, 503, "/ready while draining");

    // Listeners close after the drain delay; the in-flight requests
    // (2.5 s) are still running then.
    let refused = loop {
        let attempt = tokio::time::timeout(Duration::from_millis(300), probe(listener)).await;
        if !matches!(attempt, Ok(Ok(_))) {
            break sent.elapsed();
        }
        assert!(
            sent.elapsed() < Duration::from_secs(3),
            "new connections still served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused >= Duration::from_millis(800),
        "connections refused {refused:?} after SIGTERM, before the 1 s drain delay"
    );
    assert!(
        in_flight.iter().all(|t| !t.is_finished()),
        "in-flight requests ended before the listeners closed"
    );

    for t in in_flight {
        let r = tokio::time::timeout(T, t).await.unwrap().unwrap();
        let r = r.expect("an in-flight request was cut off by the drain");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let status = proxy
        .wait_exit(T)
        .await
        .expect("the proxy exits after draining");
    assert_eq!(
        status.code(),
        Some(0),
        "exit status after SIGTERM: {status:?}"
    );
}

const ISTIO_KEYS: [&str; 18] = [
    "start_time",
    "method",
    "path",
    "protocol",
    "response_code",
    "response_flags",
    "bytes_received",
    "bytes_sent",
    "duration",
    "upstream_service_time",
    "x_forwarded_for",
    "user_agent",
    "request_id",
    "authority",
    "upstream_host",
    "upstream_cluster",
    "route_name",
    "downstream_remote_address",
];

#[tokio::test]
async fn access_log_lines_carry_the_istio_keys() {
    let (a, b) = two_upstreams().await;
    let proxy = ProxyBuilder::yaml(config(a.addr(), b.addr(), ""))
        .start()
        .await
        .unwrap();
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let req = http::Request::post("/logged?x=1")
        .header("host", "svc.local")
        .header("user-agent", "vakt-test/1")
        .header("x-request-id", "log-me")
        .body(vakt_tests::body::full("12345"))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, 200);
    let logs = proxy.wait_for_access_logs(1, T).await;
    let log = logs
        .iter()
        .find(|l| l["request_id"] == "log-me")
        .unwrap_or_else(|| panic!("no access-log record: {:?}", proxy.stderr_lines()));
    let missing: Vec<_> = ISTIO_KEYS
        .iter()
        .filter(|k| log.get(**k).is_none())
        .collect();
    assert!(missing.is_empty(), "access log lacks {missing:?}: {log}");
    assert_eq!(log["method"], "POST");
    assert!(
        log["path"]
            .as_str()
            .is_some_and(|p| p.starts_with("/logged"))
    );
    assert_eq!(log["protocol"], "HTTP/1.1");
    assert_eq!(log["response_code"], 200);
    assert_eq!(log["bytes_received"], 5);
    assert_eq!(log["bytes_sent"], r.body.len());
    assert_eq!(log["user_agent"], "vakt-test/1");
    assert_eq!(log["authority"], "svc.local");
    assert_eq!(log["upstream_host"], a.addr().to_string());
    assert_eq!(log["upstream_cluster"], "svc");
    assert_eq!(log["route_name"], "web");
    let peer = log["downstream_remote_address"].as_str().unwrap_or("");
    assert!(
        peer.starts_with("127.0.0.1:"),
        "downstream_remote_address {peer}"
    );
}
