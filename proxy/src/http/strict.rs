//! Strict HTTP/1 framing, checked on the raw bytes of a client connection
//! before the HTTP parser sees them.
//!
//! The parser underneath hyper is lenient where a proxy must not be: it
//! takes a bare LF as a line end, drops `Content-Length` when
//! `Transfer-Encoding` is present, and folds repeated lengths. An upstream
//! that frames the same bytes differently would then read a smuggled
//! request (RFC 9112 §6.1, §6.3, §2.2). [`StrictIo`] follows the framing of
//! each request on the connection, holds every request head back until it
//! is complete, and checks it. A head that fails is replaced by a request
//! the server answers with 400 `vakt-error: bad-request` and
//! `Connection: close`; nothing after it is read, so none of its bytes can
//! reach an upstream. HTTP/2 (prior knowledge), CONNECT and upgrades are
//! passed through untouched once recognised.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Sleep;

/// Header that marks a request [`StrictIo`] refused; its value indexes
/// [`REASONS`]. A client cannot send it: a head carrying it is refused.
pub const REJECT_HEADER: &str = "vakt-reject";

/// Why a request head was refused, by index.
pub const REASONS: [&str; 9] = [
    "bare line feed",
    "obs-fold",
    "both content-length and transfer-encoding",
    "transfer-encoding in an http/1.0 request",
    "unsupported transfer-encoding",
    "repeated content-length",
    "invalid content-length",
    "reserved header",
    "headers too large",
];

/// Index in [`REASONS`] of a head over the size limit (431, not 400).
pub const TOO_LARGE: usize = 8;

/// A client connection whose HTTP/1 request framing is checked.
pub struct StrictIo<T> {
    inner: T,
    state: State,
    /// Bytes read from `inner` and not yet examined.
    pending: BytesMut,
    /// Examined bytes for the reader.
    ready: BytesMut,
    max_head: usize,
    head_timeout: Duration,
    /// When the head being read must be complete: armed at the start of
    /// the connection and at the first byte of each later head.
    deadline: Option<Pin<Box<Sleep>>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// Inside a body of this many more bytes.
    Length(u64),
    Chunked(Chunk),
    /// Not HTTP/1 any more (h2, CONNECT, upgrade): bytes pass as they are.
    Tunnel,
    /// A head was refused; nothing more is read.
    Refused,
}

/// Where a chunked body is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Chunk {
    /// Reading the hex size; `ext` once past a `;`.
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// After the size line's CR.
    SizeLf {
        size: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// At the start of a trailer line; an empty one ends the body.
    TrailerStart,
    TrailerLine,
    /// After a trailer line's CR.
    TrailerLineLf,
    /// After the CR of the empty line that ends the body.
    TrailerEndLf,
}

impl<T> StrictIo<T> {
    /// Wraps a connection. Request heads longer than `max_head` bytes are
    /// refused (431); a head, or the HTTP/2 preface, that takes longer
    /// than `head_timeout` to arrive ends the connection.
    pub fn new(inner: T, max_head: usize, head_timeout: Duration) -> Self {
        Self {
            inner,
            state: State::Head,
            pending: BytesMut::new(),
            ready: BytesMut::new(),
            max_head,
            head_timeout,
            deadline: Some(Box::pin(tokio::time::sleep(head_timeout))),
        }
    }

    /// Examines pending bytes as far as the framing allows.
    fn examine(&mut self) {
        while !self.pending.is_empty() {
            match self.state {
                State::Tunnel => {
                    let all = self.pending.split();
                    self.ready.unsplit(all);
                }
                State::Refused => self.pending.clear(),
                State::Length(n) => {
                    let k = n.min(self.pending.len() as u64);
                    let body = self.pending.split_to(k as usize);
                    self.ready.unsplit(body);
                    self.state = if k == n {
                        State::Head
                    } else {
                        State::Length(n - k)
                    };
                }
                State::Chunked(c) => self.chunked(c),
                State::Head => {
                    if !self.head() {
                        return;
                    }
                }
            }
        }
    }

    /// Takes one complete head from `pending`; false when incomplete.
    fn head(&mut self) -> bool {
        let skip = self
            .pending
            .iter()
            .take_while(|b| matches!(b, b'\r' | b'\n'))
            .count();
        self.pending.advance(skip);
        let Some(end) = head_end(&self.pending) else {
            if self.pending.len() > self.max_head {
                self.refuse(TOO_LARGE);
                return true;
            }
            return false;
        };
        if end > self.max_head {
            self.refuse(TOO_LARGE);
            return true;
        }
        let head = self.pending.split_to(end);
        match check_head(&head) {
            Ok(next) => {
                self.ready.unsplit(head);
                self.state = next;
                self.deadline = None;
            }
            Err(reason) => self.refuse(reason),
        }
        true
    }

