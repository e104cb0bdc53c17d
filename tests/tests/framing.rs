//! Message framing through the real `vakt-proxy`: bodiless responses on a
//! kept-alive upstream connection (BR-05), absolute-form targets and
//! missing Host (BR-06), `Expect: 100-continue` (BR-07), HTTP/1.0 clients
//! and request body limits.
//!
//! Clients write raw bytes (or speak h2c); upstreams are raw TCP mocks that
//! record every byte and each request's arrival time.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request};
use tokio::time::Instant;
use vakt_tests::body::{empty, full};
use vakt_tests::client::{HttpClient, RawClient, RawResponse};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::raw::RawRequest;
use vakt_tests::upstream::{RawReply, RawUpstream};

/// Read timeout for one response.
const T: Duration = Duration::from_secs(5);
/// How long stray bytes may take to reach an upstream.
const SETTLE: Duration = Duration::from_millis(200);
/// The BR-07 body: 1 MiB.
const MIB: usize = 1_048_576;

const CONFIG: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: route-a
    hostnames: [svc-a]
    rules:
      - backendRefs: [{name: backend-a}]
  - name: route-b
    hostnames: [svc-b]
    rules:
      - matches: [{path: {type: PathPrefix, value: /path}}]
        backendRefs: [{name: backend-b}]
@default
backends:
  - name: backend-a
    endpoints: ["@a"]
    connectionPool: {maxIdlePerEndpoint: 1}
  - name: backend-b
    endpoints: ["@b"]
    connectionPool: {maxIdlePerEndpoint: 1}
limits:
  maxBodyBytes: @limit
"#;

const DEFAULT_ROUTE: &str = "  - name: default
    rules:
      - backendRefs: [{name: backend-a}]";

/// A proxy routing `svc-a` to upstream `a` and `svc-b/path` to `b`.
struct Mesh {
    a: RawUpstream,
    b: RawUpstream,
    proxy: Proxy,
}

/// Options of [`Mesh::start`].
#[derive(Clone, Copy)]
struct Opts {
    /// Adds a route without hostnames to backend-a.
    default_route: bool,
    /// `limits.maxBodyBytes`.
    max_body: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            default_route: false,
            max_body: 10 * MIB as u64,
        }
    }
}

impl Mesh {
    async fn start(a: RawUpstream, b: RawUpstream, opts: Opts) -> Self {
        let config = CONFIG
            .replace("@a", &a.addr().to_string())
            .replace("@b", &b.addr().to_string())
            .replace("@limit", &opts.max_body.to_string())
            .replace(
                "@default",
                if opts.default_route {
                    DEFAULT_ROUTE
                } else {
                    ""
                },
            );
        let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
        Self { a, b, proxy }
    }

    /// Both upstreams answer `200` with `NAME TARGET` as body.
    async fn tagged(opts: Opts) -> Self {
        Self::start(tagged("a").await, tagged("b").await, opts).await
    }

    async fn client(&self) -> RawClient {
        RawClient::connect(self.proxy.listener()).await.unwrap()
    }
}

/// An upstream that reads each body and answers `200` with `NAME TARGET`.
async fn tagged(name: &'static str) -> RawUpstream {
    RawUpstream::start(move |req| RawReply::ok(&format!("{name} {}", req.target))).await
}

fn status_line(status: u16, fields: &str) -> String {
    let reason = match status {
        100 => "Continue",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        417 => "Expectation Failed",
        _ => "OK",
    };
    format!("HTTP/1.1 {status} {reason}\r\n{fields}\r\n")
}

/// The BR-05 upstream: answers by target, never with a body on 204, 304
/// or HEAD, and leaves its socket open.
async fn bodiless_upstream() -> RawUpstream {
    RawUpstream::start(|req| {
        let bytes = match req.target.as_str() {
            "/a" => status_line(204, ""),
            "/b" => status_line(304, "ETag: \"v1\"\r\nContent-Length: 1234\r\n"),
            "/c" => status_line(200, "Content-Length: 1234\r\n"),
            _ => status_line(200, "Content-Length: 2\r\n") + "ok",
        };
        RawReply::respond(bytes)
    })
    .await
}

/// One BR-05 step: request bytes, whether it is HEAD, and the status and
/// Content-Length the client must see.
struct Step {
    request: &'static str,
    head: bool,
    status: u16,
    length: Option<&'static str>,
    body: &'static str,
}

