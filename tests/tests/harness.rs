//! The kit on its own, without a proxy: the example service answers over
//! HTTP/1.1, h2c, gRPC and WebSocket, and the upstreams record what they
//! receive.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{Request, StatusCode, Version};
use tokio_tungstenite::tungstenite::Message;
use vakt_tests::body::{empty, full};
use vakt_tests::client::{HttpClient, RawClient, grpc_client, raw_request, ws_connect};
use vakt_tests::example::{CHAIN_STATUS, Call, Echoed, ExampleConfig, sha256_hex};
use vakt_tests::pb::{EchoRequest, StreamRequest};
use vakt_tests::server::handler;
use vakt_tests::upstream::{RawReply, RawUpstream, Upstream};

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn echo_over_h1_reports_the_request_as_received() {
    let up = Upstream::named("svc-a").await;
    let mut c = HttpClient::h1(up.addr()).await.unwrap();
    let req = Request::post("/echo?x=1")
        .header("host", "svc-a")
        .header("x-twice", "1")
        .header("x-twice", "2")
        .body(full("hello"))
        .unwrap();
    let resp = c.send(req).await.unwrap();

    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.header("x-served-by"), Some("svc-a"));
    let e: Echoed = resp.json().unwrap();
    assert_eq!((e.method.as_str(), e.uri.as_str()), ("POST", "/echo?x=1"));
    assert_eq!(e.version, "HTTP/1.1");
    assert_eq!(e.authority.as_deref(), Some("svc-a"));
    assert_eq!(e.header_all("x-twice"), ["1", "2"]);
    assert_eq!(e.body.as_deref(), Some("hello"));
    assert_eq!(e.body_sha256, sha256_hex(b"hello"));

    let log = up.requests();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].body, b"hello");
    assert_eq!(log[0].header_all("x-twice"), ["1", "2"]);
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn h2c_answers_with_overrides_and_trailers() {
    let up = Upstream::named("svc-b").await;
    let mut c = HttpClient::h2c(up.addr()).await.unwrap();

    let resp = c.get("svc-b", "/echo?status=418").await.unwrap();
    assert_eq!(resp.version, Version::HTTP_2);
    assert_eq!(resp.status, StatusCode::IM_A_TEAPOT);
    let e: Echoed = resp.json().unwrap();
    assert_eq!(e.version, "HTTP/2.0");
    assert_eq!(e.authority.as_deref(), Some("svc-b"));

    let resp = c.get("svc-b", "/data?size=1000&trailers=1").await.unwrap();
    assert_eq!(resp.body.len(), 1000);
    let trailers = resp.trailers.expect("trailers");
    assert_eq!(trailers["x-example-trailer"], "done");

    let resp = c.get("svc-b", "/").await.unwrap();
    assert_eq!(resp.text(), "svc-b\n");
    assert_eq!(up.request_count(), 3);
    assert_eq!(up.requests()[2].version, Version::HTTP_2);
    assert_eq!(up.connections(), 1);
}

#[tokio::test]
async fn health_flips_and_failures_are_injected() {
    let config = ExampleConfig {
        failure_rate: 1.0,
        failure_status: StatusCode::BAD_GATEWAY,
        ..ExampleConfig::named("flaky")
    };
    let up = Upstream::example(config).await;
    let mut c = HttpClient::h1(up.addr()).await.unwrap();
    assert_eq!(c.get("flaky", "/x").await.unwrap().status, 502);
    assert_eq!(c.get("flaky", "/x?fail_rate=0").await.unwrap().status, 200);

    assert_eq!(c.get("flaky", "/healthz").await.unwrap().status, 200);
    let flip = Request::post("/admin/health?ok=false")
        .body(empty())
        .unwrap();
    assert_eq!(c.send(flip).await.unwrap().status, 503);
    assert_eq!(c.get("flaky", "/healthz").await.unwrap().status, 503);
    assert!(!up.example_service().unwrap().healthy());
}

