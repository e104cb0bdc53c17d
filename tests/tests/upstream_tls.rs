//! TLS toward backends: the proxy checks the endpoint's certificate
//! against the backend's CA and name, presents its client certificate for
//! mTLS, and picks up a rotated client certificate without a restart.

mod edge_common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use edge_common::{Leaf, TestCa, write_atomic};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use vakt_tests::client::HttpClient;
use vakt_tests::proxy::ProxyBuilder;

const T: Duration = Duration::from_secs(10);

/// An HTTPS upstream for `upstream.test` that requires a client
/// certificate signed by `ca` and answers with the SHA-256 of the one it
/// got, in `x-client-cert`.
async fn mtls_upstream(
    addr: SocketAddr,
    ca: &TestCa,
    server: &Leaf,
) -> tokio::task::JoinHandle<()> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).unwrap();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![server.der.clone()], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let presented = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| hex(&Sha256::digest(c)))
                    .unwrap_or_default();
                let service = service_fn(move |_req| {
                    let presented = presented.clone();
                    async move {
                        let rsp = http::Response::builder()
                            .header("x-client-cert", presented)
                            .body(Full::new(Bytes::from_static(b"secure")))
                            .unwrap();
                        Ok::<_, Infallible>(rsp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn config(dir: &Path, ca_file: &str, server_name: &str) -> String {
    format!(
        r#"
listeners:
  - name: main
    address: "${{main}}"
routes:
  - name: secure
    rules: [{{backendRefs: [{{name: secure}}]}}]
backends:
  - name: secure
    endpoints: ["${{up}}"]
    connectionPool: {{maxIdlePerEndpoint: 0}}
    tls:
      caFile: {ca_file}
      serverName: {server_name}
      clientCertificate: {{certFile: {dir}/client.crt, keyFile: {dir}/client.key}}
"#,
        dir = dir.display()
    )
}

#[tokio::test]
async fn mtls_upstream_is_reached_and_a_rotated_client_certificate_is_used() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let first = ca.leaf(&["proxy-a.test"]);
    first.write(dir.path(), "client");

    let mut builder = ProxyBuilder::yaml(config(
        dir.path(),
        ca_file.to_str().unwrap(),
        "upstream.test",
    ));
    let up = builder.addr("up");
    let _server = mtls_upstream(up, &ca, &ca.leaf(&["upstream.test"])).await;
    let proxy = builder.start().await.expect("proxy starts");

    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let r = c.get("secure", "/").await.unwrap();
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "secure");
    assert_eq!(
        r.header("x-client-cert"),
        Some(hex(&Sha256::digest(&first.der))).as_deref()
    );

    // Both files are replaced; the next connection presents the new pair.
    let second = ca.leaf(&["proxy-b.test"]);
    write_atomic(&dir.path().join("client.key"), &second.key_pem);
    write_atomic(&dir.path().join("client.crt"), &second.cert_pem);
    let want = hex(&Sha256::digest(&second.der));
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let r = c.get("secure", "/").await.unwrap();
        assert_eq!(
            r.status, 200,
            "no request may fail during the rotation: {r:?}"
        );
        if r.header("x-client-cert") == Some(want.as_str()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new client certificate was not used"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_upstream_certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("upstream ca");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ca.leaf(&["proxy-a.test"]).write(dir.path(), "client");

    let mut builder = ProxyBuilder::yaml(config(
        dir.path(),
        ca_file.to_str().unwrap(),
        "expected.test",
    ));
    let up = builder.addr("up");
    let _server = mtls_upstream(up, &ca, &ca.leaf(&["other.test"])).await;
    let proxy = builder.start().await.expect("proxy starts");

    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let r = c.get("secure", "/").await.unwrap();
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.header("vakt-error"), Some("connect-failed"));
}

#[tokio::test]
async fn a_missing_ca_file_is_refused_by_check() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let text = config(dir.path(), missing.to_str().unwrap(), "x.test");
    let out = vakt_tests::proxy::check(&text).await.expect("check runs");
    assert_eq!(out.status.code(), Some(1), "{}", out.stderr);
    assert!(
        out.stderr.contains("backends[secure].tls"),
        "{}",
        out.stderr
    );
}
