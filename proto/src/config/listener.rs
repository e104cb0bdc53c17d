//! Listeners: the sockets the proxy accepts on.

use serde::{Deserialize, Serialize};

use crate::Duration;

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
    /// `http` (default): a plain HTTP listener. `outbound` and `inbound`:
    /// transparent listeners that connections are redirected to by
    /// iptables; they read each connection's original destination.
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub mode: ListenerMode,
    /// Transparent listeners only: original destination ports where the
    /// server speaks first (MySQL, SMTP). Their connections skip protocol
    /// detection and are proxied as TCP at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub opaque_ports: Vec<u16>,
    /// Transparent listeners only: how long protocol detection waits for
    /// the client's first bytes before it treats the connection as TCP.
    /// Default `1s`.
    #[serde(
        default = "default_detect_timeout",
        skip_serializing_if = "is_default_detect_timeout"
    )]
    pub detect_timeout: Duration,
    /// Transparent listeners only: connections open at once; more are
    /// closed at accept. Default: no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<u32>,
    /// Transparent listeners only: HTTP requests in flight at once toward
    /// their destinations; more are answered 503 `overflow`. Default: no
    /// limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u32>,
}

/// How a listener learns where a connection goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Requests are routed by their host and path.
    #[default]
    Http,
    /// Transparent, for the application's outgoing connections: HTTP is
    /// routed by host, else by the backend whose `addresses` hold the
    /// original destination, else sent on to that destination.
    Outbound,
    /// Transparent, for connections to the application: each goes to
    /// `127.0.0.1` on its original destination port.
    Inbound,
}

impl ListenerMode {
    /// Whether connections arrive redirected, with an original
    /// destination to read.
    pub fn is_transparent(self) -> bool {
        self != Self::Http
    }

    /// The `direction` metric label: `outbound` or `inbound`; `None` for
    /// HTTP listeners, whose series keep their labels.
    pub fn direction(self) -> Option<&'static str> {
        match self {
            Self::Http => None,
            Self::Outbound => Some("outbound"),
            Self::Inbound => Some("inbound"),
        }
    }
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

/// Default of [`Listener::detect_timeout`]: 1 s. Clients of
/// client-first protocols send their first bytes within a round trip; a
/// server-first protocol on a port not listed as opaque waits this long
/// once per connection.
pub const DEFAULT_DETECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

fn default_detect_timeout() -> Duration {
    Duration::from_secs(1)
}

fn is_default_detect_timeout(d: &Duration) -> bool {
    d.get() == DEFAULT_DETECT_TIMEOUT
}

fn default_alpn() -> Vec<String> {
    vec!["h2".into(), "http/1.1".into()]
}

fn default_min_version() -> String {
    "1.2".into()
}
