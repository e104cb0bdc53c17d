//! Two replicas share one real etcd: a change applied through either
//! reaches the proxies connected to the other, and versions never fork.

mod common;

use std::time::Duration;

use common::*;
use vakt_control::StoreKind;

async fn replica(dir: &std::path::Path, etcd: &Etcd, name: &str) -> vakt_control::Running {
    let mut opts = options(dir);
    opts.store = StoreKind::Etcd;
    opts.etcd_endpoints = vec![etcd.url.clone()];
    opts.replica = Some(name.into());
    vakt_control::start(opts).await.unwrap()
}

#[tokio::test]
async fn a_change_through_one_replica_reaches_proxies_on_the_other() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), &etcd, "a").await;
    let b = replica(dir.path(), &etcd, "b").await;

    let (on_b, _h) = spawn_node(node_options(
        b.addr,
        "on-b",
        dir.path(),
        &dir.path().join("cb"),
    ));
    let (on_a, _h2) = spawn_node(node_options(
        a.addr,
        "on-a",
        dir.path(),
        &dir.path().join("ca"),
    ));

    let mut ca = client(a.addr).await;
    let mut cb = client(b.addr).await;
    assert_eq!(
        apply(&mut ca, &route_yaml("orders", "127.0.0.1:18080"))
            .await
            .unwrap(),
        1
    );
    assert!(eventually(Duration::from_secs(1), || on_b.last_version() == 1).await);
    assert_eq!(on_b.route_names(), ["orders"]);

    // The next version through the other replica builds on the first.
    assert_eq!(
        apply(&mut cb, &route_yaml("payments", "127.0.0.1:18081"))
            .await
            .unwrap(),
        2
    );
    assert!(eventually(Duration::from_secs(1), || on_a.last_version() == 2).await);
    assert_eq!(on_a.route_names(), ["orders", "payments"]);

    let mut nodes_b = Vec::new();
    for _ in 0..50 {
        nodes_b = nodes(&mut cb).await;
        if nodes_b.iter().any(|n| n.acked_version == 2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(nodes_b[0].replica, "b");
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn concurrent_applies_through_two_replicas_never_fork_versions() {
    let etcd = Etcd::start().await;
    let dir = tempfile::tempdir().unwrap();
    let a = replica(dir.path(), &etcd, "a").await;
    let b = replica(dir.path(), &etcd, "b").await;
    let run = |addr, prefix: &'static str| async move {
        let mut c = client(addr).await;
        let mut versions = Vec::new();
        for i in 0..10 {
            let yaml = route_yaml(&format!("{prefix}{i}"), "127.0.0.1:18080");
            versions.push(apply(&mut c, &yaml).await.unwrap());
        }
        versions
    };
    let (va, vb) = tokio::join!(run(a.addr, "a"), run(b.addr, "b"));
    let mut all: Vec<u64> = va.into_iter().chain(vb).collect();
    all.sort();
    assert_eq!(all, (1..=20).collect::<Vec<_>>());
    let (version, objects) = current(&mut client(a.addr).await).await;
    assert_eq!((version, objects.routes.len()), (20, 20));
    a.shutdown().await;
    b.shutdown().await;
}