const BODILESS_STEPS: [Step; 4] = [
    Step {
        request: "GET /a HTTP/1.1\r\nHost: svc-a\r\n\r\n",
        head: false,
        status: 204,
        length: None,
        body: "",
    },
    Step {
        request: "GET /b HTTP/1.1\r\nHost: svc-a\r\nIf-None-Match: \"v1\"\r\n\r\n",
        head: false,
        status: 304,
        length: Some("1234"),
        body: "",
    },
    Step {
        request: "HEAD /c HTTP/1.1\r\nHost: svc-a\r\n\r\n",
        head: true,
        status: 200,
        length: Some("1234"),
        body: "",
    },
    Step {
        request: "GET /d HTTP/1.1\r\nHost: svc-a\r\n\r\n",
        head: false,
        status: 200,
        length: Some("2"),
        body: "ok",
    },
];

/// When the upstream parsed the request for `target`.
fn arrival(up: &RawUpstream, target: &str) -> Option<Instant> {
    let reqs = up.requests();
    reqs.iter().rev().find(|r| r.target == target).map(|r| r.at)
}

#[tokio::test]
async fn bodiless_responses_keep_the_upstream_connection_in_step() {
    let mesh = Mesh::start(
        bodiless_upstream().await,
        tagged("b").await,
        Opts::default(),
    )
    .await;
    let mut c = mesh.client().await;
    let mut report = Vec::new();
    for step in &BODILESS_STEPS {
        let target = step.request.split(' ').nth(1).unwrap_or("");
        c.send(step.request.as_bytes()).await.unwrap();
        let r = c
            .read_response_to(step.head, T)
            .await
            .unwrap_or_else(|e| panic!("{target}: no response: {e}"));
        let got_at = Instant::now();
        let sent_at = arrival(&mesh.a, target).expect("the upstream saw the request");
        let lag = got_at.saturating_duration_since(sent_at);
        let mut problems = Vec::new();
        if lag >= Duration::from_millis(100) {
            problems.push(format!(
                "took {lag:?} after the upstream wrote it (waited for a body)"
            ));
        }
        if r.status != step.status {
            problems.push(format!("status {}, want {}", r.status, step.status));
        }
        if r.header("content-length") != step.length {
            problems.push(format!(
                "Content-Length {:?}, want {:?} as the upstream sent it",
                r.header("content-length"),
                step.length
            ));
        }
        if r.header("transfer-encoding").is_some() {
            problems.push("has Transfer-Encoding".to_owned());
        }
        if r.body_text() != step.body {
            problems.push(format!("body {:?}, want {:?}", r.body_text(), step.body));
        }
        if !problems.is_empty() {
            report.push(format!("  {target}: {}", problems.join("; ")));
        }
    }
    let (rest, closed) = c.read_to_end(SETTLE).await;
    if !rest.is_empty() || closed {
        report.push(format!(
            "  after the 4 responses: {} stray bytes, closed: {closed}",
            rest.len()
        ));
    }
    let conns = mesh.a.connections();
    let per_conn: Vec<usize> = conns.iter().map(|c| c.requests.len()).collect();
    if per_conn != [4] {
        report.push(format!(
            "  requests per upstream connection {per_conn:?}, want all 4 on one"
        ));
    }
    assert!(
        report.is_empty(),
        "BR-05: 204, 304 and HEAD responses through a pool of one:\n{}",
        report.join("\n")
    );
}

#[tokio::test]
async fn bodiless_responses_over_h2_downstream() {
    let mesh = Mesh::start(
        bodiless_upstream().await,
        tagged("b").await,
        Opts::default(),
    )
    .await;
    let mut c = HttpClient::h2c(mesh.proxy.listener()).await.unwrap();
    for step in &BODILESS_STEPS {
        let mut words = step.request.split(' ');
        let method = Method::from_bytes(words.next().unwrap_or("").as_bytes()).unwrap();
        let target = words.next().unwrap_or("");
        let req = Request::builder()
            .method(method)
            .uri(format!("http://svc-a{target}"))
            .header("if-none-match", "\"v1\"")
            .body(empty())
            .unwrap();
        let r = tokio::time::timeout(T, c.send(req))
            .await
            .unwrap_or_else(|_| panic!("{target}: no response over h2 within {T:?}"))
            .unwrap_or_else(|e| panic!("{target}: {e}"));
        let got_at = Instant::now();
        let sent_at = arrival(&mesh.a, target).expect("the upstream saw the request");
        let lag = got_at.saturating_duration_since(sent_at);
        assert!(
            lag < Duration::from_millis(100),
            "{target} over h2: the response took {lag:?} after the upstream wrote it"
        );
        assert_eq!(r.status, step.status, "{target}");
        if step.status != 204 {
            assert_eq!(r.header("content-length"), step.length, "{target}");
        }
        assert_eq!(r.text(), step.body, "{target}");
    }
    assert_eq!(
        mesh.a.connection_count(),
        1,
        "the upstream connection must be reused after HEAD, 204 and 304"
    );
}

