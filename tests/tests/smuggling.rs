//! Request smuggling through the real `vakt-proxy` (cases BR-01 and BR-03,
//! duplicate or invalid lengths, pipelining).
//!
//! A raw client writes exact bytes to the proxy; a raw upstream records
//! every byte the proxy sends it and, like a naive server, never reads a
//! body, so anything the proxy forwards past a request head shows up as a
//! request of its own. Ambiguous or malformed framing must get `400` with
//! `Connection: close`, then EOF, and the upstream must receive nothing.

use std::time::Duration;

use vakt_tests::client::{RawClient, RawResponse};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::raw::RawRequest;
use vakt_tests::upstream::{RawReply, RawUpstream};

/// Read timeout for one response.
const T: Duration = Duration::from_secs(5);
/// How long a refused connection may take to close after the response.
const CLOSE_WITHIN: Duration = Duration::from_secs(2);
/// How long stray bytes may take to reach the upstream after the client
/// has its answer.
const SETTLE: Duration = Duration::from_millis(200);

const CONFIG: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: route-a
    hostnames: [svc-a]
    rules:
      - backendRefs: [{name: backend-a}]
backends:
  - name: backend-a
    endpoints: ["@upstream"]
"#;

/// A proxy routing `svc-a` to one raw upstream.
struct Fixture {
    up: RawUpstream,
    proxy: Proxy,
}

impl Fixture {
    /// The upstream answers each request `200` with its target as body.
    /// With `read_bodies` false it never reads a body (a naive server).
    async fn start(read_bodies: bool) -> Self {
        let up = RawUpstream::start(move |req| {
            let ok = RawReply::ok(&req.target);
            if read_bodies {
                ok
            } else {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}",
                    req.target.len(),
                    req.target
                );
                RawReply::new().send(head)
            }
        })
        .await;
        let config = CONFIG.replace("@upstream", &up.addr().to_string());
        let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
        Self { up, proxy }
    }

    /// Sends `bytes` on a new connection and describes every way the
    /// answer differs from a refusal: `400` with `Connection: close`, EOF
    /// after it, and no byte upstream.
    async fn refusal_problems(&self, bytes: &[u8]) -> Vec<String> {
        let before = self.up.received().len();
        let mut problems = Vec::new();
        let mut c = RawClient::connect(self.proxy.listener()).await.unwrap();
        c.send(bytes).await.unwrap();
        match c.read_response(T).await {
            Ok(r) => problems.extend(refusal_response_problems(&r)),
            Err(e) => problems.push(format!("no response: {e}")),
        }
        if !c.closed_within(CLOSE_WITHIN).await {
            problems.push(format!(
                "connection still open {CLOSE_WITHIN:?} after the response"
            ));
        }
        tokio::time::sleep(SETTLE).await;
        let received = self.up.received();
        let sent = &received[before.min(received.len())..];
        if !sent.is_empty() {
            problems.push(format!(
                "upstream received {} bytes{}: {:?}",
                sent.len(),
                if contains(sent, b"GET /admin") {
                    " including the smuggled `GET /admin`"
                } else {
                    ""
                },
                String::from_utf8_lossy(&sent[..sent.len().min(300)])
            ));
        }
        problems
    }
}

