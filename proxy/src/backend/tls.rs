//! TLS toward a backend's endpoints: the CA that signs them, the name to
//! check, and an optional client certificate for mTLS, re-read from disk
//! when it changes (like the edge's certificates, a new pair is used from
//! the next connection once both files match).

use std::net::SocketAddr;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use vakt_api::config::{self, Protocol};

pub use crate::edge::tls::TlsError;
use crate::edge::tls::store::CertStore;
use crate::edge::watch::{DEFAULT_RELOAD_INTERVAL, spawn_reload};

/// How a backend's connections are secured.
pub struct UpstreamTls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// Keeps the client certificate (and its reload task) alive.
    _client_cert: Option<Arc<CertStore>>,
}

impl UpstreamTls {
    /// Reads the CA and client certificate files now.
    pub fn from_config(
        backend: &str,
        tls: &config::UpstreamTls,
        protocol: Protocol,
    ) -> Result<Self, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = roots(&tls.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots);
        let client_cert = match &tls.client_certificate {
            Some(files) => {
                let label = format!("backend {backend}");
                let store = Arc::new(CertStore::load(
                    &label,
                    std::slice::from_ref(files),
                    provider,
                )?);
                if tokio::runtime::Handle::try_current().is_ok() {
                    spawn_reload(Arc::downgrade(&store), DEFAULT_RELOAD_INTERVAL);
                }
                Some(store)
            }
            None => None,
        };
        let mut config = match &client_cert {
            Some(store) => builder.with_client_cert_resolver(store.clone()),
            None => builder.with_no_client_auth(),
        };
        // A resumed session carries the identity of the first handshake;
        // without resumption a rotated client certificate is presented
        // on the next connection. Pooled connections keep handshakes rare.
        config.resumption = rustls::client::Resumption::disabled();
        config.alpn_protocols = match protocol {
            Protocol::Http2 => vec![b"h2".to_vec()],
            Protocol::Http1 | Protocol::Tcp => vec![b"http/1.1".to_vec()],
        };
        let server_name = match &tls.server_name {
            Some(n) => Some(ServerName::try_from(n.clone()).map_err(|e| TlsError::Pem {
                path: "serverName".into(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            server_name,
            _client_cert: client_cert,
        })
    }

    /// Runs the client handshake on a new connection to `addr`. The
    /// certificate is checked against `serverName`, or the address.
    pub async fn connect(
        &self,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> std::io::Result<TlsStream<TcpStream>> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(addr.ip().into()));
        self.connector.connect(name, tcp).await
    }
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn roots(path: &str) -> Result<RootCertStore, TlsError> {
    let pem = std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_string(),
        source,
    })?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| TlsError::Pem {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_string(),
            reason: "no certificate".into(),
        });
    }
    Ok(roots)
}
