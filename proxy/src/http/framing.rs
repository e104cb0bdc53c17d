//! Strict request framing checks, made before anything is forwarded.
//!
//! The HTTP/1 parser already refuses obs-fold and malformed lines; these
//! checks cover what it accepts but a proxy must not pass on, because an
//! upstream might frame the message differently (request smuggling,
//! RFC 9112 §6.1 and §6.3). Each failure is a 400 and the connection is
//! closed, so the bytes that follow are never read as a request.

use http::header::{CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::{HeaderMap, Request, Version};

use super::strict;
use crate::respond::ProxyError;

/// Checks the framing headers of a request from a client.
pub fn check<B>(req: &Request<B>) -> Result<(), ProxyError> {
    let headers = req.headers();
    if let Some(v) = headers.get(strict::REJECT_HEADER) {
        let index = std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|i| i.parse::<usize>().ok());
        if index == Some(strict::TOO_LARGE) {
            return Err(ProxyError::HeadersTooLarge);
        }
        let reason = index.and_then(|i| strict::REASONS.get(i)).copied();
        return Err(ProxyError::BadRequest(reason.unwrap_or("refused framing")));
    }
    let version = req.version();
    let has_te = headers.contains_key(TRANSFER_ENCODING);

    if has_te && headers.contains_key(CONTENT_LENGTH) {
        return Err(ProxyError::BadRequest(
            "both content-length and transfer-encoding",
        ));
    }
    if has_te && version < Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "transfer-encoding in an http/1.0 request",
        ));
    }
    if has_te {
        check_transfer_encoding(headers)?;
    }
    check_content_length(headers)?;
    if version == Version::HTTP_11 && req.uri().authority().is_none() {
        check_host(headers)?;
    }
    Ok(())
}

/// Chunked must be the last and only framing coding.
fn check_transfer_encoding(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut values = headers.get_all(TRANSFER_ENCODING).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return Err(ProxyError::BadRequest("repeated transfer-encoding"));
    };
    let ok = value
        .to_str()
        .is_ok_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
    if !ok {
        return Err(ProxyError::BadRequest("unsupported transfer-encoding"));
    }
    Ok(())
}

/// One content-length, all digits.
fn check_content_length(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut values = headers.get_all(CONTENT_LENGTH).iter();
    let Some(value) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err(ProxyError::BadRequest("repeated content-length"));
    }
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 19 || !bytes.iter().all(u8::is_ascii_digit) {
        return Err(ProxyError::BadRequest("invalid content-length"));
    }
    Ok(())
}

/// HTTP/1.1 requires exactly one Host (RFC 9112 §3.2).
fn check_host(headers: &HeaderMap) -> Result<(), ProxyError> {
    let mut values = headers.get_all(HOST).iter();
    match (values.next(), values.next()) {
        (Some(h), None) if !h.is_empty() => Ok(()),
        (None, _) => Err(ProxyError::BadRequest("missing host")),
        _ => Err(ProxyError::BadRequest("invalid host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().uri("/").version(version);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn refuses_ambiguous_framing() {
        let v11 = Version::HTTP_11;
        let bad = [
            req(
                v11,
                &[
                    ("host", "a"),
                    ("content-length", "4"),
                    ("transfer-encoding", "chunked"),
                ],
            ),
            req(
                v11,
                &[
                    ("host", "a"),
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
            ),
            req(
                v11,
                &[("host", "a"), ("transfer-encoding", "gzip, chunked")],
            ),
            req(
                v11,
                &[
                    ("host", "a"),
                    ("content-length", "5"),
                    ("content-length", "5"),
                ],
            ),
            req(v11, &[("host", "a"), ("content-length", "+5")]),
            req(v11, &[]),
            req(Version::HTTP_10, &[("transfer-encoding", "chunked")]),
        ];
        for r in bad {
            assert!(check(&r).is_err(), "{:?} was accepted", r.headers());
        }
    }

    #[test]
    fn accepts_plain_requests() {
        assert!(
            check(&req(
                Version::HTTP_11,
                &[("host", "a"), ("content-length", "5")]
            ))
            .is_ok()
        );
        assert!(
            check(&req(
                Version::HTTP_11,
                &[("host", "a"), ("transfer-encoding", "chunked")]
            ))
            .is_ok()
        );
        assert!(check(&req(Version::HTTP_10, &[])).is_ok());
    }
}
