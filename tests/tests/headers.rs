//! Header handling through the real `vakt-proxy`: hop-by-hop fields and
//! those named in `Connection` never cross it in either direction (BR-04
//! with its abuse variants), `x-forwarded-for` is replaced or appended to
//! by listener trust, `x-forwarded-proto` is set, and `x-request-id` is
//! kept or generated and logged.

use std::time::Duration;

use http::Request;
use serde_json::Value;
use vakt_tests::body::empty;
use vakt_tests::client::{HttpClient, RawClient, RawResponse};
use vakt_tests::example::{Echoed, ExampleConfig};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::raw::RawRequest;
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

const T: Duration = Duration::from_secs(10);

/// Listener `plain` trusts nobody; `trusting` trusts loopback peers.
const CONFIG: &str = r#"
listeners:
  - name: plain
    address: "${plain}"
  - name: trusting
    address: "${trusting}"
    trustedProxies: [127.0.0.0/8]
routes:
  - name: all
    rules: [{backendRefs: [{name: up}]}]
backends:
  - {name: up, endpoints: ["${up}"]}
"#;

async fn proxy_to(up: std::net::SocketAddr) -> Proxy {
    let config = CONFIG.replace("${up}", &up.to_string());
    ProxyBuilder::yaml(config)
        .start()
        .await
        .expect("proxy starts")
}

/// What BR-04's upstream answers: a field named in its own `Connection`,
/// and a `Keep-Alive`.
const HOP_REPLY: &str = "HTTP/1.1 200 OK\r\nConnection: X-Int\r\nX-Int: v\r\n\
    Keep-Alive: timeout=9\r\nX-Resp-End: keep\r\nContent-Length: 2\r\n\r\nok";

fn assert_no_hop_fields(req: &RawRequest, what: &str) {
    for name in ["x-hop-secret", "x-other", "keep-alive", "proxy-connection"] {
        assert!(
            req.header(name).is_none(),
            "{what}: upstream got hop-by-hop `{name}`:\n{}",
            String::from_utf8_lossy(&req.head)
        );
    }
    for value in req.header_all("connection") {
        let v = value.to_ascii_lowercase();
        assert!(
            !v.contains("x-hop-secret") && !v.contains("x-other"),
            "{what}: client Connection tokens forwarded: {value}"
        );
    }
    assert_eq!(
        req.header_all("x-end"),
        ["keep"],
        "{what}: X-End must arrive once"
    );
}

fn assert_no_hop_response_fields(resp: &RawResponse, what: &str) {
    assert_eq!(resp.status, 200, "{what}: {}", resp.body_text());
    assert!(
        resp.header("x-int").is_none(),
        "{what}: client got `X-Int`, named in the upstream's Connection"
    );
    assert!(
        resp.header_all("keep-alive")
            .iter()
            .all(|v| !v.contains('9')),
        "{what}: the upstream's Keep-Alive reached the client"
    );
    assert_eq!(resp.header_all("x-resp-end"), ["keep"], "{what}");
    assert_eq!(resp.body_text(), "ok", "{what}");
}

#[tokio::test]
async fn connection_named_and_hop_by_hop_fields_are_stripped_both_ways() {
    let up = RawUpstream::start(|_| RawReply::respond(HOP_REPLY)).await;
    let proxy = proxy_to(up.addr()).await;
    // The case as given, then the same tokens in other spellings: case,
    // spacing, and split over two Connection lines.
    let connections = [
        "Connection: keep-alive, X-Hop-Secret, X-Other\r\n",
        "Connection: x-hop-secret ,X-OTHER,keep-alive\r\n",
        "Connection: keep-alive\r\nConnection: X-Hop-Secret\r\nConnection: x-other\r\n",
    ];
    let mut c = RawClient::connect(proxy.listener()).await.unwrap();
    for (i, conn) in connections.iter().enumerate() {
        let req = format!(
            "GET /h{i} HTTP/1.1\r\nHost: svc-a\r\n{conn}X-Hop-Secret: s3\r\nX-Other: 1\r\n\
             Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\nX-End: keep\r\n\r\n"
        );
        c.send(req.as_bytes()).await.unwrap();
        let resp = c.read_response(T).await.unwrap();
        let what = format!("variant {i} ({})", conn.trim_end());
        assert_no_hop_response_fields(&resp, &what);
        let got = up.wait_for_requests(i + 1, T).await;
        assert_no_hop_fields(&got[i], &what);
    }
}

