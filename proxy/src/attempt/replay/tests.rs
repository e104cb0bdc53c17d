use std::convert::Infallible;
use std::sync::Mutex as StdMutex;

use http::{Request, Response, StatusCode};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::*;

type Frames = Vec<FrameResult>;
type Chunked = StreamBody<futures_util::stream::Iter<std::vec::IntoIter<FrameResult>>>;
type FrameResult = Result<Frame<Bytes>, Infallible>;

fn chunked(chunks: &[&'static str], trailers: bool) -> Chunked {
    let mut frames: Frames = chunks
        .iter()
        .map(|c| Ok(Frame::data(Bytes::from_static(c.as_bytes()))))
        .collect();
    if trailers {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", "0".parse().unwrap());
        frames.push(Ok(Frame::trailers(t)));
    }
    StreamBody::new(futures_util::stream::iter(frames))
}

async fn read<B>(body: ReplayBody<B>) -> Result<(Bytes, Option<HeaderMap>), ReplayError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let collected = body.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok((collected.to_bytes(), trailers))
}

#[tokio::test]
async fn replays_a_chunked_body_and_trailers_byte_for_byte() {
    let body = ReplayBody::new(chunked(&["hello ", "replayed ", "world"], true), 64);
    let first = read(body.clone()).await.unwrap();
    assert_eq!(first.0, "hello replayed world");
    assert_eq!(first.1.as_ref().unwrap()["grpc-status"], "0");
    assert!(body.is_replayable());
    let second = read(body.clone()).await.unwrap();
    assert_eq!(second, first);
    let third = read(body.clone()).await.unwrap();
    assert_eq!(third, first);
}

#[tokio::test]
async fn a_body_exactly_at_the_limit_is_replayable() {
    let body = ReplayBody::new(chunked(&["12345", "67890"], false), 10);
    read(body.clone()).await.unwrap();
    assert!(body.is_replayable());
    assert_eq!(read(body.clone()).await.unwrap().0, "1234567890");
}

#[tokio::test]
async fn a_body_over_the_limit_streams_once_and_is_not_replayable() {
    let body = ReplayBody::new(chunked(&["12345", "67890", "x"], false), 10);
    let first = read(body.clone()).await.unwrap();
    assert_eq!(first.0, "1234567890x", "the first attempt gets it all");
    assert!(!body.is_replayable());
    let again = read(body.clone()).await;
    assert!(
        matches!(again, Err(ReplayError::NotReplayable)),
        "{again:?}"
    );
}

#[tokio::test]
async fn a_retry_resumes_after_replaying_what_was_read() {
    let body = ReplayBody::new(chunked(&["a", "bb", "ccc"], true), 64);
    let mut first = body.clone();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(frame.into_data().unwrap(), "a");
    drop(first);
    assert!(body.is_replayable());
    let (bytes, trailers) = read(body.clone()).await.unwrap();
    assert_eq!(bytes, "abbccc");
    assert!(trailers.is_some());
}

#[tokio::test]
async fn streams_before_the_body_is_complete() {
    let (mut tx, rx) = Channel::<Bytes, Infallible>::new(1);
    let body = ReplayBody::new(rx, 64);
    let mut first = body.clone();
    tx.send_data(Bytes::from_static(b"one")).await.unwrap();
    let frame = first.frame().await.unwrap().unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        "one",
        "sent before the rest exists"
    );
    let second_chunk = tokio::spawn(async move {
        tx.send_data(Bytes::from_static(b"two")).await.unwrap();
    });
    let rest = first.collect().await.unwrap().to_bytes();
    second_chunk.await.unwrap();
    assert_eq!(rest, "two");
    assert_eq!(read(body.clone()).await.unwrap().0, "onetwo");
}

#[tokio::test]
async fn one_reader_at_a_time() {
    let body = ReplayBody::new(chunked(&["a", "b"], false), 64);
    let mut first = body.clone();
    first.frame().await.unwrap().unwrap();
    assert!(!body.is_replayable(), "held by the first attempt");
    let mut second = body.clone();
    let err = second.frame().await.unwrap().unwrap_err();
    assert!(matches!(err, ReplayError::Busy));
    drop(first);
    assert_eq!(read(body.clone()).await.unwrap().0, "ab");
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_never_copied() {
    let body = ReplayBody::new(Full::new(Bytes::from(vec![7u8; 100])), 10);
    assert_eq!(body.size_hint().exact(), Some(100));
    assert!(
        body.is_replayable(),
        "nothing read yet: a refused connect may retry"
    );
    let unread = body.clone();
    drop(unread);
    assert!(body.is_replayable());
    assert_eq!(read(body.clone()).await.unwrap().0.len(), 100);
    assert!(!body.is_replayable());
}

#[tokio::test]
async fn an_empty_body_ends_at_once() {
    let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 64);
    assert!(body.clone().is_end_stream());
    assert_eq!(read(body.clone()).await.unwrap().0, "");
    assert_eq!(read(body).await.unwrap().0, "");
}

/// An upstream that reads each request body in full, records it, and
/// answers 503 to the first request and 200 after.
async fn upstream() -> (std::net::SocketAddr, Arc<StdMutex<Vec<(Bytes, bool)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(StdMutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let log = log.clone();
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let log = log.clone();
                async move {
                    let chunked = req.headers().get("transfer-encoding").is_some();
                    let body = req.into_body().collect().await?.to_bytes();
                    let mut log = log.lock().unwrap();
                    log.push((body, chunked));
                    let status = if log.len() == 1 { 503 } else { 200 };
                    let mut resp = Response::new(Full::new(Bytes::new()));
                    *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(async move {
                let io = TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    (addr, seen)
}

async fn send<B>(addr: std::net::SocketAddr, body: ReplayBody<B>) -> StatusCode
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::post("/upload")
        .header("host", "upstream")
        .body(body)
        .unwrap();
    let status = sender.send_request(req).await.unwrap().status();
    drop(sender);
    let _ = conn.await;
    status
}

#[tokio::test]
async fn a_retried_upload_reaches_the_upstream_unchanged() {
    let (addr, seen) = upstream().await;
    let (mut tx, rx) = Channel::<Bytes, Infallible>::new(4);
    let body = ReplayBody::new(rx, DEFAULT_REPLAY_LIMIT);
    let feeder = tokio::spawn(async move {
        for i in 0..50u32 {
            let chunk = format!("chunk {i:03} of the request body\n");
            tx.send_data(Bytes::from(chunk)).await.unwrap();
        }
    });
    assert_eq!(
        send(addr, body.clone()).await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    feeder.await.unwrap();
    assert!(body.is_replayable());
    assert_eq!(send(addr, body.clone()).await, StatusCode::OK);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0.len(), 50 * 30);
    assert_eq!(seen[0], seen[1], "same bytes, same framing");
    assert!(seen[1].1, "sent chunked both times");
}
