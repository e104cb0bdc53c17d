//! Listeners: accept connections and serve HTTP/1.1 and HTTP/2 (prior
//! knowledge) on the same port, handing each request to [`crate::server`].
//! Connections on a transparent listener go to [`crate::intercept`] first.
//!
//! On shutdown a listener stops accepting at once; its connections are
//! told to finish (`Connection: close` on HTTP/1.1, GOAWAY on HTTP/2) and
//! given until the drain timeout to do so.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use socket2::{Domain, Socket, Type};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use vakt_api::config::Limits;

use crate::http::strict::StrictIo;
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
    let name = proxy.listeners[index].name.clone();
    let builder = Arc::new(http_builder(&proxy.limits));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = %name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let Some(slot) = proxy.conn_limit.try_acquire(peer.ip()) else {
            tracing::debug!(listener = %name, %peer, "too many connections from this client");
            continue;
        };
        let listener_slot = match &proxy.edge[index].connections {
            None => None,
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(s) => Some(s),
                Err(_) => {
                    tracing::debug!(listener = %name, %peer, "listener connection limit reached");
                    continue;
                }
            },
        };
        let conn = Connection {
            proxy: proxy.clone(),
            index,
            peer,
            builder: builder.clone(),
            watcher: graceful.watcher(),
        };
        tokio::spawn(async move {
            conn.serve(stream).await;
            drop((slot, listener_slot));
        });
    }
    drop(listener);
    tracing::info!(listener = %name, "draining");
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(listener = %name, "drain timeout; closing the rest");
    }
}

/// One accepted connection, before and after its TLS handshake.
pub(crate) struct Connection {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) index: usize,
    pub(crate) peer: SocketAddr,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        if self.proxy.listeners[self.index].mode.is_transparent() {
            return crate::intercept::serve(self, stream).await;
        }
        match self.proxy.edge[self.index].tls.clone() {
            None => self.serve_http(stream, false).await,
            Some(tls) => {
                let timeout = self.proxy.limits.header_read_timeout.get();
                match tls.accept(stream, timeout).await {
                    Ok(stream) => self.serve_http(stream, true).await,
                    Err(e) => {
                        tracing::debug!(peer = %self.peer, error = %e, "tls handshake failed")
                    }
                }
            }
        }
    }

    async fn serve_http<IO>(self, io: IO, tls: bool)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let info = ConnInfo {
            listener: self.index,
            peer: self.peer,
            tls,
            intercept: None,
        };
        self.serve_with(io, info).await
    }

    /// Serves HTTP on `io`, checked by [`StrictIo`] like every listener's
    /// connections, with what `info` says of the connection.
    pub(crate) async fn serve_with<IO>(self, io: IO, info: ConnInfo)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let max_head = self.proxy.limits.max_header_bytes;
        let head_timeout = self.proxy.limits.header_read_timeout.get();
        let io = StrictIo::new(io, max_head, head_timeout);
        let info = Arc::new(info);
        let proxy = self.proxy;
        let service = service_fn(move |req| server::handle(proxy.clone(), info.clone(), req));
        let conn = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        if let Err(e) = self.watcher.watch(conn).await {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
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
