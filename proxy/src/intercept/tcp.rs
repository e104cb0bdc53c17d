//! TCP proxying: one upstream connection per client connection, bytes
//! copied both ways until both sides close.
//!
//! Toward a backend the connection passes the same guards as an HTTP
//! attempt where they apply: `limits.maxConnections` (a client over the
//! limit is closed at once), the breaker (fed by connect failures and
//! successes), the balancer's pick among available endpoints, the connect
//! timeout, and ejection of an endpoint that refuses connections. One
//! connect failure is tried again on another endpoint when there is one.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use metrics::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::backend::Backend;
use crate::backend::outcome::{FailureReason, Outcome};
use crate::telemetry::metrics::TcpMetrics;

/// Connect attempts per client connection toward a backend.
const CONNECT_ATTEMPTS: usize = 2;

/// Why a client connection was closed without an upstream.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    #[error("the backend's connection limit is reached")]
    Limit,
    #[error("the backend's breaker is open")]
    BreakerOpen,
    #[error("the backend has no ready endpoint")]
    NoEndpoint,
    #[error("cannot connect to the endpoint")]
    ConnectFailed,
}

impl TcpError {
    /// A bounded reason for logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Limit => "overflow",
            Self::BreakerOpen => "breaker-open",
            Self::NoEndpoint => "no-endpoint",
            Self::ConnectFailed => "connect-failed",
        }
    }
}

/// Proxies `client` to an endpoint of `backend` until both sides close.
pub async fn to_backend<C>(mut client: C, backend: &Backend, direction: &'static str)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let metrics = backend.tcp_metrics(direction);
    match connect_backend(backend).await {
        Ok((upstream, slot)) => {
            splice(&mut client, upstream, metrics).await;
            drop(slot);
        }
        Err(e) => {
            tracing::debug!(backend = %backend.name, reason = e.reason(), "tcp connection refused");
        }
    }
}

/// Proxies `client` to `addr` until both sides close.
pub async fn to_address<C>(mut client: C, addr: SocketAddr, timeout: Duration, metrics: &TcpMetrics)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(upstream)) => {
            let _ = upstream.set_nodelay(true);
            splice(&mut client, upstream, metrics).await;
        }
        Ok(Err(e)) => tracing::debug!(%addr, error = %e, "tcp connect failed"),
        Err(_) => tracing::debug!(%addr, "tcp connect timed out"),
    }
}

/// A connection to one of `backend`'s endpoints and the connection slot
/// it holds.
pub async fn connect_backend(
    backend: &Backend,
) -> Result<(TcpStream, tokio::sync::OwnedSemaphorePermit), TcpError> {
    let slot = backend
        .connection_slots()
        .clone()
        .try_acquire_owned()
        .map_err(|_| TcpError::Limit)?;
    let timeout = backend.config.connect_timeout.get();
    let mut avoid = None;
    let mut last = TcpError::NoEndpoint;
    for _ in 0..CONNECT_ATTEMPTS {
        let set = backend.endpoints();
        let i = match backend.pick(&set, avoid) {
            Some(i) if avoid != Some(i) => i,
            _ => return Err(last),
        };
        let permit = match &backend.breaker {
            Some(b) => Some(b.try_acquire().map_err(|_| TcpError::BreakerOpen)?),
            None => None,
        };
        let endpoint = set.list[i].clone();
        let in_flight = endpoint.start();
        let connected = tokio::time::timeout(timeout, TcpStream::connect(endpoint.addr)).await;
        let outcome = match &connected {
            Ok(Ok(_)) => Outcome::Success,
            Ok(Err(_)) => Outcome::Failure(FailureReason::Connect),
            Err(_) => Outcome::Failure(FailureReason::Timeout),
        };
        set.ejection.record(i, outcome, Instant::now());
        if let Some(p) = permit {
            p.record(outcome);
        }
        drop(in_flight);
        match connected {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, slot));
            }
            Ok(Err(e)) => {
                tracing::debug!(backend = %backend.name, endpoint = %endpoint.label, error = %e, "tcp connect failed");
            }
            Err(_) => {
                tracing::debug!(backend = %backend.name, endpoint = %endpoint.label, "tcp connect timed out");
            }
        }
        last = TcpError::ConnectFailed;
        avoid = Some(i);
    }
    Err(last)
}

/// Copies both ways until both sides are done, counting bytes as they
/// pass (so a long-lived connection's counters move while it lives).
async fn splice<C>(client: &mut C, upstream: TcpStream, metrics: &TcpMetrics)
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let _open = metrics.opened();
    let mut upstream = Counted {
        inner: upstream,
        sent: metrics.sent.clone(),
        received: metrics.received.clone(),
    };
    if let Err(e) = tokio::io::copy_bidirectional(client, &mut upstream).await {
        tracing::debug!(error = %e, "tcp connection ended with an error");
    }
}

/// The upstream side, counting bytes written to it (sent) and read from
/// it (received).
struct Counted {
    inner: TcpStream,
    sent: Counter,
    received: Counter,
}

impl AsyncRead for Counted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        this.received
            .increment((buf.filled().len() - before) as u64);
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.sent.increment(n as u64);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Metrics of connections no backend claims, per direction: backend
/// label `passthrough` outbound, `app` inbound.
pub fn unclaimed(direction: &'static str) -> &'static TcpMetrics {
    static OUTBOUND: std::sync::OnceLock<TcpMetrics> = std::sync::OnceLock::new();
    static INBOUND: std::sync::OnceLock<TcpMetrics> = std::sync::OnceLock::new();
    match direction {
        "inbound" => INBOUND.get_or_init(|| TcpMetrics::new("inbound", super::APP)),
        _ => OUTBOUND.get_or_init(|| TcpMetrics::new("outbound", super::PASSTHROUGH)),
    }
}

#[cfg(test)]
mod tests;
