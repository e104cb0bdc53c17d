//! Edge policy: authentication, rate limits and downstream protection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Duration;

/// Who may call a route. A missing or bad credential is 401; a valid one
/// lacking what the route requires is 403.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Auth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys: Option<ApiKeyAuth>,
}

/// JWT bearer tokens (RS256, ES256, EdDSA) checked against a JWKS file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtAuth {
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Re-read when it changes.
    pub jwks_file: String,
    /// Claim name to request header name, set on the forwarded request.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub forward_claims: BTreeMap<String, String>,
    /// Claims that must hold these values, else 403.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub required_claims: BTreeMap<String, String>,
    /// Clock skew allowed on `exp` and `nbf`; default `30s`.
    #[serde(default = "default_leeway")]
    pub leeway: Duration,
}

/// API keys in a header, checked against a file of SHA-256 hashes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyAuth {
    #[serde(default = "default_api_key_header")]
    pub header: String,
    pub keys_file: String,
}

/// A token bucket per key: `burst` requests at once, refilled at
/// `requestsPerSecond`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Use the named top-level rate limit (shared on purpose); the other
    /// fields must then be absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests_per_second: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burst: Option<u32>,
    /// `client-ip` (default), `header:NAME` or `jwt-sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A rate limit that several routes share by naming it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedRateLimit {
    pub name: String,
    pub requests_per_second: f64,
    pub burst: u32,
    #[serde(default = "default_rate_key")]
    pub key: String,
}

/// Downstream protection on every listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// Default 16384; larger request heads get 431.
    #[serde(default = "default_max_header_bytes")]
    pub max_header_bytes: usize,
    /// Default 10 MiB; larger request bodies get 413.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Default `10s`; a client slower to send its request head is dropped.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Default 1024.
    #[serde(default = "default_max_conns_per_ip")]
    pub max_connections_per_ip: u32,
    /// HTTP/2 streams at once per connection; default 256.
    #[serde(default = "default_max_streams")]
    pub max_concurrent_streams: u32,
    /// HTTP/2 stream resets a client may cause per connection before it
    /// is dropped (rapid-reset flood); default 200.
    #[serde(default = "default_max_resets")]
    pub max_pending_resets: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_header_bytes: default_max_header_bytes(),
            max_body_bytes: default_max_body_bytes(),
            header_read_timeout: default_header_read_timeout(),
            max_connections_per_ip: default_max_conns_per_ip(),
            max_concurrent_streams: default_max_streams(),
            max_pending_resets: default_max_resets(),
        }
    }
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_api_key_header() -> String {
    "x-api-key".into()
}
fn default_rate_key() -> String {
    "client-ip".into()
}
fn default_max_header_bytes() -> usize {
    16 * 1024
}
fn default_max_body_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_conns_per_ip() -> u32 {
    1024
}
fn default_max_streams() -> u32 {
    256
}
fn default_max_resets() -> u32 {
    200
}
