//! Who may call a route: JWT bearer tokens and API keys.
//!
//! After routing, the pipeline calls [`Authenticator::check`] for a route
//! with `auth`. On `Err`, it answers from [`AuthError`] (401 with
//! `WWW-Authenticate`, or 403) and the request goes no further. On `Ok`,
//! it calls [`Identity::apply`] on the upstream request headers, which
//! removes any client-sent copy of the forwarded-claim headers and of the
//! API key header before setting the claims, and keeps
//! [`Identity::subject`] for `jwt-sub` rate limits. Either way it counts
//! `vakt_auth_total{route,result}` with [`AuthOutcome::as_str`].

mod api_key;
mod jwt;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use serde_json::Value;
use tokio::task::JoinHandle;
use vakt_api::config::Auth;

use crate::edge::watch::spawn_reload;
use api_key::ApiKeys;
use jwt::{Claims, JwtVerifier};

/// Why a route's `auth` could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error("auth names neither jwt nor apiKeys")]
    Empty,
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("jwks {path}: {reason}")]
    Jwks { path: String, reason: String },
    #[error("api keys {path} line {line}: expected a SHA-256 hash in hex")]
    KeysFile { path: String, line: usize },
    #[error("invalid header name {0:?}")]
    Header(String),
}

/// The result of one check, for `vakt_auth_total{result}`; a bounded set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthOutcome {
    Allowed,
    /// No credential at all.
    Missing,
    /// A malformed token or API key, a bad signature or an unknown key.
    Invalid,
    Expired,
    NotYetValid,
    /// A token whose `kid` is in no loaded key.
    UnknownKey,
    WrongIssuer,
    WrongAudience,
    /// Valid, but lacking a required claim.
    Forbidden,
}

/// A request refused by [`Authenticator::check`].
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    /// 401: missing or bad credential; `challenge` is the
    /// `WWW-Authenticate` value.
    #[error("unauthenticated: {}", outcome.as_str())]
    Unauthenticated {
        outcome: AuthOutcome,
        challenge: HeaderValue,
    },
    /// 403: authenticated, but the route requires claims it lacks.
    #[error("forbidden")]
    Forbidden,
}

/// How a request authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    Jwt,
    ApiKey,
}

/// An authenticated caller.
#[derive(Clone, Debug)]
pub struct Identity {
    pub method: AuthMethod,
    /// The token's `sub`, or for an API key the first 16 hex digits of its
    /// hash.
    pub subject: Option<String>,
    headers: Vec<(HeaderName, HeaderValue)>,
    strip: Arc<[HeaderName]>,
}

/// The `auth` of one route, with its key files loaded.
#[derive(Debug)]
pub struct Authenticator {
    jwt: Option<Arc<JwtVerifier>>,
    api_keys: Option<Arc<ApiKeys>>,
    forward: Vec<(String, HeaderName)>,
    required: Vec<(String, String)>,
    strip: Arc<[HeaderName]>,
    challenge_missing: HeaderValue,
    challenge_token: HeaderValue,
    challenge_key: HeaderValue,
}

impl Authenticator {
    /// Loads the JWKS and API key files named by `auth`.
    pub fn from_config(auth: &Auth) -> Result<Self, AuthConfigError> {
        if auth.jwt.is_none() && auth.api_keys.is_none() {
            return Err(AuthConfigError::Empty);
        }
        let jwt = auth
            .jwt
            .as_ref()
            .map(JwtVerifier::from_config)
            .transpose()?;
        let api_keys = auth
            .api_keys
            .as_ref()
            .map(ApiKeys::from_config)
            .transpose()?;
        let mut forward = Vec::new();
        let mut required = Vec::new();
        if let Some(cfg) = &auth.jwt {
            for (claim, header) in &cfg.forward_claims {
                let name = HeaderName::from_bytes(header.as_bytes())
                    .map_err(|_| AuthConfigError::Header(header.clone()))?;
                forward.push((claim.clone(), name));
            }
            required.extend(cfg.required_claims.clone());
        }
        let mut strip: Vec<HeaderName> = forward.iter().map(|(_, h)| h.clone()).collect();
        strip.extend(api_keys.as_ref().map(|k| k.header.clone()));
        let key_challenge = api_keys
            .as_ref()
            .map(|k| format!("ApiKey header=\"{}\"", k.header));
        let missing = match (&jwt, &key_challenge) {
            (Some(_), Some(k)) => format!("Bearer, {k}"),
            (Some(_), None) => "Bearer".to_string(),
            (None, k) => k.clone().unwrap_or_default(),
        };
        let value = |s: &str| HeaderValue::from_str(s).expect("challenge is visible ascii");
        Ok(Self {
            jwt: jwt.map(Arc::new),
            api_keys: api_keys.map(Arc::new),
            forward,
            required,
            strip: strip.into(),
            challenge_missing: value(&missing),
            challenge_token: value("Bearer error=\"invalid_token\""),
            challenge_key: value(key_challenge.as_deref().unwrap_or("ApiKey")),
        })
    }

    /// Checks the credentials of a request against the current time.
    pub fn check(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        self.check_at(headers, now)
    }

