//! Upstreams that fail on demand, and the proxy's admin view of its
//! backends, for resilience tests.
//!
//! A [`FaultyUpstream`] serves HTTP/1.1 and h2c like every kit upstream
//! and records what reaches it, but answers according to the [`Fault`] set
//! last: a status, a delay, no answer at all, a reset connection, a body
//! that stalls or drips. It counts requests in flight, their peak, and the
//! requests whose handling was cut off (the proxy closed the connection or
//! reset the stream before the answer). `/healthz` answers 200 or 503 after
//! [`FaultyUpstream::set_healthy`] and is not counted as traffic.
//!
//! [`backend_view`] and [`wait_for_backend`] read admin `/backends`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::Value;
use tokio::time::Instant;

use crate::body::{BoxBody, BoxError, boxed, full};
use crate::proxy::Proxy;
use crate::server::{Connection, handler};
use crate::upstream::{Recorded, Upstream};

/// The path answered from the health flag, never counted as traffic.
pub const HEALTH_PATH: &str = "/healthz";

/// What a [`FaultyUpstream`] does with the requests that come next. Every
/// answer reads the request body to its end first, except where noted.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// 200 with `NAME\n` as body.
    None,
    /// This status, with `NAME\n` as body.
    Status(u16),
    /// This status and one extra header field (say `Retry-After`).
    StatusWith(u16, &'static str, &'static str),
    /// 200 after this long.
    Delay(Duration),
    /// Never answers: the request is held until the proxy gives up on it.
    /// The body is not read.
    Hang,
    /// Resets the TCP connection (RST) without answering.
    Reset,
    /// 200 with headers and one chunk `first\n`, then nothing more.
    Stall,
    /// 200 with `count` chunks `chunk N\n`, one every `every`, the first
    /// at once.
    Drip { every: Duration, count: usize },
}

#[derive(Debug)]
struct Shared {
    name: String,
    fault: Mutex<Fault>,
    healthy: AtomicBool,
    served: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    cut_off: Mutex<Vec<Instant>>,
}

/// An upstream that fails on demand; see the module docs. Dropping it
/// closes its listener and every connection.
pub struct FaultyUpstream {
    upstream: Upstream,
    shared: Arc<Shared>,
}

impl FaultyUpstream {
    /// A healthy upstream named `name` on a fresh loopback port.
    pub async fn start(name: &str, fault: Fault) -> Self {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), name, fault).await
    }

    /// Like [`FaultyUpstream::start`], on `addr`.
    pub async fn start_at(addr: SocketAddr, name: &str, fault: Fault) -> Self {
        let shared = Arc::new(Shared {
            name: name.to_owned(),
            fault: Mutex::new(fault),
            healthy: AtomicBool::new(true),
            served: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            cut_off: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let h = handler(move |req| answer(s.clone(), req));
        let upstream = Upstream::start_at(addr, h).await;
        Self { upstream, shared }
    }

    pub fn addr(&self) -> SocketAddr {
        self.upstream.addr()
    }

    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// What the next requests get.
    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    /// Whether `/healthz` answers 200 (else 503).
    pub fn set_healthy(&self, ok: bool) {
        self.shared.healthy.store(ok, Ordering::SeqCst);
    }

    /// Requests received, health checks left out.
    pub fn count(&self) -> usize {
        self.traffic().len()
    }

    /// Every request received, health checks left out, in arrival order.
    pub fn traffic(&self) -> Vec<Recorded> {
        let all = self.upstream.requests();
        all.into_iter()
            .filter(|r| r.uri.path() != HEALTH_PATH)
            .collect()
    }

    /// Health-check requests received.
    pub fn health_checks(&self) -> usize {
        let all = self.upstream.requests();
        all.iter().filter(|r| r.uri.path() == HEALTH_PATH).count()
    }

    /// Requests answered with a complete response head.
    pub fn served(&self) -> usize {
        self.shared.served.load(Ordering::SeqCst)
    }

    /// Requests being handled now (until their response head).
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests handled at once since start.
    pub fn peak(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// When each request whose handling was cut off before its response
    /// head (connection closed, stream reset) was dropped.
    pub fn cut_off(&self) -> Vec<Instant> {
        self.shared
            .cut_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The recording upstream underneath.
    pub fn upstream(&self) -> &Upstream {
        &self.upstream
    }

    /// Clears the request log and the counters.
    pub fn reset_counts(&self) {
        self.upstream.log().clear();
        self.shared.served.store(0, Ordering::SeqCst);
        self.shared.peak.store(self.in_flight(), Ordering::SeqCst);
        self.shared
            .cut_off
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Stops accepting and closes every connection, returning once the
    /// address is free (to bring it back with [`FaultyUpstream::start_at`]).
    pub async fn stop(self) {
        self.upstream.stop().await;
    }
}

/// Counts one request in flight; a drop before [`Handling::done`] means
/// the proxy cut the request off.
struct Handling {
    shared: Arc<Shared>,
    done: bool,
}

impl Handling {
    fn begin(shared: Arc<Shared>) -> Self {
        let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        shared.peak.fetch_max(now, Ordering::SeqCst);
        Self {
            shared,
            done: false,
        }
    }

    fn done(mut self) {
        self.done = true;
        self.shared.served.fetch_add(1, Ordering::SeqCst);
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::SeqCst);
        if !self.done {
            let mut cut = self
                .shared
                .cut_off
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            cut.push(Instant::now());
        }
    }
}

async fn answer(shared: Arc<Shared>, req: http::Request<BoxBody>) -> Response<BoxBody> {
    if req.uri().path() == HEALTH_PATH {
        let ok = shared.healthy.load(Ordering::SeqCst);
        let status = if ok { 200 } else { 503 };
        return respond(&shared, status, full(if ok { "ok\n" } else { "down\n" }));
    }
    let fault = shared
        .fault
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let handling = Handling::begin(shared.clone());
    let conn = req.extensions().get::<Connection>().cloned();
    if fault == Fault::Hang {
        std::future::pending::<()>().await;
    }
    // Read the body first, so that it is recorded whole.
    let _ = req.into_body().collect().await;
    let name = Bytes::from(format!("{}\n", shared.name));
    let rsp = match fault {
        Fault::None | Fault::Hang => respond(&shared, 200, full(name)),
        Fault::Status(code) => respond(&shared, code, full(name)),
        Fault::StatusWith(code, field, value) => {
            let mut rsp = respond(&shared, code, full(name));
            rsp.headers_mut()
                .insert(field, HeaderValue::from_static(value));
            rsp
        }
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            respond(&shared, 200, full(name))
        }
        Fault::Reset => {
            if let Some(c) = conn {
                c.reset_after(Duration::ZERO);
            }
            std::future::pending::<()>().await;
            unreachable!("a pending future never ends")
        }
        Fault::Stall => respond(&shared, 200, drip(Duration::from_secs(3600), 2)),
        Fault::Drip { every, count } => respond(&shared, 200, drip(every, count)),
    };
    handling.done();
    rsp
}

fn respond(shared: &Shared, status: u16, body: BoxBody) -> Response<BoxBody> {
    let mut rsp = Response::new(body);
    *rsp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&shared.name) {
        rsp.headers_mut().insert("x-served-by", v);
    }
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("text/plain"));
    rsp
}

