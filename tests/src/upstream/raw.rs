//! A raw TCP upstream for HTTP/1 framing cases: it records every byte it
//! receives per connection, parses requests the simple way a lenient
//! server would, and answers each with scripted bytes and actions (send,
//! read the body, sleep, close without `Connection: close`, reset with RST,
//! stall).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One request as the raw upstream parsed it.
#[derive(Clone, Debug)]
pub struct RawRequest {
    /// Which accepted connection, from 0.
    pub connection: usize,
    /// Position on its connection, from 0.
    pub index: usize,
    /// Position among all requests of this upstream, from 0.
    pub seq: usize,
    pub method: String,
    /// The request-target as sent (origin or absolute form).
    pub target: String,
    /// `HTTP/1.1` or whatever the request line said.
    pub version: String,
    /// Fields as sent: names keep their case, repeats and order are kept.
    pub headers: Vec<(String, String)>,
    /// The exact bytes of the request line and fields, blank line included.
    pub head: Vec<u8>,
    /// The body, once a [`RawReply::read_body`] step read it (decoded when
    /// chunked).
    pub body: Vec<u8>,
    /// When the head was complete.
    pub at: Instant,
}

impl RawRequest {
    /// The first value of `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_all(name).into_iter().next()
    }

    /// Every value of `name`, compared case-insensitively, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let named = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name));
        named.map(|(_, v)| v.as_str()).collect()
    }
}

/// What one connection received.
#[derive(Clone, Debug)]
pub struct RawConnection {
    pub id: usize,
    pub peer: SocketAddr,
    /// Every byte received, in order, including bytes no request used.
    pub bytes: Vec<u8>,
    pub requests: Vec<RawRequest>,
    /// Whether the peer closed its side (EOF or reset) before we did.
    pub peer_closed: bool,
}

#[derive(Clone, Debug)]
enum Step {
    Send(Bytes),
    ReadBody,
    Sleep(Duration),
    Close,
    Reset,
    Stall,
}

/// The scripted answer to one request: steps run in order. After the last
/// step the connection stays open and the next request is parsed from
/// where reading stopped (so a body that was not read is parsed as a
/// request, as a naive server would).
#[derive(Clone, Debug, Default)]
pub struct RawReply {
    steps: Vec<Step>,
}

impl RawReply {
    /// No steps: read nothing, answer nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the body, then sends `bytes`.
    pub fn respond(bytes: impl Into<Bytes>) -> Self {
        Self::new().read_body().send(bytes)
    }

    /// Reads the body, then answers 200 with `body` and a Content-Length.
    pub fn ok(body: &str) -> Self {
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        Self::respond([head.as_bytes(), body.as_bytes()].concat())
    }

    /// Writes these bytes.
    pub fn send(mut self, bytes: impl Into<Bytes>) -> Self {
        self.steps.push(Step::Send(bytes.into()));
        self
    }

    /// Reads the request body as framed by Content-Length or chunked
    /// Transfer-Encoding; no body when neither is present.
    pub fn read_body(mut self) -> Self {
        self.steps.push(Step::ReadBody);
        self
    }

    pub fn sleep(mut self, d: Duration) -> Self {
        self.steps.push(Step::Sleep(d));
        self
    }

    /// Closes the connection with a FIN.
    pub fn close(mut self) -> Self {
        self.steps.push(Step::Close);
        self
    }

    /// Closes the connection with a RST (SO_LINGER 0).
    pub fn reset(mut self) -> Self {
        self.steps.push(Step::Reset);
        self
    }

    /// Answers nothing more on this connection, still recording what
    /// arrives, until the peer closes it.
    pub fn stall(mut self) -> Self {
        self.steps.push(Step::Stall);
        self
    }
}

type Script = Arc<dyn Fn(&RawRequest) -> RawReply + Send + Sync>;

struct ConnRecord {
    id: usize,
    peer: SocketAddr,
    state: Mutex<ConnState>,
}

