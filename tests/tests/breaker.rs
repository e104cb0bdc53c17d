//! The breaker of a backend through the real `vakt-proxy`: it trips on
//! consecutive 5xx, fails fast with `vakt-error: breaker-open`, lets
//! exactly `halfOpenRequests` probes through once `openFor` is over, and
//! closes by itself when the upstream answers again. Case BR-17: a 4xx
//! probe closes it; 4xx answers, the proxy's own 429s and clients that
//! hang up never count as failures. Counters are read from `/backends`.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;
use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::fault::{Fault, FaultyUpstream, backend_view, breaker_state, wait_for_backend};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const T: Duration = Duration::from_secs(5);

/// One backend `svc` behind host `svc`, with the given breaker settings,
/// and host `limited` to the same backend behind a tight rate limit.
fn config(breaker: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: svc
    hostnames: [svc]
    rules: [{{backendRefs: [{{name: svc}}]}}]
  - name: limited
    hostnames: [limited]
    rateLimit: {{requestsPerSecond: 0.1, burst: 1}}
    rules: [{{backendRefs: [{{name: svc}}]}}]
backends:
  - name: svc
    endpoints: ["${{up}}"]
    circuitBreaker: {breaker}
"#
    )
}

const TRIP_AT_3: &str = "{consecutiveFailures: 3, openFor: 1s, maxOpenFor: 4s}";

async fn mesh(breaker: &str, fault: Fault) -> (FaultyUpstream, Proxy) {
    let mut builder = ProxyBuilder::yaml(config(breaker));
    let up = FaultyUpstream::start_at(builder.addr("up"), "svc", fault).await;
    (up, builder.start().await.expect("proxy starts"))
}

async fn get(client: &mut HttpClient, host: &str) -> Collected {
    let rsp = tokio::time::timeout(T, client.get(host, "/"));
    rsp.await.expect("answer in time").expect("response")
}

fn reason(r: &Collected) -> &str {
    r.header("vakt-error").unwrap_or("")
}

/// Sends three 500s through and checks the breaker opened on the third.
async fn trip(proxy: &Proxy, client: &mut HttpClient, up: &FaultyUpstream) -> Instant {
    up.set(Fault::Status(500));
    let before = up.count();
    for i in 0..3 {
        let r = get(client, "svc").await;
        assert_eq!(r.status, 500, "failure {i} is the upstream's own 500");
        assert_eq!(reason(&r), "", "failure {i} came from the upstream");
    }
    let tripped = Instant::now();
    assert_eq!(up.count(), before + 3);
    let view = backend_view(proxy, "svc").await;
    assert_eq!(
        breaker_state(&view),
        "open",
        "3 consecutive 5xx with consecutiveFailures 3 must open the breaker: {view}"
    );
    tripped
}

