//! TLS at the edge through the real `vakt-proxy`: certificates chosen by
//! SNI, HTTP/2 negotiated by ALPN, TLS 1.2 and 1.3 only, certificate files
//! rotated by a directory symlink swap during traffic (BR-22), handshakes
//! that stall, and redirects from a plain listener to HTTPS.

mod edge_common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use edge_common::{Conn, T, TestCa, connector, default_connector, peer_cert, tls_connect};
use http::Version;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use vakt_tests::client::{Metrics, RawClient};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

/// One TLS listener `edge` serving `certs` (the first is the default) in
/// front of `upstream`, with `extra` appended to the YAML.
fn config(certs: &[(PathBuf, PathBuf)], upstream: SocketAddr, extra: &str) -> String {
    let mut list = String::new();
    for (cert, key) in certs {
        list.push_str(&format!(
            "        - certFile: \"{}\"\n          keyFile: \"{}\"\n",
            cert.display(),
            key.display()
        ));
    }
    format!(
        r#"
listeners:
  - name: edge
    address: "${{edge}}"
    tls:
      certificates:
{list}
routes:
  - name: shop
    rules:
      - backendRefs: [{{name: app}}]
backends:
  - name: app
    endpoints: ["{upstream}"]
{extra}
"#
    )
}

async fn start(yaml: String) -> Proxy {
    ProxyBuilder::yaml(yaml)
        .start()
        .await
        .expect("proxy starts")
}

fn handshakes(m: &Metrics, result: &str) -> f64 {
    m.sum(
        "vakt_tls_handshakes_total",
        &[("listener", "edge"), ("result", result)],
    )
}

#[tokio::test]
async fn sni_picks_the_certificate_and_no_sni_gets_the_first() {
    let ca = TestCa::new("vakt sni ca");
    let dir = tempfile::tempdir().unwrap();
    let default = ca.leaf(&["default.edge.test", "127.0.0.1"]);
    let shop = ca.leaf(&["shop.edge.test"]);
    let admin = ca.leaf(&["admin.edge.test", "*.admin.edge.test"]);
    let certs = [
        default.write(dir.path(), "default"),
        shop.write(dir.path(), "shop"),
        admin.write(dir.path(), "admin"),
    ];
    let up = Upstream::named("app").await;
    let proxy = start(config(&certs, up.addr(), "")).await;
    let c = default_connector(&ca);

    for (sni, want, label) in [
        ("shop.edge.test", &shop, "shop"),
        ("admin.edge.test", &admin, "admin"),
        ("eu.admin.edge.test", &admin, "admin (wildcard)"),
        ("127.0.0.1", &default, "default (no SNI for an address)"),
    ] {
        let s = tls_connect(&c, proxy.listener(), sni)
            .await
            .unwrap_or_else(|e| panic!("handshake for {sni} failed: {e}"));
        assert!(
            peer_cert(&s) == want.der,
            "SNI {sni}: expected the {label} certificate"
        );
        let mut conn = Conn::over_tls(s).await.unwrap();
        let r = conn.get(sni, "/", &[]).await.unwrap();
        assert_eq!(r.status, 200, "request over {sni}: {}", r.text());
    }
    assert_eq!(up.request_count(), 4);
    assert!(
        up.requests()
            .iter()
            .all(|r| r.header("x-forwarded-proto") == Some("https")),
        "requests that came over TLS must say x-forwarded-proto: https"
    );
    let m = proxy.metrics().await.unwrap();
    assert_eq!(handshakes(&m, "success"), 4.0, "vakt_tls_handshakes_total");
}

