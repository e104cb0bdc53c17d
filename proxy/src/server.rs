//! The request path: from a request on a listener to the response.
//!
//! Steps, in order: check the framing, find the route, apply the rule's
//! request filters, pick a backend, rewrite the proxy headers, forward
//! through the attempt loop, then clean the response and attach the work
//! to do when its body ends (pool return, metrics, access log). Errors
//! from any step become responses in [`crate::respond`] only.

mod guard;
mod upstream;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use http::header::{CONTENT_LENGTH, HOST, LOCATION, USER_AGENT};
use http::{HeaderValue, Method, Request, Response, StatusCode, Version};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::attempt::{self, Plan, deadline::Deadline};
use crate::http::body::{OnEnd, ProxyBody};
use crate::http::{framing, headers, target};
use crate::intercept::Intercept;
use crate::respond::{ProxyError, error_response, fallback_response};
use crate::route::{Decision, RequestView};
use crate::state::Proxy;
use crate::telemetry::trace::RequestTrace;
use crate::telemetry::{RequestLog, access_log, metrics};

/// What the request path knows about the connection a request came on.
#[derive(Debug)]
pub struct ConnInfo {
    pub listener: usize,
    pub peer: SocketAddr,
    pub tls: bool,
    /// Set on a transparent listener: where the connection was going.
    pub intercept: Option<Intercept>,
}

/// Serves one request; never fails, errors become responses.
pub async fn handle(
    proxy: Arc<Proxy>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let grpc = headers::is_grpc(req.headers());
    let mut log = begin_log(&req, &conn, &proxy);
    let slot = match &conn.intercept {
        None => Ok(None),
        Some(i) => i.admit(),
    };
    let served = match &slot {
        // Boxed: the request path's state is large, and the future hyper
        // holds (and on HTTP/2 moves into a task of its own) stays small.
        Ok(_) => Box::pin(serve(&proxy, &conn, req, &mut log)).await,
        Err(e) => Err(e.clone()),
    };
    let mut rsp = match served {
        Ok(rsp) => rsp,
        Err(err) => {
            log.flags = err.reason();
            tracing::debug!(reason = err.reason(), error = %err, "request answered by the proxy");
            error_response(&err, grpc)
        }
    };
    log.status = rsp.status().as_u16();
    if let Ok(Some(slot)) = slot {
        rsp.body_mut().set_limit(slot);
    }
    rsp.body_mut().set_log(log);
    Ok(rsp)
}

