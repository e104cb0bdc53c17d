//! Listeners: the sockets the proxy accepts on.

use serde::{Deserialize, Serialize};

/// A socket the proxy accepts on. Plain listeners serve HTTP/1.1 and h2c
/// (prior knowledge) on one port; with `tls` they negotiate by ALPN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    /// `ip:port`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<ListenerTls>,
    /// CIDRs whose `x-forwarded-for` is believed and appended to; from any
    /// other peer it is replaced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trusted_proxies: Vec<String>,
    /// Answer every request with a redirect to `https` on the same host.
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub redirect_to_https: bool,
}

/// TLS termination on a listener.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// Default `[h2, http/1.1]`.
    #[serde(default = "default_alpn")]
    pub alpn: Vec<String>,
    /// `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// When set, clients must present a certificate signed by this CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<String>,
}

/// A certificate chain and its private key, both PEM files; re-read when
/// they change on disk.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CertificateFiles {
    pub cert_file: String,
    pub key_file: String,
}

fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

fn default_min_version() -> String {
    "1.2".into()
}
