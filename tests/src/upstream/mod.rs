//! In-process upstreams on `127.0.0.1:0` that record what reaches them.
//!
//! [`Upstream`] serves HTTP/1.1 and h2c on one port, either a handler the
//! test writes or the [example service](crate::example) (which also answers
//! gRPC and WebSocket on that port). [`raw::RawUpstream`] speaks raw TCP
//! with scripted bytes, for framing and smuggling cases.

pub mod raw;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpListener;
use tokio::time::Instant;

use crate::body::{BoxBody, BoxError};
use crate::example::{Example, ExampleConfig};
use crate::server::{Connection, Handler, Server, handler};

pub use raw::{RawReply, RawUpstream};

/// One request as an upstream received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// The body bytes received so far (all of them once the handler has
    /// read the body to its end).
    pub body: Vec<u8>,
    pub trailers: Option<HeaderMap>,
    /// Which accepted connection carried it, from 0.
    pub connection: usize,
    pub peer: SocketAddr,
    /// When its head arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of `name` as text, if any.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Every value of `name` as text, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let values = self.headers.get_all(name).iter();
        values.filter_map(|v| v.to_str().ok()).collect()
    }
}

/// The shared, growing list of requests an upstream received.
#[derive(Clone, Debug, Default)]
pub struct RequestLog(Arc<Mutex<Vec<Recorded>>>);

impl RequestLog {
    fn lock(&self) -> MutexGuard<'_, Vec<Recorded>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A copy of every request so far, in arrival order.
    pub fn all(&self) -> Vec<Recorded> {
        self.lock().clone()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Records the head of `req` and makes its body record itself as it is
    /// read.
    pub fn record(&self, req: Request<BoxBody>) -> Request<BoxBody> {
        let (parts, body) = req.into_parts();
        let conn = parts.extensions.get::<Connection>();
        let entry = Recorded {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
            body: Vec::new(),
            trailers: None,
            connection: conn.map_or(0, |c| c.id),
            peer: conn.map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.peer),
            at: Instant::now(),
        };
        let index = {
            let mut log = self.lock();
            log.push(entry);
            log.len() - 1
        };
        let body = RecordingBody {
            inner: body,
            log: self.clone(),
            index,
        };
        Request::from_parts(parts, BoxBody::new(body))
    }

    /// Waits until at least `n` requests arrived, up to `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        let deadline = Instant::now() + timeout;
        while self.len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.all()
    }
}

struct RecordingBody {
    inner: BoxBody,
    log: RequestLog,
    index: usize,
}

impl Body for RecordingBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            let mut log = self.log.lock();
            if let Some(entry) = log.get_mut(self.index) {
                if let Some(data) = frame.data_ref() {
                    entry.body.extend_from_slice(data);
                } else if let Some(t) = frame.trailers_ref() {
                    entry.trailers = Some(t.clone());
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP/1.1 + h2c server on loopback that records every request.
/// Dropping it closes the listener and every connection.
pub struct Upstream {
    server: Server,
    log: RequestLog,
    example: Option<Example>,
}

impl Upstream {
    /// Serves `handler` on a fresh `127.0.0.1` port.
    pub async fn start(handler: Handler) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), handler).await
    }

    /// Serves `handler` on `addr` (for instance to bring an upstream back
    /// on the address it had).
    ///
    /// # Panics
    /// When `addr` cannot be bound.
    pub async fn start_at(addr: SocketAddr, handler: Handler) -> Self {
        Self::serve(addr, handler, None).await
    }

    /// Serves the example service (HTTP, gRPC and WebSocket) with `config`.
    pub async fn example(config: ExampleConfig) -> Self {
        Self::example_at(SocketAddr::from(([127, 0, 0, 1], 0)), config).await
    }

    /// Serves the example service with default settings and this name.
    pub async fn named(name: &str) -> Self {
        Self::example(ExampleConfig::named(name)).await
    }

    /// Serves the example service on `addr`.
    pub async fn example_at(addr: SocketAddr, config: ExampleConfig) -> Self {
        let example = Example::new(config);
        Self::serve(addr, example.handler(), Some(example)).await
    }

    async fn serve(addr: SocketAddr, inner: Handler, example: Option<Example>) -> Self {
        let log = RequestLog::default();
        let recorder = log.clone();
        let h = handler(move |req| inner(recorder.record(req)));
        let listener = TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("cannot bind upstream on {addr}: {e}"));
        let server = Server::start(listener, h).expect("upstream address");
        Self {
            server,
            log,
            example,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// The log of requests received.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// A copy of every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.log.all()
    }

    /// Requests received so far.
    pub fn request_count(&self) -> usize {
        self.log.len()
    }

    /// Connections accepted since start.
    pub fn connections(&self) -> usize {
        self.server.counters().accepted()
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.server.counters().open()
    }

    /// The example service behind this upstream, to flip its health.
    pub fn example_service(&self) -> Option<&Example> {
        self.example.as_ref()
    }

    /// Stops accepting and closes every connection at once.
    pub fn shutdown(&self) {
        self.server.shutdown();
    }

    /// Like [`Upstream::shutdown`], returning once the address is free.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}
