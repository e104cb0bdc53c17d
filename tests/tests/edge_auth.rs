//! Authentication at the edge through the real `vakt-proxy`: JWTs signed
//! here with RS256, ES256 and EdDSA against a JWKS file, claims forwarded
//! as headers, 401 with `WWW-Authenticate` for a missing or bad credential,
//! 403 for a valid one lacking a required claim, key files reloaded when
//! they change, and API keys checked against a file of hashes. A request
//! that fails authentication never reaches the upstream.

mod edge_common;

use std::path::Path;
use std::time::Duration;

use edge_common::{Signer, T, jwks, now, write_atomic};
use http::Request;
use serde_json::{Value, json};
use tokio::time::Instant;
use vakt_tests::body::empty;
use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::example::sha256_hex;
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const ISSUER: &str = "https://issuer.edge.test";
const AUDIENCE: &str = "shop-api";

/// Routes: `orders` (JWT, `sub` forwarded as `x-user-id`), `admin` (JWT
/// requiring `scope: admin`), `keys` (API keys), and two rate-limited by
/// identity: `keyed` (API key header) and `per-sub` (JWT subject).
fn config(dir: &Path, upstream: std::net::SocketAddr) -> String {
    let jwks = dir.join("jwks.json");
    let keys = dir.join("keys.txt");
    let jwt = format!(
        r#"
      jwt:
        issuer: "{ISSUER}"
        audiences: ["{AUDIENCE}", "other-api"]
        jwksFile: "{}"
        forwardClaims: {{sub: x-user-id}}"#,
        jwks.display()
    );
    format!(
        r#"
listeners:
  - name: edge
    address: "${{edge}}"
routes:
  - name: orders
    hostnames: [api.edge.test]
    auth:{jwt}
    rules:
      - backendRefs: [{{name: app}}]
  - name: admin
    hostnames: [admin.edge.test]
    auth:{jwt}
        requiredClaims: {{scope: admin}}
    rules:
      - backendRefs: [{{name: app}}]
  - name: keys
    hostnames: [keys.edge.test]
    auth:
      apiKeys:
        keysFile: "{keys}"
    rules:
      - backendRefs: [{{name: app}}]
  - name: keyed
    hostnames: [keyed.edge.test]
    auth:
      apiKeys:
        keysFile: "{keys}"
    rateLimit: {{requestsPerSecond: 0.1, burst: 2, key: "header:x-api-key"}}
    rules:
      - backendRefs: [{{name: app}}]
  - name: per-sub
    hostnames: [sub.edge.test]
    auth:{jwt}
    rateLimit: {{requestsPerSecond: 0.1, burst: 2, key: jwt-sub}}
    rules:
      - backendRefs: [{{name: app}}]
backends:
  - name: app
    endpoints: ["{upstream}"]
"#,
        keys = keys.display()
    )
}

/// A key file line for `key`: its hash and a comment naming no key.
fn key_line(key: &str) -> String {
    format!("{}  # client key\n", sha256_hex(key.as_bytes()))
}

struct Edge {
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    up: Upstream,
    proxy: Proxy,
}

/// A proxy whose JWKS holds `signers` and whose key file holds `keys`.
async fn edge(signers: &[&Signer], keys: &[&str]) -> Edge {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    std::fs::write(dir.join("jwks.json"), jwks(signers)).unwrap();
    let lines: String = keys.iter().map(|k| key_line(k)).collect();
    std::fs::write(dir.join("keys.txt"), format!("# api keys\n{lines}")).unwrap();
    let up = Upstream::named("app").await;
    let proxy = ProxyBuilder::yaml(config(&dir, up.addr()))
        .start()
        .await
        .expect("proxy starts");
    Edge {
        _dir: tmp,
        dir,
        up,
        proxy,
    }
}

/// Claims valid now for `sub`.
fn claims(sub: &str) -> Value {
    let t = now();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub,
        "iat": t, "nbf": t, "exp": t + 300,
    })
}

/// Claims valid now with `key` set to `value` (or removed when null).
fn claims_with(sub: &str, key: &str, value: Value) -> Value {
    let mut c = claims(sub);
    if value.is_null() {
        c.as_object_mut().unwrap().remove(key);
    } else {
        c[key] = value;
    }
    c
}