/// What a request with an absolute-form target did.
fn absolute_form_problems(mesh: &Mesh, target: &str, want: &str, r: &RawResponse) -> Vec<String> {
    let mut problems = Vec::new();
    let a: Vec<RawRequest> = mesh.a.requests();
    let b: Vec<RawRequest> = mesh.b.requests();
    if r.status == 400 {
        if !a.is_empty() || !b.is_empty() {
            problems.push("refused with 400 but forwarded anyway".to_owned());
        }
        return problems;
    }
    let (hit, miss, name) = if want == "svc-b" {
        (&b, &a, "b")
    } else {
        (&a, &b, "a")
    };
    if r.status != 200 || !r.body_text().starts_with(name) {
        problems.push(format!(
            "answered {} {:?}, not by {want}",
            r.status,
            r.body_text()
        ));
    }
    if !miss.is_empty() {
        problems.push(format!(
            "the other upstream received {:?}",
            miss.iter().map(|r| &r.target).collect::<Vec<_>>()
        ));
    }
    if let Some(req) = hit.first() {
        if req.target != target {
            problems.push(format!(
                "{want} received target {:?}, want origin-form {target:?}",
                req.target
            ));
        }
        let hosts = req.header_all("host");
        let host_ok = hosts.len() == 1 && hosts[0].split(':').next() == Some(want);
        if !host_ok {
            problems.push(format!("{want} received Host {hosts:?}, want {want}"));
        }
    }
    problems
}

#[tokio::test]
async fn absolute_form_routes_by_its_own_authority() {
    let variants = [
        (
            "GET http://svc-b/path?q=1 HTTP/1.1\r\nHost: svc-a\r\n\r\n",
            "/path?q=1",
            "svc-b",
        ),
        (
            "GET http://svc-a/path HTTP/1.1\r\nHost: svc-b\r\n\r\n",
            "/path",
            "svc-a",
        ),
        (
            "GET http://svc-b:8080/path/x HTTP/1.1\r\nHost: svc-a\r\n\r\n",
            "/path/x",
            "svc-b",
        ),
        (
            "GET http://svc-b/path HTTP/1.1\r\nHost: svc-b\r\n\r\n",
            "/path",
            "svc-b",
        ),
    ];
    let mut report = Vec::new();
    for (bytes, target, want) in variants {
        // A fresh mesh per variant keeps the upstream logs apart.
        let mesh = Mesh::tagged(Opts::default()).await;
        let mut c = mesh.client().await;
        c.send(bytes.as_bytes()).await.unwrap();
        let r = c.read_response(T).await.unwrap();
        tokio::time::sleep(SETTLE).await;
        let problems = absolute_form_problems(&mesh, target, want, &r);
        if !problems.is_empty() {
            report.push(format!("  {bytes:?}: {}", problems.join("; ")));
        }
    }
    assert!(
        report.is_empty(),
        "BR-06: an absolute-form target must route by its authority and be \
         forwarded in origin form with that Host (or get 400):\n{}",
        report.join("\n")
    );
}

/// An upstream answering each request with a chunked body `hello world`.
async fn chunked_upstream() -> RawUpstream {
    let reply = status_line(200, "Transfer-Encoding: chunked\r\n")
        + "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    RawUpstream::start(move |_| RawReply::respond(reply.clone())).await
}

/// Checks a response to an HTTP/1.0 client: `200`, not chunked, the whole
/// body.
fn http10_problems(r: &RawResponse) -> Vec<String> {
    let mut problems = Vec::new();
    if r.status != 200 {
        problems.push(format!("status {}", r.status));
    }
    if r.chunked || r.header("transfer-encoding").is_some() {
        problems.push("chunked response to an HTTP/1.0 client".to_owned());
    }
    if r.body_text() != "hello world" {
        problems.push(format!("body {:?}", r.body_text()));
    }
    problems
}

