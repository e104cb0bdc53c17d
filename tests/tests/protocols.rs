//! Protocols through the real `vakt-proxy`: HTTP/1.1 and h2c clients on
//! one port, to HTTP/1.1 and HTTP/2 upstreams; bodies streamed both ways
//! and intact; trailers; every kind of gRPC call with its status; and
//! WebSocket echo.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use tokio::sync::{Notify, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_tungstenite::tungstenite::Message;
use vakt_tests::body::{BoxBody, BoxError, boxed, empty, full};
use vakt_tests::client::{HttpClient, grpc_client_for, ws_connect};
use vakt_tests::example::{Echoed, ExampleConfig, sha256_hex};
use vakt_tests::pb::{EchoRequest, StreamRequest};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::server::handler;
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

const T: Duration = Duration::from_secs(10);

/// `h1` routes to the upstream over HTTP/1.1, `h2` over HTTP/2; both
/// backends point at the same upstream, which speaks both.
const TWO_WAYS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: to-h1
    hostnames: [h1]
    rules: [{backendRefs: [{name: up-h1}]}]
  - name: to-h2
    hostnames: [h2]
    rules: [{backendRefs: [{name: up-h2}]}]
backends:
  - {name: up-h1, endpoints: ["${up}"]}
  - {name: up-h2, endpoints: ["${up}"], protocol: http2}
"#;

async fn example_mesh() -> (Proxy, Upstream) {
    let mut builder = ProxyBuilder::yaml(TWO_WAYS);
    let addr = builder.addr("up");
    let up = Upstream::example_at(addr, ExampleConfig::named("up")).await;
    (builder.start().await.expect("proxy starts"), up)
}

/// Every (client, upstream) pair: the client, the host naming the
/// upstream protocol, and the versions each side must see.
async fn clients(proxy: &Proxy) -> Vec<(HttpClient, &'static str, Version, Version)> {
    let mut out = Vec::new();
    for (host, up) in [("h1", Version::HTTP_11), ("h2", Version::HTTP_2)] {
        let h1 = HttpClient::h1(proxy.listener()).await.unwrap();
        out.push((h1, host, Version::HTTP_11, up));
        let h2 = HttpClient::h2c(proxy.listener()).await.unwrap();
        out.push((h2, host, Version::HTTP_2, up));
    }
    out
}

#[tokio::test]
async fn h1_and_h2c_clients_reach_h1_and_h2_upstreams() {
    let (proxy, up) = example_mesh().await;
    for (mut c, host, down, want_up) in clients(&proxy).await {
        let req = Request::post("/echo?q=1")
            .header("host", host)
            .body(full("ping"))
            .unwrap();
        let r = tokio::time::timeout(T, c.send(req)).await.unwrap().unwrap();
        let what = format!("{down:?} client to {host} upstream");
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        assert_eq!(r.version, down, "{what}: response version");
        let e: Echoed = r.json().unwrap();
        assert_eq!(
            e.version,
            format!("{want_up:?}"),
            "{what}: upstream version"
        );
        assert_eq!(e.uri, "/echo?q=1", "{what}");
        assert_eq!(e.body.as_deref(), Some("ping"), "{what}");
        assert_eq!(e.authority.as_deref(), Some(host), "{what}: Host kept");
    }
    assert_eq!(up.request_count(), 4);
}

const EIGHT_MIB: usize = 8 << 20;

#[tokio::test]
async fn eight_mib_bodies_arrive_intact_both_ways() {
    let (proxy, up) = example_mesh().await;
    let sent: Vec<u8> = (0..EIGHT_MIB).map(|i| (i * 31 % 251) as u8).collect();
    let sent = Bytes::from(sent);
    let want = sha256_hex(&sent);
    let path = format!("/data?size={EIGHT_MIB}");
    let direct = HttpClient::h1(up.addr())
        .await
        .unwrap()
        .get("up", &path)
        .await
        .unwrap();
    assert_eq!(direct.body.len(), EIGHT_MIB);
    let want_down = sha256_hex(&direct.body);

    for (mut c, host, down, _) in clients(&proxy).await {
        let what = format!("{down:?} client to {host} upstream");
        let req = Request::post("/echo")
            .header("host", host)
            .body(full(sent.clone()))
            .unwrap();
        let r = tokio::time::timeout(T, c.send(req)).await.unwrap().unwrap();
        assert_eq!(r.status, 200, "{what}: {}", r.text());
        let e: Echoed = r.json().unwrap();
        assert_eq!(e.body_len, EIGHT_MIB, "{what}: request body length");
        assert_eq!(e.body_sha256, want, "{what}: request body sha256");

        let r = tokio::time::timeout(T, c.get(host, &path))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(r.status, 200, "{what}");
        assert_eq!(r.body.len(), EIGHT_MIB, "{what}: response body length");
        assert_eq!(sha256_hex(&r.body), want_down, "{what}: response sha256");
    }
}

