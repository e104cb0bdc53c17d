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
use std::sync::Arc;

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

/// Where one transparent connection goes.
struct Destination {
    /// The original destination.
    dst: SocketAddr,
    /// Where bytes go when no backend takes them: `dst` outbound, the
    /// application inbound.
    upstream: SocketAddr,
    direction: &'static str,
    /// The backend claiming `dst`, outbound.
    claimed: Option<Arc<Addressed>>,
    /// No detection: an opaque port or a TCP backend.
    opaque: bool,
}

/// Serves one connection accepted on a transparent listener.
pub(crate) async fn serve(conn: Connection, mut stream: TcpStream) {
    let Some(to) = destination(&conn, &stream) else {
        return;
    };
    let mut first = Vec::new();
    let detected = if to.opaque {
        Detected::Tcp
    } else {
        let timeout = conn.proxy.listeners[conn.index].detect_timeout.get();
        let (d, ended) = detect::detect(&mut stream, &mut first, timeout).await;
        let dst = to.dst;
        tracing::debug!(peer = %conn.peer, %dst, detected = ?d, ended = ?ended, "protocol detected");
        d
    };
    let client = Prefixed::new(first, stream);
    let protocol = match detected {
        Detected::Http1 => Protocol::Http1,
        Detected::Http2 => Protocol::Http2,
        Detected::Tls | Detected::Tcp => return proxy_tcp(client, to).await,
    };
    let mode = conn.proxy.listeners[conn.index].mode;
    let requests = conn.proxy.edge[conn.index].requests.clone();
    let info = ConnInfo {
        listener: conn.index,
        peer: conn.peer,
        tls: false,
        intercept: Some(Intercept::new(mode, to.upstream, protocol, requests)),
    };
    conn.serve_with(client, info).await
}

/// Reads the original destination and decides where the connection
/// goes; `None` when it must be closed.
fn destination(conn: &Connection, stream: &TcpStream) -> Option<Destination> {
    let l = &conn.proxy.listeners[conn.index];
    let local = stream.local_addr().ok();
    let dst = match original_dst::of(stream) {
        Ok(dst) => dst,
        Err(e) => {
            tracing::debug!(peer = %conn.peer, error = %e, "no original destination");
            local?
        }
    };
    let redirected = Some(dst) != local;
    let (upstream, direction, claimed) = match l.mode {
        ListenerMode::Inbound if redirected => (inbound_target(dst), "inbound", None),
        ListenerMode::Inbound => {
            tracing::debug!(peer = %conn.peer, "inbound connection not redirected; closed");
            return None;
        }
        _ => {
            let claimed = conn.proxy.routing().addressed.get(&dst).cloned();
            (dst, "outbound", claimed)
        }
    };
    if claimed.is_none() && !redirected {
        tracing::debug!(peer = %conn.peer, "not redirected and no backend claims it; closed");
        return None;
    }
    let tcp_backend = claimed
        .as_ref()
        .is_some_and(|a| a.backend.config.protocol == Protocol::Tcp);
    Some(Destination {
        dst,
        upstream,
        direction,
        opaque: tcp_backend || l.opaque_ports.contains(&dst.port()),
        claimed,
    })
}

/// Proxies the connection's bytes: to the backend claiming its
/// destination, else to where it was going.
async fn proxy_tcp(client: Prefixed<TcpStream>, to: Destination) {
    match to.claimed {
        Some(a) => tcp::to_backend(client, &a.backend, to.direction).await,
        None => {
            let metrics = tcp::unclaimed(to.direction);
            tcp::to_address(client, to.upstream, UNCLAIMED_CONNECT_TIMEOUT, metrics).await
        }
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