    /// Checks the credentials of a request at `now`, in seconds since the
    /// Unix epoch. A bearer token is tried first, then an API key; either
    /// one valid is enough.
    pub fn check_at(&self, headers: &HeaderMap, now: u64) -> Result<Identity, AuthError> {
        let mut failure = None;
        if let Some(jwt) = &self.jwt {
            match bearer(headers) {
                Bearer::Absent => {}
                Bearer::Malformed => failure = Some(self.bad_token(AuthOutcome::Invalid)),
                Bearer::Token(token) => match jwt.verify(token, now) {
                    Ok(claims) => return self.jwt_identity(&claims),
                    Err(outcome) => failure = Some(self.bad_token(outcome)),
                },
            }
        }
        let key = self
            .api_keys
            .as_ref()
            .and_then(|k| Some((k, headers.get(&k.header)?)));
        if let Some((keys, presented)) = key {
            match keys.verify(presented.as_bytes()) {
                Some(hash) => return Ok(self.key_identity(&hash)),
                None => {
                    failure = failure.or(Some(AuthError::Unauthenticated {
                        outcome: AuthOutcome::Invalid,
                        challenge: self.challenge_key.clone(),
                    }))
                }
            }
        }
        Err(failure.unwrap_or_else(|| AuthError::Unauthenticated {
            outcome: AuthOutcome::Missing,
            challenge: self.challenge_missing.clone(),
        }))
    }

    /// Re-reads the JWKS and API key files now.
    pub fn reload(&self) {
        if let Some(j) = &self.jwt {
            j.reload_keys();
        }
        if let Some(k) = &self.api_keys {
            k.reload_keys();
        }
    }

    /// Re-reads the key files every `every` (see
    /// [`crate::edge::watch::DEFAULT_RELOAD_INTERVAL`]) until this
    /// authenticator is dropped.
    pub fn spawn_reload(&self, every: Duration) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Some(j) = &self.jwt {
            tasks.push(spawn_reload(Arc::downgrade(j), every));
        }
        if let Some(k) = &self.api_keys {
            tasks.push(spawn_reload(Arc::downgrade(k), every));
        }
        tasks
    }

    fn bad_token(&self, outcome: AuthOutcome) -> AuthError {
        AuthError::Unauthenticated {
            outcome,
            challenge: self.challenge_token.clone(),
        }
    }

    fn jwt_identity(&self, claims: &Claims) -> Result<Identity, AuthError> {
        let satisfied = self
            .required
            .iter()
            .all(|(name, want)| claims.get(name).is_some_and(|v| claim_has(v, want)));
        if !satisfied {
            return Err(AuthError::Forbidden);
        }
        let headers = self
            .forward
            .iter()
            .filter_map(|(claim, header)| {
                let value = claim_value(claims.get(claim)?)?;
                Some((header.clone(), value))
            })
            .collect();
        Ok(Identity {
            method: AuthMethod::Jwt,
            subject: claims
                .get("sub")
                .and_then(Value::as_str)
                .map(str::to_string),
            headers,
            strip: self.strip.clone(),
        })
    }

    fn key_identity(&self, hash: &[u8; 32]) -> Identity {
        let subject = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
        Identity {
            method: AuthMethod::ApiKey,
            subject: Some(subject),
            headers: Vec::new(),
            strip: self.strip.clone(),
        }
    }
}

impl Identity {
    /// The headers to set on the upstream request (`forwardClaims`).
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.headers
    }

    /// Removes every client-sent copy of the forwarded-claim headers and of
    /// the API key header, then sets the claims of this identity.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in self.strip.iter() {
            headers.remove(name);
        }
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
    }
}

impl AuthError {
    /// 401 or 403.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
        }
    }

    /// For `vakt_auth_total{result}`.
    pub fn outcome(&self) -> AuthOutcome {
        match self {
            Self::Unauthenticated { outcome, .. } => *outcome,
            Self::Forbidden => AuthOutcome::Forbidden,
        }
    }

    /// The `WWW-Authenticate` value of a 401.
    pub fn challenge(&self) -> Option<&HeaderValue> {
        match self {
            Self::Unauthenticated { challenge, .. } => Some(challenge),
            Self::Forbidden => None,
        }
    }
}

impl AuthOutcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Allowed => "allowed",
            Self::Missing => "missing",
            Self::Invalid => "invalid",
            Self::Expired => "expired",
            Self::NotYetValid => "not-yet-valid",
            Self::UnknownKey => "unknown-key",
            Self::WrongIssuer => "wrong-issuer",
            Self::WrongAudience => "wrong-audience",
            Self::Forbidden => "forbidden",
        }
    }
}

enum Bearer<'a> {
    Absent,
    Malformed,
    Token(&'a str),
}

/// `Authorization: Bearer <token>` (scheme case-insensitive, RFC 6750
/// section 2.1). Another scheme counts as no token; two `Authorization`
/// headers are refused as ambiguous.
fn bearer(headers: &HeaderMap) -> Bearer<'_> {
    let mut all = headers.get_all(http::header::AUTHORIZATION).iter();
    let Some(value) = all.next() else {
        return Bearer::Absent;
    };
    if all.next().is_some() {
        return Bearer::Malformed;
    }
    let Ok(s) = value.to_str() else {
        return Bearer::Malformed;
    };
    match s.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Bearer::Malformed
            } else {
                Bearer::Token(token)
            }
        }
        _ => Bearer::Absent,
    }
}

/// A required claim holds `want` when it equals it, when it is an array
/// containing it, or when it is a space-separated list (`scope`) naming it.
fn claim_has(v: &Value, want: &str) -> bool {
    match v {
        Value::String(s) => s == want || s.split(' ').any(|part| part == want),
        Value::Array(items) => items.iter().any(|i| i.as_str() == Some(want)),
        Value::Number(n) => n.to_string() == want,
        Value::Bool(b) => b.to_string() == want,
        _ => false,
    }
}

/// A claim as a header value: strings as they are, other values as JSON.
/// A value that cannot be a header is left out.
fn claim_value(v: &Value) -> Option<HeaderValue> {
    match v {
        Value::String(s) => HeaderValue::from_str(s).ok(),
        Value::Null => None,
        other => HeaderValue::try_from(other.to_string()).ok(),
    }
}

#[cfg(test)]
mod tests;
