//! Service addresses and TCP backends flow from an apply, through the
//! store and the snapshot stream, to a proxy unchanged.

mod common;

use std::time::Duration;

use common::*;
use vakt_api::config::Protocol;

const SECOND: Duration = Duration::from_secs(1);

const BACKENDS: &str = r#"
backends:
  - name: orders-db
    addresses: ["10.96.0.20:5432"]
    endpoints: ["10.244.1.7:5432"]
    protocol: tcp
  - name: orders
    addresses: ["10.96.0.10:80", "10.96.0.10:8080"]
    endpoints: ["10.244.1.8:8080"]
"#;

#[tokio::test]
async fn an_applied_backend_with_addresses_reaches_a_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let (sink, handle) = spawn_node(node_options(
        cp.addr,
        "orders-1",
        dir.path(),
        &dir.path().join("cache"),
    ));
    assert!(eventually(2 * SECOND, || handle.connected()).await);

    apply(&mut c, BACKENDS).await.unwrap();
    assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);
    let applied = sink.applied.lock().unwrap().last().unwrap().1.clone();
    let db = applied.backends.iter().find(|b| b.name == "orders-db");
    let db = db.expect("orders-db reached the proxy");
    assert_eq!(db.addresses, ["10.96.0.20:5432"]);
    assert_eq!(db.protocol, Protocol::Tcp);
    let orders = applied.backends.iter().find(|b| b.name == "orders");
    let orders = orders.expect("orders reached the proxy");
    assert_eq!(orders.addresses, ["10.96.0.10:80", "10.96.0.10:8080"]);
    assert_eq!(orders.protocol, Protocol::Http1);

    let (_, stored) = current(&mut c).await;
    let stored = stored.backends.iter().find(|b| b.name == "orders-db");
    assert_eq!(stored.unwrap().addresses, ["10.96.0.20:5432"]);
    cp.shutdown().await;
}

#[tokio::test]
async fn an_address_claimed_twice_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let twice = "backends:\n\
        - {name: a, endpoints: [\"127.0.0.1:1\"], addresses: [\"10.0.0.1:80\"]}\n\
        - {name: b, endpoints: [\"127.0.0.1:2\"], addresses: [\"10.0.0.1:80\"]}\n";
    let status = apply(&mut c, twice).await.unwrap_err();
    assert!(
        status
            .message()
            .contains("backends[b].addresses[0]: also claimed by backend \"a\""),
        "{}",
        status.message()
    );
    cp.shutdown().await;
}
