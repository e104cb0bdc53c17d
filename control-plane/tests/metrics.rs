//! The control plane's `/metrics`: the version it streams and what each
//! node acked and refused, scraped over a real socket.

mod common;

use std::time::Duration;

use common::*;
use vakt_tests::client::metrics::scrape;

const SECOND: Duration = Duration::from_secs(1);

#[tokio::test]
async fn metrics_show_the_latest_version_and_each_nodes_answer() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let cp = vakt_control::start(opts).await.unwrap();
    let at = cp.metrics_addr.expect("metrics listener bound");
    let mut c = client(cp.addr).await;
    apply(&mut c, &route_yaml("orders", "127.0.0.1:18080"))
        .await
        .unwrap();
    let (sink, _handle) = spawn_node(node_options(
        cp.addr,
        "orders-1",
        dir.path(),
        &dir.path().join("cache"),
    ));
    assert!(eventually(2 * SECOND, || sink.last_version() == 1).await);
    apply(&mut c, &route_yaml("refuse-me", "127.0.0.1:18081"))
        .await
        .unwrap();

    let node = [("node", "orders-1"), ("service", "orders")];
    let mut m = scrape(at).await.unwrap();
    for _ in 0..100 {
        if m.get("vakt_control_node_nacked_version", &node) == Some(2.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        m = scrape(at).await.unwrap();
    }
    assert_eq!(m.get("vakt_control_latest_version", &[]), Some(2.0));
    assert_eq!(m.get("vakt_control_node_nacked_version", &node), Some(2.0));
    assert_eq!(m.get("vakt_control_node_acked_version", &node), Some(1.0));
    assert_eq!(m.get("vakt_control_node_connected", &node), Some(1.0));
    let connected = [("state", "connected")];
    assert_eq!(m.get("vakt_control_nodes", &connected), Some(1.0));
    assert_eq!(m.get("vakt_control_acks_total", &[]), Some(1.0));
    assert_eq!(m.get("vakt_control_nacks_total", &[]), Some(1.0));
    assert_eq!(m.get("vakt_control_unhealthy_endpoints", &[]), Some(0.0));

    // The node binds its admin on 0.0.0.0:15999 and connects from
    // loopback.
    let listed = nodes(&mut c).await;
    assert_eq!(listed[0].admin_address, "127.0.0.1:15999");

    let other = vakt_tests::client::get(at, "/other").await.unwrap();
    assert_eq!(other.status, 404);
    cp.shutdown().await;
}
