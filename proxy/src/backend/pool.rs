//! Upstream connections of one endpoint, kept alive and reused.
//!
//! HTTP/1.1 connections carry one request at a time: an idle one is taken
//! from the pool (most recent first) and given back when its response
//! body ends cleanly. HTTP/2 uses one multiplexed connection, replaced
//! when it closes. A connection the upstream closed while idle is noticed
//! at checkout and skipped; one that dies as a request is written is
//! handled by the attempt loop.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use vakt_api::config::{self, Protocol};

use super::tls::UpstreamTls;
use crate::http::body::RequestBody;
use crate::telemetry::metrics;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect to {addr} failed: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {0} timed out")]
    Timeout(SocketAddr),
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("the backend's connection limit is reached")]
    Limit,
    #[error("tls handshake with {addr} failed: {source}")]
    Tls {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A new upstream connection, plain or TLS.
enum Transport {
    Plain(TokioIo<TcpStream>),
    Tls(TokioIo<Box<tokio_rustls::client::TlsStream<TcpStream>>>),
}

/// The pool of one endpoint.
#[derive(Debug)]
pub struct Pool {
    addr: SocketAddr,
    protocol: Protocol,
    connect_timeout: Duration,
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Vec<Idle>>,
    h2: Mutex<Option<http2::SendRequest<RequestBody>>>,
    h2_connecting: tokio::sync::Mutex<()>,
    connections: metrics::ConnectionGauge,
    /// The backend's `maxConnections`, shared by its endpoints.
    slots: Arc<Semaphore>,
    tls: Option<Arc<UpstreamTls>>,
}

#[derive(Debug)]
struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// A connection ready for one request.
pub enum Sender {
    H1(http1::SendRequest<RequestBody>),
    H2(http2::SendRequest<RequestBody>),
}

/// A connection handed out by the pool.
pub struct Checkout {
    pub sender: Sender,
    /// Whether it carried a request before (it may have gone stale).
    pub reused: bool,
}

/// An HTTP/1.1 connection in use, given back by [`PooledConn::release`].
pub struct PooledConn {
    pool: Arc<Pool>,
    sender: http1::SendRequest<RequestBody>,
}

impl Pool {
    pub fn new(
        addr: SocketAddr,
        backend: &config::Backend,
        gauge: metrics::ConnectionGauge,
        slots: Arc<Semaphore>,
        tls: Option<Arc<UpstreamTls>>,
    ) -> Self {
        Self {
            addr,
            protocol: backend.protocol,
            connect_timeout: backend.connect_timeout.get(),
            max_idle: backend.connection_pool.max_idle_per_endpoint,
            idle_timeout: backend.connection_pool.idle_timeout.get(),
            idle: Mutex::new(Vec::new()),
            h2: Mutex::new(None),
            h2_connecting: tokio::sync::Mutex::new(()),
            connections: gauge,
            slots,
            tls,
        }
    }

    /// A connection: a live idle one, or a new one.
    pub async fn checkout(self: &Arc<Self>) -> Result<Checkout, ConnectError> {
        match self.protocol {
            Protocol::Http1 | Protocol::Tcp => {
                if let Some(sender) = self.take_idle() {
                    return Ok(Checkout {
                        sender: Sender::H1(sender),
                        reused: true,
                    });
                }
                let sender = self.connect_h1().await?;
                Ok(Checkout {
                    sender: Sender::H1(sender),
                    reused: false,
                })
            }
            Protocol::Http2 => self.checkout_h2().await,
        }
    }

    /// A new HTTP/1.1 connection, bypassing idle ones (used to retry a
    /// request that failed on a stale connection).
    pub async fn fresh(self: &Arc<Self>) -> Result<Checkout, ConnectError> {
        let sender = match self.protocol {
            Protocol::Http1 | Protocol::Tcp => Sender::H1(self.connect_h1().await?),
            Protocol::Http2 => {
                let s = self.connect_h2().await?;
                *self.h2.lock().expect("pool lock") = Some(s.clone());
                Sender::H2(s)
            }
        };
        Ok(Checkout {
            sender,
            reused: false,
        })
    }

    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        while let Some(c) = idle.pop() {
            // Readiness is awaited by the caller: a connection whose last
            // response just ended may not have signalled it yet.
            if !c.sender.is_closed() && now - c.since < self.idle_timeout {
                return Some(c.sender);
            }
        }
        None
    }

    async fn checkout_h2(self: &Arc<Self>) -> Result<Checkout, ConnectError> {
        let reused = |s| Checkout {
            sender: Sender::H2(s),
            reused: true,
        };
        if let Some(s) = self.live_h2() {
            return Ok(reused(s));
        }
        // One connect at a time: a burst on a cold pool shares the
        // connection the first request opens.
        let _connecting = self.h2_connecting.lock().await;
        if let Some(s) = self.live_h2() {
            return Ok(reused(s));
        }
        let s = self.connect_h2().await?;
        *self.h2.lock().expect("pool lock") = Some(s.clone());
        Ok(Checkout {
            sender: Sender::H2(s),
            reused: false,
        })
    }

    fn live_h2(&self) -> Option<http2::SendRequest<RequestBody>> {
        let h2 = self.h2.lock().expect("pool lock");
        h2.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// A new TCP connection and the connection slot it holds; waits for
    /// a slot at most the connect timeout.
    async fn tcp(&self) -> Result<(TcpStream, OwnedSemaphorePermit), ConnectError> {
        let addr = self.addr;
        let wait = self.slots.clone().acquire_owned();
        let slot = tokio::time::timeout(self.connect_timeout, wait)
            .await
            .map_err(|_| ConnectError::Limit)?
            .map_err(|_| ConnectError::Limit)?;
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|source| ConnectError::Io { addr, source })?;
        let _ = stream.set_nodelay(true);
        Ok((stream, slot))
    }

    /// A new connection, through TLS when the backend asks for it.
    async fn transport(&self) -> Result<(Transport, OwnedSemaphorePermit), ConnectError> {
        let (tcp, slot) = self.tcp().await?;
        let Some(tls) = &self.tls else {
            return Ok((Transport::Plain(TokioIo::new(tcp)), slot));
        };
        let addr = self.addr;
        let stream = tokio::time::timeout(self.connect_timeout, tls.connect(addr, tcp))
            .await
            .map_err(|_| ConnectError::Timeout(addr))?
            .map_err(|source| ConnectError::Tls { addr, source })?;
        Ok((Transport::Tls(TokioIo::new(Box::new(stream))), slot))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<RequestBody>, ConnectError> {
        match self.transport().await? {
            (Transport::Plain(io), slot) => self.start_h1(io, slot).await,
            (Transport::Tls(io), slot) => self.start_h1(io, slot).await,
        }
    }

    async fn start_h1<IO>(
        &self,
        io: IO,
        slot: OwnedSemaphorePermit,
    ) -> Result<http1::SendRequest<RequestBody>, ConnectError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: self.addr,
                source,
            })?;
        let guard = self.connections.opened();
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            drop((guard, slot));
        });
        Ok(sender)
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<RequestBody>, ConnectError> {
        match self.transport().await? {
            (Transport::Plain(io), slot) => self.start_h2(io, slot).await,
            (Transport::Tls(io), slot) => self.start_h2(io, slot).await,
        }
    }

    async fn start_h2<IO>(
        &self,
        io: IO,
        slot: OwnedSemaphorePermit,
    ) -> Result<http2::SendRequest<RequestBody>, ConnectError>
    where
        IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .handshake(io)
            .await
            .map_err(|source| ConnectError::Handshake {
                addr: self.addr,
                source,
            })?;
        let guard = self.connections.opened();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
            drop((guard, slot));
        });
        Ok(sender)
    }

    fn put(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        if idle.len() < self.max_idle {
            idle.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Closes idle connections older than the idle timeout.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut idle = self.idle.lock().expect("pool lock");
        idle.retain(|c| !c.sender.is_closed() && now - c.since < self.idle_timeout);
    }

    /// Idle HTTP/1.1 connections right now.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().expect("pool lock").len()
    }
}

impl PooledConn {
    pub fn new(pool: Arc<Pool>, sender: http1::SendRequest<RequestBody>) -> Self {
        Self { pool, sender }
    }

    /// Gives the connection back after a response body ended cleanly.
    pub fn release(self) {
        self.pool.put(self.sender);
    }
}