#[tokio::test]
async fn alpn_negotiates_h2_and_falls_back_to_http1() {
    let ca = TestCa::new("vakt alpn ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = [ca.leaf(&["shop.edge.test"]).write(dir.path(), "shop")];
    let up = Upstream::named("app").await;
    let proxy = start(config(&certs, up.addr(), "")).await;

    let s = tls_connect(&default_connector(&ca), proxy.listener(), "shop.edge.test")
        .await
        .unwrap();
    assert_eq!(
        edge_common::alpn(&s).as_deref(),
        Some(&b"h2"[..]),
        "a client offering h2 and http/1.1 must get h2"
    );
    let mut h2 = Conn::h2(s, "https").await.unwrap();
    for _ in 0..3 {
        let r = h2.get("shop.edge.test", "/echo", &[]).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.version, Version::HTTP_2);
    }

    let only_h1 = connector(
        &ca,
        &["http/1.1"],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let s = tls_connect(&only_h1, proxy.listener(), "shop.edge.test")
        .await
        .unwrap();
    assert_eq!(edge_common::alpn(&s).as_deref(), Some(&b"http/1.1"[..]));
    let mut h1 = Conn::h1(s, "https").await.unwrap();
    let r = h1.get("shop.edge.test", "/echo", &[]).await.unwrap();
    assert_eq!((r.status.as_u16(), r.version), (200, Version::HTTP_11));

    let reqs = up.requests();
    assert_eq!(reqs.len(), 4);
    assert!(
        reqs.iter()
            .all(|r| r.header("x-forwarded-proto") == Some("https"))
    );
}

#[tokio::test]
async fn tls_1_2_and_1_3_are_served_and_older_versions_refused() {
    let ca = TestCa::new("vakt version ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = [ca.leaf(&["shop.edge.test"]).write(dir.path(), "shop")];
    let up = Upstream::named("app").await;
    let proxy = start(config(&certs, up.addr(), "")).await;

    for (v, name) in [
        (&rustls::version::TLS12, "TLS 1.2"),
        (&rustls::version::TLS13, "TLS 1.3"),
    ] {
        let c = connector(&ca, &["http/1.1"], &[v]);
        let s = tls_connect(&c, proxy.listener(), "shop.edge.test")
            .await
            .unwrap_or_else(|e| panic!("{name} must be accepted: {e}"));
        assert_eq!(s.get_ref().1.protocol_version(), Some(v.version));
        let mut conn = Conn::h1(s, "https").await.unwrap();
        assert_eq!(
            conn.get("shop.edge.test", "/", &[]).await.unwrap().status,
            200
        );
    }

    let reply = hello_reply(proxy.listener(), 0x0302).await;
    assert!(
        !reply.is_empty() && reply[0] == 0x15,
        "a TLS 1.1 ClientHello must be answered with an alert, got {reply:02x?}"
    );
    assert!(
        !reply.contains(&0x16),
        "no handshake record (ServerHello) may answer TLS 1.1: {reply:02x?}"
    );
    assert!(
        reply.get(5) == Some(&2) && matches!(reply.get(6), Some(40 | 70)),
        "expected a fatal handshake_failure or protocol_version alert: {reply:02x?}"
    );
    // The same hello offering TLS 1.2 gets a ServerHello, so the refusal
    // above is about the version alone.
    let control = hello_reply(proxy.listener(), 0x0303).await;
    assert_eq!(
        control.first(),
        Some(&0x16),
        "the same hello as TLS 1.2 must get a ServerHello: {control:02x?}"
    );

    let m = proxy.metrics().await.unwrap();
    assert_eq!(handshakes(&m, "success"), 2.0);
    assert!(
        handshakes(&m, "failure") >= 1.0,
        "the refused hello counts as a failed handshake"
    );
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn min_version_1_3_refuses_tls_1_2() {
    let ca = TestCa::new("vakt tls13 ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = [ca.leaf(&["shop.edge.test"]).write(dir.path(), "shop")];
    let up = Upstream::named("app").await;
    let yaml = config(&certs, up.addr(), "")
        .replace("    tls:\n", "    tls:\n      minVersion: \"1.3\"\n");
    let proxy = start(yaml).await;

    let only12 = connector(&ca, &["http/1.1"], &[&rustls::version::TLS12]);
    let refused = tls_connect(&only12, proxy.listener(), "shop.edge.test").await;
    assert!(
        refused.is_err(),
        "TLS 1.2 must be refused with minVersion 1.3"
    );
    let only13 = connector(&ca, &["http/1.1"], &[&rustls::version::TLS13]);
    tls_connect(&only13, proxy.listener(), "shop.edge.test")
        .await
        .expect("TLS 1.3 accepted");
}

/// Sends a ClientHello offering only `version` (no supported_versions
/// extension) and returns the first record header and bytes the server
/// answers with.
async fn hello_reply(addr: SocketAddr, version: u16) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&client_hello(version, "shop.edge.test"))
        .await
        .unwrap();
    let mut out = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while out.len() < 7 {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(T, read).await;
    out
}

/// A minimal pre-1.3 ClientHello: CBC and GCM suites with ECDHE, SNI,
/// groups, point formats and signature algorithms.
fn client_hello(version: u16, sni: &str) -> Vec<u8> {
    let mut ext = Vec::new();
    let name = sni.as_bytes();
    let mut sn = Vec::new();
    sn.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sn.push(0);
    sn.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sn.extend_from_slice(name);
    push_ext(&mut ext, 0x0000, &sn);
    push_ext(&mut ext, 0x000a, &[0, 4, 0x00, 0x1d, 0x00, 0x17]);
    push_ext(&mut ext, 0x000b, &[1, 0]);
    push_ext(
        &mut ext,
        0x000d,
        &[0, 6, 0x04, 0x03, 0x08, 0x04, 0x04, 0x01],
    );

    let suites: [u16; 6] = [0xc02f, 0xc02b, 0xc013, 0xc014, 0x002f, 0x0035];
    let mut body = Vec::new();
    body.extend_from_slice(&version.to_be_bytes());
    body.extend((0..32).map(|_| fastrand::u8(..)));
    body.push(0);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);

    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

fn push_ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&(data.len() as u16).to_be_bytes());
    out.extend_from_slice(data);
}

#[tokio::test]
async fn a_stalled_handshake_is_dropped_after_the_header_read_timeout() {
    let ca = TestCa::new("vakt stall ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = [ca.leaf(&["shop.edge.test"]).write(dir.path(), "shop")];
    let up = Upstream::named("app").await;
    let extra = "limits:\n  headerReadTimeout: 1s\n";
    let proxy = start(config(&certs, up.addr(), extra)).await;

    let mut idle = RawClient::connect(proxy.listener()).await.unwrap();
    let started = Instant::now();
    assert!(
        idle.closed_within(Duration::from_secs(4)).await,
        "a client that never sends its ClientHello must be dropped"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(800),
        "dropped after {waited:?}, before the 1 s timeout"
    );
    let m = proxy.metrics().await.unwrap();
    assert_eq!(handshakes(&m, "timeout"), 1.0);
}

/// Kubernetes' secret volume layout: `tls.crt` and `tls.key` link into
/// `..data`, a link to a versioned directory that is swapped by rename.
struct SecretDir {
    root: PathBuf,
}

impl SecretDir {
    fn new(root: &Path, first: &edge_common::Leaf) -> Self {
        let dir = Self { root: root.into() };
        dir.publish("..v1", first);
        for f in ["tls.crt", "tls.key"] {
            std::os::unix::fs::symlink(format!("..data/{f}"), root.join(f)).unwrap();
        }
        dir
    }

    /// Writes `leaf` into a new versioned directory and points `..data` at
    /// it in one rename.
    fn publish(&self, version: &str, leaf: &edge_common::Leaf) {
        let vdir = self.root.join(version);
        std::fs::create_dir(&vdir).unwrap();
        std::fs::write(vdir.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(vdir.join("tls.key"), &leaf.key_pem).unwrap();
        let tmp = self.root.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).unwrap();
        std::fs::rename(&tmp, self.root.join("..data")).unwrap();
    }

    fn files(&self) -> (PathBuf, PathBuf) {
        (self.root.join("tls.crt"), self.root.join("tls.key"))
    }
}

#[derive(Debug, PartialEq)]
enum Seen {
    A,
    B,
    Other,
    Failed(String),
}

#[tokio::test]
async fn br22_rotated_certificate_is_served_without_restart_or_drops() {
    let ca = TestCa::new("vakt rotation ca");
    let dir = tempfile::tempdir().unwrap();
    let a = ca.leaf(&["shop.edge.test"]);
    let b = ca.leaf(&["shop.edge.test"]);
    let secret = SecretDir::new(dir.path(), &a);
    let up = Upstream::named("app").await;
    let proxy = start(config(&[secret.files()], up.addr(), "")).await;
    let c = default_connector(&ca);

    // Ten long-lived connections, half HTTP/2, half HTTP/1.1.
    let h1_only = connector(
        &ca,
        &["http/1.1"],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    );
    let mut long = Vec::new();
    for i in 0..10 {
        let conn_tls = if i % 2 == 0 { &c } else { &h1_only };
        let s = tls_connect(conn_tls, proxy.listener(), "shop.edge.test")
            .await
            .unwrap();
        assert!(peer_cert(&s) == a.der, "before the swap the edge serves A");
        let mut conn = Conn::over_tls(s).await.unwrap();
        assert_eq!(
            conn.get("shop.edge.test", "/", &[]).await.unwrap().status,
            200
        );
        long.push(conn);
    }

    // Handshakes at 50 per second; one long-lived request per tick.
    let mut seen: Vec<(Duration, Seen)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    let begin = Instant::now();
    let mut swapped_at = None;
    let mut first_b = None;
    let mut n = 0usize;
    loop {
        tick.tick().await;
        let at = begin.elapsed();
        if swapped_at.is_none() && at >= Duration::from_millis(500) {
            secret.publish("..v2", &b);
            swapped_at = Some(at);
        }
        let got = match tls_connect(&c, proxy.listener(), "shop.edge.test").await {
            Ok(s) if peer_cert(&s) == a.der => Seen::A,
            Ok(s) if peer_cert(&s) == b.der => Seen::B,
            Ok(_) => Seen::Other,
            Err(e) => Seen::Failed(e.to_string()),
        };
        if got == Seen::B && first_b.is_none() {
            first_b = Some(at);
        }
        seen.push((at, got));
        let r = long[n % 10].get("shop.edge.test", "/", &[]).await;
        assert!(
            matches!(&r, Ok(r) if r.status == 200),
            "long-lived connection {} broke at {at:?}: {r:?}",
            n % 10
        );
        n += 1;
        let done_b = first_b.is_some_and(|t| at >= t + Duration::from_millis(500));
        if done_b || at >= Duration::from_secs(11) {
            break;
        }
    }

    let failed: Vec<_> = seen
        .iter()
        .filter(|(_, s)| matches!(s, Seen::Failed(_) | Seen::Other))
        .collect();
    assert!(
        failed.is_empty(),
        "handshakes failed or served an unknown certificate during the swap: {failed:?}"
    );
    let swapped_at = swapped_at.unwrap();
    let first_b = first_b.expect("certificate B never served within 10 s of the swap");
    assert!(
        first_b - swapped_at <= Duration::from_secs(10),
        "B first served {:?} after the swap",
        first_b - swapped_at
    );
    let a_after_b: Vec<_> = seen
        .iter()
        .filter(|(t, s)| *t > first_b && *s == Seen::A)
        .collect();
    assert!(
        a_after_b.is_empty(),
        "A served again after B: {a_after_b:?}"
    );
    assert!(seen.iter().any(|(_, s)| *s == Seen::A), "A served before");

    for (i, conn) in long.iter_mut().enumerate() {
        let r = conn.get("shop.edge.test", "/", &[]).await;
        assert!(
            matches!(&r, Ok(r) if r.status == 200),
            "long-lived connection {i} after the swap: {r:?}"
        );
    }
    let m = proxy.metrics().await.unwrap();
    assert_eq!(handshakes(&m, "failure"), 0.0);
    assert_eq!(handshakes(&m, "timeout"), 0.0);
}

#[tokio::test]
async fn redirect_to_https_answers_308_on_a_plain_listener() {
    let ca = TestCa::new("vakt redirect ca");
    let dir = tempfile::tempdir().unwrap();
    let certs = [ca.leaf(&["shop.edge.test"]).write(dir.path(), "shop")];
    let up = Upstream::named("app").await;
    let extra = r#"
  - name: plain
    address: "${plain}"
    redirectToHttps: true
"#;
    // The plain listener joins the `listeners` list.
    let yaml = config(&certs, up.addr(), "").replacen("routes:", &format!("{extra}routes:"), 1);
    let proxy = start(yaml).await;
    let plain = proxy.listener_named("plain");

    let mut raw = RawClient::connect(plain).await.unwrap();
    raw.send(b"GET /orders/7?expand=items HTTP/1.1\r\nHost: shop.edge.test:8080\r\n\r\n")
        .await
        .unwrap();
    let r = raw.read_response(T).await.unwrap();
    assert_eq!(r.status, 308, "{}", r.body_text());
    assert_eq!(
        r.header("location"),
        Some("https://shop.edge.test/orders/7?expand=items")
    );

    let mut h2c = vakt_tests::client::HttpClient::h2c(plain).await.unwrap();
    let r = h2c.get("shop.edge.test", "/cart").await.unwrap();
    assert_eq!(r.status, 308);
    assert_eq!(r.header("location"), Some("https://shop.edge.test/cart"));
    assert_eq!(
        up.request_count(),
        0,
        "a redirect never reaches the upstream"
    );

    let s = tls_connect(
        &default_connector(&ca),
        proxy.listener_named("edge"),
        "shop.edge.test",
    )
    .await
    .unwrap();
    let mut conn = Conn::over_tls(s).await.unwrap();
    let r = conn.get("shop.edge.test", "/cart", &[]).await.unwrap();
    assert_eq!(r.status, 200, "the TLS listener serves the route");
    assert_eq!(up.request_count(), 1);
}
