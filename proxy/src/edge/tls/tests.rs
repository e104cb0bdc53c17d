//! Real handshakes over 127.0.0.1 against certificates made by rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rcgen::{CertificateParams, CertifiedIssuer, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vakt_api::config::{CertificateFiles, ListenerTls};

use super::EdgeTls;

struct Cert {
    pem: String,
    key: String,
    der: CertificateDer<'static>,
}

fn cert(names: &[&str]) -> Cert {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let ck = rcgen::generate_simple_self_signed(names).unwrap();
    Cert {
        pem: ck.cert.pem(),
        key: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

fn tmpdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vakt-edge-tls-{name}-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_plain(dir: &Path, name: &str, c: &Cert) -> CertificateFiles {
    let cert_file = dir.join(format!("{name}.crt"));
    let key_file = dir.join(format!("{name}.key"));
    std::fs::write(&cert_file, &c.pem).unwrap();
    std::fs::write(&key_file, &c.key).unwrap();
    files(&cert_file, &key_file)
}

fn files(cert: &Path, key: &Path) -> CertificateFiles {
    CertificateFiles {
        cert_file: cert.to_str().unwrap().into(),
        key_file: key.to_str().unwrap().into(),
    }
}

fn settings(certificates: Vec<CertificateFiles>) -> ListenerTls {
    ListenerTls {
        certificates,
        alpn: vec!["h2".into(), "http/1.1".into()],
        min_version: "1.2".into(),
        client_ca_file: None,
    }
}

/// Accepts TLS connections and echoes what each client sends.
async fn serve(tls: Arc<EdgeTls>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let tls = tls.clone();
            tokio::spawn(async move {
                let Ok(mut s) = tls.accept(tcp, Duration::from_secs(5)).await else {
                    return;
                };
                let mut buf = [0u8; 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    let _ = s.flush().await;
                }
            });
        }
    });
    addr
}

/// Accepts any certificate but checks handshake signatures for real, so a
/// certificate served with the wrong key fails the handshake.
#[derive(Debug)]
struct AnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

struct Client {
    alpn: Vec<&'static str>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    identity: Option<(Vec<CertificateDer<'static>>, String)>,
}

impl Default for Client {
    fn default() -> Self {
        Self {
            alpn: vec!["h2", "http/1.1"],
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            identity: None,
        }
    }
}

impl Client {
    async fn connect(&self, addr: SocketAddr, sni: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)));
        let mut config = match &self.identity {
            Some((chain, key)) => {
                let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
                builder.with_client_auth_cert(chain.clone(), key).unwrap()
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        config.resumption = rustls::client::Resumption::disabled();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let tcp = TcpStream::connect(addr).await?;
        let mut s = TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        // TLS 1.3 reports a refused client certificate only after the
        // client's first flight, so round-trip a byte before reporting.
        s.write_all(b"x").await?;
        s.flush().await?;
        let mut one = [0u8; 1];
        s.read_exact(&mut one).await?;
        Ok(s)
    }
}

use rustls::pki_types::pem::PemObject;

