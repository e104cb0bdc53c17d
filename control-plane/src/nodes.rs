//! The proxies this replica knows: who they are and what they acked.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use vakt_api::pb::control::v1::Node;

/// Every node seen by this replica since it started.
#[derive(Default)]
pub struct Nodes {
    map: DashMap<String, (u64, Node)>,
    acks: AtomicU64,
    nacks: AtomicU64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Nodes {
    /// Records a node's stream; `stream` tells one connection of the same
    /// node id from a later one.
    pub fn connect(&self, mut node: Node, stream: u64) {
        node.connected = true;
        node.last_seen_unix = unix_now();
        if let Some(old) = self.map.get(&node.node_id) {
            node.nacked_version = old.1.nacked_version;
            node.nack_reason = old.1.nack_reason.clone();
        }
        self.map.insert(node.node_id.clone(), (stream, node));
    }

    /// Marks a node gone, unless a newer stream of it took over.
    pub fn disconnect(&self, id: &str, stream: u64) {
        if let Some(mut e) = self.map.get_mut(id)
            && e.0 == stream
        {
            e.1.connected = false;
        }
    }

    pub fn ack(&self, id: &str, version: u64) {
        self.acks.fetch_add(1, Ordering::Relaxed);
        self.update(id, |n| n.acked_version = version);
    }

    pub fn nack(&self, id: &str, version: u64, reason: &str) {
        self.nacks.fetch_add(1, Ordering::Relaxed);
        self.update(id, |n| {
            n.nacked_version = version;
            n.nack_reason = reason.to_string();
        });
    }

    pub fn touch(&self, id: &str) {
        self.update(id, |_| {});
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Node)) {
        if let Some(mut e) = self.map.get_mut(id) {
            f(&mut e.1);
            e.1.last_seen_unix = unix_now();
        }
    }

    /// Acks and nacks received since the replica started.
    pub fn answers(&self) -> (u64, u64) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        (read(&self.acks), read(&self.nacks))
    }

    /// Every node, sorted by id.
    pub fn list(&self) -> Vec<Node> {
        let mut out: Vec<Node> = self.map.iter().map(|e| e.value().1.clone()).collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }
}
