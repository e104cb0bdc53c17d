//! The load generator: HTTP/1.1, h2c and gRPC unary clients on hyper, run
//! closed-loop (each connection sends its next request when the last one
//! is answered) or open-loop at a fixed rate, where every request has a
//! due time and its latency counts from that due time, not from when a
//! free connection picked it up (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, mpsc};

/// The wire protocol of a load run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1 keep-alive, one request in flight per connection.
    H1,
    /// HTTP/2 over cleartext with prior knowledge.
    H2c,
    /// gRPC unary `vakt.example.v1.Echo/Echo` over h2c.
    Grpc,
}

/// One load run.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Where to send requests.
    pub addr: SocketAddr,
    pub proto: Proto,
    /// Request path and query (ignored for gRPC).
    pub path: String,
    /// Connections opened.
    pub conns: usize,
    /// Requests in flight per connection (HTTP/2 only; HTTP/1.1 uses 1).
    pub streams: usize,
    /// How long requests are sent.
    pub duration: Duration,
    /// Total requests per second, open-loop; `None` runs closed-loop.
    pub rate: Option<u64>,
}

/// What a load run measured.
pub struct Outcome {
    /// Requests answered in full with success.
    pub requests: u64,
    /// Failed requests (connect errors, non-2xx, gRPC status not 0).
    pub errors: u64,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of successful requests, in nanoseconds.
    pub latency: Histogram<u64>,
}

/// An open client connection.
#[derive(Clone)]
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    H1(Arc<Mutex<http1::SendRequest<Full<Bytes>>>>),
    /// HTTP/2: streams multiplexed.
    H2(http2::SendRequest<Full<Bytes>>),
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 120_000_000_000, 3).expect("valid histogram bounds")
}

/// Runs `spec` and returns what it measured.
pub async fn run(spec: &Spec) -> anyhow::Result<Outcome> {
    let mut senders = Vec::with_capacity(spec.conns);
    for _ in 0..spec.conns {
        senders.push(connect(spec.addr, spec.proto).await?);
    }
    let per_conn = if spec.proto == Proto::H1 {
        1
    } else {
        spec.streams.max(1)
    };
    let template = Arc::new(template(spec));
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tickets = spec.rate.map(|rate| ticker(started, spec.duration, rate));
    let mut tasks = Vec::new();
    for sender in &senders {
        for _ in 0..per_conn {
            let sender = sender.clone();
            let template = template.clone();
            let tickets = tickets.clone();
            tasks.push(tokio::spawn(async move {
                match tickets {
                    Some(t) => open_loop(sender, &template, t).await,
                    None => closed_loop(sender, &template, deadline).await,
                }
            }));
        }
    }
    let mut total = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    for task in tasks {
        let part = task.await.context("load task panicked")?;
        total.requests += part.requests;
        total.errors += part.errors;
        total
            .latency
            .add(&part.latency)
            .context("histogram merge")?;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

type Tickets = Arc<Mutex<mpsc::UnboundedReceiver<Instant>>>;

/// Hands out due times `1/rate` apart from a plain thread (its sleeps are
/// finer than the runtime's 1 ms timer wheel) until `duration` has passed.
fn ticker(start: Instant, duration: Duration, rate: u64) -> Tickets {
    let (tx, rx) = mpsc::unbounded_channel();
    let period = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    std::thread::spawn(move || {
        let mut due = start;
        while due < start + duration {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if tx.send(due).is_err() {
                return;
            }
            due += period;
        }
    });
    Arc::new(Mutex::new(rx))
}

async fn open_loop(sender: Sender, template: &Request<Bytes>, tickets: Tickets) -> Outcome {
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    loop {
        let due = match tickets.lock().await.recv().await {
            Some(due) => due,
            None => return out,
        };
        record(&mut out, send(&sender, template).await, due);
    }
}

async fn closed_loop(sender: Sender, template: &Request<Bytes>, deadline: Instant) -> Outcome {
    let mut out = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency: histogram(),
    };
    while Instant::now() < deadline {
        let start = Instant::now();
        let ok = send(&sender, template).await;
        record(&mut out, ok, start);
        if !ok {
            // A broken connection stays broken; do not spin on it.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    out
}

fn record(out: &mut Outcome, ok: bool, since: Instant) {
    if ok {
        out.requests += 1;
        let ns = since.elapsed().as_nanos() as u64;
        out.latency.saturating_record(ns.max(1_000));
    } else {
        out.errors += 1;
    }
}

/// The request every send copies.
fn template(spec: &Spec) -> Request<Bytes> {
    let authority = spec.addr.to_string();
    let builder = match spec.proto {
        Proto::H1 => Request::get(spec.path.as_str()).header(header::HOST, authority),
        Proto::H2c => Request::get(format!("http://{authority}{}", spec.path)),
        Proto::Grpc => Request::post(format!("http://{authority}/vakt.example.v1.Echo/Echo"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header(header::TE, "trailers"),
    };
    let body = if spec.proto == Proto::Grpc {
        grpc_echo_frame()
    } else {
        Bytes::new()
    };
    builder.body(body).expect("valid request")
}

/// A length-prefixed `EchoRequest { message: "ping" }`.
fn grpc_echo_frame() -> Bytes {
    let message = b"ping";
    let mut proto = vec![0x0a, message.len() as u8];
    proto.extend_from_slice(message);
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(proto.len() as u32).to_be_bytes());
    frame.extend_from_slice(&proto);
    Bytes::from(frame)
}

fn copy(template: &Request<Bytes>) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(template.body().clone()));
    *req.method_mut() = template.method().clone();
    *req.uri_mut() = template.uri().clone();
    *req.headers_mut() = template.headers().clone();
    req
}

/// Sends one request and reads its answer to the end; `true` on success.
async fn send(sender: &Sender, template: &Request<Bytes>) -> bool {
    let req = copy(template);
    let response = match sender {
        Sender::H1(s) => {
            let mut s = s.lock().await;
            if s.ready().await.is_err() {
                return false;
            }
            s.send_request(req).await
        }
        Sender::H2(s) => {
            let mut s = s.clone();
            if s.ready().await.is_err() {
                return false;
            }
            s.send_request(req).await
        }
    };
    let Ok(response) = response else {
        return false;
    };
    if !response.status().is_success() {
        return false;
    }
    let mut body = response.into_body();
    let mut grpc_ok = true;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return false };
        if let Ok(trailers) = frame.into_trailers() {
            grpc_ok = trailers
                .get("grpc-status")
                .is_none_or(|status| status.as_bytes() == b"0");
        }
    }
    grpc_ok
}

