//! Sending one request on one checked-out connection, and classifying
//! what went wrong.

use std::error::Error as StdError;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::backend::Endpoint;
use crate::backend::pool::{Checkout, ConnectError, Pool, PooledConn, Sender};
use crate::http::body::{BodyError, RequestBody};
use crate::respond::ProxyError;

/// How a send failed.
pub enum SendError {
    /// Nothing reached the upstream; the request can go again as is.
    /// The flag tells whether the connection could not even be opened.
    Unsent(Box<Request<RequestBody>>, &'static str, bool),
    Failed(ProxyError),
}

/// A response head, and the HTTP/1.1 connection it came on.
pub type Sent = (Response<Incoming>, Option<PooledConn>);

/// One attempt on `endpoint`: a connection (a new one if `fresh`), then
/// the request.
pub async fn attempt(
    endpoint: &Arc<Endpoint>,
    req: Request<RequestBody>,
    fresh: bool,
) -> Result<Sent, SendError> {
    let checkout = if fresh {
        endpoint.pool.fresh().await
    } else {
        endpoint.pool.checkout().await
    };
    match checkout {
        Ok(c) => send(c, req, endpoint.pool.clone()).await,
        Err(ConnectError::Limit) => Err(SendError::Failed(ProxyError::Overflow)),
        Err(e) => {
            tracing::debug!(endpoint = %endpoint.label, error = %e, "connect failed");
            Err(SendError::Unsent(Box::new(req), "connect failed", true))
        }
    }
}

/// Sends on the connection; HTTP/1.1 connections come back with the
/// response so they return to the pool when its body ends.
pub async fn send(
    checkout: Checkout,
    req: Request<RequestBody>,
    pool: Arc<Pool>,
) -> Result<Sent, SendError> {
    match checkout.sender {
        Sender::H1(mut s) => {
            if s.ready().await.is_err() {
                return Err(SendError::Unsent(
                    Box::new(req),
                    "pooled connection closed",
                    false,
                ));
            }
            let replay = checkout.reused.then(|| bodiless_copy(&req)).flatten();
            match s.try_send_request(req).await {
                Ok(rsp) => Ok((rsp, Some(PooledConn::new(pool, s)))),
                Err(mut e) => match (e.take_message(), replay) {
                    (Some(req), _) => Err(SendError::Unsent(
                        Box::new(req),
                        "connection closed before send",
                        false,
                    )),
                    (None, Some(req)) if is_stale(e.error()) => Err(SendError::Unsent(
                        Box::new(req),
                        "reused connection closed",
                        false,
                    )),
                    (None, _) => Err(SendError::Failed(classify(e.error()))),
                },
            }
        }
        Sender::H2(mut s) => {
            if s.ready().await.is_err() {
                return Err(SendError::Unsent(Box::new(req), "connection closed", false));
            }
            match s.try_send_request(req).await {
                Ok(rsp) => Ok((rsp, None)),
                Err(mut e) => match e.take_message() {
                    Some(req) => Err(SendError::Unsent(
                        Box::new(req),
                        "connection closed before send",
                        false,
                    )),
                    None => Err(SendError::Failed(classify(e.error()))),
                },
            }
        }
    }
}

/// A copy of a request that can be sent again: idempotent, no body.
fn bodiless_copy(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    use http_body::Body;
    if !super::idempotent(req.method()) || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(RequestBody::empty());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// The connection died before any response byte: the upstream closed a
/// kept-alive connection as the request went out.
fn is_stale(e: &hyper::Error) -> bool {
    e.is_incomplete_message() || e.is_canceled() || e.is_closed() || caused_by_io_reset(e)
}

fn caused_by_io_reset(e: &hyper::Error) -> bool {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = s.source();
    }
    false
}

/// Maps an upstream failure to the error the client sees.
pub fn classify(e: &hyper::Error) -> ProxyError {
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<BodyError>() {
            return match b {
                BodyError::TooLarge(_) => ProxyError::BodyTooLarge,
                // The client's own body failed: it hung up or sent broken
                // chunks. Not the upstream's doing.
                BodyError::Downstream(_) | BodyError::Replay(_) => {
                    ProxyError::BadRequest("request body failed")
                }
                _ => ProxyError::UpstreamReset,
            };
        }
        source = s.source();
    }
    if e.is_parse() || e.is_parse_status() || e.is_user() {
        ProxyError::UpstreamProtocol
    } else if e.is_timeout() {
        ProxyError::Timeout
    } else {
        ProxyError::UpstreamReset
    }
}
