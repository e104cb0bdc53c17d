//! Listeners: accept connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge) on the same port, handing each request to [`crate::server`].
//!
//! On shutdown a listener stops accepting at once; its connections are
//! told to finish (`Connection: close` on HTTP/1.1, GOAWAY on HTTP/2) and
//! given until the drain timeout to do so.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use socket2::{Domain, Socket, Type};
use tokio::net::TcpListener;
use tokio::sync::watch;
use vakt_api::config::{Limits, Listener};

use crate::server::{self, ConnInfo};
use crate::state::Proxy;

/// Pending connections the kernel queues per listener.
const BACKLOG: i32 = 4096;

/// Binds a listening socket with address reuse, so a restarted proxy can
/// bind at once.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

/// Accepts on `listener` until `shutdown` turns true, then drains.
pub async fn serve(
    proxy: Arc<Proxy>,
    index: usize,
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let config = proxy.listeners[index].clone();
    let builder = Arc::new(http_builder(&proxy.limits));
    let graceful = GracefulShutdown::new();
    let trusted = trusted_nets(&config);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = %config.name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let info = Arc::new(ConnInfo {
            listener: index,
            peer,
            tls: false,
            trusted_peer: is_trusted(&trusted, peer.ip()),
        });
        let proxy = proxy.clone();
        let service = service_fn(move |req| server::handle(proxy.clone(), info.clone(), req));
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!(listener = %config.name, "draining");
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %config.name, "drain timeout; closing the rest");
    }
}

async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout.get())
        .max_buf_size(limits.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_pending_accept_reset_streams(limits.max_pending_resets as usize)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Duration::from_secs(30));
    b
}

fn trusted_nets(config: &Listener) -> Vec<(IpAddr, u8)> {
    config
        .trusted_proxies
        .iter()
        .filter_map(|c| vakt_api::validate::parse_cidr(c))
        .collect()
}

fn is_trusted(nets: &[(IpAddr, u8)], ip: IpAddr) -> bool {
    nets.iter().any(|(net, len)| in_net(ip, *net, *len))
}

fn in_net(ip: IpAddr, net: IpAddr, len: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let mask = u32::MAX.checked_shl(32 - len as u32).unwrap_or(0);
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let mask = u128::MAX.checked_shl(128 - len as u32).unwrap_or(0);
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_match_their_addresses() {
        let net = |s| vakt_api::validate::parse_cidr(s).unwrap();
        let (n, l) = net("10.0.0.0/8");
        assert!(in_net("10.9.8.7".parse().unwrap(), n, l));
        assert!(!in_net("11.0.0.1".parse().unwrap(), n, l));
        let (n, l) = net("0.0.0.0/0");
        assert!(in_net("1.2.3.4".parse().unwrap(), n, l));
        let (n, l) = net("::1");
        assert!(in_net("::1".parse().unwrap(), n, l));
    }
}
