//! The example service: one port that answers HTTP/1.1, h2c, gRPC
//! (`vakt.example.v1.Echo`) and WebSocket echo at `/ws`, with knobs to make
//! it large, slow or failing, globally or per request.
//!
//! Paths:
//! - `GET /healthz`: 200 while healthy, else 503;
//!   `POST /admin/health?ok=false|true` flips it.
//! - `POST /admin/fail?on=true|false`: while on, every other path answers
//!   `failure_status`.
//! - `/chain`: calls the next service ([`ExampleConfig::call`]) and answers
//!   with its status and `NAME -> ` followed by its body (502 when it
//!   cannot be reached, 404 when no next service is set).
//! - `/echo` (any method): JSON describing the request as received.
//! - `/ws`: WebSocket echo (HTTP/1.1 upgrade).
//! - anything else: a body of `size` bytes, or `NAME\n`.
//!
//! Query overrides on every path but health: `size=BYTES`, `delay_ms=MS`,
//! `status=CODE`, `fail_rate=0..1`, `trailers=1` (ends the body with an
//! `x-example-trailer` trailer field).

mod chain;
mod grpc;
mod plain;
mod ws;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use tower::ServiceExt;

use crate::body::BoxBody;
use crate::server::{Connection, Handler, handler};

pub use chain::{CHAIN_STATUS, Call, CallError};
pub use grpc::EchoService;
pub use plain::{Echoed, sha256_hex};

/// The response header naming the example service that answered.
pub const SERVED_BY: &str = "x-served-by";

/// What the example service does when a request does not say otherwise.
#[derive(Clone, Debug)]
pub struct ExampleConfig {
    /// Returned in `x-served-by` and in bodies; default `example`.
    pub name: String,
    /// Response body size in bytes; `None` answers `NAME\n`.
    pub size: Option<usize>,
    /// Wait before answering; default none.
    pub delay: Duration,
    /// Share of requests, 0 to 1, answered with `failure_status`; default 0.
    pub failure_rate: f64,
    /// Default 503.
    pub failure_status: StatusCode,
    /// The next service `/chain` calls; default none.
    pub call: Option<Call>,
}

impl Default for ExampleConfig {
    fn default() -> Self {
        Self {
            name: "example".into(),
            size: None,
            delay: Duration::ZERO,
            failure_rate: 0.0,
            failure_status: StatusCode::SERVICE_UNAVAILABLE,
            call: None,
        }
    }
}

impl ExampleConfig {
    /// The default config with this name.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }
}

/// The example service; cheap to clone, clones share health state.
#[derive(Clone)]
pub struct Example {
    shared: Arc<Shared>,
    grpc: tonic::service::Routes,
}

struct Shared {
    config: ExampleConfig,
    healthy: AtomicBool,
    /// Set by `POST /admin/fail?on=true`: every request fails.
    failing: AtomicBool,
    /// The body for requests that do not override `size`, made once.
    default_body: Bytes,
    /// The name as a header value, made once; `None` when the name is not
    /// a valid header value.
    served_by: Option<HeaderValue>,
}

impl Example {
    pub fn new(config: ExampleConfig) -> Self {
        let default_body = match config.size {
            Some(n) => plain::filler(n),
            None => Bytes::from(format!("{}\n", config.name)),
        };
        let grpc = grpc::routes(&config);
        let served_by = HeaderValue::from_str(&config.name).ok();
        let shared = Arc::new(Shared {
            config,
            healthy: AtomicBool::new(true),
            failing: AtomicBool::new(false),
            default_body,
            served_by,
        });
        Self { shared, grpc }
    }

    pub fn config(&self) -> &ExampleConfig {
        &self.shared.config
    }

    /// Whether `/healthz` answers 200.
    pub fn healthy(&self) -> bool {
        self.shared.healthy.load(Ordering::SeqCst)
    }

    pub fn set_healthy(&self, ok: bool) {
        self.shared.healthy.store(ok, Ordering::SeqCst);
    }

    /// Makes every request but health and admin fail (or not).
    pub fn set_failing(&self, on: bool) {
        self.shared.failing.store(on, Ordering::SeqCst);
    }

    /// Answers one request of any kind the service knows.
    pub async fn handle(&self, req: Request<BoxBody>) -> Response<BoxBody> {
        if is_grpc(&req) {
            return self.handle_grpc(req).await;
        }
        if req.uri().path() == "/ws" {
            return ws::upgrade(&self.shared.config.name, req);
        }
        plain::handle(&self.shared, req).await
    }

    /// The service as a [`Handler`] for [`crate::server::Server`].
    pub fn handler(&self) -> Handler {
        let this = self.clone();
        handler(move |req| {
            let this = this.clone();
            async move { this.handle(req).await }
        })
    }

    async fn handle_grpc(&self, req: Request<BoxBody>) -> Response<BoxBody> {
        let conn = req.extensions().get::<Connection>().cloned();
        let req = req.map(tonic::body::Body::new);
        let Ok(resp) = self.grpc.clone().oneshot(req).await;
        resp.map(|b| BoxBody::new(grpc::BreakOnMarker::new(b, conn)))
    }
}

fn is_grpc<B>(req: &Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}
