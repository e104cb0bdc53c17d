//! API keys in a request header, checked against a file of their SHA-256
//! hashes (lowercase or uppercase hex, one per line, `#` starts a
//! comment), so the file never holds a usable key. The file is re-read
//! when it changes.

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use http::HeaderName;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use vakt_api::config::ApiKeyAuth;

use super::AuthConfigError;
use crate::edge::watch::{Reload, fingerprint};

/// The accepted key hashes of one route.
#[derive(Debug)]
pub(super) struct ApiKeys {
    pub(super) header: HeaderName,
    path: String,
    hashes: ArcSwap<KeyHashes>,
    rejected: Mutex<Option<[u8; 32]>>,
}

#[derive(Debug)]
struct KeyHashes {
    hashes: Vec<[u8; 32]>,
    digest: [u8; 32],
}

impl ApiKeys {
    pub(super) fn from_config(cfg: &ApiKeyAuth) -> Result<Self, AuthConfigError> {
        let header = HeaderName::from_bytes(cfg.header.as_bytes())
            .map_err(|_| AuthConfigError::Header(cfg.header.clone()))?;
        let bytes = read(&cfg.keys_file)?;
        let hashes = parse(&cfg.keys_file, &bytes)?;
        Ok(Self {
            header,
            path: cfg.keys_file.clone(),
            hashes: ArcSwap::from_pointee(hashes),
            rejected: Mutex::new(None),
        })
    }

    /// The hash of `presented` when it is one of the keys. Every stored
    /// hash is compared, each in constant time, so timing reveals neither
    /// which key matched nor how much of one did.
    pub(super) fn verify(&self, presented: &[u8]) -> Option<[u8; 32]> {
        let hash: [u8; 32] = Sha256::digest(presented).into();
        let set = self.hashes.load();
        let found = set
            .hashes
            .iter()
            .fold(subtle::Choice::from(0), |acc, h| acc | h.ct_eq(&hash));
        bool::from(found).then_some(hash)
    }

    /// Re-reads the keys file; returns whether the keys changed.
    pub(super) fn reload_keys(&self) -> bool {
        let bytes = match read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "api keys file unreadable; keeping the loaded keys");
                return false;
            }
        };
        let digest = fingerprint(&[&bytes]);
        if digest == self.hashes.load().digest {
            return false;
        }
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        if *rejected == Some(digest) {
            return false;
        }
        match parse(&self.path, &bytes) {
            Ok(set) => {
                tracing::info!(
                    keys_file = %self.path,
                    keys = set.hashes.len(),
                    "api keys reloaded"
                );
                self.hashes.store(Arc::new(set));
                *rejected = None;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new api keys file refused; keeping the loaded keys");
                *rejected = Some(digest);
                false
            }
        }
    }
}

impl Reload for ApiKeys {
    fn reload(&self) {
        self.reload_keys();
    }
}

fn read(path: &str) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.into(),
        source,
    })
}

fn parse(path: &str, bytes: &[u8]) -> Result<KeyHashes, AuthConfigError> {
    let text = std::str::from_utf8(bytes).map_err(|_| AuthConfigError::KeysFile {
        path: path.into(),
        line: 0,
    })?;
    let mut hashes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let hash = decode_hex(line).ok_or_else(|| AuthConfigError::KeysFile {
            path: path.into(),
            line: i + 1,
        })?;
        hashes.push(hash);
    }
    Ok(KeyHashes {
        hashes,
        digest: fingerprint(&[bytes]),
    })
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(s.chunks(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = (hi * 16 + lo) as u8;
    }
    Some(out)
}
