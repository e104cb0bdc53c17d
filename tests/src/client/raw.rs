//! Raw HTTP/1 over TCP: write exact bytes, read what comes back, and parse
//! responses with their framing, so tests see what a lenient client would.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use super::ClientError;

/// One parsed response.
#[derive(Clone, Debug, PartialEq)]
pub struct RawResponse {
    /// `HTTP/1.1` or whatever the status line said.
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// Fields as sent: names keep their case, repeats and order are kept.
    pub headers: Vec<(String, String)>,
    /// The body, decoded when chunked.
    pub body: Vec<u8>,
    /// Whether the body was chunked.
    pub chunked: bool,
    /// The exact bytes of the whole response.
    pub raw: Vec<u8>,
}

impl RawResponse {
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

    /// Whether `Connection` lists `close`.
    pub fn closes(&self) -> bool {
        self.header_all("connection")
            .iter()
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")))
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A TCP connection driven byte by byte.
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

/// What one exchange returned: every byte until close or timeout.
#[derive(Clone, Debug)]
pub struct RawExchange {
    pub bytes: Vec<u8>,
    /// Whether the server closed the connection (EOF or reset).
    pub closed: bool,
    /// The responses in `bytes`, parsed as answers to non-HEAD requests.
    pub responses: Vec<RawResponse>,
}

/// Connects, writes `bytes`, and reads until the server closes or
/// `timeout` passes.
pub async fn raw_request(
    addr: SocketAddr,
    bytes: &[u8],
    timeout: Duration,
) -> Result<RawExchange, ClientError> {
    let mut c = RawClient::connect(addr).await?;
    c.send(bytes).await?;
    let (bytes, closed) = c.read_to_end(timeout).await;
    let responses = parse_responses(&bytes);
    Ok(RawExchange {
        bytes,
        closed,
        responses,
    })
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Result<Self, ClientError> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            eof: false,
        })
    }

    pub async fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).await?;
        Ok(self.stream.flush().await?)
    }

    /// Closes the writing side (sends FIN).
    pub async fn shutdown_write(&mut self) -> Result<(), ClientError> {
        Ok(self.stream.shutdown().await?)
    }

    /// Reads one response to a request that was not HEAD.
    pub async fn read_response(&mut self, timeout: Duration) -> Result<RawResponse, ClientError> {
        self.read_response_to(false, timeout).await
    }

    /// Reads one response; `head` says the request was HEAD, so the
    /// response has no body whatever its fields say. A 1xx interim
    /// response is returned on its own.
    pub async fn read_response_to(
        &mut self,
        head: bool,
        timeout: Duration,
    ) -> Result<RawResponse, ClientError> {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_one(&self.buf, head, self.eof) {
                Parsed::Done(resp, used) => {
                    self.buf.drain(..used);
                    return Ok(resp);
                }
                Parsed::Bad(why) => return Err(ClientError::Malformed(why)),
                Parsed::Partial if self.eof => {
                    let why = format!("connection closed after {} bytes", self.buf.len());
                    return Err(ClientError::Malformed(why));
                }
                Parsed::Partial => {}
            }
            if !self.fill(deadline).await? {
                return Err(ClientError::Timeout(timeout));
            }
        }
    }

    /// Reads until the server closes or `timeout` passes; returns the
    /// bytes not yet consumed and whether the connection closed.
    pub async fn read_to_end(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        while !self.eof {
            match self.fill(deadline).await {
                Ok(true) => {}
                Ok(false) => break,
                Err(_) => self.eof = true,
            }
        }
        (std::mem::take(&mut self.buf), self.eof)
    }

    /// Whether the server closes the connection within `timeout`, with no
    /// more bytes than those already read.
    pub async fn closed_within(&mut self, timeout: Duration) -> bool {
        let (rest, closed) = self.read_to_end(timeout).await;
        self.buf = rest;
        closed
    }

    /// Reads once; `Ok(false)` on timeout.
    async fn fill(&mut self, deadline: Instant) -> Result<bool, ClientError> {
        let mut chunk = [0u8; 16 * 1024];
        match timeout_at(deadline, self.stream.read(&mut chunk)).await {
            Err(_) => Ok(false),
            Ok(Ok(0)) => {
                self.eof = true;
                Ok(true)
            }
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(true)
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(true)
            }
            Ok(Err(e)) => Err(e.into()),
        }
    }
}

/// Parses every complete response in `bytes`, as answers to non-HEAD
/// requests; a body without framing runs to the end of `bytes`.
pub fn parse_responses(bytes: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        match parse_one(rest, false, true) {
            Parsed::Done(resp, used) => {
                out.push(resp);
                rest = &rest[used..];
            }
            _ => break,
        }
    }
    out
}

enum Parsed {
    Done(RawResponse, usize),
    Partial,
    Bad(String),
}

fn parse_one(buf: &[u8], head_request: bool, eof: bool) -> Parsed {
    let Some(head_len) = find(buf, b"\r\n\r\n").map(|p| p + 4) else {
        return Parsed::Partial;
    };
    let text = String::from_utf8_lossy(&buf[..head_len - 4]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("").to_owned();
    let Some(status) = parts.next().and_then(|s| s.parse::<u16>().ok()) else {
        return Parsed::Bad(format!("bad status line {status_line:?}"));
    };
    let reason = parts.next().unwrap_or("").to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.trim().to_owned()))
        .collect();
    let mut resp = RawResponse {
        version,
        status,
        reason,
        headers,
        body: Vec::new(),
        chunked: false,
        raw: Vec::new(),
    };

    let rest = &buf[head_len..];
    let no_body = head_request || (100..200).contains(&status) || status == 204 || status == 304;
    let te = resp
        .header("transfer-encoding")
        .map(str::to_ascii_lowercase);
    let cl = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok());
    let body_len = if no_body {
        0
    } else if te.is_some_and(|t| t.contains("chunked")) {
        resp.chunked = true;
        match dechunk(rest) {
            Some((body, used)) => {
                resp.body = body;
                used
            }
            None => return Parsed::Partial,
        }
    } else if let Some(n) = cl {
        if rest.len() < n {
            return Parsed::Partial;
        }
        resp.body = rest[..n].to_vec();
        n
    } else if eof {
        resp.body = rest.to_vec();
        rest.len()
    } else {
        return Parsed::Partial;
    };
    let used = head_len + body_len;
    resp.raw = buf[..used].to_vec();
    Parsed::Done(resp, used)
}

/// Decodes a chunked body; `None` until it is complete.
fn dechunk(mut buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let total = buf.len();
    let mut body = Vec::new();
    loop {
        let line_end = find(buf, b"\r\n")?;
        let line = String::from_utf8_lossy(&buf[..line_end]);
        let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
        buf = &buf[line_end + 2..];
        if size == 0 {
            // Trailer fields, then the blank line.
            loop {
                let end = find(buf, b"\r\n")?;
                buf = &buf[end + 2..];
                if end == 0 {
                    return Some((body, total - buf.len()));
                }
            }
        }
        if buf.len() < size + 2 {
            return None;
        }
        body.extend_from_slice(&buf[..size]);
        buf = &buf[size + 2..];
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
