//! The proxy's discovery client against the real control plane, through a
//! sink that records what the proxy would apply.

mod common;

use std::time::Duration;

use common::*;
use vakt_api::pb::discovery::v1::EndpointObservation;
use vakt_proxy::discovery::Source;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn an_apply_reaches_the_node_within_a_second_and_is_acked() {
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

    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    assert!(eventually(SECOND, || sink.last_version() == 1).await);
    assert_eq!(sink.route_names(), ["orders"]);

    let mut acked = false;
    for _ in 0..50 {
        let n = nodes(&mut c).await;
        if n.len() == 1 && n[0].acked_version == 1 {
            acked = true;
            assert_eq!(
                (n[0].node_id.as_str(), n[0].service.as_str()),
                ("orders-1", "orders")
            );
            assert!(n[0].connected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(acked, "node never acked version 1");
    assert_eq!(handle.source(), Source::ControlPlane);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_refused_snapshot_is_nacked_and_shows_in_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    let (sink, handle) = spawn_node(node_options(
        cp.addr,
        "orders-1",
        dir.path(),
        &dir.path().join("cache"),
    ));
    assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);

    apply(&mut c, &route_yaml("refuse-me", "127.0.0.1:18081"))
        .await
        .unwrap();
    assert!(eventually(SECOND, || !sink.refused.lock().unwrap().is_empty()).await);
    let mut seen = None;
    for _ in 0..50 {
        let n = nodes(&mut c).await;
        if n[0].nacked_version == 2 {
            seen = Some(n[0].clone());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let node = seen.expect("the nack never reached the control plane");
    assert_eq!(node.acked_version, 1);
    assert!(
        node.nack_reason.contains("listener outbound is not bound"),
        "{}",
        node.nack_reason
    );
    // The last good snapshot keeps serving.
    assert_eq!(handle.version(), 1);
    assert_eq!(sink.versions(), [1]);
    cp.shutdown().await;
}

#[tokio::test]
async fn the_node_keeps_its_snapshot_and_reconnects_after_the_control_plane_returns() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let addr = cp.addr;
    let mut c = client(addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    let (sink, handle) = spawn_node(node_options(
        addr,
        "orders-1",
        dir.path(),
        &dir.path().join("cache"),
    ));
    assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);

    cp.shutdown().await;
    assert!(eventually(2 * SECOND, || !handle.connected()).await);
    assert_eq!(handle.version(), 1);
    assert!(
        handle.detail().contains("unreachable"),
        "{}",
        handle.detail()
    );

    let mut opts = options(dir.path());
    opts.listen = addr;
    let cp = vakt_control::start(opts).await.unwrap();
    let mut c = client(addr).await;
    apply(&mut c, &route_yaml("payments", "127.0.0.1:18081"))
        .await
        .unwrap();
    assert!(eventually(10 * SECOND, || sink.last_version() == 2).await);
    assert!(handle.connected());
    cp.shutdown().await;
}

#[tokio::test]
async fn a_node_started_while_the_control_plane_is_down_serves_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cp = start(dir.path()).await;
    let addr = cp.addr;
    let mut c = client(addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    {
        let (sink, _h) = spawn_node(node_options(addr, "orders-1", dir.path(), &cache));
        assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);
        assert!(eventually(SECOND, || cache.join("snapshot.pb").exists()).await);
    }
    cp.shutdown().await;

    let (sink, handle) = spawn_node(node_options(addr, "orders-1b", dir.path(), &cache));
    assert_eq!(sink.versions(), [1]);
    assert_eq!(sink.route_names(), ["orders"]);
    assert_eq!(handle.source(), Source::Cache);
    assert!(!handle.connected());
    assert!(
        handle.detail().contains("from the disk cache"),
        "{}",
        handle.detail()
    );
    assert!(handle.staleness().is_some());
}

#[tokio::test]
async fn a_node_that_has_the_current_version_gets_no_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    {
        let (sink, _h) = spawn_node(node_options(cp.addr, "a", dir.path(), &cache));
        assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);
        assert!(eventually(SECOND, || cache.join("snapshot.pb").exists()).await);
    }
    let (sink, handle) = spawn_node(node_options(cp.addr, "b", dir.path(), &cache));
    assert!(eventually(2 * SECOND, || handle.connected()).await);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Only the cached apply: the stream sent nothing new.
    assert_eq!(sink.versions(), [1]);
    cp.shutdown().await;
}

#[tokio::test]
async fn one_confused_node_cannot_eject_an_endpoint_but_two_can() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let mut c = client(cp.addr).await;
    let yaml = "backends: [{name: orders, endpoints: [127.0.0.1:18080, 127.0.0.1:18081]}]";
    apply(&mut c, yaml).await.unwrap();
    let node = |id: &str| spawn_node(node_options(cp.addr, id, dir.path(), &dir.path().join(id)));
    let (a, _ha) = node("a");
    let (b, _hb) = node("b");
    let (watcher, _hw) = node("watcher");
    for s in [&a, &b, &watcher] {
        assert!(eventually(2 * SECOND, || s.last_version() == 1).await);
    }
    let bad = EndpointObservation {
        backend: "orders".into(),
        endpoint: "127.0.0.1:18081".into(),
        ejected: true,
        ..Default::default()
    };
    *a.observations.lock().unwrap() = vec![bad.clone()];
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(watcher.unhealthy.lock().unwrap().is_empty());

    *b.observations.lock().unwrap() = vec![bad];
    let want = vec![("orders".to_string(), "127.0.0.1:18081".to_string())];
    assert!(eventually(2 * SECOND, || *watcher.unhealthy.lock().unwrap() == want).await);

    // Once one reporter recovers, the endpoint is healthy again.
    a.observations.lock().unwrap().clear();
    assert!(eventually(2 * SECOND, || watcher.unhealthy.lock().unwrap().is_empty()).await);
    cp.shutdown().await;
}

#[tokio::test]
async fn a_failing_probe_marks_an_endpoint_unhealthy_fleet_wide() {
    let dir = tempfile::tempdir().unwrap();
    let live = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());
    let mut opts = options(dir.path());
    opts.probe_interval = Some("100ms".parse().unwrap());
    let cp = vakt_control::start(opts).await.unwrap();
    let mut c = client(cp.addr).await;
    let yaml = format!("backends: [{{name: orders, endpoints: [\"{live_addr}\", \"{dead}\"]}}]");
    apply(&mut c, &yaml).await.unwrap();
    let (sink, _h) = spawn_node(node_options(
        cp.addr,
        "a",
        dir.path(),
        &dir.path().join("c"),
    ));
    let want = vec![("orders".to_string(), dead.clone())];
    assert!(eventually(3 * SECOND, || *sink.unhealthy.lock().unwrap() == want).await);
    cp.shutdown().await;
}
