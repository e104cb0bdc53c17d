//! The plain HTTP side of the example service: health, `/echo` and sized
//! bodies, with the delay and failure knobs.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{SERVED_BY, Shared};
use crate::body::{BoxBody, BoxError, boxed, full};
use crate::server::Connection;

/// Largest body `size=` may ask for, in bytes.
const MAX_SIZE: usize = 64 << 20;
/// `/echo` includes the body itself up to this many bytes of UTF-8.
const ECHO_BODY_LIMIT: usize = 64 << 10;

/// What `/echo` answers: the request as the service received it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Echoed {
    pub served_by: String,
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The `:authority` of an HTTP/2 request or the `host` field.
    pub authority: Option<String>,
    /// Every field as `[name, value]`, names lowercase, repeated fields
    /// kept (grouped by name, in order of first appearance).
    pub headers: Vec<(String, String)>,
    /// The peer address of the TCP connection.
    pub peer: Option<String>,
    pub body_len: usize,
    /// Hex SHA-256 of the body.
    pub body_sha256: String,
    /// The body, when it is UTF-8 and at most 64 KiB.
    pub body: Option<String>,
}

impl Echoed {
    /// Every value of header `name` (lowercase), in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }
}

/// Per-request knobs read from the query string.
#[derive(Default)]
struct Knobs {
    size: Option<usize>,
    delay: Option<Duration>,
    status: Option<StatusCode>,
    fail_rate: Option<f64>,
    trailers: bool,
}

pub(super) async fn handle(shared: &Shared, req: Request<BoxBody>) -> Response<BoxBody> {
    let name = shared.config.name.as_str();
    match (req.method(), req.uri().path()) {
        (_, "/healthz") => return health(shared),
        (&Method::POST, "/admin/health") => {
            let ok = !req.uri().query().unwrap_or("").contains("ok=false");
            shared.healthy.store(ok, Ordering::SeqCst);
            return health(shared);
        }
        (&Method::POST, "/admin/fail") => {
            let on = !req.uri().query().unwrap_or("").contains("on=false");
            shared.failing.store(on, Ordering::SeqCst);
            let text = if on { "failing\n" } else { "serving\n" };
            return respond(shared, StatusCode::OK, full(text), "text/plain");
        }
        _ => {}
    }
    if shared.failing.load(Ordering::Relaxed) {
        return injected_failure(shared);
    }

    let knobs = knobs(req.uri().query());
    let delay = knobs.delay.unwrap_or(shared.config.delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let fail_rate = knobs.fail_rate.unwrap_or(shared.config.failure_rate);
    if fail_rate > 0.0 && fastrand::f64() < fail_rate {
        return injected_failure(shared);
    }

    if req.uri().path() == "/chain" {
        return chain(shared).await;
    }
    let status = knobs.status.unwrap_or(StatusCode::OK);
    if req.uri().path() == "/echo" {
        let json = echo(name, req).await;
        return respond(shared, status, json, "application/json");
    }
    let bytes = match knobs.size {
        Some(n) => filler(n),
        None => shared.default_body.clone(),
    };
    let body = if knobs.trailers {
        with_trailers(bytes)
    } else {
        full(bytes)
    };
    respond(shared, status, body, "text/plain")
}

async fn chain(shared: &Shared) -> Response<BoxBody> {
    let Some(call) = &shared.config.call else {
        let text = "no next service: start with --call\n";
        return respond(shared, StatusCode::NOT_FOUND, full(text), "text/plain");
    };
    let (status, body, code) = super::chain::call(&shared.config.name, call).await;
    let mut resp = respond(shared, status, full(body), "text/plain");
    resp.headers_mut().insert(super::CHAIN_STATUS, code);
    resp
}

/// The answer of a request chosen to fail.
fn injected_failure(shared: &Shared) -> Response<BoxBody> {
    let body = format!("failure injected by {}\n", shared.config.name);
    respond(
        shared,
        shared.config.failure_status,
        full(body),
        "text/plain",
    )
}

fn health(shared: &Shared) -> Response<BoxBody> {
    let (status, text) = if shared.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n")
    };
    respond(shared, status, full(text), "text/plain")
}

fn respond(
    shared: &Shared,
    status: StatusCode,
    body: BoxBody,
    kind: &'static str,
) -> Response<BoxBody> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    if let Some(v) = &shared.served_by {
        headers.insert(SERVED_BY, v.clone());
    }
    resp
}

fn knobs(query: Option<&str>) -> Knobs {
    let mut k = Knobs::default();
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "size" => k.size = value.parse().ok().map(|n: usize| n.min(MAX_SIZE)),
            "delay_ms" => k.delay = value.parse().ok().map(Duration::from_millis),
            "status" => {
                k.status = value
                    .parse()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
            }
            "fail_rate" => k.fail_rate = value.parse().ok(),
            "trailers" => k.trailers = value == "1" || value == "true",
            _ => {}
        }
    }
    k
}

async fn echo(name: &str, req: Request<BoxBody>) -> BoxBody {
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_owned(), v)
        })
        .collect();
    let text = (bytes.len() <= ECHO_BODY_LIMIT)
        .then(|| std::str::from_utf8(&bytes).ok().map(str::to_owned))
        .flatten();
    let echoed = Echoed {
        served_by: name.to_owned(),
        method: parts.method.to_string(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        version: format!("{:?}", parts.version),
        authority: authority(&parts),
        headers,
        peer: parts
            .extensions
            .get::<Connection>()
            .map(|c| c.peer.to_string()),
        body_len: bytes.len(),
        body_sha256: sha256_hex(&bytes),
        body: text,
    };
    full(serde_json::to_vec(&echoed).unwrap_or_default())
}

fn authority(parts: &http::request::Parts) -> Option<String> {
    if let Some(a) = parts.uri.authority() {
        return Some(a.to_string());
    }
    let host = parts.headers.get(header::HOST)?;
    Some(String::from_utf8_lossy(host.as_bytes()).into_owned())
}

/// Hex SHA-256 of `bytes`, as `/echo` reports it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `n` bytes of printable filler.
pub(super) fn filler(n: usize) -> Bytes {
    const LINE: &[u8] = b"vakt example body 0123456789abcdefghijklmnopqrstuvwxyz\n";
    LINE.iter()
        .copied()
        .cycle()
        .take(n)
        .collect::<Vec<u8>>()
        .into()
}

fn with_trailers(bytes: Bytes) -> BoxBody {
    let mut trailers = http::HeaderMap::new();
    trailers.insert("x-example-trailer", HeaderValue::from_static("done"));
    let frames = [
        Ok::<_, BoxError>(Frame::data(bytes)),
        Ok(Frame::trailers(trailers)),
    ];
    boxed(StreamBody::new(futures_util::stream::iter(frames)))
}