    fn refuse(&mut self, reason: usize) {
        self.ready.extend_from_slice(&refusal(reason));
        self.pending.clear();
        self.state = State::Refused;
        self.deadline = None;
    }

    fn chunked(&mut self, mut c: Chunk) {
        let mut used = 0;
        let data = &self.pending[..];
        while used < data.len() {
            if let Chunk::Data(n) = c {
                let k = n.min((data.len() - used) as u64);
                used += k as usize;
                c = if k == n {
                    Chunk::DataCr
                } else {
                    Chunk::Data(n - k)
                };
                continue;
            }
            match step(c, data[used]) {
                Some(State::Chunked(next)) => c = next,
                Some(other) => {
                    used += 1;
                    self.state = other;
                    let body = self.pending.split_to(used);
                    self.ready.unsplit(body);
                    return;
                }
                // Broken chunking: the server's parser refuses it.
                None => {
                    self.state = State::Tunnel;
                    return;
                }
            }
            used += 1;
        }
        self.state = State::Chunked(c);
        let body = self.pending.split_to(used);
        self.ready.unsplit(body);
    }
}

/// One byte of chunked framing outside chunk data; `None` when the
/// chunking is broken.
fn step(c: Chunk, b: u8) -> Option<State> {
    let next = match (c, b) {
        (
            Chunk::Size {
                size,
                digits,
                ext: false,
            },
            _,
        ) if b.is_ascii_hexdigit() => {
            if digits >= 15 {
                return None;
            }
            let v = u64::from((b as char).to_digit(16)?);
            Chunk::Size {
                size: size * 16 + v,
                digits: digits + 1,
                ext: false,
            }
        }
        (Chunk::Size { size, digits, .. }, b';') if digits > 0 => Chunk::Size {
            size,
            digits,
            ext: true,
        },
        (Chunk::Size { size, digits, .. }, b'\r') if digits > 0 => Chunk::SizeLf { size },
        (Chunk::Size { ext: true, .. }, b'\n') => return None,
        (Chunk::Size { ext: true, .. }, _) => c,
        (Chunk::SizeLf { size: 0 }, b'\n') => Chunk::TrailerStart,
        (Chunk::SizeLf { size }, b'\n') => Chunk::Data(size),
        (Chunk::DataCr, b'\r') => Chunk::DataLf,
        (Chunk::DataLf, b'\n') => Chunk::Size {
            size: 0,
            digits: 0,
            ext: false,
        },
        (Chunk::TrailerStart, b'\r') => Chunk::TrailerEndLf,
        (Chunk::TrailerEndLf, b'\n') => return Some(State::Head),
        (Chunk::TrailerStart | Chunk::TrailerLine, b'\n') => return None,
        (Chunk::TrailerLine, b'\r') => Chunk::TrailerLineLf,
        (Chunk::TrailerLineLf, b'\n') => Chunk::TrailerStart,
        (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
        _ => return None,
    };
    Some(State::Chunked(next))
}

/// The end of the first head in `buf`: just past its empty line, where a
/// line ends at LF with or without CR before it (as a lenient parser
/// reads it).
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|b| *b == b'\n') {
        let lf = i + p;
        match buf.get(lf + 1) {
            Some(b'\n') => return Some(lf + 2),
            Some(b'\r') if buf.get(lf + 2) == Some(&b'\n') => return Some(lf + 3),
            None => return None,
            _ => i = lf + 1,
        }
    }
    None
}

/// Checks a complete head; returns the framing of what follows it.
fn check_head(head: &[u8]) -> Result<State, usize> {
    for (i, b) in head.iter().enumerate() {
        if *b == b'\n' && (i == 0 || head[i - 1] != b'\r') {
            return Err(0);
        }
    }
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|b| *b == b' ');
    let method = parts.next().unwrap_or_default();
    let version = parts.nth(1).unwrap_or_default();
    if method == b"PRI" && version == b"HTTP/2.0" || method == b"CONNECT" {
        return Ok(State::Tunnel);
    }
    let mut h = Framing::default();
    for line in lines.filter(|l| !l.is_empty()) {
        if matches!(line[0], b' ' | b'\t') {
            return Err(1);
        }
        h.header(line)?;
    }
    h.decide(version == b"HTTP/1.0")
}

/// The framing headers of one head.
#[derive(Default)]
struct Framing {
    lengths: u32,
    length: Option<u64>,
    length_bad: bool,
    codings: u32,
    chunked_only: bool,
    upgrade: bool,
}

