//! Outlier detection and active health checks through the real
//! `vakt-proxy`: a failing endpoint stops getting traffic, no more than
//! `maxEjectionPercent` of a backend is ever ejected, a repeat ejection
//! lasts longer, and when every endpoint is out traffic goes to all of
//! them rather than to a proxy-made 503 (case BR-20). Health checks take
//! an endpoint out and put it back.

use std::net::SocketAddr;
use std::time::Duration;

use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::fault::{
    Fault, FaultyUpstream, backend_view, endpoint_state, is_ejected, wait_for_backend,
};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const T: Duration = Duration::from_secs(5);

/// Backend `svc` over `endpoints` (placeholder names), round robin, with
/// `policy` (YAML lines at backend level, indented four spaces).
fn config(endpoints: &[&str], policy: &str) -> String {
    let list: Vec<String> = endpoints.iter().map(|e| format!("\"${{{e}}}\"")).collect();
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: svc
    rules: [{{backendRefs: [{{name: svc}}]}}]
backends:
  - name: svc
    loadBalancer: round-robin
    endpoints: [{}]
{policy}
"#,
        list.join(", ")
    )
}

/// Starts one faulty upstream per `(placeholder, fault)` and the proxy.
async fn mesh(ups: &[(&str, Fault)], policy: &str) -> (Vec<FaultyUpstream>, Proxy) {
    let names: Vec<&str> = ups.iter().map(|(n, _)| *n).collect();
    let mut builder = ProxyBuilder::yaml(config(&names, policy));
    let mut started = Vec::new();
    for (name, fault) in ups {
        let addr = builder.addr(name);
        started.push(FaultyUpstream::start_at(addr, name, fault.clone()).await);
    }
    (started, builder.start().await.expect("proxy starts"))
}

async fn get(c: &mut HttpClient) -> Collected {
    let r = tokio::time::timeout(T, c.get("svc", "/")).await;
    r.expect("answer in time").expect("response")
}

async fn send(c: &mut HttpClient, n: usize) -> Vec<Collected> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(c).await);
    }
    out
}

fn counts(ups: &[FaultyUpstream]) -> Vec<usize> {
    ups.iter().map(FaultyUpstream::count).collect()
}

async fn ejected(proxy: &Proxy, addr: SocketAddr) -> bool {
    is_ejected(&endpoint_state(&backend_view(proxy, "svc").await, addr))
}

#[tokio::test]
async fn a_failing_endpoint_stops_getting_traffic() {
    let policy =
        "    outlierDetection: {consecutiveFailures: 3, ejectionTime: 5s, maxEjectionPercent: 50}";
    let faults = [
        ("a", Fault::Status(500)),
        ("b", Fault::None),
        ("c", Fault::None),
    ];
    let (ups, proxy) = mesh(&faults, policy).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();

    let mut sent = 0;
    while !ejected(&proxy, ups[0].addr()).await {
        assert!(
            sent < 30,
            "a not ejected after {sent} requests: {:?}",
            counts(&ups)
        );
        get(&mut c).await;
        sent += 1;
    }
    assert_eq!(
        ups[0].count(),
        3,
        "ejected after exactly 3 failures in a row"
    );

    let answers = send(&mut c, 30).await;
    assert!(
        answers.iter().all(|r| r.status == 200),
        "an ejected endpoint gets no traffic"
    );
    assert_eq!(ups[0].count(), 3, "a got requests while ejected");
    assert_eq!(ups[1].count() + ups[2].count(), sent + 30 - 3);
    assert!(
        ups[1].count() >= 10 && ups[2].count() >= 10,
        "{:?}",
        counts(&ups)
    );

    let view = backend_view(&proxy, "svc").await;
    let a = endpoint_state(&view, ups[0].addr());
    assert_eq!(a["available"], false, "{view}");
    assert_eq!(a["ejectionsTotal"], 1, "{view}");
    assert_eq!(view["panic"], false, "{view}");
    let m = proxy.metrics().await.unwrap();
    let n = m.get("vakt_ejections_total", &[("backend", "svc")]);
    assert_eq!(n, Some(1.0));
}

