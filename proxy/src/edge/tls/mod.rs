//! TLS termination for edge listeners (rustls with ring): several
//! certificates chosen by SNI (the first is the default), ALPN, TLS 1.2 and
//! 1.3 only, optional client certificates, and certificate files re-read
//! when they change so the next handshake serves the new pair without a
//! restart or a dropped connection.
//!
//! The accept loop calls [`EdgeTls::accept`] on every accepted TCP stream,
//! then serves HTTP/2 or HTTP/1.1 by the negotiated ALPN protocol.

pub(crate) mod store;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use metrics::Counter;
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use vakt_api::config::ListenerTls;

use crate::edge::watch::spawn_reload;
use store::CertStore;

/// Why TLS settings or files could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificates configured")]
    NoCertificates,
    #[error("reading {path}: {source}")]
    Read { path: String, source: io::Error },
    #[error("{path}: {reason}")]
    Pem { path: String, reason: String },
    #[error("{cert_file} and {key_file} are not a usable pair: {source}")]
    Pair {
        cert_file: String,
        key_file: String,
        source: rustls::Error,
    },
    #[error("unsupported minimum TLS version {0:?}, expected \"1.2\" or \"1.3\"")]
    MinVersion(String),
    #[error("client CA {path}: {reason}")]
    ClientCa { path: String, reason: String },
    #[error("tls settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why one handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("tls handshake timed out")]
    Timeout,
    #[error("tls handshake failed: {0}")]
    Io(#[from] io::Error),
}

/// The TLS side of one listener. Cheap to share behind an `Arc`; clones of
/// [`EdgeTls::acceptor`] keep the certificate store alive.
pub struct EdgeTls {
    acceptor: TlsAcceptor,
    certs: Arc<CertStore>,
    handshakes: Handshakes,
}

/// `vakt_tls_handshakes_total{listener,result}` counters, registered once
/// per listener so the accept path formats no labels.
struct Handshakes {
    success: Counter,
    failure: Counter,
    timeout: Counter,
}

impl EdgeTls {
    /// Builds the acceptor for listener `listener` from its `tls` settings,
    /// reading every certificate pair and the client CA now. Counters are
    /// registered with the metrics recorder installed at this moment.
    pub fn from_config(listener: &str, tls: &ListenerTls) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = Arc::new(CertStore::load(
            listener,
            &tls.certificates,
            provider.clone(),
        )?);
        let versions: &[&rustls::SupportedProtocolVersion] = match tls.min_version.as_str() {
            "1.2" => &[&rustls::version::TLS13, &rustls::version::TLS12],
            "1.3" => &[&rustls::version::TLS13],
            other => return Err(TlsError::MinVersion(other.to_string())),
        };
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)?;
        let builder = match &tls.client_ca_file {
            Some(path) => builder.with_client_cert_verifier(client_verifier(path, provider)?),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_cert_resolver(certs.clone());
        config.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            certs,
            handshakes: Handshakes::new(listener),
        })
    }

    /// The acceptor, for callers that count handshakes themselves.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Runs the server handshake on `io`, giving up after `timeout`, and
    /// counts the result. The negotiated protocol is
    /// `stream.get_ref().1.alpn_protocol()` (`b"h2"` or `b"http/1.1"`).
    pub async fn accept<IO>(
        &self,
        io: IO,
        timeout: Duration,
    ) -> Result<TlsStream<IO>, HandshakeError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(timeout, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => {
                self.handshakes.success.increment(1);
                Ok(stream)
            }
            Ok(Err(e)) => {
                self.handshakes.failure.increment(1);
                tracing::debug!(error = %e, "tls handshake failed");
                Err(HandshakeError::Io(e))
            }
            Err(_) => {
                self.handshakes.timeout.increment(1);
                Err(HandshakeError::Timeout)
            }
        }
    }

    /// Re-reads the certificate files now; returns how many pairs were
    /// replaced. A pair whose new files are unreadable, half-written or do
    /// not match each other is kept as it was.
    pub fn reload(&self) -> usize {
        self.certs.reload_pairs()
    }

    /// Re-reads the certificate files every `every` (see
    /// [`crate::edge::watch::DEFAULT_RELOAD_INTERVAL`]) until this value
    /// and every clone of its acceptor are dropped.
    pub fn spawn_reload(&self, every: Duration) -> JoinHandle<()> {
        spawn_reload(Arc::downgrade(&self.certs), every)
    }
}

impl Handshakes {
    fn new(listener: &str) -> Self {
        let counter = |result: &'static str| {
            metrics::counter!(
                "vakt_tls_handshakes_total",
                "listener" => listener.to_string(),
                "result" => result
            )
        };
        Self {
            success: counter("success"),
            failure: counter("failure"),
            timeout: counter("timeout"),
        }
    }
}

fn client_verifier(
    path: &str,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::ClientCa {
        path: path.to_string(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate".into()));
    }
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests;
