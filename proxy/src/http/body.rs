//! Bodies that flow through the proxy, streamed frame by frame.
//!
//! [`ProxyBody`] is what a client receives: an upstream response body or
//! one the proxy made. When it ends (or the client goes away) it returns
//! the upstream connection to its pool and finishes the request's log
//! line and metrics. [`RequestBody`] is what an upstream receives.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::attempt::Verdict;
use crate::attempt::replay::{ReplayBody, ReplayError};
use crate::backend::InFlight;
use crate::backend::bulkhead::BulkheadPermit;
use crate::backend::outcome::{FailureReason, Outcome};
use crate::backend::pool::PooledConn;
use crate::telemetry::RequestLog;

/// Why a body stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("upstream body failed: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("downstream body failed: {0}")]
    Downstream(#[source] hyper::Error),
    #[error("no body data for {0:?}")]
    Idle(Duration),
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("request body cannot be sent again: {0}")]
    Replay(#[source] ReplayError),
}

/// How a response body ended, for logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEnd {
    Complete,
    Failed,
    ClientGone,
}

/// Work to do when a response body ends.
#[derive(Default)]
pub struct OnEnd {
    /// The upstream connection, returned to its pool on a clean end.
    pub conn: Option<PooledConn>,
    /// Keeps the endpoint's in-flight count until the body ends.
    pub in_flight: Option<InFlight>,
    /// Keeps the backend's bulkhead slot until the body ends.
    pub slot: Option<BulkheadPermit>,
    /// The attempt's outcome, when only the trailers can tell it (gRPC).
    pub verdict: Option<Verdict>,
    pub log: Option<RequestLog>,
    /// A transparent listener's request slot (`maxRequests`), kept until
    /// the body ends.
    pub limit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A response body sent to the client.
pub struct ProxyBody {
    kind: Kind,
    /// A frame read ahead (to see a gRPC status), sent first.
    first: Option<Frame<Bytes>>,
    /// Keep the upstream's `Content-Length` on a response that has no
    /// body (304): the server writes it only for a body of unknown size.
    declared_length: bool,
    /// Turn an upstream failure into gRPC trailers (UNAVAILABLE).
    grpc: bool,
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    sent: u64,
    on_end: OnEnd,
}

enum Kind {
    Empty,
    Full(Option<Bytes>),
    Upstream(Incoming),
    Done,
}

impl ProxyBody {
    pub fn empty() -> Self {
        Self::new(Kind::Empty)
    }

    pub fn full(bytes: Bytes) -> Self {
        Self::new(Kind::Full(Some(bytes)))
    }

    /// An upstream body. `idle` bounds the gap between frames; `grpc`
    /// turns a failure mid-stream into `grpc-status: 14` trailers.
    pub fn upstream(body: Incoming, idle: Option<Duration>, grpc: bool) -> Self {
        let mut b = Self::new(Kind::Upstream(body));
        b.grpc = grpc;
        b.idle = idle.map(|d| (d, Box::pin(tokio::time::sleep(d))));
        b
    }

    fn new(kind: Kind) -> Self {
        Self {
            kind,
            first: None,
            declared_length: false,
            grpc: false,
            idle: None,
            sent: 0,
            on_end: OnEnd::default(),
        }
    }

    /// Keeps the response's `Content-Length` header although no body
    /// follows (a 304 to a conditional request).
    pub fn with_declared_length(mut self, keep: bool) -> Self {
        self.declared_length = keep;
        self
    }

    /// Sends `frame` before the rest of the body.
    pub fn with_first(mut self, frame: Option<Frame<Bytes>>) -> Self {
        self.first = frame;
        self
    }

    /// Sets what happens when the body ends.
    pub fn on_end(&mut self, on_end: OnEnd) {
        self.on_end = on_end;
    }

    /// Holds a listener's request slot until the body ends.
    pub fn set_limit(&mut self, permit: tokio::sync::OwnedSemaphorePermit) {
        self.on_end.limit = Some(permit);
    }

    /// Attaches the request log, finished when the body ends.
    pub fn set_log(&mut self, log: RequestLog) {
        self.on_end.log = Some(log);
    }

    fn finish(&mut self, end: BodyEnd) {
        self.kind = Kind::Done;
        if let Some(v) = self.on_end.verdict.take() {
            match end {
                BodyEnd::Complete => v.record(Outcome::Success),
                BodyEnd::Failed => v.record(Outcome::Failure(FailureReason::Reset)),
                BodyEnd::ClientGone => drop(v),
            }
        }
        self.on_end.slot = None;
        if let Some(conn) = self.on_end.conn.take()
            && end == BodyEnd::Complete
        {
            conn.release();
        }
        self.on_end.in_flight = None;
        self.on_end.limit = None;
        if let Some(log) = self.on_end.log.take() {
            log.finish(self.sent, end);
        }
    }

