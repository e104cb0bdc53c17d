//! The certificates of one TLS listener: each certificate and key pair
//! behind an atomic pointer, picked per handshake by SNI, and swapped when
//! both files change into a consistent new pair.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use vakt_api::config::CertificateFiles;

use super::TlsError;
use crate::edge::watch::{Reload, fingerprint};

/// All certificate pairs of a listener; the first is the default.
#[derive(Debug)]
pub(crate) struct CertStore {
    listener: Arc<str>,
    provider: Arc<CryptoProvider>,
    pairs: Vec<Pair>,
}

#[derive(Debug)]
struct Pair {
    files: CertificateFiles,
    current: ArcSwap<Loaded>,
    /// Digest of the last file contents that could not be used, so a bad
    /// pair is reported once rather than on every check.
    rejected: Mutex<Option<[u8; 32]>>,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    digest: [u8; 32],
}

impl CertStore {
    /// Loads every pair; fails if any pair is unreadable or inconsistent.
    pub(crate) fn load(
        listener: &str,
        files: &[CertificateFiles],
        provider: Arc<CryptoProvider>,
    ) -> Result<Self, TlsError> {
        if files.is_empty() {
            return Err(TlsError::NoCertificates);
        }
        let mut pairs = Vec::with_capacity(files.len());
        for f in files {
            let (cert, key) = read_pair(f)?;
            let loaded = parse_pair(f, &cert, &key, &provider)?;
            pairs.push(Pair {
                files: f.clone(),
                current: ArcSwap::from_pointee(loaded),
                rejected: Mutex::new(None),
            });
        }
        Ok(Self {
            listener: listener.into(),
            provider,
            pairs,
        })
    }

    /// Re-reads every pair; returns how many were replaced.
    pub(crate) fn reload_pairs(&self) -> usize {
        self.pairs.iter().filter(|p| self.reload_one(p)).count()
    }

    fn reload_one(&self, pair: &Pair) -> bool {
        let f = &pair.files;
        let (cert, key) = match read_pair(f) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(
                    listener = %self.listener,
                    error = %e,
                    "certificate files unreadable; keeping the loaded pair"
                );
                return false;
            }
        };
        let digest = fingerprint(&[&cert, &key]);
        if digest == pair.current.load().digest {
            return false;
        }
        let mut rejected = pair.rejected.lock().unwrap_or_else(|e| e.into_inner());
        if *rejected == Some(digest) {
            return false;
        }
        match parse_pair(f, &cert, &key, &self.provider) {
            Ok(loaded) => {
                pair.current.store(Arc::new(loaded));
                *rejected = None;
                tracing::info!(
                    listener = %self.listener,
                    cert_file = %f.cert_file,
                    "certificate reloaded"
                );
                true
            }
            Err(e) => {
                *rejected = Some(digest);
                tracing::warn!(
                    listener = %self.listener,
                    error = %e,
                    "new certificate files refused; keeping the loaded pair"
                );
                false
            }
        }
    }

    /// The pair whose end-entity certificate is valid for `sni`, if any.
    fn by_name(&self, sni: &str) -> Option<Arc<CertifiedKey>> {
        let name = ServerName::try_from(sni).ok()?;
        self.pairs.iter().find_map(|p| {
            let key = &p.current.load().key;
            let ee = key.end_entity_cert().ok()?;
            let cert = webpki::EndEntityCert::try_from(ee).ok()?;
            cert.verify_is_valid_for_subject_name(&name)
                .ok()
                .map(|()| key.clone())
        })
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        if let Some(found) = hello.server_name().and_then(|n| self.by_name(n)) {
            return Some(found);
        }
        self.pairs.first().map(|p| p.current.load().key.clone())
    }
}

impl Reload for CertStore {
    fn reload(&self) {
        self.reload_pairs();
    }
}

fn read_pair(f: &CertificateFiles) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &str| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_string(),
            source,
        })
    };
    Ok((read(&f.cert_file)?, read(&f.key_file)?))
}

/// Parses a chain and its key and insists that they belong together, so a
/// pair caught half-way through a rotation is never served.
fn parse_pair(
    f: &CertificateFiles,
    cert: &[u8],
    key: &[u8],
    provider: &CryptoProvider,
) -> Result<Loaded, TlsError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: f.cert_file.clone(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: f.cert_file.clone(),
            reason: "no certificate".into(),
        });
    }
    let private = PrivateKeyDer::from_pem_slice(key).map_err(|e| TlsError::Pem {
        path: f.key_file.clone(),
        reason: e.to_string(),
    })?;
    let pair_err = |source| TlsError::Pair {
        cert_file: f.cert_file.clone(),
        key_file: f.key_file.clone(),
        source,
    };
    let ck = CertifiedKey::from_der(chain, private, provider).map_err(pair_err)?;
    ck.keys_match().map_err(pair_err)?;
    Ok(Loaded {
        key: Arc::new(ck),
        digest: fingerprint(&[cert, key]),
    })
}

impl CertStore {
    /// The first pair, as a client certificate toward upstreams.
    pub(crate) fn first(&self) -> Option<Arc<CertifiedKey>> {
        self.pairs.first().map(|p| p.current.load().key.clone())
    }
}

impl rustls::client::ResolvesClientCert for CertStore {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.first()
    }

    fn has_certs(&self) -> bool {
        true
    }
}