#[tokio::test]
async fn upstream_connection_fields_never_reach_an_h2c_client() {
    let up = RawUpstream::start(|_| RawReply::respond(HOP_REPLY)).await;
    let proxy = proxy_to(up.addr()).await;
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let r = c.get("svc-a", "/").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.header("x-int").is_none(), "X-Int crossed into HTTP/2");
    assert!(
        r.header("keep-alive").is_none(),
        "Keep-Alive crossed into HTTP/2"
    );
    assert_eq!(r.header("x-resp-end"), Some("keep"));
}

#[tokio::test]
async fn connection_naming_x_forwarded_for_cannot_hide_the_client_address() {
    let up = RawUpstream::start(|_| RawReply::ok("ok")).await;
    let proxy = proxy_to(up.addr()).await;
    for (i, listener) in ["plain", "trusting"].into_iter().enumerate() {
        let mut c = RawClient::connect(proxy.listener_named(listener))
            .await
            .unwrap();
        let req = "GET /xff HTTP/1.1\r\nHost: svc-a\r\nConnection: close, X-Forwarded-For\r\n\
                   X-Forwarded-For: 6.6.6.6\r\n\r\n";
        c.send(req.as_bytes()).await.unwrap();
        let resp = c.read_response(T).await.unwrap();
        assert_eq!(resp.status, 200, "{listener}");
        assert!(c.closed_within(T).await, "{listener}: `close` not honoured");
        let got = up.wait_for_requests(i + 1, T).await;
        assert_eq!(
            got[i].header_all("x-forwarded-for"),
            ["127.0.0.1"],
            "{listener}: the upstream must see only the proxy's own value"
        );
    }
}

#[tokio::test]
async fn connection_naming_content_length_never_forwards_an_unframed_body() {
    let up = RawUpstream::start(|_| RawReply::ok("ok")).await;
    let proxy = proxy_to(up.addr()).await;
    let mut c = RawClient::connect(proxy.listener()).await.unwrap();
    let req = "POST /cl HTTP/1.1\r\nHost: svc-a\r\nConnection: Content-Length\r\n\
               Content-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: svc-a\r\n\r\n";
    c.send(req.as_bytes()).await.unwrap();
    let first = c.read_response(T).await.unwrap();
    if first.status == 400 {
        assert!(
            up.requests().is_empty(),
            "rejected, yet the upstream got bytes"
        );
        return;
    }
    assert_eq!(first.status, 200, "either 400 or a framed forward");
    let second = c.read_response(T).await.unwrap();
    assert_eq!(second.status, 200);
    let got = up.wait_for_requests(2, T).await;
    let lines: Vec<_> = got
        .iter()
        .map(|r| format!("{} {}", r.method, r.target))
        .collect();
    assert_eq!(
        lines,
        ["POST /cl", "GET /next"],
        "the body was parsed as a request"
    );
    let post = &got[0];
    assert_eq!(post.body, b"hello", "the body must arrive, framed");
    let framed = post.header("content-length") == Some("5")
        || post
            .header("transfer-encoding")
            .is_some_and(|te| te.eq_ignore_ascii_case("chunked"));
    assert!(
        framed,
        "POST forwarded without framing:\n{}",
        String::from_utf8_lossy(&post.head)
    );
}

/// The joined `x-forwarded-for` values the upstream saw for one request.
async fn forwarded_for(c: &mut HttpClient, sent: &[&str]) -> (String, Echoed) {
    let mut b = Request::get("/echo").header("host", "svc");
    for v in sent {
        b = b.header("x-forwarded-for", *v);
    }
    let r = c.send(b.body(empty()).unwrap()).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let e: Echoed = r.json().unwrap();
    (e.header_all("x-forwarded-for").join(", "), e)
}

