//! Transparent outbound listeners without iptables: a connection made
//! straight to the listener keeps the listener's address as original
//! destination, so a backend claiming that address stands for a service
//! address. HTTP is routed by host first, then by that address; opaque
//! ports and silent clients are proxied as TCP, a slow request line is
//! still HTTP; a connection nothing
//! claims is closed, since the proxy never connects to itself.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use vakt_tests::client::HttpClient;
use vakt_tests::proxy::ProxyBuilder;
use vakt_tests::upstream::Upstream;

const CONFIG: &str = r#"
listeners:
  - {name: out, address: "${out}", mode: outbound}
  - {name: opaque, address: "${opaque}", mode: outbound, opaquePorts: [OPAQUE_PORT]}
  - {name: slow, address: "${slow}", mode: outbound, detectTimeout: 200ms}
  - {name: unclaimed, address: "${unclaimed}", mode: outbound}
  - {name: in, address: "${in}", mode: inbound}
routes:
  - name: by-host
    hostnames: [routed.example]
    rules: [{backendRefs: [{name: other}]}]
backends:
  - name: svc
    addresses: ["${out}"]
    endpoints: ["SVC"]
  - name: other
    endpoints: ["OTHER"]
  - name: raw
    addresses: ["${opaque}"]
    endpoints: ["SVC"]
  - name: echo
    addresses: ["${slow}"]
    endpoints: ["ECHO"]
"#;

async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// Whether the proxy closes `conn` without a byte.
async fn closed(mut conn: TcpStream) -> bool {
    let mut buf = [0u8; 16];
    let _ = conn.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf)).await;
    matches!(read, Ok(Ok(0)) | Ok(Err(_)))
}

#[tokio::test]
async fn outbound_http_tcp_and_unclaimed_connections() {
    let svc = Upstream::named("svc").await;
    let other = Upstream::named("other").await;
    let echo = echo_server().await;
    let opaque = vakt_tests::ports::free_addr();
    let config = CONFIG
        .replace("${opaque}", &opaque.to_string())
        .replace("OPAQUE_PORT", &opaque.port().to_string())
        .replace("SVC", &svc.addr().to_string())
        .replace("OTHER", &other.addr().to_string())
        .replace("ECHO", &echo.to_string());
    let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
    let out = proxy.addr("out");

    // HTTP/1 and h2c: a route by host wins, else the backend claiming
    // the destination.
    let mut h1 = HttpClient::h1(out).await.unwrap();
    let mut h2 = HttpClient::h2c(out).await.unwrap();
    for client in [&mut h1, &mut h2] {
        let r = client.get("anything", "/hello").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-served-by"), Some("svc"));
        let r = client.get("routed.example", "/hello").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-served-by"), Some("other"));
    }

    // An opaque port: the same HTTP request goes as bytes, not as a
    // request the proxy serves.
    let mut raw = TcpStream::connect(opaque).await.unwrap();
    raw.write_all(b"GET /hello HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), raw.read_to_end(&mut rsp))
        .await
        .unwrap()
        .unwrap();
    let rsp = String::from_utf8_lossy(&rsp).to_ascii_lowercase();
    assert!(rsp.starts_with("http/1.1 200"), "{rsp}");
    assert!(rsp.contains("x-served-by: svc"), "{rsp}");

    // A client silent past the detect timeout is proxied as TCP.
    let mut slow = TcpStream::connect(proxy.addr("slow")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    slow.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), slow.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"GET / HTTP/1.1\r\n");

    // A request line begun and left past the detect timeout is still
    // HTTP: the framing checks refuse this request instead of the echo
    // backend getting its bytes.
    let mut smuggle = TcpStream::connect(proxy.addr("slow")).await.unwrap();
    smuggle.write_all(b"P").await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rest = "OST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\
                Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    smuggle.write_all(rest.as_bytes()).await.unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), smuggle.read_to_end(&mut rsp))
        .await
        .unwrap()
        .unwrap();
    let rsp = String::from_utf8_lossy(&rsp);
    assert!(rsp.starts_with("HTTP/1.1 400"), "{rsp}");

    // Nothing claims these destinations, and they were not redirected.
    let unclaimed = TcpStream::connect(proxy.addr("unclaimed")).await.unwrap();
    assert!(closed(unclaimed).await, "an unclaimed connection is closed");
    let inbound = TcpStream::connect(proxy.addr("in")).await.unwrap();
    assert!(
        closed(inbound).await,
        "a direct inbound connection is closed"
    );

    let m = proxy.metrics().await.unwrap();
    let http = [("listener", "out"), ("direction", "outbound")];
    let svc_http = [http[0], http[1], ("backend", "svc"), ("route", "")];
    assert_eq!(m.sum("vakt_requests_total", &svc_http), 2.0);
    let routed = [http[0], http[1], ("backend", "other"), ("route", "by-host")];
    assert_eq!(m.sum("vakt_requests_total", &routed), 2.0);
    assert_eq!(m.sum("vakt_requests_total", &[("listener", "opaque")]), 0.0);
    for backend in ["raw", "echo"] {
        let tcp = [("direction", "outbound"), ("backend", backend)];
        assert_eq!(m.sum("vakt_tcp_connections_total", &tcp), 1.0, "{backend}");
    }
}
