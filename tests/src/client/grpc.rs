//! tonic clients of the example service (`vakt.example.v1.Echo`).

use std::net::SocketAddr;

use http::Uri;
use tonic::transport::{Channel, Endpoint};

use crate::pb::echo_client::EchoClient;

/// A client of the example service at `addr`, with `addr` as authority.
pub async fn grpc_client(addr: SocketAddr) -> Result<EchoClient<Channel>, tonic::transport::Error> {
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    Ok(EchoClient::new(channel))
}

/// A client that connects to `addr` (a proxy listener, say) and sends
/// `authority` as `:authority`, so routes by hostname apply.
pub async fn grpc_client_for(
    addr: SocketAddr,
    authority: &str,
) -> Result<EchoClient<Channel>, tonic::transport::Error> {
    let origin: Uri = format!("http://{authority}")
        .parse()
        .expect("authority must form a URI");
    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .origin(origin)
        .connect()
        .await?;
    Ok(EchoClient::new(channel))
}
