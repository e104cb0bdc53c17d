//! The one place where errors become responses.
//!
//! Every response the proxy makes itself says so in a `vakt-error` header
//! with a short, bounded reason. gRPC callers get HTTP 200 with the
//! matching `grpc-status` in a trailers-only response, so their client
//! libraries report a status instead of a transport error.
//!
//! | status | reasons |
//! |---|---|
//! | 400 | `bad-request` |
//! | 404 | `no-route` |
//! | 502 | `connect-failed`, `upstream-reset`, `upstream-protocol` |
//! | 503 | `no-endpoint`, `breaker-open`, `overflow` |
//! | 504 | `timeout` |
//! | 401 | `unauthenticated` (with `WWW-Authenticate`) |
//! | 403 | `forbidden` |
//! | 413 | `body-too-large` |
//! | 429 | `rate-limited` (with `Retry-After` and `RateLimit-*`) |

use bytes::Bytes;
use http::header::{
    CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE,
};
use http::{Response, StatusCode};

use vakt_api::config::Fallback;

use crate::edge::ratelimit::Decision;
use crate::http::body::ProxyBody;

/// Header naming why the proxy answered a request itself.
pub static VAKT_ERROR: HeaderName = HeaderName::from_static("vakt-error");

/// Why the proxy could not forward a request or had to stop one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("malformed request: {0}")]
    BadRequest(&'static str),
    #[error("no route matches the request")]
    NoRoute,
    #[error("cannot connect to the endpoint")]
    ConnectFailed,
    #[error("the upstream reset the connection")]
    UpstreamReset,
    #[error("the upstream broke the protocol")]
    UpstreamProtocol,
    #[error("the backend has no ready endpoint")]
    NoEndpoint,
    #[error("the backend's breaker is open")]
    BreakerOpen,
    #[error("the backend's limits are full")]
    Overflow,
    #[error("the request timed out")]
    Timeout,
    #[error("rate limited")]
    RateLimited(Decision),
    #[error("authentication required")]
    Unauthenticated(Option<HeaderValue>),
    #[error("not allowed")]
    Forbidden,
    #[error("request body too large")]
    BodyTooLarge,
    #[error("request headers too large")]
    HeadersTooLarge,
}

impl ProxyError {
    /// The bounded reason used in `vakt-error`, logs and metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "bad-request",
            Self::NoRoute => "no-route",
            Self::ConnectFailed => "connect-failed",
            Self::UpstreamReset => "upstream-reset",
            Self::UpstreamProtocol => "upstream-protocol",
            Self::NoEndpoint => "no-endpoint",
            Self::BreakerOpen => "breaker-open",
            Self::Overflow => "overflow",
            Self::Timeout => "timeout",
            Self::RateLimited(_) => "rate-limited",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden => "forbidden",
            Self::BodyTooLarge => "body-too-large",
            Self::HeadersTooLarge => "headers-too-large",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NoRoute => StatusCode::NOT_FOUND,
            Self::ConnectFailed | Self::UpstreamReset | Self::UpstreamProtocol => {
                StatusCode::BAD_GATEWAY
            }
            Self::NoEndpoint | Self::BreakerOpen | Self::Overflow => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        }
    }

    /// The gRPC status code matching [`Self::status`].
    pub fn grpc_status(&self) -> u8 {
        grpc_status_for(self.status())
    }

    /// Whether the client caused it (a bad or oversize request, a body
    /// that failed), so it says nothing about the upstream.
    pub fn is_client_fault(&self) -> bool {
        matches!(
            self,
            Self::BadRequest(_) | Self::BodyTooLarge | Self::HeadersTooLarge
        )
    }

    /// Whether the client connection must be closed after the answer:
    /// after a framing error nothing more on it can be trusted.
    pub fn closes_connection(&self) -> bool {
        matches!(self, Self::BadRequest(_) | Self::HeadersTooLarge)
    }
}

/// Header naming why a fallback answered instead of the backend.
pub static VAKT_FALLBACK: HeaderName = HeaderName::from_static("vakt-fallback");

impl ProxyError {
    /// Whether a route's fallback may answer instead: the backend could
    /// not serve (breaker open, no endpoint, overflow, out of time,
    /// attempts failed), as opposed to a bad or refused request.
    pub fn allows_fallback(&self) -> bool {
        matches!(
            self,
            Self::ConnectFailed
                | Self::UpstreamReset
                | Self::UpstreamProtocol
                | Self::NoEndpoint
                | Self::BreakerOpen
                | Self::Overflow
                | Self::Timeout
        )
    }
}