async fn call(proxy: &Proxy, host: &str, headers: &[(&str, &str)]) -> Collected {
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let mut req = Request::get("/orders").header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    tokio::time::timeout(T, c.send(req.body(empty()).unwrap()))
        .await
        .expect("answer in time")
        .unwrap()
}

async fn bearer(proxy: &Proxy, host: &str, token: &str) -> Collected {
    let value = format!("Bearer {token}");
    call(proxy, host, &[("authorization", &value)]).await
}

fn auth_count(m: &vakt_tests::client::Metrics, route: &str, result: &str) -> f64 {
    m.sum("vakt_auth_total", &[("route", route), ("result", result)])
}

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_pass_and_sub_replaces_a_client_x_user_id() {
    let (rs, es, ed) = (
        Signer::rs256("rsa-1"),
        Signer::es256("ec-1"),
        Signer::eddsa("ed-1"),
    );
    let e = edge(&[&rs, &es, &ed], &[]).await;

    for (signer, sub) in [(&rs, "user-rs"), (&es, "user-es"), (&ed, "user-ed")] {
        let token = signer.sign(&claims(sub));
        let value = format!("Bearer {token}");
        let headers = [("authorization", value.as_str()), ("x-user-id", "admin")];
        let r = call(&e.proxy, "api.edge.test", &headers).await;
        assert_eq!(r.status, 200, "{sub}: {} {:?}", r.text(), r.headers);
        let got = e.up.requests().last().cloned().expect("forwarded");
        assert_eq!(
            got.header_all("x-user-id"),
            [sub],
            "x-user-id must be the token's sub, the client's value removed"
        );
    }
    // The second audience is accepted too.
    let other = claims_with("user-aud2", "aud", json!("other-api"));
    let r = bearer(&e.proxy, "api.edge.test", &es.sign(&other)).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.up.request_count(), 4);

    let m = e.proxy.metrics().await.unwrap();
    assert_eq!(auth_count(&m, "orders", "allowed"), 4.0, "vakt_auth_total");
}

#[tokio::test]
async fn small_clock_skew_is_allowed_by_the_leeway() {
    let es = Signer::es256("ec-1");
    let e = edge(&[&es], &[]).await;
    let t = now();
    let just_expired = claims_with("skew-exp", "exp", json!(t - 5));
    let r = bearer(&e.proxy, "api.edge.test", &es.sign(&just_expired)).await;
    assert_eq!(r.status, 200, "exp 5 s ago is inside the 30 s leeway");
    let almost_valid = claims_with("skew-nbf", "nbf", json!(t + 5));
    let r = bearer(&e.proxy, "api.edge.test", &es.sign(&almost_valid)).await;
    assert_eq!(r.status, 200, "nbf in 5 s is inside the 30 s leeway");
    assert_eq!(e.up.request_count(), 2);
}