#[derive(Default)]
struct ConnState {
    bytes: Vec<u8>,
    requests: Vec<RawRequest>,
    peer_closed: bool,
}

impl ConnRecord {
    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct Shared {
    conns: Mutex<Vec<Arc<ConnRecord>>>,
    seq: AtomicUsize,
}

/// A raw TCP upstream on a fresh `127.0.0.1` port; dropping it closes the
/// listener and every connection.
pub struct RawUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl RawUpstream {
    /// Answers each request with `script(&request)`.
    ///
    /// # Panics
    /// When no loopback port can be bound.
    pub async fn start<F>(script: F) -> Self
    where
        F: Fn(&RawRequest) -> RawReply + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw upstream");
        let addr = listener.local_addr().expect("raw upstream address");
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(accept_loop(listener, Arc::new(script), shared.clone()));
        Self { addr, shared, task }
    }

    /// Answers the n-th request (over all connections) with `replies[n]`,
    /// and every later one with the last reply.
    pub async fn sequence(replies: Vec<RawReply>) -> Self {
        Self::start(move |req| {
            let i = req.seq.min(replies.len().saturating_sub(1));
            replies.get(i).cloned().unwrap_or_default()
        })
        .await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What every connection received so far, in accept order.
    pub fn connections(&self) -> Vec<RawConnection> {
        let conns = self.shared.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.iter().map(|c| snapshot(c)).collect()
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.shared.conns.lock().map_or(0, |c| c.len())
    }

    /// Every request parsed so far, in arrival order.
    pub fn requests(&self) -> Vec<RawRequest> {
        let mut all: Vec<_> = self
            .connections()
            .into_iter()
            .flat_map(|c| c.requests)
            .collect();
        all.sort_by_key(|r| r.seq);
        all
    }

    /// Every byte received over all connections, in accept order.
    pub fn received(&self) -> Vec<u8> {
        self.connections()
            .into_iter()
            .flat_map(|c| c.bytes)
            .collect()
    }

    /// Waits until at least `n` requests were parsed, up to `timeout`.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<RawRequest> {
        let deadline = Instant::now() + timeout;
        while self.requests().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.requests()
    }
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn snapshot(c: &ConnRecord) -> RawConnection {
    let s = c.lock();
    RawConnection {
        id: c.id,
        peer: c.peer,
        bytes: s.bytes.clone(),
        requests: s.requests.clone(),
        peer_closed: s.peer_closed,
    }
}

async fn accept_loop(listener: TcpListener, script: Script, shared: Arc<Shared>) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                let _ = stream.set_nodelay(true);
                let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
                let record = Arc::new(ConnRecord { id: conns.len(), peer, state: Default::default() });
                conns.push(record.clone());
                tasks.spawn(drive(stream, record, script.clone(), shared.clone()));
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
}

/// Serves one connection: a reader task records bytes as they arrive, and
/// this task parses requests from them and runs the scripted steps.
async fn drive(stream: TcpStream, record: Arc<ConnRecord>, script: Script, shared: Arc<Shared>) {
    let (rd, mut wr) = stream.into_split();
    let (tx, rx) = watch::channel(());
    let reader = tokio::spawn(read_all(rd, record.clone(), tx));
    let mut input = Input {
        record: record.clone(),
        rx,
        pos: 0,
    };
    let _end = AbortOnDrop(reader);

    for index in 0.. {
        let Some(mut req) = input.request(index, &shared).await else {
            return;
        };
        let reply = script(&req);
        let slot = {
            let mut s = record.lock();
            s.requests.push(req.clone());
            s.requests.len() - 1
        };
        for step in reply.steps {
            match step {
                Step::Send(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        return;
                    }
                }
                Step::ReadBody => {
                    let Some(body) = input.body(&req.headers).await else {
                        return;
                    };
                    req.body = body.clone();
                    record.lock().requests[slot].body = body;
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Close => {
                    let _ = wr.shutdown().await;
                    return;
                }
                Step::Reset => {
                    let sock = socket2::SockRef::from(wr.as_ref());
                    let _ = sock.set_linger(Some(Duration::ZERO));
                    return;
                }
                Step::Stall => {
                    input.wait_eof().await;
                    return;
                }
            }
        }
    }
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn read_all(mut rd: OwnedReadHalf, record: Arc<ConnRecord>, tx: watch::Sender<()>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match rd.read(&mut buf).await {
            Ok(n) if n > 0 => record.lock().bytes.extend_from_slice(&buf[..n]),
            _ => {
                record.lock().peer_closed = true;
                tx.send_replace(());
                return;
            }
        }
        tx.send_replace(());
    }
}

