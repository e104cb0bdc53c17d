//! Clients for tests: raw TCP bytes, hyper HTTP/1.1 and h2c, the example
//! gRPC service, WebSocket, and a Prometheus scrape parser.

pub mod grpc;
pub mod http;
pub mod metrics;
pub mod raw;
pub mod ws;

use std::time::Duration;

pub use self::grpc::{grpc_client, grpc_client_for};
pub use self::http::{Collected, HttpClient, get};
pub use self::metrics::{Metrics, scrape};
pub use self::raw::{RawClient, RawExchange, RawResponse, parse_responses, raw_request};
pub use self::ws::ws_connect;

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("http error: {0}")]
    Http(#[from] hyper::Error),
    #[error("invalid request: {0}")]
    Request(#[from] ::http::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("malformed response: {0}")]
    Malformed(String),
}
