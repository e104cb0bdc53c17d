//! Without the operators' credential the config service answers
//! UNAUTHENTICATED and changes nothing; proxies need their own.

mod common;

use std::time::Duration;

use common::*;
use vakt_api::tonic::Code;

#[tokio::test]
async fn calls_without_a_valid_token_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let yaml = route_yaml("orders", "127.0.0.1:18080");

    for token in ["", "wrong", NODE_TOKEN] {
        let mut c = client_with(cp.addr, token).await;
        let err = apply(&mut c, &yaml).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
    }
    let mut admin = client(cp.addr).await;
    assert_eq!(current(&mut admin).await.0, 0);
    assert_eq!(apply(&mut admin, &yaml).await.unwrap(), 1);
    cp.shutdown().await;
}

#[tokio::test]
async fn proxies_need_the_node_token() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut admin = client(cp.addr).await;
    apply(&mut admin, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();

    let mut opts = node_options(cp.addr, "intruder", dir.path(), &dir.path().join("c1"));
    let bad = dir.path().join("bad.token");
    std::fs::write(&bad, "guess\n").unwrap();
    opts.token_file = Some(bad);
    let (sink, handle) = spawn_node(opts);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!handle.connected());
    assert!(sink.versions().is_empty());

    let opts = node_options(cp.addr, "orders-1", dir.path(), &dir.path().join("c2"));
    let (sink, _handle) = spawn_node(opts);
    assert!(eventually(Duration::from_secs(2), || sink.last_version() == 1).await);
    cp.shutdown().await;
}
