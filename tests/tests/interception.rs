//! Interception end to end, as root in a network namespace of its own:
//! iptables `REDIRECT` sends the connections of one source address to
//! the outbound listener and those of another to the inbound listener,
//! and the proxy routes each by its original destination (`SO_ORIGINAL_DST`):
//! a backend claiming the address, a route by host, the destination
//! itself, or the application on loopback.
//!
//! Without root the test says why it is skipped; `VAKT_REQUIRE_NETNS=1`
//! makes that a failure.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use vakt_tests::client;
use vakt_tests::example::ExampleConfig;
use vakt_tests::netns::{self, Netns};
use vakt_tests::proxy::{self, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const OUTBOUND_PORT: &str = "17001";
const INBOUND_PORT: &str = "17006";
/// Clients bind these sources; iptables redirects by source, so the
/// proxy's own connections (from other addresses) are never redirected.
const OUTBOUND_CLIENT: &str = "10.0.0.2";
const INBOUND_CLIENT: &str = "10.0.0.3";
/// The pod's address, and a destination no backend claims that has a
/// real server behind it.
const POD_IP: &str = "10.0.0.1";
const UNCLAIMED: &str = "10.96.0.99";

const CONFIG: &str = r#"
listeners:
  - {name: outbound, address: "127.0.0.1:17001", mode: outbound}
  - {name: inbound, address: "0.0.0.0:17006", mode: inbound}
routes:
  - name: routed
    hostnames: [routed.example]
    rules: [{backendRefs: [{name: known}]}]
backends:
  - name: known
    addresses: ["10.96.0.10:80"]
    endpoints: ["KNOWN"]
  - name: db
    addresses: ["10.96.0.20:5432"]
    endpoints: ["ECHO"]
    protocol: tcp
"#;

/// `10.0.0.0/8` made local on the namespace's loopback (as `127/8` is):
/// clients and servers bind any address in it, and the proxy's own
/// connections leave from `10.0.0.1`, which no rule redirects.
fn setup(ns: &Netns) -> Result<(), netns::NetnsError> {
    ns.ip(&["addr", "add", &format!("{POD_IP}/8"), "dev", "lo"])?;
    for (source, port) in [
        (OUTBOUND_CLIENT, OUTBOUND_PORT),
        (INBOUND_CLIENT, INBOUND_PORT),
    ] {
        ns.exec(
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-s",
                source,
                "-j",
                "REDIRECT",
                "--to-ports",
                port,
            ],
        )?;
    }
    Ok(())
}

/// A connection from `source` to `dst`.
async fn connect_from(source: &str, dst: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(source.parse().unwrap(), 0))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), socket.connect(dst))
        .await
        .expect("connect timed out")
        .unwrap_or_else(|e| panic!("connect to {dst} from {source}: {e}"))
}

/// One HTTP/1.1 request for `/hello`; the status and the `x-served-by`
/// header.
async fn get(source: &str, dst: &str, host: &str) -> (u16, String) {
    let (status, head) = request(source, dst, host, "/hello").await;
    (status, header(&head, "x-served-by"))
}

/// One HTTP/1.1 request; the status and the response, lower-cased.
async fn request(source: &str, dst: &str, host: &str, path: &str) -> (u16, String) {
    let mut c = connect_from(source, dst.parse().unwrap()).await;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rsp))
        .await
        .expect("response timed out")
        .unwrap();
    let text = String::from_utf8_lossy(&rsp).to_ascii_lowercase();
    let status = text
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a response: {text:?}"));
    (status, text)
}

fn header(head: &str, name: &str) -> String {
    let prefix = format!("{name}: ");
    head.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_string))
        .unwrap_or_default()
}

/// Sends `msg` as raw bytes and reads what comes back.
async fn echo(source: &str, dst: &str, msg: &[u8]) -> Vec<u8> {
    let mut c = connect_from(source, dst.parse().unwrap()).await;
    c.write_all(msg).await.unwrap();
    let mut buf = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
        .await
        .expect("echo timed out")
        .unwrap();
    buf
}

/// A TCP echo server on `addr`.
async fn echo_server(addr: SocketAddr) -> SocketAddr {
    let listener = TcpListener::bind(addr).await.unwrap();
    let bound = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    bound
}

