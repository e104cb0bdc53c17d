//! hyper clients over one TCP connection each: HTTP/1.1 and h2c (prior
//! knowledge), with responses collected whole, trailers included.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::ClientError;
use crate::body::{BoxBody, empty};

/// A response read to its end.
#[derive(Clone, Debug)]
pub struct Collected {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Collected {
    /// Reads `resp` to its end.
    pub async fn from_response(resp: Response<Incoming>) -> Result<Self, ClientError> {
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await?;
        let trailers = collected.trailers().cloned();
        Ok(Self {
            status: parts.status,
            version: parts.version,
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        })
    }

    /// The first value of `name` as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body read as JSON, such as [`crate::example::Echoed`].
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> serde_json::Result<T> {
        serde_json::from_slice(&self.body)
    }
}

enum Sender {
    H1(http1::SendRequest<BoxBody>),
    H2(http2::SendRequest<BoxBody>),
}

/// One client connection, HTTP/1.1 or h2c. Dropping it closes the
/// connection.
pub struct HttpClient {
    addr: SocketAddr,
    sender: Sender,
    conn: JoinHandle<()>,
}

impl Drop for HttpClient {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl HttpClient {
    /// Connects with HTTP/1.1.
    pub async fn h1(addr: SocketAddr) -> Result<Self, ClientError> {
        let io = TokioIo::new(connect(addr).await?);
        let (sender, conn) = http1::handshake(io).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(Self {
            addr,
            sender: Sender::H1(sender),
            conn,
        })
    }

    /// Connects with HTTP/2 without TLS (prior knowledge).
    pub async fn h2c(addr: SocketAddr) -> Result<Self, ClientError> {
        let io = TokioIo::new(connect(addr).await?);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        let conn = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Self {
            addr,
            sender: Sender::H2(sender),
            conn,
        })
    }

    /// Sends `req` and returns the response head with its streaming body.
    ///
    /// HTTP/1.1: a missing `host` is taken from the URI's authority or the
    /// peer address; the request-target is sent as given. HTTP/2: a URI
    /// without authority gets it from `host` (then removed) or the peer.
    pub async fn send_streaming(
        &mut self,
        mut req: Request<BoxBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        match &mut self.sender {
            Sender::H1(s) => {
                if !req.headers().contains_key(header::HOST) {
                    let host = req.uri().authority().map(|a| a.to_string());
                    let host = host.unwrap_or_else(|| self.addr.to_string());
                    let v = HeaderValue::from_str(&host).map_err(::http::Error::from)?;
                    req.headers_mut().insert(header::HOST, v);
                }
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
            Sender::H2(s) => {
                if req.uri().authority().is_none() {
                    let host = req.headers_mut().remove(header::HOST);
                    let host = host.and_then(|h| h.to_str().ok().map(str::to_owned));
                    let host = host.unwrap_or_else(|| self.addr.to_string());
                    let pq = req.uri().path_and_query().map_or("/", |p| p.as_str());
                    *req.uri_mut() = format!("http://{host}{pq}")
                        .parse::<Uri>()
                        .map_err(::http::Error::from)?;
                }
                *req.version_mut() = Version::HTTP_2;
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
        }
    }

    /// Sends `req` and reads the whole response.
    pub async fn send(&mut self, req: Request<BoxBody>) -> Result<Collected, ClientError> {
        let resp = self.send_streaming(req).await?;
        Collected::from_response(resp).await
    }

    /// `GET path` with `host` as Host (HTTP/1.1) or authority (HTTP/2).
    pub async fn get(&mut self, host: &str, path: &str) -> Result<Collected, ClientError> {
        let req = Request::get(path)
            .header(header::HOST, host)
            .body(empty())?;
        self.send(req).await
    }
}

/// One `GET path` over a new HTTP/1.1 connection to `addr`, with `addr`
/// as Host.
pub async fn get(addr: SocketAddr, path: &str) -> Result<Collected, ClientError> {
    HttpClient::h1(addr)
        .await?
        .get(&addr.to_string(), path)
        .await
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, ClientError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}