#[tokio::test]
async fn custom_handlers_see_the_request() {
    let up = Upstream::start(handler(|req| async move {
        let mut resp = http::Response::new(full(req.uri().path().to_owned()));
        *resp.status_mut() = StatusCode::CREATED;
        resp
    }))
    .await;
    let resp = vakt_tests::client::get(up.addr(), "/custom").await.unwrap();
    assert_eq!(
        (resp.status.as_u16(), resp.text().as_str()),
        (201, "/custom")
    );
    assert_eq!(up.requests()[0].uri.path(), "/custom");
}

#[tokio::test]
async fn grpc_unary_answers_and_fails_on_request() {
    let up = Upstream::named("grpc-a").await;
    let mut c = grpc_client(up.addr()).await.unwrap();
    let mut req = tonic::Request::new(EchoRequest {
        message: "hi".into(),
        size: 10,
        ..Default::default()
    });
    req.metadata_mut().insert("x-who", "me".parse().unwrap());
    let reply = c.echo(req).await.unwrap().into_inner();
    assert_eq!(
        (reply.message.as_str(), reply.served_by.as_str()),
        ("hi", "grpc-a")
    );
    assert_eq!(reply.payload.len(), 10);
    assert!(reply.metadata.contains(&"x-who: me".to_owned()));

    let failing = EchoRequest {
        status: tonic::Code::Unavailable as i32,
        ..Default::default()
    };
    let err = c.echo(failing).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].uri.path(), "/vakt.example.v1.Echo/Echo");
    assert_eq!(seen[0].version, Version::HTTP_2);
}

#[tokio::test]
async fn grpc_server_stream_ends_with_the_requested_status() {
    let up = Upstream::named("grpc-b").await;
    let mut c = grpc_client(up.addr()).await.unwrap();
    let req = StreamRequest {
        count: 3,
        end_status: tonic::Code::ResourceExhausted as i32,
        ..Default::default()
    };
    let mut stream = c.stream(req).await.unwrap().into_inner();
    let mut got = Vec::new();
    let end = loop {
        match stream.message().await {
            Ok(Some(m)) => got.push(m.index),
            Ok(None) => break tonic::Code::Ok,
            Err(s) => break s.code(),
        }
    };
    assert_eq!(got, [0, 1, 2]);
    assert_eq!(end, tonic::Code::ResourceExhausted);

    let ok = StreamRequest {
        count: 2,
        ..Default::default()
    };
    let mut stream = c.stream(ok).await.unwrap().into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_none());
    let trailers = stream.trailers().await.unwrap().unwrap();
    assert_eq!(trailers.get("grpc-status").unwrap(), "0");
}

