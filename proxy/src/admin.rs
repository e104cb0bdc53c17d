//! The admin listener: health, readiness, metrics and state, for the
//! kubelet, Prometheus and operators. Plain HTTP/1.1, loopback by default.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tokio::net::TcpListener;

use crate::state::Proxy;

type AdminResponse = Response<Full<Bytes>>;

/// Serves the admin endpoints on `listener` until the process exits.
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, metrics: Option<PrometheusHandle>) {
    if let Some(m) = metrics.clone() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                m.run_upkeep();
            }
        });
    }
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (proxy, metrics) = (proxy.clone(), metrics.clone());
        let service = service_fn(move |req| {
            let rsp = route(&req, &proxy, metrics.as_ref());
            async move { Ok::<_, Infallible>(rsp) }
        });
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn route(
    req: &Request<Incoming>,
    proxy: &Proxy,
    metrics: Option<&PrometheusHandle>,
) -> AdminResponse {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/live") => text(StatusCode::OK, "live\n"),
        (&Method::GET, "/ready") => ready(proxy),
        (&Method::GET, "/metrics") => match metrics {
            Some(m) => reply(StatusCode::OK, "text/plain; version=0.0.4", m.render()),
            None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
        },
        (&Method::GET, "/backends") => backends(proxy),
        (&Method::GET, "/config") => config(proxy),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// `/ready`: the verdict on the first line, where the config comes from
/// on the second.
fn ready(proxy: &Proxy) -> AdminResponse {
    let (status, verdict) = if proxy.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining")
    } else if !proxy.is_ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "starting")
    } else if proxy.awaiting_snapshot() {
        (StatusCode::SERVICE_UNAVAILABLE, "waiting for config")
    } else {
        (StatusCode::OK, "ready")
    };
    let body = format!("{verdict}\n{}\n", proxy.config_detail());
    reply(status, "text/plain", body)
}

fn backends(proxy: &Proxy) -> AdminResponse {
    let routing = proxy.routing();
    let mut names: Vec<&String> = routing.backends.keys().collect();
    names.sort();
    let list: Vec<_> = names
        .into_iter()
        .map(|name| routing.backends[name].snapshot())
        .collect();
    json_reply(&json!({ "version": routing.version, "backends": list }))
}

fn config(proxy: &Proxy) -> AdminResponse {
    let routing = proxy.routing();
    json_reply(&json!({ "version": routing.version, "config": &*routing.config }))
}

fn json_reply(v: &serde_json::Value) -> AdminResponse {
    let body = serde_json::to_string_pretty(v).unwrap_or_default() + "\n";
    reply(StatusCode::OK, "application/json", body)
}

fn text(status: StatusCode, body: &'static str) -> AdminResponse {
    reply(status, "text/plain", body)
}

fn reply(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> AdminResponse {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    rsp
}
