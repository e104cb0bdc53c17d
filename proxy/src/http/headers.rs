//! Headers a proxy removes or sets on the way through.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1) describe one connection, so they
//! are removed in both directions along with every header the
//! `Connection` header names. `te: trailers` survives: gRPC needs it.

use http::HeaderMap;
use http::header::{CONNECTION, HeaderName, HeaderValue, TE, TRANSFER_ENCODING, UPGRADE};

pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Parsed once: removing by a `&str` name would parse it every time.
static HOP_BY_HOP: [HeaderName; 7] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("proxy-authenticate"),
    HeaderName::from_static("proxy-authorization"),
    HeaderName::from_static("trailer"),
    HeaderName::from_static("transfer-encoding"),
    HeaderName::from_static("upgrade"),
];

/// Removes hop-by-hop headers and the headers `Connection` names. When
/// `keep_upgrade` is set (a protocol upgrade being passed through),
/// `Connection: upgrade` and `Upgrade` are kept.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    if headers.contains_key(CONNECTION) {
        strip_connection_named(headers, keep_upgrade);
    }
    for name in &HOP_BY_HOP {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        headers.remove(name);
    }
    if let Some(te) = headers.get(TE) {
        let trailers = te.to_str().is_ok_and(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
        });
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(TE);
        }
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn strip_connection_named(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    headers.remove(CONNECTION);
    for name in named {
        if keep_upgrade && name == UPGRADE {
            continue;
        }
        // A client may not use Connection to strip the framing of its
        // own message; the framing headers are handled separately.
        if name == TRANSFER_ENCODING || name == http::header::CONTENT_LENGTH {
            continue;
        }
        headers.remove(name);
    }
}

/// Whether a message is gRPC: its content-type is `application/grpc` or
/// a `application/grpc+...` variant.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a request asks to switch to a protocol the proxy passes
/// through: WebSocket. Other upgrades (notably `h2c`, which would tunnel
/// requests past routing) are stripped like any hop-by-hop header.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let websocket = headers
        .get(UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    websocket
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Keeps an incoming `x-request-id`, or sets a new random one.
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    if let Some(id) = headers.get(&X_REQUEST_ID) {
        return id.clone();
    }
    let id = new_request_id();
    headers.insert(X_REQUEST_ID.clone(), id.clone());
    id
}

/// A random 128-bit id in the 8-4-4-4-12 hex layout of a UUID.
fn new_request_id() -> HeaderValue {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u128(..);
    let mut out = [0u8; 36];
    let mut bit = 128;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            *slot = b'-';
            continue;
        }
        bit -= 4;
        *slot = HEX[((n >> bit) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&out).expect("hex is a valid header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_headers_named_in_connection() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "keep-alive, X-Hop-Secret, X-Other".parse().unwrap(),
        );
        h.insert("x-hop-secret", "s3".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("proxy-connection", "keep-alive".parse().unwrap());
        h.insert("x-end", "keep".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-end"]);
    }

    #[test]
    fn keeps_te_trailers_only() {
        let mut h = HeaderMap::new();
        h.insert("te", "trailers, deflate".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h["te"], "trailers");
        let mut h = HeaderMap::new();
        h.insert("te", "gzip".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(!h.contains_key("te"));
    }

    #[test]
    fn request_ids_are_uuid_shaped_and_kept() {
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(ensure_request_id(&mut h), id);
    }
}