/// The parsing side of a connection: a cursor into the recorded bytes.
struct Input {
    record: Arc<ConnRecord>,
    rx: watch::Receiver<()>,
    pos: usize,
}

impl Input {
    /// Waits until `take` finds what it needs in the unread bytes, and
    /// consumes that many; `None` when the peer closed first.
    async fn take(&mut self, take: impl Fn(&[u8]) -> Option<usize>) -> Option<Vec<u8>> {
        loop {
            {
                let s = self.record.lock();
                let rest = &s.bytes[self.pos..];
                if let Some(n) = take(rest) {
                    let out = rest[..n].to_vec();
                    self.pos += n;
                    return Some(out);
                }
                if s.peer_closed {
                    return None;
                }
            }
            self.rx.changed().await.ok()?;
        }
    }

    async fn wait_eof(&mut self) {
        while !self.record.lock().peer_closed {
            if self.rx.changed().await.is_err() {
                return;
            }
        }
    }

    async fn request(&mut self, index: usize, shared: &Shared) -> Option<RawRequest> {
        let head = self.take(head_len).await?;
        let text = String::from_utf8_lossy(&head);
        let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
        let mut parts = lines.next().unwrap_or("").splitn(3, ' ');
        let mut word = || parts.next().unwrap_or("").to_owned();
        let (method, target, version) = (word(), word(), word());
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_owned(), v.trim().to_owned()),
                None => (l.to_owned(), String::new()),
            })
            .collect();
        Some(RawRequest {
            connection: self.record.id,
            index,
            seq: shared.seq.fetch_add(1, Ordering::SeqCst),
            method,
            target,
            version,
            headers,
            head,
            body: Vec::new(),
            at: Instant::now(),
        })
    }

    async fn body(&mut self, headers: &[(String, String)]) -> Option<Vec<u8>> {
        let value = |name: &str| {
            let mut v = headers
                .iter()
                .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name));
            v.next().map(|(_, v)| v.to_ascii_lowercase())
        };
        let chunked = value("transfer-encoding")
            .is_some_and(|te| te.rsplit(',').next().is_some_and(|t| t.trim() == "chunked"));
        if chunked {
            return self.chunked().await;
        }
        let len = value("content-length").and_then(|v| v.trim().parse::<usize>().ok());
        match len {
            Some(n) => self.take(|rest| (rest.len() >= n).then_some(n)).await,
            None => Some(Vec::new()),
        }
    }

    async fn chunked(&mut self) -> Option<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let line = self.take(line_len).await?;
            let text = String::from_utf8_lossy(&line);
            let size = text.trim().split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size, 16).ok()?;
            if size == 0 {
                // Trailer fields up to the blank line.
                while self.take(line_len).await?.len() > 2 {}
                return Some(body);
            }
            let data = self
                .take(|rest| (rest.len() >= size + 2).then_some(size + 2))
                .await?;
            body.extend_from_slice(&data[..size]);
        }
    }
}

/// Length of a request head ending in a blank line (CRLF or bare LF).
fn head_len(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') {
        let end = i + nl + 1;
        let rest = &buf[end..];
        if rest.starts_with(b"\r\n") {
            return Some(end + 2);
        }
        if rest.starts_with(b"\n") {
            return Some(end + 1);
        }
        i = end;
    }
    None
}

fn line_len(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n').map(|p| p + 1)
}