/// Breaks off a stream after two messages, the stream alone or the whole
/// connection; returns the messages seen, the final status and the
/// upstream connections still open.
async fn broken_stream(reset_connection: bool) -> (usize, tonic::Status, usize) {
    let up = Upstream::named("grpc-c").await;
    let mut c = grpc_client(up.addr()).await.unwrap();
    let req = StreamRequest {
        count: 5,
        fail_after: Some(2),
        reset_connection,
        ..Default::default()
    };
    let mut stream = c.stream(req).await.unwrap().into_inner();
    let mut n = 0;
    let status = loop {
        match tokio::time::timeout(T, stream.message())
            .await
            .expect("ends in time")
        {
            Ok(Some(_)) => n += 1,
            Ok(None) => panic!("stream ended cleanly"),
            Err(s) => break s,
        }
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    (n, status, up.open_connections())
}

#[tokio::test]
async fn grpc_stream_breaks_off_without_trailers() {
    // The handler's own status ("break") never reaches the client: the
    // client only sees the transport failing.
    let (n, status, open) = broken_stream(false).await;
    assert_eq!(n, 2);
    assert_ne!(status.message(), "break", "{status:?}");
    assert!(status.metadata().get("grpc-status").is_none());
    assert_eq!(open, 1, "only the stream is reset");

    let (n, status, open) = broken_stream(true).await;
    assert_eq!(n, 2);
    assert_ne!(status.message(), "break", "{status:?}");
    assert_eq!(open, 0, "the connection is reset");
}

#[tokio::test]
async fn grpc_client_streaming_and_bidi() {
    let up = Upstream::named("grpc-d").await;
    let mut c = grpc_client(up.addr()).await.unwrap();
    let msgs = (0..4).map(|i| EchoRequest {
        message: format!("m{i}"),
        ..Default::default()
    });
    let reply = c.collect(futures_util::stream::iter(msgs)).await.unwrap();
    assert_eq!(reply.into_inner().messages, 4);

    // Bidi: each reply arrives before the next message is sent.
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut replies = c.chat(outbound).await.unwrap().into_inner();
    for i in 0..3 {
        let m = EchoRequest {
            message: format!("c{i}"),
            ..Default::default()
        };
        tx.send(m).await.unwrap();
        let r = tokio::time::timeout(T, replies.message()).await.unwrap();
        let r = r.unwrap().unwrap();
        assert_eq!((r.message, r.index), (format!("c{i}"), i));
    }
    drop(tx);
    assert!(replies.message().await.unwrap().is_none());
}

#[tokio::test]
async fn websocket_echoes_text_and_binary() {
    let up = Upstream::named("ws").await;
    let mut ws = ws_connect(up.addr(), "ws.local", "/ws").await.unwrap();
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("hello"));
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap(),
        Message::binary(vec![1u8, 2, 3])
    );
    ws.close(None).await.unwrap();
    assert_eq!(up.requests()[0].header("upgrade"), Some("websocket"));
}

#[tokio::test]
async fn raw_upstream_records_bytes_and_keeps_a_204_open() {
    let up = RawUpstream::sequence(vec![
        RawReply::respond("HTTP/1.1 204 No Content\r\n\r\n"),
        RawReply::ok("ok"),
    ])
    .await;
    let mut c = RawClient::connect(up.addr()).await.unwrap();
    let first = b"POST /a HTTP/1.1\r\nHost: x\r\nX-Case: Kept\r\nContent-Length: 3\r\n\r\nabc";
    c.send(first).await.unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_eq!((r.status, r.body.len()), (204, 0));

    c.send(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_eq!((r.status, r.body_text().as_str()), (200, "ok"));

    let conns = up.connections();
    assert_eq!(conns.len(), 1);
    assert!(conns[0].bytes.starts_with(first));
    let reqs = &conns[0].requests;
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[0].header("x-case"), Some("Kept"));
    assert_eq!(reqs[0].headers[1].0, "X-Case");
    assert_eq!(reqs[0].body, b"abc");
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].target.as_str()),
        ("GET", "/b")
    );
}