#[tokio::test]
async fn http10_clients_get_unchunked_responses() {
    let mesh = Mesh::start(chunked_upstream().await, tagged("b").await, Opts::default()).await;
    let variants = [
        "GET /ten HTTP/1.0\r\nHost: svc-a\r\n\r\n",
        "GET /ten HTTP/1.0\r\nHost: svc-a\r\nConnection: keep-alive\r\n\r\n",
    ];
    for bytes in variants {
        let mut c = mesh.client().await;
        c.send(bytes.as_bytes()).await.unwrap();
        let r = c.read_response(T).await.unwrap();
        let problems = http10_problems(&r);
        assert!(problems.is_empty(), "{bytes:?}: {problems:?}\n{r:?}");
        if r.header("content-length").is_none() {
            assert!(
                c.closed_within(T).await,
                "{bytes:?}: a body without length must end with the connection"
            );
        }
    }
}

#[tokio::test]
async fn http10_without_host_takes_the_default_route() {
    let opts = Opts {
        default_route: true,
        ..Opts::default()
    };
    let mesh = Mesh::start(chunked_upstream().await, tagged("b").await, opts).await;
    let mut c = mesh.client().await;
    c.send(b"GET /path HTTP/1.0\r\n\r\n").await.unwrap();
    let r = c.read_response(T).await.unwrap();
    let problems = http10_problems(&r);
    assert!(problems.is_empty(), "{problems:?}\n{r:?}");
    let seen = mesh.a.wait_for_requests(1, T).await;
    assert_eq!(seen.len(), 1, "the default route's upstream saw {seen:?}");
    let hosts = seen[0].header_all("host");
    assert!(
        hosts.len() == 1 && !hosts[0].is_empty(),
        "the upstream got a {} request with Host {hosts:?}; an HTTP/1.1 \
         request needs exactly one Host, so the proxy must generate one",
        seen[0].version
    );
    assert_proxy_alive(&mesh).await;
}

#[tokio::test]
async fn http10_without_host_and_no_default_route_is_refused() {
    let mesh = Mesh::tagged(Opts::default()).await;
    let mut c = mesh.client().await;
    c.send(b"GET /path HTTP/1.0\r\n\r\n").await.unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_eq!(r.status, 400, "{r:?}");
    assert!(!r.chunked, "{r:?}");
    tokio::time::sleep(SETTLE).await;
    assert!(mesh.a.received().is_empty() && mesh.b.received().is_empty());
    assert_proxy_alive(&mesh).await;
}

