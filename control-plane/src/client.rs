//! Printing what the operator commands fetch.

use serde::Serialize;
use vakt_api::pb::control::v1::{EndpointVerdict, Node};

/// `key:` followed by the items as YAML, the shape `apply -f` reads back.
pub fn yaml<T: Serialize>(key: &str, items: &[T]) -> anyhow::Result<String> {
    let mut map = serde_json::Map::new();
    map.insert(key.to_string(), serde_json::to_value(items)?);
    Ok(serde_saphyr::to_string(&map)?)
}

/// One line per node: id, service, zone, replica, acked version, last nack.
pub fn print_nodes(nodes: &[Node]) {
    println!(
        "{:<20} {:<14} {:<10} {:<10} {:<22} {:>6}  LAST NACK",
        "NODE", "SERVICE", "ZONE", "CONNECTED", "REPLICA", "ACKED"
    );
    for n in nodes {
        let nack = if n.nacked_version == 0 {
            "-".to_string()
        } else {
            format!("version {}: {}", n.nacked_version, n.nack_reason)
        };
        println!(
            "{:<20} {:<14} {:<10} {:<10} {:<22} {:>6}  {}",
            n.node_id, n.service, n.zone, n.connected, n.replica, n.acked_version, nack
        );
    }
}

/// One line per endpoint: the verdict and what it rests on.
pub fn print_health(endpoints: &[EndpointVerdict]) {
    println!(
        "{:<20} {:<24} {:<9} {:>9}  PROBE",
        "BACKEND", "ENDPOINT", "HEALTHY", "REPORTERS"
    );
    for e in endpoints {
        let probe = if e.probe_failed { "failing" } else { "-" };
        println!(
            "{:<20} {:<24} {:<9} {:>9}  {}",
            e.backend, e.endpoint, e.healthy, e.reporters, probe
        );
    }
}