#[tokio::test]
async fn x_forwarded_for_is_replaced_for_untrusted_peers_and_appended_for_trusted() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = proxy_to(up.addr()).await;
    for h2 in [false, true] {
        let connect = |name| {
            let addr = proxy.listener_named(name);
            async move {
                match h2 {
                    false => HttpClient::h1(addr).await.unwrap(),
                    true => HttpClient::h2c(addr).await.unwrap(),
                }
            }
        };
        let proto = if h2 { "h2c" } else { "h1" };
        let mut plain = connect("plain").await;
        let mut trusting = connect("trusting").await;

        let (xff, _) = forwarded_for(&mut plain, &["1.2.3.4"]).await;
        assert_eq!(
            xff, "127.0.0.1",
            "{proto}: untrusted peer's value must be replaced"
        );
        let (xff, _) = forwarded_for(&mut plain, &[]).await;
        assert_eq!(xff, "127.0.0.1", "{proto}");

        let (xff, _) = forwarded_for(&mut trusting, &["1.2.3.4"]).await;
        assert_eq!(xff, "1.2.3.4, 127.0.0.1", "{proto}: trusted peer: append");
        let (xff, _) = forwarded_for(&mut trusting, &["1.1.1.1", "2.2.2.2"]).await;
        assert_eq!(xff, "1.1.1.1, 2.2.2.2, 127.0.0.1", "{proto}");
        let (xff, _) = forwarded_for(&mut trusting, &[]).await;
        assert_eq!(xff, "127.0.0.1", "{proto}");
    }
}

#[tokio::test]
async fn x_forwarded_proto_is_set_by_the_proxy() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = proxy_to(up.addr()).await;
    let mut c = HttpClient::h1(proxy.listener_named("plain")).await.unwrap();
    for sent in [None, Some("https")] {
        let mut b = Request::get("/echo").header("host", "svc");
        if let Some(v) = sent {
            b = b.header("x-forwarded-proto", v);
        }
        let e: Echoed = c
            .send(b.body(empty()).unwrap())
            .await
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            e.header_all("x-forwarded-proto"),
            ["http"],
            "plain listener, untrusted peer sent {sent:?}"
        );
    }
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    let lens: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lens == [8, 4, 4, 4, 12]
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The access-log record of the request to `path`.
async fn log_of(proxy: &Proxy, path: &str) -> Value {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let found = proxy.access_logs().into_iter().find(|l| l["path"] == path);
        if let Some(l) = found {
            return l;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no access-log record for {path}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn x_request_id_is_kept_or_generated_and_logged() {
    let up = Upstream::example(ExampleConfig::named("up")).await;
    let proxy = proxy_to(up.addr()).await;
    let mut ids = Vec::new();
    for h2 in [false, true] {
        let mut c = match h2 {
            false => HttpClient::h1(proxy.listener()).await.unwrap(),
            true => HttpClient::h2c(proxy.listener()).await.unwrap(),
        };
        let kept = format!("/echo?kept={h2}");
        let req = Request::get(kept.as_str())
            .header("host", "svc")
            .header("x-request-id", "client-id-123")
            .body(empty())
            .unwrap();
        let e: Echoed = c.send(req).await.unwrap().json().unwrap();
        assert_eq!(e.header_all("x-request-id"), ["client-id-123"], "h2={h2}");
        let log = log_of(&proxy, &kept).await;
        assert_eq!(log["request_id"], "client-id-123", "h2={h2}: {log}");

        for n in 0..2 {
            let made = format!("/echo?made={h2}-{n}");
            let e: Echoed = c.get("svc", &made).await.unwrap().json().unwrap();
            let got = e.header_all("x-request-id");
            assert_eq!(got.len(), 1, "h2={h2}: one generated id: {got:?}");
            assert!(is_uuid(got[0]), "h2={h2}: not uuid-shaped: {}", got[0]);
            let log = log_of(&proxy, &made).await;
            assert_eq!(
                log["request_id"], got[0],
                "h2={h2}: log and upstream differ"
            );
            ids.push(got[0].to_owned());
        }
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "generated ids repeat: {ids:?}");
}
