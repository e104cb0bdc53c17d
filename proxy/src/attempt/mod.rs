//! The attempt loop: one request, tried against endpoints until one
//! answers or the request must fail.
//!
//! An attempt picks an endpoint from the backend's balancer, checks out
//! a connection and sends the request. Failures before anything was sent
//! (connect refused, a pooled connection found closed) are tried again on
//! another endpoint or a fresh connection; they cannot have reached the
//! upstream. A bodiless idempotent request that dies on a reused
//! connection before any response byte is tried once more on a new
//! connection: the upstream may have closed it as the request was sent.

pub mod backoff;
pub mod budget;
pub mod deadline;
pub mod replay;
mod send;

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::backend::pool::PooledConn;
use crate::backend::{Backend, InFlight};
use crate::http::body::RequestBody;
use crate::respond::ProxyError;
pub use send::{SendError, classify};

/// Attempts to connect before giving up on a request.
const MAX_CONNECT_TRIES: usize = 3;

/// A response head from an endpoint, with what must live as long as its
/// body: the connection (returned to the pool at the end) and the
/// in-flight count of the endpoint.
pub struct Forwarded {
    pub response: Response<Incoming>,
    pub conn: Option<PooledConn>,
    pub in_flight: InFlight,
    pub upstream_time: Duration,
}

/// Forwards `req` to an endpoint of `backend`, each attempt bounded by
/// `per_attempt`.
pub async fn forward(
    backend: &Arc<Backend>,
    req: Request<RequestBody>,
    per_attempt: Option<Duration>,
) -> Result<Forwarded, ProxyError> {
    match per_attempt {
        Some(t) => tokio::time::timeout(t, forward_once(backend, req))
            .await
            .map_err(|_| ProxyError::Timeout)?,
        None => forward_once(backend, req).await,
    }
}

async fn forward_once(
    backend: &Arc<Backend>,
    mut req: Request<RequestBody>,
) -> Result<Forwarded, ProxyError> {
    let endpoints = backend.endpoints();
    let mut avoid = None;
    let mut last = ProxyError::NoEndpoint;
    let mut fresh_tried = false;
    for _ in 0..MAX_CONNECT_TRIES + 1 {
        let Some(i) = backend.balancer.pick(&endpoints, |_| true, avoid) else {
            break;
        };
        let endpoint = &endpoints[i];
        let in_flight = endpoint.start();
        let started = Instant::now();
        let checkout = if fresh_tried {
            endpoint.pool.fresh().await
        } else {
            endpoint.pool.checkout().await
        };
        let checkout = match checkout {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(backend = %backend.name, endpoint = %endpoint.label, error = %e, "connect failed");
                last = ProxyError::ConnectFailed;
                avoid = Some(i);
                continue;
            }
        };
        let pool = endpoint.pool.clone();
        match send::send(checkout, req, pool).await {
            Ok((response, conn)) => {
                in_flight.responded();
                return Ok(Forwarded {
                    response,
                    conn,
                    in_flight,
                    upstream_time: started.elapsed(),
                });
            }
            Err(SendError::Unsent(returned, reason)) => {
                tracing::debug!(backend = %backend.name, endpoint = %endpoint.label, %reason, "request not sent; trying again");
                req = *returned;
                fresh_tried = true;
            }
            Err(SendError::Failed(err)) => return Err(err),
        }
    }
    Err(last)
}
