//! A request body that a later attempt can send again, byte for byte.
//!
//! The attempt loop wraps the client's body once in a [`ReplayBody`] and
//! gives each attempt a clone. The first attempt streams the frames as
//! they arrive (nothing waits for the whole body) while the body keeps a
//! copy of the data up to the replay limit (`retry.replayLimitBytes`,
//! default 64 KiB) and the trailers. A later clone first replays the copy,
//! then goes on reading the client's body where the last attempt stopped.
//!
//! A body that outgrows the limit drops its copy and can no longer be
//! replayed once any of it was read; [`ReplayBody::is_replayable`] says so
//! before a retry. A body whose declared length exceeds the limit is never
//! copied at all, but an attempt that failed before reading any of it
//! (connect refused) can still be retried.
//!
//! Only one clone reads at a time: the loop must drop a failed attempt's
//! request before polling the next clone, or that clone fails with
//! [`ReplayError::Busy`].

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

/// Bytes kept for replay when the route sets no limit: 64 KiB.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A request body shared by the attempts of one request.
pub struct ReplayBody<B> {
    shared: Arc<Shared<B>>,
    /// The client's body while this clone is the one reading it.
    source: Option<Source<B>>,
    /// Buffered chunks this clone has already sent.
    replayed: usize,
    /// Bytes this clone has sent.
    position: u64,
    /// Whether this clone has sent its last frame.
    ended: bool,
}

/// Why a clone could not send its body.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The client's body failed.
    #[error("request body failed")]
    Body(#[source] BoxError),
    /// Another attempt still holds the body.
    #[error("request body is held by another attempt")]
    Busy,
    /// Part of the body was sent and not kept: it outgrew the limit.
    #[error("request body is larger than the replay limit")]
    NotReplayable,
}

struct Shared<B> {
    source: Mutex<Option<Source<B>>>,
    limit: usize,
    hint: SizeHint,
    empty: bool,
    overflowed: AtomicBool,
}

struct Source<B> {
    body: Pin<Box<B>>,
    chunks: Vec<Bytes>,
    buffered: usize,
    /// Bytes read from the client's body so far.
    consumed: u64,
    trailers: Option<HeaderMap>,
    done: bool,
}

impl<B: Body<Data = Bytes>> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes for replay.
    pub fn new(body: B, limit: usize) -> Self {
        let hint = body.size_hint();
        let empty = body.is_end_stream();
        let source = Source {
            body: Box::pin(body),
            chunks: Vec::new(),
            buffered: 0,
            consumed: 0,
            trailers: None,
            done: empty,
        };
        let shared = Shared {
            source: Mutex::new(Some(source)),
            limit,
            hint,
            empty,
            overflowed: AtomicBool::new(hint.lower() > limit as u64),
        };
        Self::from_shared(Arc::new(shared))
    }
}

impl<B> ReplayBody<B> {
    fn from_shared(shared: Arc<Shared<B>>) -> Self {
        Self {
            shared,
            source: None,
            replayed: 0,
            position: 0,
            ended: false,
        }
    }

    /// Whether a new clone could send the whole body from the start: no
    /// other clone holds it, and nothing read has been dropped.
    pub fn is_replayable(&self) -> bool {
        let guard = self.shared.source.lock().unwrap_or_else(|e| e.into_inner());
        match &*guard {
            Some(source) => !self.shared.overflowed.load(Ordering::Acquire) || source.consumed == 0,
            None => false,
        }
    }

    /// Takes the client's body for this clone.
    fn take_source(&mut self) -> Result<(), ReplayError> {
        let mut guard = self.shared.source.lock().unwrap_or_else(|e| e.into_inner());
        let source = guard.take().ok_or(ReplayError::Busy)?;
        let overflowed = self.shared.overflowed.load(Ordering::Acquire);
        let lost = overflowed && source.consumed != self.position;
        self.source = Some(source);
        if lost {
            return Err(ReplayError::NotReplayable);
        }
        Ok(())
    }
}

impl<B> Source<B> {
    /// Keeps a copy of `data` unless the body has outgrown `limit`.
    fn keep(&mut self, data: &Bytes, limit: usize, overflowed: &AtomicBool) {
        self.consumed += data.len() as u64;
        if overflowed.load(Ordering::Acquire) {
            return;
        }
        if self.buffered + data.len() > limit {
            overflowed.store(true, Ordering::Release);
            self.chunks = Vec::new();
            self.buffered = 0;
            return;
        }
        self.buffered += data.len();
        self.chunks.push(data.clone());
    }
}

impl<B> Clone for ReplayBody<B> {
    /// A fresh clone that will send the body from the start.
    fn clone(&self) -> Self {
        Self::from_shared(self.shared.clone())
    }
}

impl<B> Drop for ReplayBody<B> {
    fn drop(&mut self) {
        if let Some(source) = self.source.take() {
            let mut guard = self.shared.source.lock().unwrap_or_else(|e| e.into_inner());
            *guard = Some(source);
        }
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = ReplayError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ReplayError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        if this.source.is_none()
            && let Err(e) = this.take_source()
        {
            this.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        let shared = &this.shared;
        let source = this.source.as_mut().expect("taken above");

        if let Some(chunk) = source.chunks.get(this.replayed) {
            this.replayed += 1;
            this.position += chunk.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(chunk.clone()))));
        }
        if source.done {
            this.ended = true;
            return Poll::Ready(source.trailers.clone().map(|t| Ok(Frame::trailers(t))));
        }

        let frame = match ready!(source.body.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => {
                this.ended = true;
                return Poll::Ready(Some(Err(ReplayError::Body(e.into()))));
            }
            None => {
                source.done = true;
                this.ended = true;
                return Poll::Ready(None);
            }
        };
        if let Some(data) = frame.data_ref() {
            source.keep(data, shared.limit, &shared.overflowed);
            this.replayed = source.chunks.len();
            this.position += data.remaining() as u64;
        } else if let Some(trailers) = frame.trailers_ref() {
            source.trailers = Some(trailers.clone());
            source.done = true;
            this.ended = true;
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.shared.empty || self.ended
    }

    fn size_hint(&self) -> SizeHint {
        // Every clone sends the same bytes, so the client's declared
        // length holds for each.
        self.shared.hint
    }
}

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("limit", &self.shared.limit)
            .field("position", &self.position)
            .field("ended", &self.ended)
            .finish()
    }
}

#[cfg(test)]
mod tests;