#[tokio::test]
async fn max_ejection_percent_is_respected() {
    let policy =
        "    outlierDetection: {consecutiveFailures: 2, ejectionTime: 10s, maxEjectionPercent: 50}";
    let faults = [
        ("a", Fault::Status(500)),
        ("b", Fault::Status(500)),
        ("c", Fault::Status(500)),
        ("d", Fault::None),
    ];
    let (ups, proxy) = mesh(&faults, policy).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    send(&mut c, 30).await;
    let before = counts(&ups);
    send(&mut c, 20).await;
    let after = counts(&ups);

    let view = backend_view(&proxy, "svc").await;
    let out: Vec<bool> = ups
        .iter()
        .map(|u| is_ejected(&endpoint_state(&view, u.addr())))
        .collect();
    assert_eq!(
        out.iter().filter(|e| **e).count(),
        2,
        "50 % of 4 endpoints is 2 ejected at most, and 3 fail: {view}"
    );
    assert!(!out[3], "the healthy endpoint stays in: {view}");
    let left_in = (0..3)
        .find(|i| !out[*i])
        .expect("one failing endpoint left in");
    assert!(
        after[left_in] > before[left_in],
        "the failing endpoint kept in by the cap still gets traffic: {before:?} -> {after:?}"
    );
    for i in (0..3).filter(|i| out[*i]) {
        assert_eq!(after[i], before[i], "ejected endpoint {i} got traffic");
    }
    let m = proxy.metrics().await.unwrap();
    let n = m.get("vakt_ejections_total", &[("backend", "svc")]);
    assert_eq!(n, Some(2.0));
}

#[tokio::test]
async fn a_repeat_ejection_lasts_longer() {
    let policy = "    outlierDetection: {consecutiveFailures: 2, ejectionTime: 600ms, maxEjectionPercent: 50}";
    let faults = [("a", Fault::Status(503)), ("b", Fault::None)];
    let (ups, proxy) = mesh(&faults, policy).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let a = ups[0].addr();

    let mut first = serde_json::Value::Null;
    for _ in 0..20 {
        get(&mut c).await;
        first = endpoint_state(&backend_view(&proxy, "svc").await, a);
        if is_ejected(&first) {
            break;
        }
    }
    assert!(is_ejected(&first), "a ejected: {first}");
    assert!(first["ejectedRemainingMs"].as_u64() <= Some(600), "{first}");

    let back = wait_for_backend(&proxy, "svc", T, |v| !is_ejected(&endpoint_state(v, a))).await;
    back.expect("the first ejection ends");
    let mut second = serde_json::Value::Null;
    for _ in 0..20 {
        get(&mut c).await;
        second = endpoint_state(&backend_view(&proxy, "svc").await, a);
        if is_ejected(&second) {
            break;
        }
    }
    assert!(is_ejected(&second), "a ejected again: {second}");
    assert_eq!(second["timesEjected"], 2, "{second}");
    let left = second["ejectedRemainingMs"].as_u64().unwrap_or(0);
    assert!(
        left > 800,
        "the second ejection lasts twice ejectionTime (1200 ms), {left} ms left"
    );
}