#[tokio::test]
async fn raw_upstream_closes_resets_and_skips_bodies() {
    // Closes right after the response, without `Connection: close`.
    let up = RawUpstream::start(|_| RawReply::ok("bye").close()).await;
    let x = raw_request(up.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .await
        .unwrap();
    assert!(x.closed);
    assert_eq!(x.responses[0].body, b"bye");
    assert!(!x.responses[0].closes());

    // Resets before answering.
    let up = RawUpstream::start(|_| RawReply::new().reset()).await;
    let x = raw_request(up.addr(), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", T)
        .await
        .unwrap();
    assert!(x.closed && x.bytes.is_empty());

    // 417 before reading the body, then the body is read and discarded.
    let up = RawUpstream::start(|req| match req.index {
        0 => RawReply::new()
            .send("HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n")
            .read_body(),
        _ => RawReply::ok("second"),
    })
    .await;
    let mut c = RawClient::connect(up.addr()).await.unwrap();
    c.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(c.read_response(T).await.unwrap().status, 417);
    // The client sends its body anyway; the upstream reads and drops it.
    c.send(b"abcdGET /up HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let r = c.read_response(T).await.unwrap();
    assert_eq!(r.body, b"second");
    let reqs = up.wait_for_requests(2, T).await;
    assert_eq!(reqs[0].body, b"abcd");
    assert_eq!(
        (reqs[1].method.as_str(), reqs[1].target.as_str()),
        ("GET", "/up")
    );
}

#[tokio::test]
async fn raw_upstream_parses_unread_bodies_as_requests() {
    // A naive server that never reads bodies sees a smuggled request.
    let up = RawUpstream::start(|_| RawReply::new().send("HTTP/1.1 200 OK\r\n\r\n")).await;
    let smuggled = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 31\r\n\r\n\
                    GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut c = RawClient::connect(up.addr()).await.unwrap();
    c.send(smuggled.as_bytes()).await.unwrap();
    let reqs = up.wait_for_requests(2, T).await;
    assert_eq!(reqs[1].target, "/admin");

    // Chunked bodies are decoded when read.
    let up = RawUpstream::start(|_| RawReply::ok("")).await;
    let chunked = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
                    3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\nX-T: 1\r\n\r\n";
    let mut c = RawClient::connect(up.addr()).await.unwrap();
    c.send(chunked).await.unwrap();
    c.read_response(T).await.unwrap();
    assert_eq!(up.requests()[0].body, b"abcde");
}

#[tokio::test]
async fn raw_upstream_stalls_while_recording() {
    let up = RawUpstream::start(|_| RawReply::new().stall()).await;
    let mut c = RawClient::connect(up.addr()).await.unwrap();
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nmore bytes")
        .await
        .unwrap();
    assert!(c.read_response(Duration::from_millis(200)).await.is_err());
    up.wait_for_requests(1, T).await;
    c.shutdown_write().await.unwrap();
    let deadline = tokio::time::Instant::now() + T;
    while !up.connections()[0].peer_closed && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let conn = &up.connections()[0];
    assert!(conn.peer_closed);
    assert!(conn.bytes.ends_with(b"more bytes"));
}

#[tokio::test]
async fn chain_calls_the_next_service_and_fails_on_demand() {
    let b = Upstream::named("svc-b").await;
    let url = format!("http://{}/end", b.addr());
    let config = ExampleConfig {
        call: Some(Call::parse(&url, Some("b.example")).unwrap()),
        ..ExampleConfig::named("svc-a")
    };
    let a = Upstream::example(config).await;
    let mut c = HttpClient::h1(a.addr()).await.unwrap();
    let resp = c.get("a", "/chain").await.unwrap();
    assert_eq!(resp.status, 200);
    assert_eq!(resp.text(), "svc-a -> svc-b\n");
    assert_eq!(resp.header(CHAIN_STATUS), Some("200"));

    let mut cb = HttpClient::h1(b.addr()).await.unwrap();
    let on = Request::post("/admin/fail?on=true").body(empty()).unwrap();
    assert_eq!(cb.send(on).await.unwrap().text(), "failing\n");
    assert_eq!(cb.get("b", "/healthz").await.unwrap().status, 200);
    let resp = c.get("a", "/chain").await.unwrap();
    assert_eq!(resp.status, 503);
    assert_eq!(resp.text(), "svc-a -> failure injected by svc-b\n");
    let off = Request::post("/admin/fail?on=false").body(empty()).unwrap();
    assert_eq!(cb.send(off).await.unwrap().text(), "serving\n");
    assert_eq!(c.get("a", "/chain").await.unwrap().status, 200);

    b.stop().await;
    let resp = c.get("a", "/chain").await.unwrap();
    assert_eq!(resp.status, 502);
    assert_eq!(resp.header(CHAIN_STATUS), Some("502"));
    let lone = Upstream::named("lone").await;
    let mut c = HttpClient::h1(lone.addr()).await.unwrap();
    assert_eq!(c.get("x", "/chain").await.unwrap().status, 404);
}