/// The proxy still answers after an odd request.
async fn assert_proxy_alive(mesh: &Mesh) {
    let live = mesh.proxy.admin_get("/live").await;
    assert!(
        live.is_ok_and(|r| r.status == 200),
        "the proxy no longer answers /live"
    );
    let mut c = mesh.client().await;
    c.send(b"GET /alive HTTP/1.1\r\nHost: svc-a\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.read_response(T).await.unwrap().status, 200);
}

#[tokio::test]
async fn http11_without_a_single_host_is_refused() {
    let variants: [&[u8]; 3] = [
        b"GET /path HTTP/1.1\r\n\r\n",
        b"GET /path HTTP/1.1\r\nX-Other: 1\r\n\r\n",
        b"GET /path HTTP/1.1\r\nHost: svc-a\r\nHost: svc-b\r\n\r\n",
    ];
    for default_route in [false, true] {
        let opts = Opts {
            default_route,
            ..Opts::default()
        };
        let mesh = Mesh::tagged(opts).await;
        for bytes in variants {
            let name = format!(
                "{:?} (default route: {default_route})",
                String::from_utf8_lossy(bytes)
            );
            let mut c = mesh.client().await;
            c.send(bytes).await.unwrap();
            let r = c.read_response(T).await.unwrap();
            assert_eq!(r.status, 400, "{name}: {r:?}");
            assert!(r.closes(), "{name}: no Connection: close: {r:?}");
            assert!(c.closed_within(T).await, "{name}: connection left open");
        }
        tokio::time::sleep(SETTLE).await;
        assert!(
            mesh.a.received().is_empty() && mesh.b.received().is_empty(),
            "a request without a single Host reached an upstream"
        );
    }
}

fn put_head(expect: bool) -> String {
    let expect = if expect {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    format!("PUT /up HTTP/1.1\r\nHost: svc-a\r\nContent-Length: {MIB}\r\n{expect}\r\n")
}

fn mib_body() -> Vec<u8> {
    (0..MIB).map(|i| b'a' + (i % 26) as u8).collect()
}

/// Reads responses until a final one; returns it and whether a `100`
/// came first.
async fn final_response(c: &mut RawClient, timeout: Duration) -> (RawResponse, bool) {
    let deadline = Instant::now() + timeout;
    let mut continued = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = c
            .read_response(left)
            .await
            .unwrap_or_else(|e| panic!("no final response: {e}"));
        if r.status == 100 {
            continued = true;
            continue;
        }
        return (r, continued);
    }
}

fn created() -> String {
    status_line(201, "Content-Length: 0\r\n")
}

#[tokio::test]
async fn expect_continue_with_an_upstream_that_sends_100() {
    let up = RawUpstream::start(|_| {
        RawReply::new()
            .send(status_line(100, ""))
            .read_body()
            .send(created())
    })
    .await;
    let mesh = Mesh::start(up, tagged("b").await, Opts::default()).await;
    let mut c = mesh.client().await;
    c.send(put_head(true).as_bytes()).await.unwrap();
    let first = c.read_response(Duration::from_secs(1)).await;
    let first = first.unwrap_or_else(|e| panic!("no 100 Continue within 1 s: {e}"));
    assert_eq!(first.status, 100, "{first:?}");
    c.send(&mib_body()).await.unwrap();
    let (r, _) = final_response(&mut c, T).await;
    assert_eq!(r.status, 201, "{r:?}");
    let seen = mesh.a.wait_for_requests(1, T).await;
    assert_eq!(
        seen[0].body.len(),
        MIB,
        "the upstream must get exactly 1 MiB"
    );
    assert_eq!(seen.len(), 1, "{seen:?}");
}

#[tokio::test]
async fn expect_continue_with_an_upstream_that_refuses() {
    // The first request gets 417 before its body is read; the upstream
    // then reads and drops whatever body follows, as RFC 9110 §10.1.1
    // allows on a connection it keeps. Later requests get 201.
    let up = RawUpstream::start(|req| match req.seq {
        0 => RawReply::new()
            .send(status_line(417, "Content-Length: 0\r\n"))
            .read_body(),
        _ => RawReply::respond(created()),
    })
    .await;
    let mesh = Mesh::start(up, tagged("b").await, Opts::default()).await;
    let mut c = mesh.client().await;
    let sent = Instant::now();
    c.send(put_head(true).as_bytes()).await.unwrap();
    let (r, continued) = final_response(&mut c, Duration::from_secs(2)).await;
    let lag = sent.elapsed();
    assert_eq!(r.status, 417, "{r:?}");
    assert!(
        lag < Duration::from_millis(200),
        "the 417 took {lag:?}; it must not wait for the body"
    );

    // The client's body was announced; on a connection the proxy keeps,
    // it goes out before the repeated request.
    let open = !r.closes() && !c.closed_within(Duration::from_millis(300)).await;
    if open {
        tokio::time::timeout(T, c.send(&mib_body()))
            .await
            .expect("the proxy stopped reading the announced body")
            .unwrap();
    } else {
        c = mesh.client().await;
    }
    let mut repeat = put_head(false).into_bytes();
    repeat.extend_from_slice(&mib_body());
    c.send(&repeat).await.unwrap();
    let r = c.read_response(T).await.unwrap_or_else(|e| {
        panic!(
            "the repeated request (same connection: {open}, 100 seen: \
             {continued}) got no response: {e}; upstream connections: {}",
            mesh.a.connection_count()
        )
    });
    assert_eq!(r.status, 201, "{r:?}");

    tokio::time::sleep(SETTLE).await;
    let seen = mesh.a.requests();
    let odd: Vec<(&str, &str)> = seen
        .iter()
        .filter(|r| r.method != "PUT" || r.target != "/up")
        .map(|r| (r.method.as_str(), r.target.as_str()))
        .collect();
    assert!(
        odd.is_empty(),
        "body bytes were parsed as requests upstream: {odd:?}"
    );
    let last = seen.last().expect("the upstream saw the repeat");
    assert_eq!(last.body.len(), MIB, "the repeat's body upstream");
}

#[tokio::test]
async fn expect_continue_with_an_upstream_that_waits_for_the_body() {
    let up = RawUpstream::start(|_| RawReply::respond(created())).await;
    let mesh = Mesh::start(up, tagged("b").await, Opts::default()).await;
    let mut c = mesh.client().await;
    let sent = Instant::now();
    c.send(put_head(true).as_bytes()).await.unwrap();
    let first = c.read_response(Duration::from_millis(1200)).await;
    let first = first.unwrap_or_else(|e| {
        panic!(
            "neither a 100 nor a final response within 1.2 s ({e}): the \
             proxy waits for the upstream's 100, which waits for the body"
        )
    });
    assert_eq!(first.status, 100, "{first:?} after {:?}", sent.elapsed());
    c.send(&mib_body()).await.unwrap();
    let (r, _) = final_response(&mut c, T).await;
    assert_eq!(r.status, 201, "{r:?}");
    let seen = mesh.a.wait_for_requests(1, T).await;
    assert_eq!(seen[0].body.len(), MIB);
}

/// A `POST` head declaring `len` body bytes.
fn post_head(len: usize, extra: &str) -> String {
    format!("POST /big HTTP/1.1\r\nHost: svc-a\r\nContent-Length: {len}\r\n{extra}\r\n")
}

fn limited() -> Opts {
    Opts {
        max_body: 1024,
        ..Opts::default()
    }
}

fn assert_too_large(name: &str, r: &RawResponse) {
    assert_eq!(r.status, 413, "{name}: {r:?}");
    assert_eq!(r.header("vakt-error"), Some("body-too-large"), "{name}");
}

#[tokio::test]
async fn declared_bodies_over_the_limit_get_413_and_reach_nobody() {
    let mesh = Mesh::tagged(limited()).await;
    let body = vec![b'x'; 2048];

    // The whole request in one write.
    let mut c = mesh.client().await;
    let mut bytes = post_head(2048, "").into_bytes();
    bytes.extend_from_slice(&body);
    c.send(&bytes).await.unwrap();
    assert_too_large("head and body", &c.read_response(T).await.unwrap());

    // The head alone: the answer must not wait for the body.
    let mut c = mesh.client().await;
    c.send(post_head(2048, "").as_bytes()).await.unwrap();
    let r = c.read_response(Duration::from_secs(1)).await;
    assert_too_large("head only", &r.expect("413 without waiting for the body"));

    // With Expect, the 413 comes instead of a 100.
    let mut c = mesh.client().await;
    c.send(post_head(2048, "Expect: 100-continue\r\n").as_bytes())
        .await
        .unwrap();
    let r = c.read_response(Duration::from_secs(1)).await.unwrap();
    assert_too_large("expect 100-continue", &r);

    // Over h2c.
    let mut h2 = HttpClient::h2c(mesh.proxy.listener()).await.unwrap();
    let req = Request::post("http://svc-a/big")
        .header("content-length", "2048")
        .body(full(Bytes::from(body)))
        .unwrap();
    let r = tokio::time::timeout(T, h2.send(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.status, 413, "h2c");
    assert_eq!(r.header("vakt-error"), Some("body-too-large"), "h2c");

    tokio::time::sleep(SETTLE).await;
    assert!(
        mesh.a.received().is_empty(),
        "the upstream received {} bytes of refused requests",
        mesh.a.received().len()
    );
}

#[tokio::test]
async fn bodies_at_the_limit_pass_and_streamed_ones_over_it_stop() {
    let mesh = Mesh::tagged(limited()).await;

    let mut c = mesh.client().await;
    let mut bytes = post_head(1024, "").into_bytes();
    bytes.extend_from_slice(&[b'y'; 1024]);
    c.send(&bytes).await.unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_eq!((r.status, r.body_text().as_str()), (200, "a /big"), "{r:?}");
    let seen = mesh.a.wait_for_requests(1, T).await;
    assert_eq!(seen[0].body.len(), 1024, "a body at the limit passes whole");

    // Chunked, so the size is only known once 1 KiB has passed.
    let mut c = mesh.client().await;
    let mut bytes =
        b"POST /chunked HTTP/1.1\r\nHost: svc-a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        bytes.extend_from_slice(b"200\r\n");
        bytes.extend_from_slice(&[b'z'; 512]);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    c.send(&bytes).await.unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_too_large("chunked 2 KiB", &r);
    tokio::time::sleep(SETTLE).await;
    let over: Vec<usize> = mesh
        .a
        .requests()
        .iter()
        .filter(|r| r.target == "/chunked")
        .map(|r| r.body.len())
        .filter(|&n| n > 0)
        .collect();
    assert!(
        over.is_empty(),
        "the upstream read a complete body of {over:?} bytes past the limit"
    );
}
