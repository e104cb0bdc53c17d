//! The example service as one link of a chain: `/chain` calls the next
//! service (`--call URL`) and answers with what it said, so a request can
//! travel edge → A → B through the mesh.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, StatusCode, Uri, header};

use crate::body::empty;
use crate::client::HttpClient;

/// Longest wait for the next service's whole answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The header carrying the next service's status on a `/chain` answer.
pub const CHAIN_STATUS: &str = "x-chain-status";

/// Where `/chain` sends its own request: an `http://ip:port/path` URL,
/// dialed as given (no name resolution), with an optional Host override.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The socket dialed.
    pub addr: SocketAddr,
    /// Sent as `host`; default the URL's authority.
    pub host: HeaderValue,
    /// Path and query sent.
    pub path: String,
}

/// Why a `--call` URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("not a URL: {0}")]
    Uri(#[from] http::uri::InvalidUri),
    #[error("only http:// URLs are supported")]
    Scheme,
    #[error("the URL's host must be an IP address, not {0:?}")]
    Host(String),
    #[error("not a valid host header: {0:?}")]
    HostHeader(String),
}

impl Call {
    /// Parses `http://ip:port/path` (port default 80); `host` replaces the
    /// URL's authority as the `host` field.
    pub fn parse(url: &str, host: Option<&str>) -> Result<Self, CallError> {
        let uri = Uri::from_str(url)?;
        if uri.scheme_str() != Some("http") {
            return Err(CallError::Scheme);
        }
        let authority = uri.authority().ok_or(CallError::Scheme)?;
        let ip_text = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let ip =
            IpAddr::from_str(ip_text).map_err(|_| CallError::Host(authority.host().to_owned()))?;
        let addr = SocketAddr::new(ip, authority.port_u16().unwrap_or(80));
        let host = host.unwrap_or(authority.as_str());
        let host = HeaderValue::from_str(host).map_err(|_| CallError::HostHeader(host.into()))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        Ok(Self { addr, host, path })
    }
}

/// The `/chain` answer: the next service's status (502 when it could not
/// be reached) and body, prefixed with this service's name.
pub(super) async fn call(name: &str, call: &Call) -> (StatusCode, Bytes, HeaderValue) {
    let (status, body) = match tokio::time::timeout(CALL_TIMEOUT, send(call)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => (StatusCode::BAD_GATEWAY, Bytes::from(format!("{e}\n"))),
        Err(_) => (
            StatusCode::GATEWAY_TIMEOUT,
            Bytes::from_static(b"timed out\n"),
        ),
    };
    let mut out = BytesMut::with_capacity(name.len() + 4 + body.len());
    out.put_slice(name.as_bytes());
    out.put_slice(b" -> ");
    out.put_slice(&body);
    let code = HeaderValue::from(status.as_u16());
    (status, out.freeze(), code)
}

async fn send(call: &Call) -> Result<(StatusCode, Bytes), crate::client::ClientError> {
    let mut client = HttpClient::h1(call.addr).await?;
    let req = Request::get(call.path.as_str())
        .header(header::HOST, call.host.clone())
        .body(empty())?;
    let resp = client.send(req).await?;
    Ok((resp.status, resp.body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_call_urls() {
        let c = Call::parse("http://10.96.0.2/end", None).unwrap();
        assert_eq!(c.addr, "10.96.0.2:80".parse().unwrap());
        assert_eq!(c.host, "10.96.0.2");
        assert_eq!(c.path, "/end");
        let c = Call::parse("http://127.0.0.1:18012/x?y=1", Some("b")).unwrap();
        assert_eq!(c.addr, "127.0.0.1:18012".parse().unwrap());
        assert_eq!(c.host, "b");
        assert_eq!(c.path, "/x?y=1");
        assert!(matches!(
            Call::parse("http://b.svc/x", None),
            Err(CallError::Host(_))
        ));
        assert!(matches!(
            Call::parse("https://10.0.0.1/", None),
            Err(CallError::Scheme)
        ));
    }
}