async fn serve(
    proxy: &Proxy,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    framing::check(&req)?;
    check_body_size(&req, proxy.limits.max_body_bytes)?;
    if req.method() == Method::CONNECT {
        return Err(ProxyError::BadRequest("CONNECT is not supported"));
    }
    if let Some(uri) = target::normalized(req.uri()) {
        *req.uri_mut() = uri;
    }
    let edge = &proxy.edge[conn.listener];
    let host = target::host(&req)?;
    if edge.redirect_to_https && !conn.tls {
        return Ok(https_redirect(&host, &req));
    }

    let routing = proxy.routing();
    let view = RequestView {
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let found = match &conn.intercept {
        Some(i) if !i.routes() => None,
        _ => routing.table.find(conn.listener, &host, &view),
    };
    let implicit;
    let decision = match (found, &conn.intercept) {
        (Some(d), _) => d,
        (None, Some(i)) => {
            implicit = i.rule(proxy, &routing);
            Decision {
                rule: &implicit,
                matched: 0,
            }
        }
        (None, None) if host.is_empty() => {
            return Err(ProxyError::BadRequest("missing host"));
        }
        (None, None) => return Err(ProxyError::NoRoute),
    };
    log.route = Some(decision.rule.route.name.clone());

    if let Some(redirect) = &decision.rule.filters.redirect {
        return Ok(redirect_response(redirect, conn, &host, &req, decision));
    }
    // Headers a client names in `Connection` go before anything reads
    // them, so `Connection: x-forwarded-for` cannot hide its address.
    let upgrade = headers::is_upgrade(req.headers());
    headers::strip_hop_by_hop(req.headers_mut(), upgrade);
    let client = edge.trusted.forwarded(conn.peer.ip(), req.headers());
    log.forwarded_for = Some(client.header.clone());
    guard::admit(&routing, decision, &mut req, client.client)?;
    let trusted_peer = edge.trusted.contains(conn.peer.ip());
    let target = (client.header, trusted_peer);
    forward(proxy, decision, conn, req, target, log).await
}

async fn forward(
    proxy: &Proxy,
    decision: Decision<'_>,
    conn: &ConnInfo,
    mut req: Request<Incoming>,
    (forwarded_for, trusted_peer): (HeaderValue, bool),
    log: &mut RequestLog,
) -> Result<Response<ProxyBody>, ProxyError> {
    let rule = decision.rule;
    let Some(target) = rule.pick_backend() else {
        return Err(ProxyError::NoEndpoint);
    };
    let backend = &target.backend;
    log.backend = Some(backend.name.clone());
    log.metrics = target.metrics.get(conn.listener).cloned();

    let upgrade = headers::is_upgrade(req.headers());
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let t = rule.timeouts;
    let upstream_req_grpc = headers::is_grpc(req.headers());
    let downstream_h1 = req.version() < Version::HTTP_2;
    let deadline = Deadline::from_request(req.headers(), Instant::now(), t.request, None);
    let limit = proxy.limits.max_body_bytes;
    let target = upstream::Target {
        decision,
        backend,
        conn,
        forwarded_for,
        trusted_peer,
        body_limit: limit,
    };
    let (mut upstream_req, request_id) = upstream::prepare(req, target)?;
    log.request_id = Some(request_id);
    if let Some(trace) = &log.trace {
        trace.span.inject(upstream_req.headers_mut());
    }

    let attempts = AtomicU32::new(0);
    let plan = Plan {
        retry: rule.retry.as_ref(),
        per_attempt: t.backend_request,
        deadline,
        grpc: upstream_req_grpc,
        attempts: &attempts,
    };
    let result = attempt::forward(backend, upstream_req, plan).await;
    log.attempts = attempts.load(Ordering::Relaxed);
    let forwarded = match result {
        Ok(f) if !spent(rule, &f) => f,
        Ok(f) => match &rule.fallback {
            Some(fb) => return Ok(serve_fallback(fb, backend, "attempts-spent", log)),
            None => f,
        },
        Err(e) => match &rule.fallback {
            Some(fb) if e.allows_fallback() => {
                return Ok(serve_fallback(fb, backend, e.reason(), log));
            }
            _ => return Err(e),
        },
    };
    log.upstream_host = Some(forwarded.in_flight.endpoint().label.clone());
    log.upstream_time = Some(forwarded.upstream_time);
    let client = ClientSide {
        upgrade: downstream_upgrade,
        http1: downstream_h1,
    };
    Ok(client_response(forwarded, rule, client))
}

/// What the response must fit on the client's side.
struct ClientSide {
    /// The client's half of a protocol upgrade, if it asked for one.
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    http1: bool,
}

/// The client's response from an upstream one: connection headers
/// removed, the rule's response filters applied, and the body wrapped so
/// its end returns the connection, settles the attempt and logs.
fn client_response(
    forwarded: attempt::Forwarded,
    rule: &crate::route::RuleEntry,
    client: ClientSide,
) -> Response<ProxyBody> {
    let mut rsp = forwarded.response;
    if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(down) = client.upgrade {
            upstream::splice_upgrade(&mut rsp, down);
        }
    } else {
        headers::strip_hop_by_hop(rsp.headers_mut(), false);
    }
    if let Some(mods) = &rule.filters.response_headers {
        mods.apply(rsp.headers_mut());
    }
    let grpc = headers::is_grpc(rsp.headers());
    let declared = client.http1
        && rsp.status() == StatusCode::NOT_MODIFIED
        && rsp.headers().contains_key(CONTENT_LENGTH);
    let (parts, body) = rsp.into_parts();
    let mut body = ProxyBody::upstream(body, rule.timeouts.idle, grpc)
        .with_first(forwarded.first)
        .with_declared_length(declared);
    body.on_end(OnEnd {
        conn: forwarded.conn,
        in_flight: Some(forwarded.in_flight),
        slot: forwarded.slot,
        verdict: forwarded.verdict,
        log: None,
        limit: None,
    });
    Response::from_parts(parts, body)
}