fn served(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

#[tokio::test]
async fn sni_picks_the_matching_certificate_and_defaults_to_the_first() {
    let dir = tmpdir("sni");
    let a = cert(&["a.test"]);
    let b = cert(&["b.test", "*.wild.test"]);
    let cfg = settings(vec![write_plain(&dir, "a", &a), write_plain(&dir, "b", &b)]);
    let addr = serve(Arc::new(EdgeTls::from_config("edge", &cfg).unwrap())).await;
    let c = Client::default();

    assert_eq!(served(&c.connect(addr, "b.test").await.unwrap()), b.der);
    assert_eq!(
        served(&c.connect(addr, "x.wild.test").await.unwrap()),
        b.der
    );
    assert_eq!(served(&c.connect(addr, "a.test").await.unwrap()), a.der);
    assert_eq!(served(&c.connect(addr, "other.test").await.unwrap()), a.der);
    // An IP address as the server name sends no SNI at all.
    assert_eq!(served(&c.connect(addr, "127.0.0.1").await.unwrap()), a.der);
}

#[tokio::test]
async fn alpn_negotiates_h2_or_http1() {
    let dir = tmpdir("alpn");
    let cfg = settings(vec![write_plain(&dir, "a", &cert(&["a.test"]))]);
    let addr = serve(Arc::new(EdgeTls::from_config("edge", &cfg).unwrap())).await;

    let s = Client::default().connect(addr, "a.test").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h1 = Client {
        alpn: vec!["http/1.1"],
        ..Client::default()
    };
    let s = h1.connect(addr, "a.test").await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let other = Client {
        alpn: vec!["spdy/3"],
        ..Client::default()
    };
    assert!(other.connect(addr, "a.test").await.is_err());
}

/// A TLS 1.0 or 1.1 ClientHello with no extensions, as an old client
/// sends it.
fn legacy_client_hello(minor: u8) -> Vec<u8> {
    let mut body = vec![3, minor];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0);
    body.extend_from_slice(&[0, 4, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[1, 0]);
    let mut hs = vec![1, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 3, 1, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn tls_1_0_and_1_1_clients_are_refused_and_counted() {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let dir = tmpdir("old");
    let cfg = settings(vec![write_plain(&dir, "a", &cert(&["a.test"]))]);
    let addr = serve(Arc::new(EdgeTls::from_config("edge", &cfg).unwrap())).await;
    for minor in [1u8, 2] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&legacy_client_hello(minor)).await.unwrap();
        let mut reply = Vec::new();
        tcp.read_to_end(&mut reply).await.unwrap();
        // An alert record, never a ServerHello.
        assert_eq!(reply.first(), Some(&0x15), "minor {minor}: {reply:?}");
    }
    Client::default().connect(addr, "a.test").await.unwrap();

    let text = handle.render();
    assert!(
        text.contains(r#"vakt_tls_handshakes_total{listener="edge",result="failure"} 2"#),
        "{text}"
    );
    assert!(text.contains(r#"vakt_tls_handshakes_total{listener="edge",result="success"} 1"#));
}

#[tokio::test]
async fn min_version_1_3_refuses_a_tls_1_2_client() {
    let dir = tmpdir("min13");
    let mut cfg = settings(vec![write_plain(&dir, "a", &cert(&["a.test"]))]);
    cfg.min_version = "1.3".into();
    let addr = serve(Arc::new(EdgeTls::from_config("edge", &cfg).unwrap())).await;
    let tls12 = Client {
        versions: vec![&rustls::version::TLS12],
        ..Client::default()
    };
    assert!(tls12.connect(addr, "a.test").await.is_err());
    let s = Client::default().connect(addr, "a.test").await.unwrap();
    assert_eq!(
        s.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
}

#[tokio::test]
async fn client_certificates_are_required_when_a_ca_is_set() {
    let dir = tmpdir("mtls");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client_cert = CertificateParams::new(vec!["client.test".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    let stranger = cert(&["client.test"]);

    let mut cfg = settings(vec![write_plain(&dir, "a", &cert(&["a.test"]))]);
    cfg.client_ca_file = Some(dir.join("ca.pem").to_str().unwrap().into());
    let addr = serve(Arc::new(EdgeTls::from_config("edge", &cfg).unwrap())).await;

    assert!(Client::default().connect(addr, "a.test").await.is_err());
    let wrong = Client {
        identity: Some((vec![stranger.der.clone()], stranger.key.clone())),
        ..Client::default()
    };
    assert!(wrong.connect(addr, "a.test").await.is_err());
    let good = Client {
        identity: Some((vec![client_cert.der().clone()], client_key.serialize_pem())),
        ..Client::default()
    };
    good.connect(addr, "a.test").await.unwrap();
}

/// Lays out `root` the way Kubernetes mounts a secret volume: the files
/// are links through `..data`, itself a link to a versioned directory.
fn k8s_volume(root: &Path, version: &str, c: &Cert) {
    let versioned = root.join(version);
    std::fs::create_dir_all(&versioned).unwrap();
    std::fs::write(versioned.join("tls.crt"), &c.pem).unwrap();
    std::fs::write(versioned.join("tls.key"), &c.key).unwrap();
    let tmp = root.join("..data_tmp");
    std::os::unix::fs::symlink(version, &tmp).unwrap();
    std::fs::rename(&tmp, root.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        let link = root.join(f);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{f}"), &link).unwrap();
        }
    }
}

async fn echo(s: &mut TlsStream<TcpStream>, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    s.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn symlink_swap_is_served_on_the_next_handshake_without_dropping_connections() {
    let root = tmpdir("swap");
    let (a, b) = (cert(&["edge.test"]), cert(&["edge.test"]));
    k8s_volume(&root, "..v1", &a);
    let cfg = settings(vec![files(&root.join("tls.crt"), &root.join("tls.key"))]);
    let tls = Arc::new(EdgeTls::from_config("edge", &cfg).unwrap());
    let reloader = tls.spawn_reload(Duration::from_millis(50));
    let addr = serve(tls.clone()).await;
    let c = Client::default();

    let mut kept = Vec::new();
    for _ in 0..10 {
        let s = c.connect(addr, "edge.test").await.unwrap();
        assert_eq!(served(&s), a.der);
        kept.push(s);
    }
    k8s_volume(&root, "..v2", &b);

    // Handshakes keep succeeding through the swap, each with A or B,
    // until B shows up; the reload interval is 50 ms.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got = served(&c.connect(addr, "edge.test").await.unwrap());
        assert!(got == a.der || got == b.der);
        if got == b.der {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "B never served");
        tokio::task::yield_now().await;
    }
    for s in &mut kept {
        assert_eq!(served(s), a.der);
        echo(s, b"still here").await;
    }
    reloader.abort();
}

#[tokio::test]
async fn a_half_written_pair_is_never_served() {
    let dir = tmpdir("half");
    let (a, b) = (cert(&["edge.test"]), cert(&["edge.test"]));
    let f = write_plain(&dir, "tls", &a);
    let tls = Arc::new(EdgeTls::from_config("edge", &settings(vec![f.clone()])).unwrap());
    let addr = serve(tls.clone()).await;
    let c = Client::default();

    // New certificate, old key: refused as a pair.
    std::fs::write(&f.cert_file, &b.pem).unwrap();
    assert_eq!(tls.reload(), 0);
    assert_eq!(served(&c.connect(addr, "edge.test").await.unwrap()), a.der);

    // New key cut short mid-write: refused.
    std::fs::write(&f.key_file, &b.key[..b.key.len() / 2]).unwrap();
    assert_eq!(tls.reload(), 0);
    assert_eq!(served(&c.connect(addr, "edge.test").await.unwrap()), a.der);

    // Asking again about the same refused bytes changes nothing.
    assert_eq!(tls.reload(), 0);

    std::fs::write(&f.key_file, &b.key).unwrap();
    assert_eq!(tls.reload(), 1);
    assert_eq!(served(&c.connect(addr, "edge.test").await.unwrap()), b.der);
    assert_eq!(tls.reload(), 0);
}

#[test]
fn bad_settings_are_refused_at_build() {
    let dir = tmpdir("bad");
    let a = cert(&["a.test"]);
    let b = cert(&["b.test"]);
    let good = write_plain(&dir, "a", &a);
    let crossed = CertificateFiles {
        cert_file: good.cert_file.clone(),
        key_file: write_plain(&dir, "b", &b).key_file,
    };
    let missing = files(&dir.join("none.crt"), &dir.join("none.key"));
    for (cfg, want) in [
        (settings(vec![crossed]), "not a usable pair"),
        (settings(vec![missing]), "reading"),
        (settings(vec![]), "no certificates"),
    ] {
        let err = EdgeTls::from_config("edge", &cfg)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains(want), "{err}");
    }
    let mut old = settings(vec![good]);
    old.min_version = "1.1".into();
    assert!(EdgeTls::from_config("edge", &old).is_err());
}