/// BR-20: every endpoint answers 501 and all are ejected; clients keep
/// getting the upstream's 501, not a proxy 503. When one recovers and its
/// ejection ends, it gets more than 90 % of the traffic.
#[tokio::test]
async fn all_ejected_sends_traffic_to_all_then_to_the_recovered_one() {
    let policy = "    outlierDetection: {consecutiveFailures: 3, ejectionTime: 1500ms, maxEjectionPercent: 100}";
    let faults = [
        ("e1", Fault::Status(501)),
        ("e2", Fault::Status(501)),
        ("e3", Fault::Status(501)),
    ];
    let (ups, proxy) = mesh(&faults, policy).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();

    let answers = send(&mut c, 30).await;
    for (i, r) in answers.iter().enumerate() {
        assert_eq!(
            (r.status.as_u16(), r.header("vakt-error")),
            (501, None),
            "request {i}: clients must get the upstream's 501 when all are ejected"
        );
    }
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(view["panic"], true, "all out means panic mode: {view}");
    for u in &ups {
        let s = endpoint_state(&view, u.addr());
        assert!(s["ejectionsTotal"].as_u64() >= Some(1), "{view}");
        assert_eq!(s["available"], true, "in panic every endpoint is used");
    }
    // 9 requests eject all three; the other 21 are spread over all.
    let spread = counts(&ups);
    assert!(spread.iter().all(|n| *n >= 6), "traffic to all: {spread:?}");
    let m = proxy.metrics().await.unwrap();
    assert!(m.get("vakt_ejections_total", &[("backend", "svc")]) >= Some(3.0));

    ups[1].set(Fault::None);
    let e2 = ups[1].addr();
    let back = wait_for_backend(&proxy, "svc", T, |v| !is_ejected(&endpoint_state(v, e2))).await;
    back.expect("e2's ejection ends");
    let before = counts(&ups);
    let answers = send(&mut c, 100).await;
    let to_e2 = ups[1].count() - before[1];
    assert!(
        to_e2 > 90,
        "the recovered endpoint must get more than 90 of 100 requests, got {to_e2}: \
         {before:?} -> {:?}",
        counts(&ups)
    );
    let ok = answers.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, to_e2);
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_back() {
    let policy = "    healthCheck: {path: /healthz, interval: 100ms, timeout: 300ms, unhealthyThreshold: 2, healthyThreshold: 2}";
    let mut builder = ProxyBuilder::yaml(config(&["a", "b", "dead"], policy));
    let a = FaultyUpstream::start_at(builder.addr("a"), "a", Fault::None).await;
    let b = FaultyUpstream::start_at(builder.addr("b"), "b", Fault::None).await;
    // Nothing listens on `dead`: connections to it are refused.
    let dead = builder.addr("dead");
    let proxy = builder.start().await.expect("proxy starts");

    let down = wait_for_backend(&proxy, "svc", T, |v| {
        endpoint_state(v, dead)["healthy"] == false
    })
    .await;
    down.expect("a refused endpoint is marked unhealthy");

    a.set_healthy(false);
    let out = wait_for_backend(&proxy, "svc", T, |v| {
        endpoint_state(v, a.addr())["healthy"] == false
    })
    .await;
    let view = out.expect("a failing /healthz takes the endpoint out");
    assert_eq!(endpoint_state(&view, a.addr())["available"], false);
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let before = a.count();
    let answers = send(&mut c, 20).await;
    assert!(answers.iter().all(|r| r.header("x-served-by") == Some("b")));
    assert_eq!(a.count(), before, "an unhealthy endpoint gets no traffic");

    a.set_healthy(true);
    let back = wait_for_backend(&proxy, "svc", T, |v| {
        endpoint_state(v, a.addr())["healthy"] == true
    })
    .await;
    back.expect("passing checks put the endpoint back");
    let answers = send(&mut c, 20).await;
    let to_a = answers
        .iter()
        .filter(|r| r.header("x-served-by") == Some("a"))
        .count();
    assert!(
        (7..=13).contains(&to_a),
        "a back in round robin with b gets about half: {to_a} of 20"
    );
    assert!(answers.iter().all(|r| r.status == 200));
    assert!(a.health_checks() >= 4 && b.health_checks() >= 4);
    let m = proxy.metrics().await.unwrap();
    let fails = m.sum(
        "vakt_health_checks_total",
        &[("backend", "svc"), ("result", "fail")],
    );
    assert!(fails >= 4.0, "failed checks counted: {fails}");
}
