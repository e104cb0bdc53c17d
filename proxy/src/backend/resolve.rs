//! Turning endpoint specs (`ip:port` or `host:port`) into addresses.

use std::net::{SocketAddr, ToSocketAddrs};

/// Whether any spec is a host name rather than an address.
pub fn has_names(specs: &[String]) -> bool {
    specs.iter().any(|s| s.parse::<SocketAddr>().is_err())
}

/// Resolves now, blocking: used when a config is built, off the request
/// path. Names that do not resolve are logged and skipped.
pub fn now(specs: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        match spec.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => match spec.to_socket_addrs() {
                Ok(addrs) => out.extend(addrs),
                Err(e) => tracing::warn!(endpoint = %spec, error = %e, "cannot resolve"),
            },
        }
    }
    dedup(out)
}

/// Resolves in the background.
pub async fn lookup(specs: &[String]) -> Vec<SocketAddr> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        match spec.parse::<SocketAddr>() {
            Ok(a) => out.push(a),
            Err(_) => match tokio::net::lookup_host(spec.as_str()).await {
                Ok(addrs) => out.extend(addrs),
                Err(e) => tracing::warn!(endpoint = %spec, error = %e, "cannot resolve"),
            },
        }
    }
    dedup(out)
}

fn dedup(mut v: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|a| seen.insert(*a));
    v
}