/// An upstream whose `/down` sends a first chunk and then waits for
/// `release` before the rest, and whose `/up` signals `first` when the
/// first request chunk arrives, then reads the rest and answers its length.
async fn streaming_mesh(release: Arc<Notify>, first: Arc<Notify>) -> (Proxy, Upstream) {
    let mut builder = ProxyBuilder::yaml(TWO_WAYS);
    let addr = builder.addr("up");
    let h = handler(move |req: Request<BoxBody>| {
        let (release, first) = (release.clone(), first.clone());
        async move {
            if req.uri().path() == "/down" {
                let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
                tokio::spawn(async move {
                    let _ = tx.send(Ok(Frame::data(Bytes::from("first chunk;")))).await;
                    release.notified().await;
                    let _ = tx.send(Ok(Frame::data(Bytes::from("rest")))).await;
                });
                return Response::new(boxed(StreamBody::new(ReceiverStream::new(rx))));
            }
            let mut body = req.into_body();
            let mut total = 0;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(d) = frame.data_ref() {
                    if total == 0 {
                        first.notify_one();
                    }
                    total += d.len();
                }
            }
            Response::new(full(total.to_string()))
        }
    });
    let up = Upstream::start_at(addr, h).await;
    (builder.start().await.expect("proxy starts"), up)
}

#[tokio::test]
async fn response_body_streams_before_the_upstream_finishes() {
    let release = Arc::new(Notify::new());
    let (proxy, _up) = streaming_mesh(release.clone(), Arc::new(Notify::new())).await;
    for (mut c, host, down, _) in clients(&proxy).await {
        let what = format!("{down:?} client to {host} upstream");
        let req = Request::get("/down").header("host", host).body(empty());
        let resp = tokio::time::timeout(T, c.send_streaming(req.unwrap()))
            .await
            .unwrap_or_else(|_| panic!("{what}: no response head while the body is unfinished"))
            .unwrap();
        assert_eq!(resp.status(), 200, "{what}");
        let mut body = resp.into_body();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .unwrap_or_else(|_| panic!("{what}: first chunk held back until the upstream finished"))
            .expect("a frame")
            .expect("no body error");
        assert_eq!(frame.data_ref().map(|d| &d[..]), Some(&b"first chunk;"[..]));
        release.notify_one();
        let rest = tokio::time::timeout(T, body.collect())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest.to_bytes(), "rest", "{what}");
    }
}