#[tokio::test]
async fn bad_tokens_get_401_with_a_challenge_and_never_reach_the_upstream() {
    let (rs, es) = (Signer::rs256("rsa-1"), Signer::es256("ec-1"));
    let stranger = Signer::es256("ec-1");
    let e = edge(&[&rs, &es], &[]).await;
    let t = now();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            rs.sign(&claims_with("u", "exp", json!(t - 120))),
            "expired",
        ),
        (
            "not yet valid",
            es.sign(&claims_with("u", "nbf", json!(t + 120))),
            "not-yet-valid",
        ),
        (
            "no exp",
            es.sign(&claims_with("u", "exp", Value::Null)),
            "invalid",
        ),
        (
            "wrong issuer",
            es.sign(&claims_with("u", "iss", json!("https://evil.test"))),
            "wrong-issuer",
        ),
        (
            "wrong audience",
            rs.sign(&claims_with("u", "aud", json!("billing-api"))),
            "wrong-audience",
        ),
        (
            "signed by another key with a known kid",
            stranger.sign(&claims("u")),
            "invalid",
        ),
        (
            "unknown kid",
            es.sign_as("ec-404", &claims("u")),
            "unknown-key",
        ),
        ("garbage", "not.a.token".to_string(), "invalid"),
    ];
    for (what, token, _) in &cases {
        let r = bearer(&e.proxy, "api.edge.test", token).await;
        assert_eq!(r.status, 401, "{what}: {}", r.text());
        assert_eq!(r.header("vakt-error"), Some("unauthenticated"), "{what}");
        let challenge = r.header("www-authenticate").unwrap_or("");
        assert!(
            challenge.starts_with("Bearer"),
            "{what}: WWW-Authenticate {challenge:?}"
        );
    }
    let r = call(&e.proxy, "api.edge.test", &[]).await;
    assert_eq!(r.status, 401, "no credential");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    assert_eq!(
        e.up.request_count(),
        0,
        "a request that failed authentication reached the upstream"
    );
    let m = e.proxy.metrics().await.unwrap();
    assert_eq!(auth_count(&m, "orders", "missing"), 1.0);
    for result in ["expired", "not-yet-valid", "wrong-issuer", "wrong-audience"] {
        assert_eq!(auth_count(&m, "orders", result), 1.0, "result {result}");
    }
    let refused: usize = cases.len() + 1;
    assert_eq!(
        m.sum("vakt_auth_total", &[("route", "orders")]),
        refused as f64,
        "every refused request is counted once"
    );
}

#[tokio::test]
async fn a_valid_token_without_a_required_claim_gets_403() {
    let ed = Signer::eddsa("ed-1");
    let e = edge(&[&ed], &[]).await;

    let plain = ed.sign(&claims("user-1"));
    let r = bearer(&e.proxy, "admin.edge.test", &plain).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.header("vakt-error"), Some("forbidden"));
    let reader = ed.sign(&claims_with("user-2", "scope", json!("orders:read")));
    let r = bearer(&e.proxy, "admin.edge.test", &reader).await;
    assert_eq!(r.status, 403, "scope without admin");
    assert_eq!(e.up.request_count(), 0, "a 403 reached the upstream");

    let admin = ed.sign(&claims_with("user-3", "scope", json!("orders:read admin")));
    let r = bearer(&e.proxy, "admin.edge.test", &admin).await;
    assert_eq!(r.status, 200, "{}", r.text());
    // The same token without the claim still passes where none is needed.
    let r = bearer(&e.proxy, "api.edge.test", &plain).await;
    assert_eq!(r.status, 200);
    assert_eq!(e.up.request_count(), 2);

    let m = e.proxy.metrics().await.unwrap();
    assert_eq!(auth_count(&m, "admin", "forbidden"), 2.0);
    assert_eq!(auth_count(&m, "admin", "allowed"), 1.0);
}

#[tokio::test]
async fn a_rotated_jwks_file_is_used_within_seconds() {
    let old = Signer::es256("2024-old");
    let new = Signer::rs256("2025-new");
    let e = edge(&[&old], &[]).await;
    let old_token = old.sign(&claims("user-old"));
    let new_token = new.sign(&claims("user-new"));
    assert_eq!(
        bearer(&e.proxy, "api.edge.test", &new_token).await.status,
        401
    );
    assert_eq!(
        bearer(&e.proxy, "api.edge.test", &old_token).await.status,
        200
    );

    write_atomic(&e.dir.join("jwks.json"), &jwks(&[&new]));
    let rotated = Instant::now();
    let mut status = 0;
    while rotated.elapsed() < Duration::from_secs(5) {
        status = bearer(&e.proxy, "api.edge.test", &new_token)
            .await
            .status
            .as_u16();
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status, 200,
        "the new key was not accepted within 5 s of the JWKS change"
    );
    let r = bearer(&e.proxy, "api.edge.test", &old_token).await;
    assert_eq!(r.status, 401, "a key removed from the JWKS still accepted");
}