/// The configured fallback answer, marked `vakt-fallback: <reason>`.
pub fn fallback_response(fallback: &Fallback, reason: &'static str) -> Response<ProxyBody> {
    let body = Bytes::from(fallback.body.clone());
    let len = body.len();
    let mut rsp = Response::new(ProxyBody::full(body));
    *rsp.status_mut() = StatusCode::from_u16(fallback.status).unwrap_or(StatusCode::OK);
    let headers = rsp.headers_mut();
    for (name, value) in &fallback.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(n, v);
        }
    }
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(VAKT_FALLBACK.clone(), HeaderValue::from_static(reason));
    rsp
}

/// Maps an HTTP status the proxy chose to the gRPC status a gRPC client
/// should see.
pub fn grpc_status_for(status: StatusCode) -> u8 {
    match status.as_u16() {
        400 => 13,
        401 => 16,
        403 => 7,
        404 => 12,
        429 => 8,
        502..=503 => 14,
        504 => 4,
        _ => 13,
    }
}

/// Builds the response for an error. `grpc` is whether the request was a
/// gRPC call (its content-type starts with `application/grpc`).
pub fn error_response(err: &ProxyError, grpc: bool) -> Response<ProxyBody> {
    let mut rsp = if grpc {
        grpc_response(err)
    } else {
        plain_response(err)
    };
    let headers = rsp.headers_mut();
    headers.insert(VAKT_ERROR.clone(), HeaderValue::from_static(err.reason()));
    if err.closes_connection() {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    match err {
        ProxyError::Unauthenticated(Some(challenge)) => {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        ProxyError::RateLimited(decision) => decision.write_headers(headers),
        _ => {}
    }
    rsp
}

fn plain_response(err: &ProxyError) -> Response<ProxyBody> {
    let body = Bytes::from_static(err_text(err).as_bytes());
    let mut rsp = Response::new(ProxyBody::full(body.clone()));
    *rsp.status_mut() = err.status();
    let headers = rsp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
    rsp
}

fn grpc_response(err: &ProxyError) -> Response<ProxyBody> {
    let mut rsp = Response::new(ProxyBody::empty());
    let headers = rsp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(
        HeaderName::from_static("grpc-status"),
        HeaderValue::from(u16::from(err.grpc_status())),
    );
    headers.insert(
        HeaderName::from_static("grpc-message"),
        HeaderValue::from_static(err_text_grpc(err)),
    );
    rsp
}

/// A one-line, newline-terminated body for plain HTTP clients.
fn err_text(err: &ProxyError) -> &'static str {
    match err {
        ProxyError::BadRequest(_) => "bad request\n",
        ProxyError::NoRoute => "no route\n",
        ProxyError::ConnectFailed => "upstream connect failed\n",
        ProxyError::UpstreamReset => "upstream reset\n",
        ProxyError::UpstreamProtocol => "upstream protocol error\n",
        ProxyError::NoEndpoint => "no ready endpoint\n",
        ProxyError::BreakerOpen => "breaker open\n",
        ProxyError::Overflow => "overflow\n",
        ProxyError::Timeout => "timeout\n",
        ProxyError::RateLimited(_) => "rate limited\n",
        ProxyError::Unauthenticated(_) => "unauthenticated\n",
        ProxyError::Forbidden => "forbidden\n",
        ProxyError::BodyTooLarge => "request body too large\n",
        ProxyError::HeadersTooLarge => "request headers too large\n",
    }
}

/// `grpc-message` is percent-encoded on the wire; these need no escaping.
fn err_text_grpc(err: &ProxyError) -> &'static str {
    err_text(err).trim_end()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_callers_get_200_with_a_status() {
        let rsp = error_response(&ProxyError::Timeout, true);
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "4");
        assert_eq!(rsp.headers()["content-type"], "application/grpc");
        assert_eq!(rsp.headers()["vakt-error"], "timeout");
    }

    #[test]
    fn plain_callers_get_the_mapped_status() {
        let cases = [
            (ProxyError::NoRoute, 404),
            (ProxyError::ConnectFailed, 502),
            (ProxyError::NoEndpoint, 503),
            (ProxyError::BreakerOpen, 503),
            (ProxyError::Timeout, 504),
        ];
        for (err, code) in cases {
            let rsp = error_response(&err, false);
            assert_eq!(rsp.status().as_u16(), code, "{err:?}");
            assert_eq!(rsp.headers()["vakt-error"], err.reason());
        }
    }

    #[test]
    fn framing_errors_close_the_connection() {
        let rsp = error_response(&ProxyError::BadRequest("both lengths"), false);
        assert_eq!(rsp.headers()["connection"], "close");
    }
}
