//! Transparent listeners: connections iptables redirected to the proxy,
//! handled by where they were going.
//!
//! For each connection: read the original destination
//! ([`original_dst`]), then, unless its port is opaque or a TCP backend
//! claims it, detect the protocol ([`detect`]). HTTP is served by the
//! usual request path ([`crate::server`]), which on a transparent
//! listener falls back to a rule found by the destination
//! ([`target`]). Everything else is proxied as bytes ([`tcp`]).
//!
//! Outbound: a destination a backend claims in `addresses` goes to that
//! backend; any other goes to the destination itself. Inbound: the
//! destination port is the application's, reached on `127.0.0.1`.
//!
//! A connection that was not redirected (made to the listener's own
//! address) has no destination of its own: it is proxied only when a
//! backend claims the listener's address, else closed, so the proxy
//! never connects to itself.

pub mod detect;
pub mod original_dst;
mod prefixed;
pub mod target;
pub mod tcp;

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::TcpStream;
use vakt_api::config::{ListenerMode, Protocol};

use crate::listener::Connection;
use crate::server::ConnInfo;
pub use detect::Detected;
pub use prefixed::Prefixed;
pub use target::{Addressed, Implicit, Intercept};

/// Backend label of outbound traffic to a destination no backend claims.
pub const PASSTHROUGH: &str = "passthrough";

/// Backend label of inbound traffic to the local application.
pub const APP: &str = "app";

/// Serves one connection accepted on a transparent listener.
pub(crate) async fn serve(conn: Connection, stream: TcpStream) {
    let l = &conn.proxy.listeners[conn.index];
    let (mode, detect_timeout) = (l.mode, l.detect_timeout.get());
    let local = stream.local_addr().ok();
    let dst = match original_dst::of(&stream) {
        Ok(dst) => dst,
        Err(e) => match local {
            Some(local) => local,
            None => {
                tracing::debug!(peer = %conn.peer, error = %e, "no original destination");
                return;
            }
        },
    };
    let redirected = Some(dst) != local;
    let opaque = l.opaque_ports.contains(&dst.port());

    let (upstream, direction) = match mode {
        ListenerMode::Inbound if redirected => (inbound_target(dst), "inbound"),
        ListenerMode::Inbound => {
            tracing::debug!(peer = %conn.peer, "connection not redirected; closed");
            return;
        }
        _ => (dst, "outbound"),
    };
    let claimed = match mode {
        ListenerMode::Outbound => conn.proxy.routing().addressed.get(&dst).cloned(),
        _ => None,
    };
    if claimed.is_none() && !redirected {
        tracing::debug!(peer = %conn.peer, "connection not redirected and no backend claims it; closed");
        return;
    }
    let tcp_backend = claimed
        .as_ref()
        .is_some_and(|a| a.backend.config.protocol == Protocol::Tcp);

    let mut stream = stream;
    let mut first = Vec::new();
    let detected = if opaque || tcp_backend {
        Detected::Tcp
    } else {
        let (d, ended) = detect::detect(&mut stream, &mut first, detect_timeout).await;
        tracing::debug!(peer = %conn.peer, %dst, detected = ?d, ended = ?ended, "protocol detected");
        d
    };
    let client = Prefixed::new(first, stream);

    match detected {
        Detected::Http1 | Detected::Http2 => {
            let protocol = match detected {
                Detected::Http2 => Protocol::Http2,
                _ => Protocol::Http1,
            };
            let requests = conn.proxy.edge[conn.index].requests.clone();
            let info = ConnInfo {
                listener: conn.index,
                peer: conn.peer,
                tls: false,
                intercept: Some(Intercept::new(mode, upstream, protocol, requests)),
            };
            conn.serve_with(client, info).await
        }
        Detected::Tls | Detected::Tcp => match claimed {
            Some(a) => tcp::to_backend(client, &a.backend, direction).await,
            None => {
                let metrics = tcp::unclaimed(direction);
                tcp::to_address(client, upstream, UNCLAIMED_CONNECT_TIMEOUT, metrics).await
            }
        },
    }
}

/// Connect timeout toward a destination no backend claims: the default
/// of a backend's `connectTimeout`.
const UNCLAIMED_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The application's side of an inbound connection: the same port on
/// loopback.
fn inbound_target(dst: SocketAddr) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port()))
}