/// Opens one connection speaking `proto`.
async fn connect(addr: SocketAddr, proto: Proto) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    tcp.set_nodelay(true)?;
    let io = TokioIo::new(tcp);
    Ok(match proto {
        Proto::H1 => {
            let (sender, conn) = http1::handshake(io).await?;
            tokio::spawn(conn);
            Sender::H1(Arc::new(Mutex::new(sender)))
        }
        Proto::H2c | Proto::Grpc => {
            let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(conn);
            Sender::H2(sender)
        }
    })
}

/// Whether `addr` answers one request in `proto` with success.
pub async fn probe(addr: SocketAddr, proto: Proto) -> bool {
    let spec = Spec {
        addr,
        proto,
        path: "/?size=16".into(),
        conns: 1,
        streams: 1,
        duration: Duration::ZERO,
        rate: None,
    };
    match connect(addr, proto).await {
        Ok(sender) => send(&sender, &template(&spec)).await,
        Err(_) => false,
    }
}

/// Opens `count` HTTP/1.1 connections to `addr`, sends one small request
/// on each (so each proxy holds a served, keep-alive connection) and
/// returns them open and idle.
pub async fn idle_connections(addr: SocketAddr, count: usize) -> anyhow::Result<Vec<Sender>> {
    let mut held = Vec::with_capacity(count);
    let template = template(&Spec {
        addr,
        proto: Proto::H1,
        path: "/?size=16".into(),
        conns: 1,
        streams: 1,
        duration: Duration::ZERO,
        rate: None,
    });
    for _ in 0..count {
        let sender = connect(addr, Proto::H1).await?;
        anyhow::ensure!(
            send(&sender, &template).await,
            "request on idle connection failed"
        );
        held.push(sender);
    }
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_frame_is_length_prefixed() {
        let frame = grpc_echo_frame();
        assert_eq!(&frame[..5], &[0, 0, 0, 0, 6]);
        assert_eq!(&frame[5..], b"\x0a\x04ping");
    }
}