fn refusal_response_problems(r: &RawResponse) -> Vec<String> {
    let mut problems = Vec::new();
    if r.status != 400 {
        problems.push(format!("status {} instead of 400", r.status));
    }
    if !r.closes() {
        problems.push("response lacks `Connection: close`".to_owned());
    }
    problems
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Runs every `(name, bytes)` variant on its own connection and fails
/// with the list of variants the proxy did not refuse properly.
async fn assert_all_refused(f: &Fixture, case: &str, variants: &[(&str, Vec<u8>)]) {
    let mut report = Vec::new();
    for (name, bytes) in variants {
        let problems = f.refusal_problems(bytes).await;
        if !problems.is_empty() {
            report.push(format!("  {name}: {}", problems.join("; ")));
        }
    }
    assert!(
        report.is_empty(),
        "{case}: the proxy must answer 400 + Connection: close, close the \
         connection and forward nothing, but:\n{}",
        report.join("\n")
    );
}

/// The smuggled request of BR-01, chunk-framed: 0x24 bytes.
const SMUGGLED_CHUNKS: &str = "24\r\nGET /admin HTTP/1.1\r\nHost: svc-a\r\n\r\n\r\n0\r\n\r\n";

fn post(version: &str, fields: &[&str], body: &str) -> Vec<u8> {
    let mut s = format!("POST /api {version}\r\nHost: svc-a\r\n");
    for f in fields {
        s.push_str(f);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.push_str(body);
    s.into_bytes()
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_refused() {
    let f = Fixture::start(false).await;
    let cl = "Content-Length: 4";
    let te = "Transfer-Encoding: chunked";
    let body = SMUGGLED_CHUNKS;
    let variants = [
        ("CL before TE", post("HTTP/1.1", &[cl, te], body)),
        ("TE before CL", post("HTTP/1.1", &[te, cl], body)),
        ("TE chunked twice", post("HTTP/1.1", &[cl, te, te], body)),
        (
            "TE `gzip, chunked`",
            post("HTTP/1.1", &[cl, "Transfer-Encoding: gzip, chunked"], body),
        ),
        ("HTTP/1.0", post("HTTP/1.0", &[cl, te], body)),
        (
            "lowercase names, TE first",
            post(
                "HTTP/1.1",
                &["transfer-encoding: chunked", "content-length: 4"],
                body,
            ),
        ),
    ];
    assert_all_refused(&f, "BR-01 CL+TE", &variants).await;
    let admin: Vec<RawRequest> =
        f.up.requests()
            .into_iter()
            .filter(|r| r.target == "/admin")
            .collect();
    assert!(admin.is_empty(), "BR-01: /admin reached the upstream");
}

#[tokio::test]
async fn repeated_or_unsupported_transfer_encoding_is_refused() {
    let f = Fixture::start(false).await;
    let chunks = "5\r\nhello\r\n0\r\n\r\n";
    let variants = [
        (
            "chunked twice, no CL",
            post(
                "HTTP/1.1",
                &["Transfer-Encoding: chunked", "Transfer-Encoding: chunked"],
                chunks,
            ),
        ),
        (
            "`gzip, chunked`, no CL",
            post("HTTP/1.1", &["Transfer-Encoding: gzip, chunked"], chunks),
        ),
        (
            "`chunked, identity`",
            post(
                "HTTP/1.1",
                &["Transfer-Encoding: chunked, identity"],
                chunks,
            ),
        ),
        (
            "HTTP/1.0 chunked, no CL",
            post("HTTP/1.0", &["Transfer-Encoding: chunked"], chunks),
        ),
    ];
    assert_all_refused(&f, "BR-01 TE variants", &variants).await;
}

#[tokio::test]
async fn duplicate_or_invalid_content_length_is_refused() {
    let f = Fixture::start(false).await;
    let body = "hello";
    let variants = [
        (
            "CL 5 twice",
            post(
                "HTTP/1.1",
                &["Content-Length: 5", "Content-Length: 5"],
                body,
            ),
        ),
        (
            "CL 5 then 6",
            post(
                "HTTP/1.1",
                &["Content-Length: 5", "Content-Length: 6"],
                body,
            ),
        ),
        (
            "CL `5, 5`",
            post("HTTP/1.1", &["Content-Length: 5, 5"], body),
        ),
        ("CL `+5`", post("HTTP/1.1", &["Content-Length: +5"], body)),
        ("CL `-1`", post("HTTP/1.1", &["Content-Length: -1"], body)),
        ("CL `0x5`", post("HTTP/1.1", &["Content-Length: 0x5"], body)),
        ("CL `5a`", post("HTTP/1.1", &["Content-Length: 5a"], body)),
        ("CL empty", post("HTTP/1.1", &["Content-Length:"], body)),
        (
            "CL beyond u64",
            post(
                "HTTP/1.1",
                &["Content-Length: 99999999999999999999999"],
                body,
            ),
        ),
    ];
    assert_all_refused(&f, "invalid Content-Length", &variants).await;
}

/// Every bare LF (0x0A not after 0x0D) in `bytes`, as offsets.
fn bare_lfs(bytes: &[u8]) -> Vec<usize> {
    let at = |i: usize| i == 0 || bytes[i - 1] != b'\r';
    (0..bytes.len())
        .filter(|&i| bytes[i] == b'\n' && at(i))
        .collect()
}

/// Whether a line of `head` starts with `transfer-encoding:`, in any case.
fn has_te_line(head: &[u8]) -> bool {
    head.split(|&b| b == b'\n')
        .any(|line| line.len() >= 18 && line[..18].eq_ignore_ascii_case(b"transfer-encoding:"))
}

/// BR-03's invariant, whatever the policy: no header section the
/// upstream parsed holds a bare LF or a `Transfer-Encoding` line.
fn header_section_problems(requests: &[RawRequest]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in requests {
        let text = String::from_utf8_lossy(&r.head);
        if !bare_lfs(&r.head).is_empty() {
            problems.push(format!("upstream head with a bare LF: {text:?}"));
        }
        if has_te_line(&r.head) {
            problems.push(format!(
                "upstream head with a Transfer-Encoding line: {text:?}"
            ));
        }
    }
    problems
}

#[tokio::test]
async fn bare_lf_line_endings_are_refused() {
    let f = Fixture::start(false).await;
    let variants = [
        (
            "A: bare LF hides TE",
            b"POST /api HTTP/1.1\r\nHost: svc-a\r\nX-Note: x\nTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "bare LF between plain fields",
            b"GET /api HTTP/1.1\r\nHost: svc-a\r\nX-Note: x\nX-Other: y\r\n\r\n".to_vec(),
        ),
        (
            "bare LF after the request line",
            b"GET /api HTTP/1.1\nHost: svc-a\r\n\r\n".to_vec(),
        ),
        (
            "bare LF ends the head",
            b"GET /api HTTP/1.1\r\nHost: svc-a\r\n\n".to_vec(),
        ),
        (
            "bare LF only",
            b"GET /api HTTP/1.1\nHost: svc-a\nX-Note: x\n\n".to_vec(),
        ),
    ];
    let mut report = Vec::new();
    for (name, bytes) in &variants {
        let problems = f.refusal_problems(bytes).await;
        if !problems.is_empty() {
            report.push(format!("  {name}: {}", problems.join("; ")));
        }
    }
    let invariant = header_section_problems(&f.up.requests());
    assert!(
        invariant.is_empty() && report.is_empty(),
        "BR-03 bare LF: want 400 + close and nothing upstream.\n\
         Invariant broken (bare LF or TE line upstream): {invariant:#?}\n\
         Per variant:\n{}",
        report.join("\n")
    );
}

#[tokio::test]
async fn obs_fold_is_refused() {
    let f = Fixture::start(false).await;
    let variants = [
        (
            "B: SP fold hides TE",
            b"POST /api HTTP/1.1\r\nHost: svc-a\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "HTAB fold hides TE",
            b"POST /api HTTP/1.1\r\nHost: svc-a\r\nX-Pad: a\r\n\tTransfer-Encoding: chunked\r\n\
              Content-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "fold hides CL",
            b"POST /api HTTP/1.1\r\nHost: svc-a\r\nX-Pad: a\r\n Content-Length: 5\r\n\r\nhello"
                .to_vec(),
        ),
        (
            "fold of a plain value",
            b"GET /api HTTP/1.1\r\nHost: svc-a\r\nX-Long: one\r\n two\r\n\r\n".to_vec(),
        ),
        (
            "first field line folded",
            b"GET /api HTTP/1.1\r\n X-Lead: a\r\nHost: svc-a\r\n\r\n".to_vec(),
        ),
    ];
    let mut report = Vec::new();
    for (name, bytes) in &variants {
        let problems = f.refusal_problems(bytes).await;
        if !problems.is_empty() {
            report.push(format!("  {name}: {}", problems.join("; ")));
        }
    }
    let invariant = header_section_problems(&f.up.requests());
    assert!(
        invariant.is_empty() && report.is_empty(),
        "BR-03 obs-fold: want 400 + close and nothing upstream.\n\
         Invariant broken (bare LF or TE line upstream): {invariant:#?}\n\
         Per variant:\n{}",
        report.join("\n")
    );
}

/// Writes `bytes` in one go and reads `targets.len()` responses; each must
/// be `200` with the target it answers as body, in order, and the
/// upstream must have parsed exactly those requests with these bodies.
async fn assert_pipelined(f: &Fixture, name: &str, bytes: &[u8], expect: &[(&str, &[u8])]) {
    let before = f.up.requests().len();
    let mut c = RawClient::connect(f.proxy.listener()).await.unwrap();
    c.send(bytes).await.unwrap();
    for (i, (target, _)) in expect.iter().enumerate() {
        let r = c
            .read_response(T)
            .await
            .unwrap_or_else(|e| panic!("{name}: response {i} missing: {e}"));
        assert_eq!(
            (r.status, r.body_text().as_str()),
            (200, *target),
            "{name}: response {i} is out of order or wrong: {r:?}"
        );
    }
    tokio::time::sleep(SETTLE).await;
    let seen: Vec<RawRequest> = f.up.requests().into_iter().skip(before).collect();
    let got: Vec<(&str, &str, &[u8])> = seen
        .iter()
        .map(|r| (r.method.as_str(), r.target.as_str(), r.body.as_slice()))
        .collect();
    let targets: Vec<&str> = got.iter().map(|g| g.1).collect();
    let want: Vec<&str> = expect.iter().map(|e| e.0).collect();
    assert_eq!(
        targets, want,
        "{name}: the upstream must see exactly these requests, in order: {got:?}"
    );
    for ((target, body), r) in expect.iter().zip(&seen) {
        assert_eq!(
            r.body.as_slice(),
            *body,
            "{name}: body of {target} as the upstream read it"
        );
    }
}

#[tokio::test]
async fn pipelined_requests_are_parsed_and_answered_in_order() {
    let f = Fixture::start(true).await;
    let get = |t: &str| format!("GET {t} HTTP/1.1\r\nHost: svc-a\r\n\r\n");

    let two_gets = format!("{}{}", get("/one"), get("/two"));
    assert_pipelined(
        &f,
        "two GETs",
        two_gets.as_bytes(),
        &[("/one", b""), ("/two", b"")],
    )
    .await;

    let sized = format!(
        "POST /one HTTP/1.1\r\nHost: svc-a\r\nContent-Length: 5\r\n\r\nhello{}",
        get("/two")
    );
    assert_pipelined(
        &f,
        "POST with Content-Length, then GET",
        sized.as_bytes(),
        &[("/one", b"hello"), ("/two", b"")],
    )
    .await;

    let chunked = format!(
        "POST /one HTTP/1.1\r\nHost: svc-a\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\n0\r\n\r\n{}",
        get("/two")
    );
    assert_pipelined(
        &f,
        "chunked POST, then GET",
        chunked.as_bytes(),
        &[("/one", b"hello"), ("/two", b"")],
    )
    .await;

    // A body that looks like a request stays a body.
    let inner = "GET /admin HTTP/1.1\r\nHost: svc-a\r\n\r\n";
    let disguised = format!(
        "POST /one HTTP/1.1\r\nHost: svc-a\r\nContent-Length: {}\r\n\r\n{inner}{}{}",
        inner.len(),
        get("/two"),
        get("/three")
    );
    assert_pipelined(
        &f,
        "POST whose body is a request, then two GETs",
        disguised.as_bytes(),
        &[("/one", inner.as_bytes()), ("/two", b""), ("/three", b"")],
    )
    .await;
}

#[tokio::test]
async fn a_refused_request_ends_the_pipeline() {
    // The second request follows an ambiguous one in the same write: after
    // the 400 nothing more on the connection may be read as a request.
    let f = Fixture::start(false).await;
    let mut bytes = post(
        "HTTP/1.1",
        &["Content-Length: 5", "Content-Length: 6"],
        "hello",
    );
    bytes.extend_from_slice(b"GET /after HTTP/1.1\r\nHost: svc-a\r\n\r\n");
    let mut c = RawClient::connect(f.proxy.listener()).await.unwrap();
    c.send(&bytes).await.unwrap();
    let r = c.read_response(T).await.unwrap();
    let problems = refusal_response_problems(&r);
    assert!(problems.is_empty(), "{problems:?}: {r:?}");
    let (rest, closed) = c.read_to_end(CLOSE_WITHIN).await;
    assert!(closed, "the connection stays open after a 400");
    assert!(
        rest.is_empty(),
        "a second response followed the 400: {:?}",
        String::from_utf8_lossy(&rest)
    );
    tokio::time::sleep(SETTLE).await;
    assert!(
        f.up.received().is_empty(),
        "upstream received {:?}",
        String::from_utf8_lossy(&f.up.received())
    );
}

#[tokio::test]
async fn refusals_say_the_proxy_made_them() {
    // The contract: every response the proxy makes itself carries
    // `vakt-error`, including 400s for requests its parser refused.
    let f = Fixture::start(false).await;
    let variants = [
        (
            "CL+TE",
            post(
                "HTTP/1.1",
                &["Content-Length: 4", "Transfer-Encoding: chunked"],
                SMUGGLED_CHUNKS,
            ),
        ),
        (
            "CL 5 then 6",
            post(
                "HTTP/1.1",
                &["Content-Length: 5", "Content-Length: 6"],
                "hello",
            ),
        ),
        (
            "CL `+5`",
            post("HTTP/1.1", &["Content-Length: +5"], "hello"),
        ),
        (
            "obs-fold",
            b"GET /api HTTP/1.1\r\nHost: svc-a\r\nX-Long: one\r\n two\r\n\r\n".to_vec(),
        ),
        (
            "TE in HTTP/1.0",
            post("HTTP/1.0", &["Transfer-Encoding: chunked"], "0\r\n\r\n"),
        ),
        (
            "`gzip, chunked`",
            post(
                "HTTP/1.1",
                &["Transfer-Encoding: gzip, chunked"],
                "0\r\n\r\n",
            ),
        ),
        ("no Host", b"GET /api HTTP/1.1\r\n\r\n".to_vec()),
    ];
    let mut report = Vec::new();
    for (name, bytes) in &variants {
        let mut c = RawClient::connect(f.proxy.listener()).await.unwrap();
        c.send(bytes).await.unwrap();
        match c.read_response(T).await {
            Ok(r) if r.status == 400 && r.header("vakt-error") == Some("bad-request") => {}
            Ok(r) => report.push(format!(
                "  {name}: status {}, vakt-error {:?}",
                r.status,
                r.header("vakt-error")
            )),
            Err(e) => report.push(format!("  {name}: no response: {e}")),
        }
    }
    assert!(
        report.is_empty(),
        "400s the proxy makes must carry `vakt-error: bad-request`:\n{}",
        report.join("\n")
    );
}
