//! The discovery service: one bidirectional stream per proxy.
//!
//! The proxy's first message says who it is and which version it serves.
//! The stream then sends a whole snapshot whenever the current version
//! differs from what the proxy was last sent (never when the proxy already
//! has it), and the fleet's health verdict whenever it changes. Acks, nacks
//! and health reports from the proxy are recorded as they arrive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use vakt_api::pb::control::v1::Node;
use vakt_api::pb::discovery::v1::discovery_service_server::DiscoveryService;
use vakt_api::pb::discovery::v1::{
    ControlMessage, EndpointHealth, FleetHealth, Hello, NodeMessage, Snapshot, control_message,
    node_message,
};

use crate::state::{Shared, Unhealthy};
use crate::store::Revision;

/// How long a new stream may take to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// The discovery service of one replica.
pub struct DiscoveryApi {
    shared: Arc<Shared>,
    streams: AtomicU64,
}

impl DiscoveryApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            streams: AtomicU64::new(0),
        }
    }
}

#[tonic::async_trait]
impl DiscoveryService for DiscoveryApi {
    type StreamStream = ReceiverStream<Result<ControlMessage, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<NodeMessage>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(node_message::Kind::Hello(h)) if !h.node_id.is_empty() => h,
            _ => {
                return Err(Status::invalid_argument(
                    "the first message must be a hello",
                ));
            }
        };
        let (tx, rx) = mpsc::channel(4);
        let id = self.streams.fetch_add(1, Ordering::Relaxed);
        let admin = admin_address(&hello.admin_address, peer);
        tokio::spawn(serve_node(
            self.shared.clone(),
            (hello, admin),
            inbound,
            tx,
            id,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

type Outbound = mpsc::Sender<Result<ControlMessage, Status>>;

/// Where a node's admin listener can be reached: what it reported, with
/// the address its stream came from in place of an unspecified host.
fn admin_address(reported: &str, peer: Option<SocketAddr>) -> String {
    match (reported.parse::<SocketAddr>(), peer) {
        (Ok(a), Some(p)) if a.ip().is_unspecified() => {
            SocketAddr::new(p.ip(), a.port()).to_string()
        }
        _ => reported.to_string(),
    }
}

async fn serve_node(
    shared: Arc<Shared>,
    (hello, admin_address): (Hello, String),
    mut inbound: Streaming<NodeMessage>,
    tx: Outbound,
    stream: u64,
) {
    let node = hello.node_id.clone();
    tracing::info!(node = %node, version = hello.version, "node connected");
    shared.nodes.connect(
        Node {
            node_id: hello.node_id.clone(),
            service: hello.service.clone(),
            zone: hello.zone.clone(),
            acked_version: hello.version,
            replica: shared.replica.clone(),
            admin_address,
            ..Node::default()
        },
        stream,
    );
    let mut revs = shared.subscribe();
    let mut health = shared.subscribe_health();
    let mut sent = hello.version;
    let cur = revs.borrow_and_update().clone();
    let unhealthy = health.borrow_and_update().clone();
    let closing = shared.closing();
    tokio::pin!(closing);
    let first = if cur.version != 0 && cur.version != sent {
        sent = cur.version;
        snapshot(&cur, &unhealthy)
    } else {
        fleet_health(&cur, &unhealthy)
    };
    if tx.send(Ok(first)).await.is_ok() {
        loop {
            tokio::select! {
                () = &mut closing => break,
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => on_message(&shared, &node, m),
                    Ok(None) | Err(_) => break,
                },
                r = revs.changed() => {
                    if r.is_err() { break }
                    let cur = revs.borrow_and_update().clone();
                    if cur.version == sent { continue }
                    sent = cur.version;
                    let msg = snapshot(&cur, &shared.unhealthy());
                    if tx.send(Ok(msg)).await.is_err() { break }
                }
                r = health.changed() => {
                    if r.is_err() { break }
                    let unhealthy = health.borrow_and_update().clone();
                    let msg = fleet_health(&shared.current(), &unhealthy);
                    if tx.send(Ok(msg)).await.is_err() { break }
                }
            }
        }
    }
    tracing::info!(node = %node, "node disconnected");
    shared.nodes.disconnect(&node, stream);
    shared.with_health(|b| b.forget(&node));
}

fn on_message(shared: &Shared, node: &str, m: NodeMessage) {
    match m.kind {
        Some(node_message::Kind::Ack(a)) => {
            tracing::debug!(node, version = a.version, "ack");
            shared.nodes.ack(node, a.version);
        }
        Some(node_message::Kind::Nack(n)) => {
            tracing::warn!(node, version = n.version, reason = %n.reason, "nack");
            shared.nodes.nack(node, n.version, &n.reason);
        }
        Some(node_message::Kind::Health(h)) => {
            shared.nodes.touch(node);
            let now = tokio::time::Instant::now();
            shared.with_health(|b| b.report(node, &h.observations, now));
        }
        Some(node_message::Kind::Hello(_)) | None => {}
    }
}

fn endpoints(rev: &Revision, unhealthy: &Unhealthy) -> Vec<EndpointHealth> {
    let mut out = Vec::new();
    for b in &rev.objects.backends {
        for e in &b.endpoints {
            let key = (b.name.clone(), e.clone());
            out.push(EndpointHealth {
                healthy: !unhealthy.contains(&key),
                backend: key.0,
                endpoint: key.1,
            });
        }
    }
    out
}

fn snapshot(rev: &Revision, unhealthy: &Unhealthy) -> ControlMessage {
    ControlMessage {
        kind: Some(control_message::Kind::Snapshot(Snapshot {
            version: rev.version,
            objects: Some(rev.objects.to_proto()),
            endpoints: endpoints(rev, unhealthy),
        })),
    }
}

fn fleet_health(rev: &Revision, unhealthy: &Unhealthy) -> ControlMessage {
    ControlMessage {
        kind: Some(control_message::Kind::Health(FleetHealth {
            endpoints: endpoints(rev, unhealthy),
        })),
    }
}

#[cfg(test)]
mod admin_tests {
    use super::admin_address;

    #[test]
    fn an_unspecified_admin_host_is_replaced_by_the_peer() {
        let peer = Some("10.1.2.3:40000".parse().unwrap());
        assert_eq!(admin_address("0.0.0.0:15000", peer), "10.1.2.3:15000");
        assert_eq!(admin_address("[::]:15000", peer), "10.1.2.3:15000");
        assert_eq!(admin_address("127.0.0.1:15000", peer), "127.0.0.1:15000");
        assert_eq!(admin_address("0.0.0.0:15000", None), "0.0.0.0:15000");
        assert_eq!(admin_address("", peer), "");
    }
}
