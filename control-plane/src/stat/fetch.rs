//! One `GET /metrics` over plain HTTP/1.1 to a proxy's admin listener.

use std::time::Duration;

use anyhow::{Context, ensure};
use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// How long one scrape may take, connect included.
const TIMEOUT: Duration = Duration::from_secs(5);

/// The body of `http://{addr}/metrics`.
pub async fn metrics(addr: &str) -> anyhow::Result<String> {
    tokio::time::timeout(TIMEOUT, get(addr))
        .await
        .context("no answer within 5s")?
}

async fn get(addr: &str) -> anyhow::Result<String> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let req = Request::get("/metrics")
        .header(http::header::HOST, addr)
        .body(Empty::<Bytes>::new())?;
    let rsp = send.send_request(req).await?;
    ensure!(
        rsp.status().is_success(),
        "/metrics answered {}",
        rsp.status()
    );
    let body = rsp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