impl Framing {
    fn header(&mut self, line: &[u8]) -> Result<(), usize> {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            return Ok(());
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            self.lengths += 1;
            let digits =
                !value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit);
            self.length_bad |= !digits;
            self.length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            self.codings += 1;
            self.chunked_only = value.eq_ignore_ascii_case(b"chunked");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            // Only upgrades the proxy passes through end HTTP/1 framing.
            self.upgrade = value.eq_ignore_ascii_case(b"websocket");
        } else if name.eq_ignore_ascii_case(REJECT_HEADER.as_bytes()) {
            return Err(7);
        }
        Ok(())
    }

    fn decide(&self, http10: bool) -> Result<State, usize> {
        match (self.codings, self.lengths) {
            (1.., 1..) => return Err(2),
            (1.., 0) if http10 => return Err(3),
            (2.., 0) => return Err(4),
            (1, 0) if !self.chunked_only => return Err(4),
            (0, 2..) => return Err(5),
            (0, 1) if self.length_bad => return Err(6),
            _ => {}
        }
        if self.upgrade {
            return Ok(State::Tunnel);
        }
        Ok(match (self.codings, self.length) {
            (1, _) => State::Chunked(Chunk::Size {
                size: 0,
                digits: 0,
                ext: false,
            }),
            (_, Some(n)) if n > 0 => State::Length(n),
            _ => State::Head,
        })
    }
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// The request that stands in for a refused one.
fn refusal(reason: usize) -> Vec<u8> {
    format!(
        "GET / HTTP/1.1\r\nhost: refused.invalid\r\n\
         {REJECT_HEADER}: {reason}\r\nconnection: close\r\n\r\n"
    )
    .into_bytes()
}

impl<T: AsyncRead + Unpin> AsyncRead for StrictIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = this.ready.len().min(buf.remaining());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                if this.ready.is_empty() {
                    // Let go of the buffer the head came in, so an idle
                    // connection holds none.
                    this.ready = BytesMut::new();
                }
                return Poll::Ready(Ok(()));
            }
            match this.state {
                // Not end of input: a server that sees the client close
                // would drop the connection before answering. The answer
                // to the refused head closes it instead.
                State::Refused => return Poll::Pending,
                State::Tunnel if this.pending.is_empty() => {
                    return Pin::new(&mut this.inner).poll_read(cx, buf);
                }
                State::Length(n) if this.pending.is_empty() => {
                    return this.read_body(cx, buf, n);
                }
                _ => {}
            }
            // A new head mostly fits in a small buffer, and an idle
            // connection waits with this one; a long head grows it.
            let want = if this.pending.is_empty() {
                1024
            } else {
                8 * 1024
            };
            this.pending.reserve(want);
            let polled =
                tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.pending);
            let read = match polled {
                Poll::Ready(r) => r?,
                Poll::Pending => return this.head_deadline(cx),
            };
            if read == 0 {
                // End of input inside a head: pass it on as it is; the
                // server reports the incomplete message.
                let rest = this.pending.split();
                this.ready.unsplit(rest);
                this.state = State::Tunnel;
                if this.ready.is_empty() {
                    return Poll::Ready(Ok(()));
                }
                continue;
            }
            this.examine();
        }
    }
}

impl<T: AsyncRead + Unpin> StrictIo<T> {
    /// Nothing to read now: fails once a head that has begun (or the first
    /// one) is overdue.
    fn head_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state != State::Head {
            return Poll::Pending;
        }
        if self.deadline.is_none() && !self.pending.is_empty() {
            let timeout = self.head_timeout;
            self.deadline = Some(Box::pin(tokio::time::sleep(timeout)));
        }
        let overdue = self
            .deadline
            .as_mut()
            .is_some_and(|d| d.as_mut().poll(cx).is_ready());
        if overdue {
            tracing::debug!("request head not complete in time; closing");
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        Poll::Pending
    }

    /// Reads body bytes straight into the reader's buffer, keeping what
    /// lies past the body for the next head.
    fn read_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: u64,
    ) -> Poll<io::Result<()>> {
        let start = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        let got = (buf.filled().len() - start) as u64;
        if got <= left {
            self.state = if got == left {
                State::Head
            } else {
                State::Length(left - got)
            };
            return Poll::Ready(Ok(()));
        }
        let body_end = start + left as usize;
        self.pending.extend_from_slice(&buf.filled()[body_end..]);
        buf.set_filled(body_end);
        self.state = State::Head;
        self.examine();
        Poll::Ready(Ok(()))
    }
}

crate::io::write_through!(StrictIo);

#[cfg(test)]
mod tests;
