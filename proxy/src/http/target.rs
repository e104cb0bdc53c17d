//! Request target hygiene, before routing: a valid host, and a path in
//! one canonical form so that `/public/../admin` cannot slip past a rule
//! written for `/admin`.

use std::borrow::Cow;

use http::Request;
use http::header::HOST;
use http::uri::{PathAndQuery, Uri};

use crate::respond::ProxyError;

/// The request's host: the authority of an absolute-form target wins
/// over `Host` (RFC 9112 §3.2.2). Lowercase, without port or trailing
/// dot; empty when there is none. A host with user info or a bad port is
/// refused (RFC 9112 §3.2).
pub fn host<B>(req: &Request<B>) -> Result<Cow<'_, str>, ProxyError> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str(),
        None => match req.headers().get(HOST) {
            Some(h) => h.to_str().map_err(|_| bad_host())?,
            None => "",
        },
    };
    if raw.contains('@') {
        return Err(bad_host());
    }
    let name = split_port(raw)?;
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Ok(Cow::Owned(name.to_ascii_lowercase()));
    }
    Ok(Cow::Borrowed(name))
}

/// The host part of `host[:port]` or `[v6]:port`, checking the port.
fn split_port(raw: &str) -> Result<&str, ProxyError> {
    let (name, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad_host)?;
        (v6, after.strip_prefix(':'))
    } else {
        match raw.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (raw, None),
        }
    };
    if let Some(p) = port
        && !p.is_empty()
        && p.parse::<u16>().is_err()
    {
        return Err(bad_host());
    }
    Ok(name)
}

fn bad_host() -> ProxyError {
    ProxyError::BadRequest("invalid host")
}

/// The target with its path made canonical, or `None` when it already
/// is: percent-encoded unreserved characters decoded, `.` and `..`
/// segments resolved (RFC 3986 §6.2.2).
pub fn normalized(uri: &Uri) -> Option<Uri> {
    let path = uri.path();
    if !needs_work(path) {
        return None;
    }
    let decoded = decode_unreserved(path);
    let clean = remove_dot_segments(&decoded);
    if clean == path {
        return None;
    }
    let pq = match uri.query() {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(pq).ok()?);
    Uri::from_parts(parts).ok()
}

fn needs_work(path: &str) -> bool {
    path.contains('%') || path.contains("/.") || path.starts_with('.')
}

fn decode_unreserved(path: &str) -> Cow<'_, str> {
    if !path.contains('%') {
        return Cow::Borrowed(path);
    }
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(c) = hex.and_then(|h| u8::from_str_radix(h, 16).ok())
                && (c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~'))
            {
                out.push(c);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    // Only ASCII escapes were replaced, so the bytes stay valid UTF-8.
    Cow::Owned(
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let trailing = path.ends_with("/.") || path.ends_with("/..") || path.ends_with('/');
    for seg in path.split('/').skip(1) {
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut joined = String::with_capacity(path.len());
    for seg in &out {
        joined.push('/');
        joined.push_str(seg);
    }
    if joined.is_empty() || (trailing && !joined.ends_with('/')) {
        joined.push('/');
    }
    joined
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> String {
        let uri: Uri = p.parse().unwrap();
        normalized(&uri).map_or_else(|| p.to_string(), |u| u.to_string())
    }

    #[test]
    fn dot_segments_are_resolved() {
        assert_eq!(norm("/public/../admin"), "/admin");
        assert_eq!(norm("/./public/x"), "/public/x");
        assert_eq!(norm("/a/b/../../.."), "/");
        assert_eq!(norm("/a/./b/"), "/a/b/");
        assert_eq!(norm("/a/b/.."), "/a/");
        assert_eq!(norm("/a?x=/../y"), "/a?x=/../y");
        assert_eq!(norm("/plain/path"), "/plain/path");
    }

    #[test]
    fn unreserved_escapes_are_decoded_others_kept() {
        assert_eq!(norm("/%70ublic/x"), "/public/x");
        assert_eq!(norm("/a%2Fb"), "/a%2Fb");
        assert_eq!(norm("/%2e%2e/admin"), "/admin");
        assert_eq!(norm("/x%"), "/x%");
    }

    fn req(host: &str) -> Request<()> {
        Request::builder()
            .uri("/")
            .header("host", host)
            .body(())
            .unwrap()
    }

    #[test]
    fn hosts_are_checked_and_made_plain() {
        assert_eq!(host(&req("Svc-A:8080")).unwrap(), "svc-a");
        assert_eq!(host(&req("svc-a.")).unwrap(), "svc-a");
        assert_eq!(host(&req("[::1]:80")).unwrap(), "::1");
        for bad in ["svc-a:abc", "svc-a:99999", "user@svc-b", "[::1"] {
            assert!(host(&req(bad)).is_err(), "{bad} was accepted");
        }
    }
}