    fn poll_upstream(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(frame) = self.first.take() {
            return Poll::Ready(Some(Ok(self.passed(frame))));
        }
        let Kind::Upstream(body) = &mut self.kind else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let frame = self.passed(frame);
                if let Some((d, sleep)) = &mut self.idle {
                    let deadline = tokio::time::Instant::now() + *d;
                    sleep.as_mut().reset(deadline);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => self.upstream_failed(BodyError::Upstream(e)),
            Poll::Ready(None) => {
                self.finish(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some((d, sleep)) = &mut self.idle
                    && sleep.as_mut().poll(cx).is_ready()
                {
                    let d = *d;
                    return self.upstream_failed(BodyError::Idle(d));
                }
                Poll::Pending
            }
        }
    }

    /// Counts a frame on its way to the client; trailers settle a
    /// deferred verdict.
    fn passed(&mut self, frame: Frame<Bytes>) -> Frame<Bytes> {
        if let Some(data) = frame.data_ref() {
            self.sent += data.len() as u64;
        } else if let Some(t) = frame.trailers_ref()
            && let Some(v) = self.on_end.verdict.take()
        {
            let outcome = v.classify_trailers(t);
            v.record(outcome);
        }
        frame
    }

    fn upstream_failed(&mut self, err: BodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        tracing::debug!(error = %err, "response body ended early");
        self.finish(BodyEnd::Failed);
        if self.grpc {
            return Poll::Ready(Some(Ok(Frame::trailers(grpc_unavailable()))));
        }
        Poll::Ready(Some(Err(err)))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        match &mut this.kind {
            Kind::Upstream(_) => this.poll_upstream(cx),
            Kind::Full(bytes) => {
                let frame = bytes.take().map(|b| {
                    this.sent += b.len() as u64;
                    Ok(Frame::data(b))
                });
                if frame.is_none() {
                    this.finish(BodyEnd::Complete);
                }
                Poll::Ready(frame)
            }
            Kind::Empty => {
                this.finish(BodyEnd::Complete);
                Poll::Ready(None)
            }
            Kind::Done => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty | Kind::Done => true,
            Kind::Full(b) => b.is_none(),
            Kind::Upstream(b) => !self.declared_length && self.first.is_none() && b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        if self.first.is_some() || self.declared_length {
            return SizeHint::default();
        }
        match &self.kind {
            Kind::Empty | Kind::Done => SizeHint::with_exact(0),
            Kind::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(b) => b.size_hint(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if !matches!(self.kind, Kind::Done) {
            let end = match self.kind {
                Kind::Upstream(ref b) if !b.is_end_stream() => BodyEnd::ClientGone,
                _ => BodyEnd::Complete,
            };
            self.finish(end);
        }
    }
}

fn grpc_unavailable() -> HeaderMap {
    let mut t = HeaderMap::with_capacity(2);
    t.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from_static("14"),
    );
    t.insert(
        HeaderName::from_static("grpc-message"),
        HeaderValue::from_static("upstream stream ended without status"),
    );
    t
}

/// A request body sent upstream, with a size limit. When the route may
/// retry, it keeps a copy (up to a limit) so a later attempt can send it
/// again byte for byte.
pub struct RequestBody {
    inner: ReqInner,
    limit: u64,
    seen: u64,
}

enum ReqInner {
    Empty,
    Stream(Incoming),
    Replay(ReplayBody<Incoming>),
}

impl RequestBody {
    /// Streams `body`, failing once more than `limit` bytes have passed.
    pub fn new(body: Incoming, limit: u64) -> Self {
        let inner = if body.is_end_stream() {
            ReqInner::Empty
        } else {
            ReqInner::Stream(body)
        };
        Self {
            inner,
            limit,
            seen: 0,
        }
    }

    pub fn empty() -> Self {
        Self {
            inner: ReqInner::Empty,
            limit: 0,
            seen: 0,
        }
    }

    /// Makes the body replayable, keeping up to `keep` bytes.
    pub fn replayable(self, keep: usize) -> Self {
        let inner = match self.inner {
            ReqInner::Stream(b) => ReqInner::Replay(ReplayBody::new(b, keep)),
            other => other,
        };
        Self { inner, ..self }
    }

    /// A body for another attempt: the same bytes from the start, or
    /// `None` when they cannot be sent again.
    pub fn again(&self) -> Option<Self> {
        let inner = match &self.inner {
            ReqInner::Empty => ReqInner::Empty,
            ReqInner::Replay(r) if r.is_replayable() => ReqInner::Replay(r.clone()),
            _ => return None,
        };
        Some(Self {
            inner,
            limit: self.limit,
            seen: 0,
        })
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let frame = match &mut this.inner {
            ReqInner::Empty => return Poll::Ready(None),
            ReqInner::Stream(b) => {
                ready!(Pin::new(b).poll_frame(cx)).map(|r| r.map_err(BodyError::Downstream))
            }
            ReqInner::Replay(b) => {
                ready!(Pin::new(b).poll_frame(cx)).map(|r| r.map_err(BodyError::Replay))
            }
        };
        let frame = match frame {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Poll::Ready(Some(Err(e))),
            None => {
                if matches!(this.inner, ReqInner::Stream(_)) {
                    this.inner = ReqInner::Empty;
                }
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            this.seen += data.len() as u64;
            if this.seen > this.limit {
                this.inner = ReqInner::Empty;
                return Poll::Ready(Some(Err(BodyError::TooLarge(this.limit))));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            ReqInner::Empty => true,
            ReqInner::Stream(b) => b.is_end_stream(),
            ReqInner::Replay(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ReqInner::Empty => SizeHint::with_exact(0),
            ReqInner::Stream(b) => b.size_hint(),
            ReqInner::Replay(b) => b.size_hint(),
        }
    }
}