#[tokio::test]
async fn request_body_streams_before_the_client_finishes() {
    let first = Arc::new(Notify::new());
    let (proxy, _up) = streaming_mesh(Arc::new(Notify::new()), first.clone()).await;
    for (mut c, host, down, _) in clients(&proxy).await {
        let what = format!("{down:?} client to {host} upstream");
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
        let body = boxed(StreamBody::new(ReceiverStream::new(rx)));
        let req = Request::post("/up")
            .header("host", host)
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        let sending = tokio::spawn(async move { c.send(req).await });
        tx.send(Ok(Frame::data(Bytes::from(vec![b'a'; 1000]))))
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(5), first.notified())
            .await
            .unwrap_or_else(|_| {
                panic!("{what}: first request chunk held back until the client finished")
            });
        tx.send(Ok(Frame::data(Bytes::from(vec![b'b'; 500]))))
            .await
            .unwrap();
        drop(tx);
        let r = tokio::time::timeout(T, sending)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(
            (r.status.as_u16(), r.text()),
            (200, "1500".into()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn response_trailers_pass_through_from_an_http2_upstream() {
    let (proxy, _up) = example_mesh().await;
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let r = c.get("h2", "/data?size=100&trailers=1").await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 100);
    let trailers = r.trailers.expect("trailers dropped");
    assert_eq!(trailers.get("x-example-trailer").unwrap(), "done");
}

#[tokio::test]
async fn chunked_trailers_from_an_http1_upstream_reach_an_h2c_client() {
    let raw = RawUpstream::start(|_| {
        RawReply::respond(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-raw-trailer\r\n\r\n\
             5\r\nhello\r\n0\r\nx-raw-trailer: yes\r\n\r\n",
        )
    })
    .await;
    let config = TWO_WAYS.replace("${up}", &raw.addr().to_string());
    let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let req = Request::get("/t")
        .header("host", "h1")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let r = tokio::time::timeout(T, c.send(req)).await.unwrap().unwrap();
    assert_eq!((r.status.as_u16(), r.text()), (200, "hello".into()));
    let trailers = r
        .trailers
        .expect("trailers of a chunked HTTP/1.1 response dropped on the way to HTTP/2");
    assert_eq!(trailers.get("x-raw-trailer").unwrap(), "yes");
}

#[tokio::test]
async fn request_trailers_pass_through_over_http2() {
    let (proxy, up) = example_mesh().await;
    let mut c = HttpClient::h2c(proxy.listener()).await.unwrap();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("abc"));
    let frames = [
        Ok::<_, BoxError>(Frame::data(Bytes::from("payload"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = boxed(StreamBody::new(futures_util::stream::iter(frames)));
    let req = Request::post("/echo")
        .header("host", "h2")
        .header("te", "trailers")
        .body(body)
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let got = up.log().wait_for(1, T).await;
    assert_eq!(got[0].body, b"payload");
    let t = got[0].trailers.as_ref().expect("request trailers dropped");
    assert_eq!(t.get("x-checksum").unwrap(), "abc");
}

fn echo(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn grpc_unary_and_server_streaming_through_the_proxy() {
    let (proxy, up) = example_mesh().await;
    let mut c = grpc_client_for(proxy.listener(), "h2").await.unwrap();

    let reply = c.echo(echo("hi")).await.unwrap().into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("hi", "up")
    );

    let req = StreamRequest {
        message: "s".into(),
        count: 5,
        interval_ms: 20,
        ..Default::default()
    };
    let mut stream = c.stream(req).await.unwrap().into_inner();
    let mut indexes = Vec::new();
    while let Some(msg) = tokio::time::timeout(T, stream.next()).await.unwrap() {
        indexes.push(msg.expect("stream message").index);
    }
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    assert_eq!(up.request_count(), 2);
}

#[tokio::test]
async fn grpc_client_streaming_and_bidi_through_the_proxy() {
    let (proxy, _up) = example_mesh().await;
    let mut c = grpc_client_for(proxy.listener(), "h2").await.unwrap();

    let messages = (0..10).map(|i| echo(&format!("m{i}")));
    let reply = c
        .collect(tokio_stream::iter(messages))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.messages, 10);
    assert_eq!(reply.served_by, "up");

    // Each reply arrives before the next message is sent, so nothing is
    // buffered until the end of the call.
    let (tx, rx) = mpsc::channel(4);
    let mut replies = c.chat(ReceiverStream::new(rx)).await.unwrap().into_inner();
    for i in 0..3 {
        tx.send(echo(&format!("c{i}"))).await.unwrap();
        let r = tokio::time::timeout(Duration::from_secs(5), replies.next())
            .await
            .unwrap_or_else(|_| panic!("bidi reply {i} held back"))
            .expect("a reply")
            .expect("an ok reply");
        assert_eq!((r.message, r.index), (format!("c{i}"), i));
    }
    drop(tx);
    let end = tokio::time::timeout(T, replies.next()).await.unwrap();
    assert!(end.is_none(), "bidi call ends with OK: {end:?}");
}

#[tokio::test]
async fn grpc_status_from_the_upstream_reaches_the_client() {
    let (proxy, _up) = example_mesh().await;
    let mut c = grpc_client_for(proxy.listener(), "h2").await.unwrap();

    let req = EchoRequest {
        status: tonic::Code::NotFound as i32,
        ..echo("x")
    };
    let err = c.echo(req).await.expect_err("NOT_FOUND expected");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    assert_eq!(err.message(), "status requested");

    let req = StreamRequest {
        count: 2,
        end_status: tonic::Code::PermissionDenied as i32,
        ..Default::default()
    };
    let mut stream = c.stream(req).await.unwrap().into_inner();
    assert!(stream.next().await.unwrap().is_ok());
    assert!(stream.next().await.unwrap().is_ok());
    let end = stream.next().await.expect("a status after the messages");
    let err = end.expect_err("the stream ends with PERMISSION_DENIED");
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
}

#[tokio::test]
async fn websocket_upgrades_and_echoes_through_the_proxy() {
    let (proxy, up) = example_mesh().await;
    let mut ws = tokio::time::timeout(T, ws_connect(proxy.listener(), "h1", "/ws"))
        .await
        .unwrap()
        .expect("websocket upgrade through the proxy");
    ws.send(Message::text("hello")).await.unwrap();
    let got = tokio::time::timeout(T, ws.next()).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::text("hello"));
    let blob = vec![7u8; 100_000];
    ws.send(Message::binary(blob.clone())).await.unwrap();
    let got = tokio::time::timeout(T, ws.next()).await.unwrap();
    assert_eq!(got.unwrap().unwrap(), Message::binary(blob));
    ws.close(None).await.unwrap();
    let r = up.requests();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].uri.path(), "/ws");
}
