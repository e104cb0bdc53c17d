//! Turning a client's request into the request an endpoint receives.

use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use vakt_api::config::Protocol;

use super::ConnInfo;
use crate::backend::Backend;
use crate::http::body::RequestBody;
use crate::http::headers;
use crate::respond::ProxyError;
use crate::route::Decision;

/// Where a request goes and what the proxy adds on the way.
pub struct Target<'a> {
    pub decision: Decision<'a>,
    pub backend: &'a Arc<Backend>,
    pub conn: &'a ConnInfo,
    /// The `x-forwarded-for` to send (see [`crate::edge::client_ip`]).
    pub forwarded_for: HeaderValue,
    /// Whether the peer is a trusted proxy whose `x-forwarded-proto` holds.
    pub trusted_peer: bool,
    pub body_limit: u64,
}

/// Rewrites the request for the upstream: proxy headers, rule filters,
/// and the request target in the form the backend's protocol wants.
/// Returns it with its request id.
pub fn prepare(
    req: Request<Incoming>,
    target: Target<'_>,
) -> Result<(Request<RequestBody>, HeaderValue), ProxyError> {
    let Target {
        decision,
        backend,
        conn,
        forwarded_for,
        trusted_peer,
        body_limit,
    } = target;
    let (mut parts, body) = req.into_parts();
    let mut authority = original_authority(&parts.uri, &parts.headers)?;

    let h = &mut parts.headers;
    h.insert(headers::X_FORWARDED_FOR.clone(), forwarded_for);
    if !trusted_peer || !h.contains_key(&headers::X_FORWARDED_PROTO) {
        let proto = if conn.tls { "https" } else { "http" };
        h.insert(
            headers::X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(proto),
        );
    }
    let request_id = headers::ensure_request_id(h);

    let rule = decision.rule;
    if let Some(mods) = &rule.filters.request_headers {
        mods.apply(h);
    }
    let mut path = parts.uri.path_and_query().cloned();
    if let Some(rw) = &rule.filters.rewrite {
        if let Some(host) = &rw.hostname {
            authority = Authority::try_from(host.as_bytes()).ok().or(authority);
        }
        let prefix = rule.matches[decision.matched].prefix();
        if let Some(p) = rw.path_and_query(&parts.uri, prefix) {
            path = Some(p);
        }
    }

    let path = path.unwrap_or_else(|| PathAndQuery::from_static("/"));
    match backend.config.protocol {
        Protocol::Http1 | Protocol::Tcp => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path);
            // HTTP/1.0 clients may send no Host; HTTP/1.1 needs one, so
            // the backend's name stands in.
            let host = authority.as_ref().map_or(&*backend.name, |a| a.as_str());
            if let Ok(v) = HeaderValue::from_str(host) {
                parts.headers.insert(HOST, v);
            }
        }
        Protocol::Http2 => {
            parts.version = Version::HTTP_2;
            parts.headers.remove(HOST);
            let a = authority.unwrap_or_else(|| Authority::from_static("localhost"));
            parts.uri = Uri::builder()
                .scheme(Scheme::HTTP)
                .authority(a)
                .path_and_query(path)
                .build()
                .map_err(|_| ProxyError::BadRequest("invalid request target"))?;
        }
    }
    let req = Request::from_parts(parts, RequestBody::new(body, body_limit));
    Ok((req, request_id))
}

/// The authority the client asked for: an absolute-form target's, else
/// the Host header's.
fn original_authority(uri: &Uri, h: &http::HeaderMap) -> Result<Option<Authority>, ProxyError> {
    if let Some(a) = uri.authority() {
        return Ok(Some(a.clone()));
    }
    match h.get(HOST) {
        Some(v) => Authority::try_from(v.as_bytes())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("invalid host")),
        None => Ok(None),
    }
}

/// Joins the client's and the upstream's upgraded connections once the
/// `101 Switching Protocols` has gone out, copying both ways until either
/// side closes.
pub fn splice_upgrade(rsp: &mut Response<Incoming>, downstream: OnUpgrade) {
    let upstream = hyper::upgrade::on(rsp);
    tokio::spawn(async move {
        let (up, down) = tokio::join!(upstream, downstream);
        let (Ok(up), Ok(down)) = (up, down) else {
            tracing::debug!("upgrade did not complete");
            return;
        };
        let mut up = TokioIo::new(up);
        let mut down = TokioIo::new(down);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded connection ended");
        }
    });
}
