//! The gRPC side of the example service: `vakt.example.v1.Echo`, served
//! through tonic's routes on the same port as plain HTTP.
//!
//! `Stream` can break off without trailers (`fail_after`): the handler ends
//! its stream with a status carrying [`BREAK`], and [`BreakOnMarker`] turns
//! that trailers frame into a body error (hyper then resets the HTTP/2
//! stream) or into a TCP reset of the whole connection.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Request, Response, Status, Streaming};

use super::ExampleConfig;
use crate::body::BoxError;
use crate::pb::echo_server::{Echo, EchoServer};
use crate::pb::{CollectReply, EchoReply, EchoRequest, StreamRequest};
use crate::server::Connection;

/// Trailer field that asks [`BreakOnMarker`] to break off the response:
/// `stream` resets the HTTP/2 stream, `connection` the TCP connection.
pub const BREAK: &str = "x-example-break";

/// Frames already handed to hyper get this long to reach the socket before
/// a connection is reset.
const FLUSH_GRACE: Duration = Duration::from_millis(50);

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

/// The `Echo` service implementation.
#[derive(Clone, Debug)]
pub struct EchoService {
    name: String,
    failure_rate: f64,
}

impl EchoService {
    pub fn new(config: &ExampleConfig) -> Self {
        Self {
            name: config.name.clone(),
            failure_rate: config.failure_rate,
        }
    }

    fn reply(&self, message: String, size: u32, index: u32) -> EchoReply {
        EchoReply {
            message,
            served_by: self.name.clone(),
            payload: super::plain::filler(size as usize).to_vec(),
            index,
            metadata: Vec::new(),
        }
    }
}

/// tonic routes serving [`EchoService`].
pub(super) fn routes(config: &ExampleConfig) -> tonic::service::Routes {
    tonic::service::Routes::new(EchoServer::new(EchoService::new(config)))
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn echo(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let metadata = metadata_lines(req.metadata());
        let msg = req.into_inner();
        if msg.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(msg.delay_ms.into())).await;
        }
        if msg.status != 0 {
            return Err(Status::new(Code::from(msg.status), "status requested"));
        }
        if self.failure_rate > 0.0 && fastrand::f64() < self.failure_rate {
            return Err(Status::unavailable(format!(
                "failure injected by {}",
                self.name
            )));
        }
        let mut reply = self.reply(msg.message, msg.size, 0);
        reply.metadata = metadata;
        Ok(Response::new(reply))
    }

    type StreamStream = ReplyStream;

    async fn stream(&self, req: Request<StreamRequest>) -> Result<Response<ReplyStream>, Status> {
        let msg = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let this = self.clone();
        tokio::spawn(async move { this.run_stream(msg, tx).await });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn collect(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<CollectReply>, Status> {
        let mut incoming = req.into_inner();
        let (mut messages, mut bytes) = (0u32, 0u64);
        while let Some(msg) = incoming.next().await {
            let msg = msg?;
            messages += 1;
            bytes += msg.encoded_len() as u64;
        }
        Ok(Response::new(CollectReply {
            messages,
            bytes,
            served_by: self.name.clone(),
        }))
    }

    type ChatStream = ReplyStream;

    async fn chat(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<ReplyStream>, Status> {
        let mut incoming = req.into_inner();
        let this = self.clone();
        let replies = async_replies(move |tx| async move {
            let mut index = 0;
            while let Some(msg) = incoming.next().await {
                let reply = msg.map(|m| this.reply(m.message, m.size, index));
                index += 1;
                if tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(replies))
    }
}

impl EchoService {
    async fn run_stream(&self, msg: StreamRequest, tx: mpsc::Sender<Result<EchoReply, Status>>) {
        let interval = Duration::from_millis(msg.interval_ms.into());
        for i in 0..msg.count {
            if msg.fail_after == Some(i) {
                let _ = tx.send(Err(break_status(msg.reset_connection))).await;
                return;
            }
            if i > 0 && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            let reply = self.reply(msg.message.clone(), msg.size, i);
            if tx.send(Ok(reply)).await.is_err() {
                return;
            }
        }
        if msg.fail_after.is_some_and(|n| n >= msg.count) {
            let _ = tx.send(Err(break_status(msg.reset_connection))).await;
        } else if msg.end_status != 0 {
            let status = Status::new(Code::from(msg.end_status), "end status requested");
            let _ = tx.send(Err(status)).await;
        }
    }
}

fn async_replies<F, Fut>(f: F) -> ReplyStream
where
    F: FnOnce(mpsc::Sender<Result<EchoReply, Status>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(f(tx));
    Box::pin(ReceiverStream::new(rx))
}

fn break_status(connection: bool) -> Status {
    let mut md = MetadataMap::new();
    let how = if connection { "connection" } else { "stream" };
    md.insert(BREAK, MetadataValue::from_static(how));
    Status::with_metadata(Code::Internal, "break", md)
}

fn metadata_lines(md: &MetadataMap) -> Vec<String> {
    md.clone()
        .into_headers()
        .iter()
        .map(|(n, v)| format!("{n}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

/// A gRPC response body that breaks off where the handler put [`BREAK`].
///
/// Frames already handed to hyper are not on the wire yet, and an HTTP/2
/// stream reset drops those still queued; so the break waits
/// [`FLUSH_GRACE`] first.
pub struct BreakOnMarker<B> {
    inner: B,
    connection: Option<Connection>,
    /// Set once the marker was seen: when the stream reset happens.
    breaking: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The connection reset is under way; nothing more is sent.
    broken: bool,
}

impl<B> BreakOnMarker<B> {
    pub fn new(inner: B, connection: Option<Connection>) -> Self {
        Self {
            inner,
            connection,
            breaking: None,
            broken: false,
        }
    }
}

/// The error a broken-off body ends with.
#[derive(Debug, thiserror::Error)]
#[error("response broken off on request")]
pub struct BrokenOff;

impl<B> Body for BreakOnMarker<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.broken {
            return Poll::Pending;
        }
        if let Some(sleep) = self.breaking.as_mut() {
            return sleep
                .as_mut()
                .poll(cx)
                .map(|()| Some(Err(BrokenOff.into())));
        }
        let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other.map(|o| o.map(|r| r.map_err(Into::into))),
        };
        let how = frame.trailers_ref().and_then(break_kind);
        match (how, self.connection.clone()) {
            (None, _) => Poll::Ready(Some(Ok(frame))),
            (Some(Break::Connection), Some(conn)) => {
                self.broken = true;
                conn.reset_after(FLUSH_GRACE);
                Poll::Pending
            }
            (Some(_), _) => {
                self.breaking = Some(Box::pin(tokio::time::sleep(FLUSH_GRACE)));
                self.poll_frame(cx)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        !self.broken && self.breaking.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

enum Break {
    Stream,
    Connection,
}

fn break_kind(trailers: &HeaderMap) -> Option<Break> {
    match trailers.get(BREAK)?.as_bytes() {
        b"connection" => Some(Break::Connection),
        _ => Some(Break::Stream),
    }
}