/// `count` chunks, the first at once and then one every `every`; a stall
/// is a drip whose second chunk never comes in time.
fn drip(every: Duration, count: usize) -> BoxBody {
    let chunks = futures_util::stream::unfold(0usize, move |i| async move {
        if i >= count {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(every).await;
        }
        let text = if i == 0 && every >= Duration::from_secs(3600) {
            "first\n".to_owned()
        } else {
            format!("chunk {i}\n")
        };
        let frame = Ok::<_, BoxError>(Frame::data(Bytes::from(text)));
        Some((frame, i + 1))
    });
    boxed(StreamBody::new(chunks))
}

/// Admin `/backends` entry for backend `name`, or `Value::Null`.
///
/// # Panics
/// When the admin listener does not answer or the JSON is malformed.
pub async fn backend_view(proxy: &Proxy, name: &str) -> Value {
    let rsp = proxy.admin_get("/backends").await.expect("GET /backends");
    assert_eq!(rsp.status, 200, "GET /backends: {}", rsp.text());
    let all: Value = rsp.json().expect("/backends is JSON");
    let list = all["backends"].as_array().cloned().unwrap_or_default();
    list.into_iter()
        .find(|b| b["name"] == name)
        .unwrap_or(Value::Null)
}

/// Polls [`backend_view`] every 20 ms until `pred` holds, at most
/// `timeout`. `Ok` with the view that satisfied it, or `Err` with the last
/// one seen.
pub async fn wait_for_backend(
    proxy: &Proxy,
    name: &str,
    timeout: Duration,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value, Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = backend_view(proxy, name).await;
        if pred(&view) {
            return Ok(view);
        }
        if Instant::now() >= deadline {
            return Err(view);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The breaker state `/backends` shows for a backend view: `closed`,
/// `open` or `half-open`.
pub fn breaker_state(view: &Value) -> &str {
    view["breaker"]["state"].as_str().unwrap_or("")
}

/// The state of the endpoint at `addr` in a backend view.
pub fn endpoint_state(view: &Value, addr: SocketAddr) -> Value {
    let list = view["endpoints"].as_array().cloned().unwrap_or_default();
    let addr = addr.to_string();
    list.into_iter()
        .find(|e| e["address"] == addr.as_str())
        .map_or(Value::Null, |e| e["state"].clone())
}

/// Whether an endpoint state says it is ejected right now.
pub fn is_ejected(state: &Value) -> bool {
    state["ejectedRemainingMs"]
        .as_u64()
        .is_some_and(|ms| ms > 0)
}
