//! Shared pieces of the edge tests: a test CA and leaf certificates made
//! with rcgen, TLS clients with chosen versions and ALPN, HTTP/1.1 and
//! HTTP/2 over any stream, JWTs signed by the tests and their JWKS, and
//! files replaced atomically.

#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{Request, Version, header};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rustls::{ClientConfig, RootCertStore, SupportedProtocolVersion};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vakt_tests::body::{BoxBody, empty};
use vakt_tests::client::{ClientError, Collected};

/// How long one client step may take before the test gives up.
pub const T: Duration = Duration::from_secs(5);

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, as PEM and DER.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        Self {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca certificate"),
        }
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for `names` (the first is also the common
    /// name), signed by this CA.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf signed");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

impl Leaf {
    /// Writes `NAME.crt` and `NAME.key` into `dir`; returns their paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.crt"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        std::fs::write(&key, &self.key_pem).expect("write key");
        (cert, key)
    }
}

/// A TLS client trusting `ca`, offering `alpn` and only `versions`.
pub fn connector(
    ca: &TestCa,
    alpn: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    roots.add(ca.der()).expect("ca into roots");
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .expect("client versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    TlsConnector::from(Arc::new(cfg))
}

/// TLS 1.2 and 1.3, ALPN `h2` then `http/1.1`.
pub fn default_connector(ca: &TestCa) -> TlsConnector {
    connector(
        ca,
        &["h2", "http/1.1"],
        &[&rustls::version::TLS13, &rustls::version::TLS12],
    )
}

/// Connects to `addr` and runs the handshake for `sni`, within [`T`].
pub async fn tls_connect(
    c: &TlsConnector,
    addr: SocketAddr,
    sni: &str,
) -> std::io::Result<TlsStream<TcpStream>> {
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let work = async {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        c.connect(name, tcp).await
    };
    tokio::time::timeout(T, work)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("tls handshake timed out")))
}

/// The end-entity certificate the server presented.
pub fn peer_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    let certs = s
        .get_ref()
        .1
        .peer_certificates()
        .expect("peer certificates");
    certs[0].clone().into_owned()
}

/// The ALPN protocol the handshake agreed on.
pub fn alpn(s: &TlsStream<TcpStream>) -> Option<Vec<u8>> {
    s.get_ref().1.alpn_protocol().map(<[u8]>::to_vec)
}

/// A TCP connection to `addr` from the loopback address `from`.
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

enum Sender {
    H1(http1::SendRequest<BoxBody>),
    H2(http2::SendRequest<BoxBody>),
}

/// One HTTP connection over any stream (TLS or TCP); closed when dropped.
pub struct Conn {
    sender: Sender,
    scheme: &'static str,
    task: JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Conn {
    /// HTTP/1.1 over `io`; `scheme` is what absolute URIs would carry.
    pub async fn h1<IO>(io: IO, scheme: &'static str) -> Result<Self, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::handshake(TokioIo::new(io)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender: Sender::H1(sender),
            scheme,
            task,
        })
    }

    /// HTTP/2 over `io`.
    pub async fn h2<IO>(io: IO, scheme: &'static str) -> Result<Self, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            sender: Sender::H2(sender),
            scheme,
            task,
        })
    }

    /// HTTP/2 when the TLS handshake agreed on `h2`, else HTTP/1.1.
    pub async fn over_tls(s: TlsStream<TcpStream>) -> Result<Self, ClientError> {
        if alpn(&s).as_deref() == Some(b"h2") {
            Self::h2(s, "https").await
        } else {
            Self::h1(s, "https").await
        }
    }

    /// Sends a request for `host` and reads the whole response, within
    /// [`T`]. HTTP/1.1 gets `Host`, HTTP/2 an absolute URI.
    pub async fn send(
        &mut self,
        host: &str,
        mut req: Request<BoxBody>,
    ) -> Result<Collected, ClientError> {
        let work = async {
            let rsp = match &mut self.sender {
                Sender::H1(s) => {
                    req.headers_mut()
                        .insert(header::HOST, host.parse().map_err(http::Error::from)?);
                    s.ready().await?;
                    s.send_request(req).await?
                }
                Sender::H2(s) => {
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    let uri = format!("{}://{host}{pq}", self.scheme);
                    *req.uri_mut() = uri.parse().map_err(http::Error::from)?;
                    *req.version_mut() = Version::HTTP_2;
                    s.ready().await?;
                    s.send_request(req).await?
                }
            };
            Collected::from_response(rsp).await
        };
        tokio::time::timeout(T, work)
            .await
            .unwrap_or(Err(ClientError::Timeout(T)))
    }

    /// `GET path` for `host` with extra headers.
    pub async fn get(
        &mut self,
        host: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Collected, ClientError> {
        let mut req = Request::get(path);
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        self.send(host, req.body(empty())?).await
    }
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Replaces `path` by writing a sibling file and renaming it over, so a
/// reader sees the old or the new contents, never a mix.
pub fn write_atomic(path: &Path, contents: &str) {
    let tmp = path.with_extension(format!("tmp{}", fastrand::u32(..)));
    std::fs::write(&tmp, contents).expect("write temporary file");
    std::fs::rename(&tmp, path).expect("rename over");
}

/// A JWT signing key of one algorithm, with its public JWK.
pub struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    kid: String,
    jwk: Value,
}

/// An RSA key made once for these tests (rcgen with ring cannot generate
/// RSA keys).
const RSA_PEM: &str = include_str!("jwt-rsa-2048.pem");

impl Signer {
    /// RS256 with the RSA test key.
    pub fn rs256(kid: &str) -> Self {
        let key = EncodingKey::from_rsa_pem(RSA_PEM.as_bytes()).expect("rsa key");
        let mut jwk = serde_json::to_value(
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).expect("rsa jwk"),
        )
        .expect("jwk json");
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!("RS256");
        Self {
            key,
            alg: Algorithm::RS256,
            kid: kid.into(),
            jwk,
        }
    }

    /// ES256 with a new P-256 key.
    pub fn es256(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("p-256 key");
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).expect("ec key");
        let raw = pair.public_key_raw();
        assert_eq!(raw.len(), 65, "uncompressed P-256 point");
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64url(&raw[1..33]), "y": b64url(&raw[33..]),
        });
        Self {
            key,
            alg: Algorithm::ES256,
            kid: kid.into(),
            jwk,
        }
    }

    /// EdDSA with a new Ed25519 key.
    pub fn eddsa(kid: &str) -> Self {
        let pair = KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("ed25519 key");
        let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).expect("ed key");
        let jwk = json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid, "alg": "EdDSA", "use": "sig",
            "x": b64url(pair.public_key_raw()),
        });
        Self {
            key,
            alg: Algorithm::EdDSA,
            kid: kid.into(),
            jwk,
        }
    }

    /// This key's public JWK.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// A token with these claims, its header naming this key's `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// A token whose header names `kid`, whatever key signed it.
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut h = Header::new(self.alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, &self.key).expect("token signed")
    }
}

/// A JWKS document holding the public keys of `signers`.
pub fn jwks(signers: &[&Signer]) -> String {
    let keys: Vec<&Value> = signers.iter().map(|s| s.jwk()).collect();
    serde_json::to_string_pretty(&json!({ "keys": keys })).expect("jwks json")
}

/// Unpadded base64url (RFC 4648 section 5).
pub fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}