/// Sends a request every 25 ms until one is not refused by the breaker;
/// returns it and when it came.
async fn first_admitted(client: &mut HttpClient, within: Duration) -> (Collected, Instant) {
    let deadline = Instant::now() + within;
    loop {
        let r = get(client, "svc").await;
        if reason(&r) != "breaker-open" {
            return (r, Instant::now());
        }
        assert_eq!(r.status, 503, "breaker-open answers are 503");
        assert!(
            Instant::now() < deadline,
            "no request admitted within {within:?} of the trip"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn trips_fails_fast_and_closes_by_itself_after_recovery() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let tripped = trip(&proxy, &mut c, &up).await;

    for _ in 0..5 {
        let started = Instant::now();
        let r = get(&mut c, "svc").await;
        assert_eq!((r.status.as_u16(), reason(&r)), (503, "breaker-open"));
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "an open breaker must fail fast, took {:?}",
            started.elapsed()
        );
    }
    assert_eq!(up.count(), 3, "nothing reaches the upstream while open");
    let m = proxy.metrics().await.unwrap();
    let svc = [("backend", "svc")];
    assert_eq!(m.get("vakt_breaker_state", &svc), Some(1.0), "gauge: open");
    let to_open = [("backend", "svc"), ("to", "open")];
    assert_eq!(m.get("vakt_breaker_transitions_total", &to_open), Some(1.0));
    let view = backend_view(&proxy, "svc").await;
    assert!(
        view["breaker"]["rejectedTotal"].as_u64() >= Some(5),
        "{view}"
    );

    up.set(Fault::None);
    let (r, at) = first_admitted(&mut c, Duration::from_secs(4)).await;
    assert_eq!(r.status, 200, "the probe reaches the recovered upstream");
    let waited = at - tripped;
    // openFor 1s, shortened by at most 10 % of jitter.
    assert!(
        waited >= Duration::from_millis(850),
        "probe admitted {waited:?} after the trip, before openFor"
    );
    assert!(
        waited <= Duration::from_millis(2500),
        "probe admitted only {waited:?} after the trip"
    );
    assert_eq!(up.count(), 4, "exactly one probe reached the upstream");

    let view = backend_view(&proxy, "svc").await;
    assert_eq!(breaker_state(&view), "closed", "{view}");
    assert_eq!(view["breaker"]["consecutiveFailures"], 0, "{view}");
    for _ in 0..5 {
        assert_eq!(get(&mut c, "svc").await.status, 200);
    }
    let m = proxy.metrics().await.unwrap();
    assert_eq!(
        m.get("vakt_breaker_state", &svc),
        Some(0.0),
        "gauge: closed"
    );
    for to in ["half-open", "closed"] {
        let labels = [("backend", "svc"), ("to", to)];
        let n = m.get("vakt_breaker_transitions_total", &labels);
        assert_eq!(n, Some(1.0), "transitions to {to}");
    }
}

#[tokio::test]
async fn a_failed_probe_opens_it_again_for_longer() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    trip(&proxy, &mut c, &up).await;

    let (r, _) = first_admitted(&mut c, Duration::from_secs(4)).await;
    assert_eq!(r.status, 500, "the probe meets the still failing upstream");
    assert_eq!(up.count(), 4, "one probe only");
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(
        breaker_state(&view),
        "open",
        "a failed probe re-opens: {view}"
    );
    assert_eq!(view["breaker"]["trips"], 2, "{view}");
    // The second open period is openFor doubled (2 s less 10 % jitter).
    let left = view["breaker"]["openRemainingMs"].as_u64().unwrap_or(0);
    assert!(left > 1_300, "second open period too short: {left} ms left");
    let r = get(&mut c, "svc").await;
    assert_eq!((r.status.as_u16(), reason(&r)), (503, "breaker-open"));
    assert_eq!(up.count(), 4);
}

#[tokio::test]
async fn half_open_admits_exactly_half_open_requests() {
    let breaker = "{consecutiveFailures: 3, openFor: 1s, halfOpenRequests: 3}";
    let (up, proxy) = mesh(breaker, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    trip(&proxy, &mut c, &up).await;
    // Slow probes, so that every racing request finds the slots taken.
    up.set(Fault::Delay(Duration::from_millis(500)));
    let ended = wait_for_backend(&proxy, "svc", T, |v| {
        v["breaker"]["openRemainingMs"] == 0 || breaker_state(v) == "half-open"
    })
    .await;
    ended.expect("the open period ends");

    let listener = proxy.listener();
    let calls = (0..12).map(|_| async move {
        let mut c = HttpClient::h1(listener).await.unwrap();
        get(&mut c, "svc").await
    });
    let answers = join_all(calls).await;
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused = answers
        .iter()
        .filter(|r| reason(r) == "breaker-open")
        .count();
    assert_eq!(
        (ok, refused),
        (3, 9),
        "half-open must admit exactly halfOpenRequests (3) of 12 racing requests"
    );
    assert_eq!(up.count(), 3 + 3, "3 failures then 3 probes");
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(
        breaker_state(&view),
        "closed",
        "3 good probes close it: {view}"
    );
}

#[tokio::test]
async fn admin_shows_half_open_once_the_open_period_is_over() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    trip(&proxy, &mut c, &up).await;
    // No traffic: the breaker is half-open once openFor is over, and the
    // admin view must say so rather than "open" with 0 ms remaining.
    let seen = wait_for_backend(&proxy, "svc", Duration::from_secs(3), |v| {
        breaker_state(v) == "half-open"
    })
    .await;
    if let Err(last) = seen {
        panic!(
            "/backends still shows the breaker as {:?} (openRemainingMs {}) 2 s after \
             openFor 1s ended: the snapshot reports the stored state instead of the \
             half-open state the next request would find",
            breaker_state(&last),
            last["breaker"]["openRemainingMs"]
        );
    }
}