#[tokio::test]
async fn api_keys_are_checked_against_hashes_and_not_forwarded() {
    let e = edge(
        &[&Signer::es256("unused")],
        &["k-alpha-7f3a", "k-beta-19c2"],
    )
    .await;
    let keys_file = std::fs::read_to_string(e.dir.join("keys.txt")).unwrap();
    assert!(!keys_file.contains("k-alpha"), "the file holds hashes only");

    for key in ["k-alpha-7f3a", "k-beta-19c2"] {
        let r = call(&e.proxy, "keys.edge.test", &[("x-api-key", key)]).await;
        assert_eq!(r.status, 200, "{key}: {}", r.text());
    }
    let seen = e.up.requests();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter().all(|r| r.header("x-api-key").is_none()),
        "the API key must not be sent upstream"
    );

    for (what, headers) in [
        ("wrong key", vec![("x-api-key", "k-gamma")]),
        ("hash instead of key", vec![("x-api-key", "")]),
        ("no key", vec![]),
    ] {
        let r = call(&e.proxy, "keys.edge.test", &headers).await;
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("ApiKey header=\"x-api-key\""),
            "{what}"
        );
    }
    let hash = sha256_hex(b"k-alpha-7f3a");
    let r = call(&e.proxy, "keys.edge.test", &[("x-api-key", &hash)]).await;
    assert_eq!(r.status, 401, "the stored hash itself is not a key");
    assert_eq!(e.up.request_count(), 2);

    // A key added to the file is accepted within seconds.
    let lines = format!("{}{}", key_line("k-alpha-7f3a"), key_line("k-delta-0b41"));
    write_atomic(&e.dir.join("keys.txt"), &lines);
    let added = Instant::now();
    let mut status = 0;
    while added.elapsed() < Duration::from_secs(5) && status != 200 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let r = call(&e.proxy, "keys.edge.test", &[("x-api-key", "k-delta-0b41")]).await;
        status = r.status.as_u16();
    }
    assert_eq!(status, 200, "a key added to the file was not accepted");
    let r = call(&e.proxy, "keys.edge.test", &[("x-api-key", "k-beta-19c2")]).await;
    assert_eq!(r.status, 401, "a key removed from the file still accepted");
}

#[tokio::test]
async fn grpc_and_http2_callers_are_refused_the_same_way() {
    let es = Signer::es256("ec-1");
    let e = edge(&[&es], &[]).await;
    let mut h2 = HttpClient::h2c(e.proxy.listener()).await.unwrap();

    let r = h2.get("api.edge.test", "/orders").await.unwrap();
    assert_eq!(r.status, 401, "over HTTP/2");
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    let req = Request::post("/vakt.example.v1.Echo/Echo")
        .header("host", "api.edge.test")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let r = h2.send(req).await.unwrap();
    assert_eq!(r.status, 200, "gRPC callers get HTTP 200");
    assert_eq!(
        r.header("grpc-status"),
        Some("16"),
        "401 maps to UNAUTHENTICATED"
    );

    let token = format!("Bearer {}", es.sign(&claims("user-h2")));
    let req = Request::get("/orders")
        .header("host", "api.edge.test")
        .header("authorization", token)
        .body(empty())
        .unwrap();
    let r = h2.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(e.up.request_count(), 1);
}

#[tokio::test]
async fn rate_limits_keyed_by_identity_count_each_caller_apart() {
    let es = Signer::es256("ec-1");
    let e = edge(&[&es], &["k-one-5d1e", "k-two-88af"]).await;

    let mut codes = Vec::new();
    for sub in ["alice", "alice", "alice", "bob", "bob", "bob"] {
        let token = es.sign(&claims(sub));
        codes.push(
            bearer(&e.proxy, "sub.edge.test", &token)
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(
        codes,
        [200, 200, 429, 200, 200, 429],
        "jwt-sub: each subject has its own bucket of 2"
    );

    let mut codes = Vec::new();
    for key in [
        "k-one-5d1e",
        "k-one-5d1e",
        "k-one-5d1e",
        "k-two-88af",
        "k-two-88af",
    ] {
        let r = call(&e.proxy, "keyed.edge.test", &[("x-api-key", key)]).await;
        codes.push(r.status.as_u16());
    }
    assert_eq!(
        codes,
        [200, 200, 429, 200, 200],
        "rateLimit key header:x-api-key on a route with apiKeys: the second key was \
         charged for the first one's requests, so every API client shares one bucket \
         (server/guard.rs admit applies the identity, which strips the key header, \
         before the rate-limit key is read from the headers)"
    );
}
