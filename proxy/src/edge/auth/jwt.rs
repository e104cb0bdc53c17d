//! JWT bearer tokens signed with RS256, ES256 or EdDSA, checked against the
//! keys of a JWKS file that is re-read when it changes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};
use vakt_api::config::JwtAuth;

use super::{AuthConfigError, AuthOutcome};
use crate::edge::watch::{Reload, fingerprint};

/// The claims of a verified token.
pub(super) type Claims = Map<String, Value>;

/// Verifies tokens for one route.
#[derive(Debug)]
pub(super) struct JwtVerifier {
    path: String,
    keys: ArcSwap<KeySet>,
    rejected: Mutex<Option<[u8; 32]>>,
    /// One per accepted algorithm, built once: issuer and audiences only;
    /// times are checked here with the route's leeway.
    validations: [(Algorithm, Validation); 3],
    leeway_secs: u64,
}

#[derive(Debug)]
struct KeySet {
    keys: Vec<Key>,
    digest: [u8; 32],
}

struct Key {
    kid: Option<String>,
    alg: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish()
    }
}

impl JwtVerifier {
    pub(super) fn from_config(cfg: &JwtAuth) -> Result<Self, AuthConfigError> {
        let bytes = read(&cfg.jwks_file)?;
        let keys = parse_jwks(&cfg.jwks_file, &bytes)?;
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.validate_exp = false;
            v.validate_nbf = false;
            v.set_issuer(&[&cfg.issuer]);
            let mut required: HashSet<String> = HashSet::from(["iss".to_string()]);
            if cfg.audiences.is_empty() {
                v.validate_aud = false;
            } else {
                v.set_audience(&cfg.audiences);
                required.insert("aud".into());
            }
            v.required_spec_claims = required;
            (alg, v)
        };
        Ok(Self {
            path: cfg.jwks_file.clone(),
            keys: ArcSwap::from_pointee(keys),
            rejected: Mutex::new(None),
            validations: [
                validation(Algorithm::RS256),
                validation(Algorithm::ES256),
                validation(Algorithm::EdDSA),
            ],
            leeway_secs: cfg.leeway.get().as_secs(),
        })
    }

    /// Verifies `token` at `now` (seconds since the Unix epoch).
    pub(super) fn verify(&self, token: &str, now: u64) -> Result<Claims, AuthOutcome> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthOutcome::Invalid)?;
        let (alg, validation) = self
            .validations
            .iter()
            .find(|(a, _)| *a == header.alg)
            .ok_or(AuthOutcome::Invalid)?;
        let keys = self.keys.load();
        let mut candidates = keys.keys.iter().filter(|k| k.alg == *alg);
        let claims = match header.kid.as_deref() {
            Some(kid) => {
                let key = candidates
                    .find(|k| k.kid.as_deref() == Some(kid))
                    .ok_or(AuthOutcome::UnknownKey)?;
                decode(token, &key.key, validation)?
            }
            None => {
                let mut last = AuthOutcome::UnknownKey;
                let found = candidates.find_map(|k| match decode(token, &k.key, validation) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        last = e;
                        None
                    }
                });
                found.ok_or(last)?
            }
        };
        self.check_times(&claims, now)?;
        Ok(claims)
    }

    /// `exp` is required; `nbf` is checked when present. Both allow the
    /// route's leeway for clock skew.
    fn check_times(&self, claims: &Claims, now: u64) -> Result<(), AuthOutcome> {
        let exp = claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or(AuthOutcome::Invalid)?;
        if (now as f64) >= exp + self.leeway_secs as f64 {
            return Err(AuthOutcome::Expired);
        }
        match claims.get("nbf") {
            None => Ok(()),
            Some(nbf) => {
                let nbf = nbf.as_f64().ok_or(AuthOutcome::Invalid)?;
                if (now + self.leeway_secs) as f64 >= nbf {
                    Ok(())
                } else {
                    Err(AuthOutcome::NotYetValid)
                }
            }
        }
    }

    /// Re-reads the JWKS file; returns whether the keys changed.
    pub(super) fn reload_keys(&self) -> bool {
        let bytes = match read(&self.path) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "jwks file unreadable; keeping the loaded keys");
                return false;
            }
        };
        let digest = fingerprint(&[&bytes]);
        if digest == self.keys.load().digest {
            return false;
        }
        let mut rejected = self.rejected.lock().unwrap_or_else(|e| e.into_inner());
        if *rejected == Some(digest) {
            return false;
        }
        match parse_jwks(&self.path, &bytes) {
            Ok(keys) => {
                tracing::info!(jwks_file = %self.path, keys = keys.keys.len(), "jwks reloaded");
                self.keys.store(Arc::new(keys));
                *rejected = None;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "new jwks refused; keeping the loaded keys");
                *rejected = Some(digest);
                false
            }
        }
    }
}

impl Reload for JwtVerifier {
    fn reload(&self) {
        self.reload_keys();
    }
}

fn decode(token: &str, key: &DecodingKey, v: &Validation) -> Result<Claims, AuthOutcome> {
    match jsonwebtoken::decode::<Claims>(token, key, v) {
        Ok(data) => Ok(data.claims),
        Err(e) => Err(match e.kind() {
            ErrorKind::InvalidIssuer => AuthOutcome::WrongIssuer,
            ErrorKind::InvalidAudience => AuthOutcome::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthOutcome::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "iss" => AuthOutcome::WrongIssuer,
            _ => AuthOutcome::Invalid,
        }),
    }
}

fn read(path: &str) -> Result<Vec<u8>, AuthConfigError> {
    std::fs::read(path).map_err(|source| AuthConfigError::Read {
        path: path.into(),
        source,
    })
}

/// Keeps the RS256, ES256 (P-256) and EdDSA (Ed25519) keys of a JWKS;
/// refuses a file with none.
fn parse_jwks(path: &str, bytes: &[u8]) -> Result<KeySet, AuthConfigError> {
    let bad = |reason: String| AuthConfigError::Jwks {
        path: path.into(),
        reason,
    };
    let set: JwkSet = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let keys: Vec<Key> = set.keys.iter().filter_map(usable_key).collect();
    if keys.is_empty() {
        return Err(bad("no RS256, ES256 or EdDSA key".into()));
    }
    Ok(KeySet {
        keys,
        digest: fingerprint(&[bytes]),
    })
}

fn usable_key(jwk: &Jwk) -> Option<Key> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            Algorithm::EdDSA
        }
        _ => return None,
    };
    let declared = match jwk.common.key_algorithm {
        None => by_type,
        Some(KeyAlgorithm::RS256) => Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => Algorithm::EdDSA,
        Some(_) => return None,
    };
    if declared != by_type {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        alg: declared,
        key,
    })
}