/// BR-17 (a): the upstream recovers but answers the probe with 404; that
/// shows it is answering, so the breaker closes.
#[tokio::test]
async fn a_404_probe_closes_the_breaker() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::None).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    trip(&proxy, &mut c, &up).await;
    up.set(Fault::Status(404));

    let (r, _) = first_admitted(&mut c, Duration::from_secs(4)).await;
    assert_eq!(r.status, 404, "the probe gets the upstream's 404");
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(
        breaker_state(&view),
        "closed",
        "a 4xx probe must close the breaker (BR-17 a): {view}"
    );
    for _ in 0..5 {
        let r = get(&mut c, "svc").await;
        assert_eq!((r.status.as_u16(), reason(&r)), (404, ""));
    }
    assert_eq!(up.count(), 3 + 1 + 5);
}

/// BR-17 (b) and (d): twenty 404s, then twenty of the proxy's own 429s,
/// leave the breaker closed and its failure counters where they were.
#[tokio::test]
async fn client_errors_and_rate_limits_never_count() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::Status(404)).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    // Spend the rate limit's only token now, on a 404.
    assert_eq!(get(&mut c, "limited").await.status, 404);

    for _ in 0..20 {
        assert_eq!(get(&mut c, "svc").await.status, 404);
    }
    let view = backend_view(&proxy, "svc").await;
    let b = &view["breaker"];
    assert_eq!(breaker_state(&view), "closed", "{view}");
    assert_eq!(b["consecutiveFailures"], 0, "404s are not failures: {view}");
    assert_eq!(b["windowFailures"], 0, "404s are not failures: {view}");
    assert_eq!(b["trips"], 0, "{view}");

    // Two real failures: the counter moves.
    up.set(Fault::Status(503));
    for _ in 0..2 {
        assert_eq!(get(&mut c, "svc").await.status, 503);
    }
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(view["breaker"]["consecutiveFailures"], 2, "{view}");

    let count = up.count();
    for i in 0..20 {
        let r = get(&mut c, "limited").await;
        assert_eq!(
            (r.status.as_u16(), reason(&r)),
            (429, "rate-limited"),
            "request {i}"
        );
    }
    assert_eq!(up.count(), count, "rate-limited requests never leave");
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(breaker_state(&view), "closed", "{view}");
    assert_eq!(
        view["breaker"]["consecutiveFailures"], 2,
        "the proxy's own 429s must not touch the breaker: {view}"
    );
}

/// BR-17 (c): clients that hang up after 50 ms while the upstream takes
/// 1 s are neutral: neither failures nor successes.
#[tokio::test]
async fn clients_hanging_up_are_neutral() {
    let (up, proxy) = mesh(TRIP_AT_3, Fault::Status(502)).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for _ in 0..2 {
        assert_eq!(get(&mut c, "svc").await.status, 502);
    }
    let view = backend_view(&proxy, "svc").await;
    assert_eq!(view["breaker"]["consecutiveFailures"], 2, "{view}");
    let window = view["breaker"]["windowRequests"].clone();

    up.set(Fault::Delay(Duration::from_secs(1)));
    let listener = proxy.listener();
    let calls = (0..20).map(|_| async move {
        let mut c = HttpClient::h1(listener).await.unwrap();
        let r = tokio::time::timeout(Duration::from_millis(50), c.get("svc", "/")).await;
        assert!(r.is_err(), "the client hangs up before any answer");
        // Dropping the client closes its connection.
    });
    join_all(calls).await;
    // The proxy lets go of the upstream requests too.
    let deadline = Instant::now() + T;
    while up.cut_off().len() < 20 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(up.count(), 2 + 20, "every request reached the upstream");
    assert_eq!(
        up.cut_off().len(),
        20,
        "the proxy must drop the upstream requests of clients that left"
    );
    let view = backend_view(&proxy, "svc").await;
    let b = &view["breaker"];
    assert_eq!(breaker_state(&view), "closed", "{view}");
    assert_eq!(
        b["consecutiveFailures"], 2,
        "hang-ups must be neutral: neither failures nor successes: {view}"
    );
    assert_eq!(
        b["windowRequests"], window,
        "hang-ups are not counted: {view}"
    );
    assert_eq!(b["windowFailures"], 2, "{view}");
}
