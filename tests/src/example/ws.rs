//! WebSocket echo at `/ws`: an HTTP/1.1 upgrade, then every text and
//! binary message is sent back as it came.

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::SERVED_BY;
use crate::body::{BoxBody, empty, full};

pub(super) fn upgrade(name: &str, mut req: Request<BoxBody>) -> Response<BoxBody> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let wants = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(key), true) = (key, wants) else {
        let mut resp = Response::new(full("websocket upgrade required\n"));
        *resp.status_mut() = StatusCode::UPGRADE_REQUIRED;
        return resp;
    };

    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        echo(ws).await;
    });

    let accept = derive_accept_key(key.as_bytes());
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    if let Ok(v) = HeaderValue::from_str(name) {
        h.insert(SERVED_BY, v);
    }
    resp
}

async fn echo<S>(mut ws: WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(Ok(msg)) = ws.next().await {
        let done = msg.is_close();
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
        if done {
            let _ = ws.close(None).await;
            return;
        }
    }
}
