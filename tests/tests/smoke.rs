//! The real `vakt-proxy` in front of two example services: requests over
//! HTTP/1.1 and h2c reach the backend their route names, and the admin
//! listener reports them.

use std::time::Duration;

use vakt_tests::client::{HttpClient, grpc_client_for};
use vakt_tests::example::Echoed;
use vakt_tests::pb::EchoRequest;
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const CONFIG: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: route-a
    hostnames: [svc-a]
    rules:
      - backendRefs: [{name: backend-a}]
  - name: route-b
    hostnames: [svc-b]
    rules:
      - backendRefs: [{name: backend-b}]
backends:
  - name: backend-a
    endpoints: ["${a}"]
  - name: backend-b
    endpoints: ["${b}"]
    protocol: http2
"#;

/// Two example services and a proxy routing `svc-a` and `svc-b` to them.
async fn mesh() -> (Upstream, Upstream, Proxy) {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let config = CONFIG
        .replace("${a}", &a.addr().to_string())
        .replace("${b}", &b.addr().to_string());
    let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
    (a, b, proxy)
}

#[tokio::test]
async fn routes_h1_and_h2c_requests_by_host() {
    let (a, b, proxy) = mesh().await;
    let mut h1 = HttpClient::h1(proxy.listener()).await.unwrap();
    let mut h2 = HttpClient::h2c(proxy.listener()).await.unwrap();

    for (client, proto) in [(&mut h1, "h1"), (&mut h2, "h2c")] {
        let ra = client.get("svc-a", "/echo").await.unwrap();
        assert_eq!(ra.status, 200, "{proto}: {}", ra.text());
        assert_eq!(ra.header("x-served-by"), Some("a"), "{proto}");
        let echoed: Echoed = ra.json().unwrap();
        assert_eq!(echoed.authority.as_deref(), Some("svc-a"), "{proto}");

        let rb = client.get("svc-b", "/hello").await.unwrap();
        assert_eq!(rb.status, 200, "{proto}: {}", rb.text());
        assert_eq!(rb.header("x-served-by"), Some("b"), "{proto}");
        assert_eq!(rb.text(), "b\n");
    }

    assert_eq!(a.request_count(), 2);
    assert_eq!(b.request_count(), 2);
    assert!(a.requests().iter().all(|r| r.uri.path() == "/echo"));
    assert!(b.requests().iter().all(|r| r.uri.path() == "/hello"));
    // backend-b speaks HTTP/2 to its endpoint.
    assert!(
        b.requests()
            .iter()
            .all(|r| r.version == http::Version::HTTP_2)
    );

    let unknown = h1.get("svc-x", "/").await.unwrap();
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("vakt-error"), Some("no-route"));
}

#[tokio::test]
async fn metrics_and_access_logs_report_requests() {
    let (_a, _b, proxy) = mesh().await;
    let mut h1 = HttpClient::h1(proxy.listener()).await.unwrap();
    for _ in 0..3 {
        assert_eq!(h1.get("svc-a", "/").await.unwrap().status, 200);
    }
    assert_eq!(h1.get("svc-b", "/").await.unwrap().status, 200);

    let metrics = proxy.metrics().await.unwrap();
    let a = [
        ("route", "route-a"),
        ("backend", "backend-a"),
        ("code", "200"),
    ];
    assert_eq!(metrics.get("vakt_requests_total", &a), Some(3.0));
    let b = [("route", "route-b"), ("listener", "main")];
    assert_eq!(metrics.sum("vakt_requests_total", &b), 1.0);

    let logs = proxy.wait_for_access_logs(4, Duration::from_secs(5)).await;
    assert_eq!(logs.len(), 4, "{:?}", proxy.stderr_lines());
    assert!(logs.iter().any(|l| l["route_name"] == "route-b"));
}

#[tokio::test]
async fn grpc_reaches_an_http2_backend() {
    let (_a, b, proxy) = mesh().await;
    let mut c = grpc_client_for(proxy.listener(), "svc-b").await.unwrap();
    let req = EchoRequest {
        message: "through".into(),
        ..Default::default()
    };
    let reply = c.echo(req).await.unwrap().into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("through", "b")
    );
    assert_eq!(b.requests()[0].uri.path(), "/vakt.example.v1.Echo/Echo");
}

#[tokio::test]
async fn reloads_on_sighup_and_exits_cleanly_on_sigterm() {
    let (a, b, mut proxy) = mesh().await;
    let swapped = CONFIG
        .replace(
            "endpoints: [\"${a}\"]",
            &format!("endpoints: [\"{}\"]", b.addr()),
        )
        .replace("${b}", &a.addr().to_string());
    proxy.reload_with(&swapped).unwrap();

    let mut served_by = String::new();
    for _ in 0..100 {
        let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
        let r = c.get("svc-a", "/").await.unwrap();
        served_by = r.header("x-served-by").unwrap_or("").to_owned();
        if served_by == "b" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served_by, "b", "{:?}", proxy.stderr_lines());
    let m = proxy.metrics().await.unwrap();
    assert!(
        m.get("vakt_config_reloads_total", &[("result", "success")])
            .unwrap_or(0.0)
            >= 1.0
    );

    let status = proxy.terminate(Duration::from_secs(10)).await.unwrap();
    assert!(status.success(), "{status:?}");
}