async fn scenario() {
    let known = Upstream::named("known").await;
    let unclaimed_http: SocketAddr = format!("{UNCLAIMED}:8080").parse().unwrap();
    let _unclaimed = Upstream::example_at(unclaimed_http, ExampleConfig::named("unclaimed")).await;
    let app = Upstream::named("app").await;
    let db = echo_server("127.0.0.1:0".parse().unwrap()).await;
    echo_server(format!("{UNCLAIMED}:7000").parse().unwrap()).await;
    let config = CONFIG
        .replace("KNOWN", &known.addr().to_string())
        .replace("ECHO", &db.to_string());
    let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
    let out = OUTBOUND_CLIENT;

    // HTTP: a backend claiming the service address, a route by host
    // before it, and the original destination when neither applies.
    assert_eq!(
        get(out, "10.96.0.10:80", "orders").await,
        (200, "known".into())
    );
    let passthrough = get(out, "10.96.0.99:8080", "elsewhere").await;
    assert_eq!(passthrough, (200, "unclaimed".into()));
    let routed = get(out, "10.96.0.99:8080", "routed.example").await;
    assert_eq!(routed, (200, "known".into()));

    // Other bytes: the TCP backend claiming the address, else the
    // destination itself.
    assert_eq!(
        echo(out, "10.96.0.20:5432", b"\x00\x00\x00\x08").await,
        b"\x00\x00\x00\x08"
    );
    assert_eq!(echo(out, "10.96.0.99:7000", b"ping\n").await, b"ping\n");

    // Inbound: the pod's port, served by the application on loopback.
    let app_port = app.addr().port();
    let to_pod = format!("{POD_IP}:{app_port}");
    assert_eq!(
        get(INBOUND_CLIENT, &to_pod, "app").await,
        (200, "app".into())
    );

    let m = proxy.metrics().await.unwrap();
    let requests = |labels: &[(&str, &str)]| m.sum("vakt_requests_total", labels);
    let outbound = [("direction", "outbound"), ("listener", "outbound")];
    assert_eq!(
        requests(&[outbound[0], outbound[1], ("backend", "known")]),
        2.0
    );
    assert_eq!(requests(&[outbound[0], ("backend", "passthrough")]), 1.0);
    let inbound = [
        ("direction", "inbound"),
        ("listener", "inbound"),
        ("backend", "app"),
    ];
    assert_eq!(requests(&inbound), 1.0);
    let tcp = |backend| {
        let labels = [("direction", "outbound"), ("backend", backend)];
        m.sum("vakt_tcp_connections_total", &labels)
    };
    assert_eq!(tcp("db"), 1.0);
    assert_eq!(tcp("passthrough"), 1.0);
}

#[test]
fn redirected_connections_go_where_they_were_going() {
    if !vakt_tests::lab::available("redirected connections") {
        return;
    }
    let ns = Netns::create().unwrap();
    setup(&ns).unwrap();
    ns.block_on(scenario).unwrap();
}

/// `--role sidecar` on its built-in ports, with no control plane: HTTP
/// and other bytes pass through to where they were going, and the
/// application gets its inbound requests.
async fn sidecar_scenario() {
    let _unclaimed = Upstream::example_at(
        format!("{UNCLAIMED}:8080").parse().unwrap(),
        ExampleConfig::named("unclaimed"),
    )
    .await;
    echo_server(format!("{UNCLAIMED}:7000").parse().unwrap()).await;
    let app = Upstream::named("app").await;

    let mut child = tokio::process::Command::new(proxy::binary().unwrap())
        .args(["--role", "sidecar", "--opaque-ports", "7000"])
        .args(["--inbound-max-requests", "1"])
        .env("VAKT_SERVICE", "orders")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let admin: SocketAddr = "127.0.0.1:17000".parse().unwrap();
    let mut ready = false;
    for _ in 0..200 {
        if client::get(admin, "/ready")
            .await
            .is_ok_and(|r| r.status == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the sidecar never became ready");

    let out = OUTBOUND_CLIENT;
    let passthrough = get(out, "10.96.0.99:8080", "elsewhere").await;
    assert_eq!(passthrough, (200, "unclaimed".into()));
    // An HTTP request line on an opaque port is not detected (the HTTP
    // server would wait for the rest of the head): the bytes go as they are.
    let line = b"GET /x HTTP/1.1\r\n";
    assert_eq!(echo(out, "10.96.0.99:7000", line).await, line);
    let to_pod = format!("{POD_IP}:{}", app.addr().port());
    assert_eq!(
        get(INBOUND_CLIENT, &to_pod, "app").await,
        (200, "app".into())
    );

    // `--inbound-max-requests 1`: while one request waits on the
    // application, the next is answered 503 by the proxy.
    let pod = to_pod.clone();
    let slow =
        tokio::spawn(
            async move { request(INBOUND_CLIENT, &pod, "app", "/hello?delay_ms=1500").await },
        );
    app.log().wait_for(2, Duration::from_secs(5)).await;
    let (status, head) = request(INBOUND_CLIENT, &to_pod, "app", "/hello").await;
    assert_eq!(
        (status, header(&head, "vakt-error")),
        (503, "overflow".into())
    );
    assert_eq!(slow.await.unwrap().0, 200);
    assert_eq!(
        get(INBOUND_CLIENT, &to_pod, "app").await,
        (200, "app".into())
    );

    let m = vakt_tests::client::scrape(admin).await.unwrap();
    let opaque = [("direction", "outbound"), ("backend", "passthrough")];
    assert_eq!(m.sum("vakt_tcp_connections_total", &opaque), 1.0);
    let ok = [
        ("direction", "inbound"),
        ("backend", "app"),
        ("code", "200"),
    ];
    assert_eq!(m.sum("vakt_requests_total", &ok), 3.0);
    let refused = [("direction", "inbound"), ("code", "503")];
    assert_eq!(m.sum("vakt_requests_total", &refused), 1.0);
    child.kill().await.unwrap();
}

#[test]
fn the_sidecar_role_passes_traffic_through_without_a_control_plane() {
    if !vakt_tests::lab::available("sidecar role in a namespace") {
        return;
    }
    let ns = Netns::create().unwrap();
    setup(&ns).unwrap();
    ns.block_on(sidecar_scenario).unwrap();
}
