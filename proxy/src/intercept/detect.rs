//! Protocol detection on a transparent connection: the client's first
//! bytes tell HTTP/1 (a request line), HTTP/2 with prior knowledge (the
//! connection preface), TLS (a ClientHello record) or anything else,
//! which is proxied as TCP.
//!
//! Detection reads until the bytes decide, at most [`MAX_DETECT_BYTES`],
//! and gives up at the listener's detect timeout: a client that says
//! nothing first (a server-first protocol on a port not listed as
//! opaque) is then treated as TCP. A client that stopped partway through
//! what can still be an HTTP/1 request line or the HTTP/2 preface is
//! served as HTTP, so sending the first bytes slowly cannot turn a request
//! into opaque bytes that skip the request checks. The bytes read are
//! replayed to whatever handles the connection.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes read while detecting: a request line longer than this is
/// taken as HTTP/1 and left to the HTTP server's own limits.
pub const MAX_DETECT_BYTES: usize = 8 * 1024;

/// The HTTP/2 connection preface (RFC 9113, section 3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Longest method name accepted in a request line.
const MAX_METHOD: usize = 24;

/// What the first bytes say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    Tls,
    Tcp,
}

/// Why detection ended with [`Detected::Tcp`] or how it decided; a
/// bounded set for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The bytes decided.
    Decided,
    /// No decision before the timeout.
    Timeout,
    /// The client closed or failed before the bytes decided.
    Closed,
}

/// Reads the first bytes of `stream` into `buf` until they decide, the
/// client stops, or `timeout` passes.
pub async fn detect<S>(stream: &mut S, buf: &mut Vec<u8>, timeout: Duration) -> (Detected, Ended)
where
    S: AsyncRead + Unpin,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(d) = classify(buf) {
            return (d, Ended::Decided);
        }
        if buf.len() >= MAX_DETECT_BYTES {
            return (Detected::Http1, Ended::Decided);
        }
        buf.reserve(1024.min(MAX_DETECT_BYTES - buf.len()));
        match tokio::time::timeout_at(deadline, stream.read_buf(buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (Detected::Tcp, Ended::Closed),
            Ok(Ok(_)) => {}
            Err(_) => return (cut_short(buf), Ended::Timeout),
        }
    }
}

/// Decides on the bytes so far; `None` when more are needed.
pub fn classify(buf: &[u8]) -> Option<Detected> {
    if buf.is_empty() {
        return None;
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return None;
    }
    if buf.starts_with(H2_PREFACE) {
        return Some(Detected::Http2);
    }
    if buf[0] == 0x16 {
        return tls(buf);
    }
    match request_line(buf) {
        Line::Complete => Some(Detected::Http1),
        Line::Partial => None,
        Line::Not => Some(Detected::Tcp),
    }
}

/// What the bytes read before the timeout are served as: HTTP when they
/// can still start a request line or the HTTP/2 preface, else TCP.
fn cut_short(buf: &[u8]) -> Detected {
    if buf.len() > 4 && H2_PREFACE.starts_with(buf) {
        return Detected::Http2;
    }
    match !buf.is_empty() && matches!(request_line(buf), Line::Partial) {
        true => Detected::Http1,
        false => Detected::Tcp,
    }
}

/// A TLS handshake record (type 22) of a 3.x record version whose first
/// message is a ClientHello (type 1).
fn tls(buf: &[u8]) -> Option<Detected> {
    let want: [fn(u8) -> bool; 6] = [
        |b| b == 0x16,
        |b| b == 0x03,
        |b| b <= 0x04,
        |_| true,
        |_| true,
        |b| b == 0x01,
    ];
    for (b, ok) in buf.iter().zip(want) {
        if !ok(*b) {
            return Some(Detected::Tcp);
        }
    }
    (buf.len() >= want.len()).then_some(Detected::Tls)
}

enum Line {
    Complete,
    Partial,
    Not,
}

/// `METHOD SP target SP HTTP/1.x CRLF` (RFC 9112, section 3), checked as
/// far as the bytes go.
fn request_line(buf: &[u8]) -> Line {
    let Some(sp) = buf.iter().position(|b| *b == b' ') else {
        let ok = buf.len() <= MAX_METHOD && buf.iter().all(|b| is_method_byte(*b));
        return if ok { Line::Partial } else { Line::Not };
    };
    let method = &buf[..sp];
    if method.is_empty() || method.len() > MAX_METHOD || !method.iter().all(|b| is_method_byte(*b))
    {
        return Line::Not;
    }
    let rest = &buf[sp + 1..];
    let Some(sp) = rest.iter().position(|b| *b == b' ') else {
        return match rest.iter().all(|b| is_target_byte(*b)) {
            true => Line::Partial,
            false => Line::Not,
        };
    };
    let target = &rest[..sp];
    if target.is_empty() || !target.iter().all(|b| is_target_byte(*b)) {
        return Line::Not;
    }
    version(&rest[sp + 1..])
}

/// `HTTP/1.0` or `HTTP/1.1`, then CRLF (or a bare LF, which servers
/// accept).
fn version(v: &[u8]) -> Line {
    let prefix = b"HTTP/1.";
    let n = v.len().min(prefix.len());
    if v[..n] != prefix[..n] {
        return Line::Not;
    }
    match v.get(prefix.len()) {
        None => return Line::Partial,
        Some(b'0' | b'1') => {}
        Some(_) => return Line::Not,
    }
    match v.get(prefix.len() + 1..) {
        None | Some([]) | Some([b'\r']) => Line::Partial,
        Some([b'\r', b'\n', ..]) | Some([b'\n', ..]) => Line::Complete,
        Some(_) => Line::Not,
    }
}

/// Methods are tokens; registered ones are upper-case letters and `-`.
fn is_method_byte(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Visible ASCII, no spaces or controls.
fn is_target_byte(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

#[cfg(test)]
mod tests;
