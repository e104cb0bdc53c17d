//! WebSocket clients (HTTP/1.1 upgrade).

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Opens a WebSocket to `ws://host/path` over a TCP connection to `addr`.
pub async fn ws_connect(
    addr: SocketAddr,
    host: &str,
    path: &str,
) -> Result<WebSocketStream<TcpStream>, tungstenite::Error> {
    let stream = TcpStream::connect(addr).await?;
    let req = format!("ws://{host}{path}").into_client_request()?;
    let (ws, _resp) = tokio_tungstenite::client_async(req, stream).await?;
    Ok(ws)
}
