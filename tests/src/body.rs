//! The body type every in-process server and handler uses, so HTTP, gRPC
//! and WebSocket responses travel through one accept loop.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full, combinators::UnsyncBoxBody};

/// Any error a body may end with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A boxed body, used both for requests handed to handlers and for their
/// responses.
pub type BoxBody = UnsyncBoxBody<Bytes, BoxError>;

/// A body of exactly these bytes.
pub fn full(bytes: impl Into<Bytes>) -> BoxBody {
    Full::new(bytes.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A body with no bytes.
pub fn empty() -> BoxBody {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Boxes any body whose error converts into [`BoxError`].
pub fn boxed<B>(body: B) -> BoxBody
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
}