/// Whether every attempt ended in a status the retry policy names, so a
/// fallback should answer instead.
fn spent(rule: &crate::route::RuleEntry, fwd: &attempt::Forwarded) -> bool {
    rule.fallback.is_some()
        && rule
            .retry
            .as_ref()
            .is_some_and(|r| r.codes.contains(&fwd.response.status().as_u16()))
}

fn serve_fallback(
    fallback: &vakt_api::config::Fallback,
    backend: &crate::backend::Backend,
    reason: &'static str,
    log: &mut RequestLog,
) -> Response<ProxyBody> {
    metrics::fallback(&backend.name, reason);
    log.flags = "fallback";
    tracing::debug!(backend = %backend.name, reason, "fallback served");
    fallback_response(fallback, reason)
}

/// Refuses a declared body over the limit before anything is sent.
fn check_body_size<B>(req: &Request<B>, limit: u64) -> Result<(), ProxyError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit => Err(ProxyError::BodyTooLarge),
        _ => Ok(()),
    }
}

fn redirect_response<B>(
    redirect: &crate::route::filters::Redirect,
    conn: &ConnInfo,
    host: &str,
    req: &Request<B>,
    decision: Decision<'_>,
) -> Response<ProxyBody> {
    let scheme = if conn.tls { "https" } else { "http" };
    let host_header = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(host);
    let prefix = decision.rule.matches[decision.matched].prefix();
    let location = redirect.location(scheme, host_header, req.uri(), prefix);
    let mut rsp = Response::new(ProxyBody::empty());
    *rsp.status_mut() = redirect.status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(LOCATION, v);
    }
    rsp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(0));
    rsp
}

/// `redirectToHttps`: the same host and target, over HTTPS.
fn https_redirect<B>(host: &str, req: &Request<B>) -> Response<ProxyBody> {
    let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut rsp = Response::new(ProxyBody::empty());
    *rsp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    let location = match host.contains(':') {
        true => format!("https://[{host}]{target}"),
        false => format!("https://{host}{target}"),
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        rsp.headers_mut().insert(LOCATION, v);
    }
    rsp.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(0));
    rsp
}

fn begin_log(req: &Request<Incoming>, conn: &ConnInfo, proxy: &Proxy) -> RequestLog {
    let h = req.headers();
    let authority = match req.uri().authority() {
        Some(a) if req.version() == Version::HTTP_2 => HeaderValue::from_str(a.as_str()).ok(),
        _ => h.get(HOST).cloned(),
    };
    let trace = proxy.tracer.as_ref().map(|tracer| RequestTrace {
        span: tracer.start(h),
        tracer: tracer.clone(),
    });
    RequestLog {
        started: Instant::now(),
        wall: if access_log::enabled() || trace.is_some() {
            SystemTime::now()
        } else {
            SystemTime::UNIX_EPOCH
        },
        method: req.method().clone(),
        uri: req.uri().clone(),
        version: req.version(),
        authority,
        user_agent: h.get(USER_AGENT).cloned(),
        forwarded_for: h.get(&headers::X_FORWARDED_FOR).cloned(),
        request_id: h.get(&headers::X_REQUEST_ID).cloned(),
        peer: conn.peer,
        bytes_received: h
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        route: None,
        backend: None,
        upstream_host: None,
        upstream_time: None,
        status: 0,
        flags: "-",
        metrics: proxy.unrouted.get(conn.listener).cloned(),
        attempts: 0,
        trace,
    }
}
