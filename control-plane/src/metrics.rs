//! `GET /metrics` of the control plane, in the Prometheus text format.
//!
//! Every value is read from the replica's state when Prometheus scrapes,
//! so a node that leaves takes its series with it and nothing is kept per
//! request. Served on its own plain HTTP/1.1 listener (`--metrics-listen`)
//! beside the gRPC one.
//!
//! Series, all gauges unless named `_total`:
//! - `vakt_control_latest_version`: the version this replica streams.
//! - `vakt_control_nodes{state}`: nodes seen, `connected` or
//!   `disconnected`.
//! - `vakt_control_node_connected{node,service}`: 1 while the node's
//!   stream is up.
//! - `vakt_control_node_acked_version{node,service}` and
//!   `vakt_control_node_nacked_version{node,service}`: the last version
//!   the node acked or refused (0 for none).
//! - `vakt_control_acks_total`, `vakt_control_nacks_total`: acks and
//!   nacks received by this replica.
//! - `vakt_control_unhealthy_endpoints`: endpoints the fleet's verdict
//!   holds unhealthy.

use std::convert::Infallible;
use std::fmt::Write;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use vakt_api::pb::control::v1::Node;

use crate::state::Shared;

/// The content type of the Prometheus text format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Serves `/metrics` on `listener` until the task is aborted.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        let service = service_fn(move |req: Request<Incoming>| {
            let rsp = answer(&req, &shared);
            async move { Ok::<_, Infallible>(rsp) }
        });
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}

fn answer(req: &Request<Incoming>, shared: &Shared) -> Response<Full<Bytes>> {
    let (status, kind, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, TEXT_FORMAT, render(shared)),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut rsp = Response::new(Full::new(Bytes::from(body)));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(CONTENT_TYPE, http::HeaderValue::from_static(kind));
    rsp
}

/// A per-node gauge: name after `vakt_control_`, help, value.
type NodeGauge = (&'static str, &'static str, fn(&Node) -> u64);

const PER_NODE: [NodeGauge; 3] = [
    ("node_connected", "1 while the node's stream is up", |n| {
        u64::from(n.connected)
    }),
    ("node_acked_version", "Last version the node acked", |n| {
        n.acked_version
    }),
    (
        "node_nacked_version",
        "Last version the node refused",
        |n| n.nacked_version,
    ),
];

/// The whole exposition, rendered from the replica's state now.
pub fn render(shared: &Shared) -> String {
    let nodes = shared.nodes.list();
    let connected = nodes.iter().filter(|n| n.connected).count();
    let mut out = String::with_capacity(512 + nodes.len() * 256);

    let latest = shared.current().version;
    header(&mut out, "latest_version", "gauge", "Version streamed");
    let _ = writeln!(out, "vakt_control_latest_version {latest}");

    header(&mut out, "nodes", "gauge", "Nodes seen, by stream state");
    let _ = writeln!(out, "vakt_control_nodes{{state=\"connected\"}} {connected}");
    let gone = nodes.len() - connected;
    let _ = writeln!(out, "vakt_control_nodes{{state=\"disconnected\"}} {gone}");

    for (name, help, value) in PER_NODE {
        header(&mut out, name, "gauge", help);
        for n in &nodes {
            let _ = write!(out, "vakt_control_{name}{{node=\"");
            escape(&mut out, &n.node_id);
            out.push_str("\",service=\"");
            escape(&mut out, &n.service);
            let _ = writeln!(out, "\"}} {}", value(n));
        }
    }

    let (acks, nacks) = shared.nodes.answers();
    header(&mut out, "acks_total", "counter", "Snapshots acked");
    let _ = writeln!(out, "vakt_control_acks_total {acks}");
    header(&mut out, "nacks_total", "counter", "Snapshots refused");
    let _ = writeln!(out, "vakt_control_nacks_total {nacks}");

    let unhealthy = shared.unhealthy().len();
    header(
        &mut out,
        "unhealthy_endpoints",
        "gauge",
        "Endpoints held unhealthy",
    );
    let _ = writeln!(out, "vakt_control_unhealthy_endpoints {unhealthy}");
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP vakt_control_{name} {help}");
    let _ = writeln!(out, "# TYPE vakt_control_{name} {kind}");
}

/// Escapes a label value: backslash, double quote and newline.
fn escape(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape(&mut out, "a\"b\\c\nd");
        assert_eq!(out, "a\\\"b\\\\c\\nd");
    }
}
