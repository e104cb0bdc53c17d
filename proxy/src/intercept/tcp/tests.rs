//! TCP connects against real loopback sockets: failures feed the breaker
//! (on a paused clock for its open period), successes close it, and the
//! connection limit refuses at once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use vakt_api::config::Protocol;

use super::*;
use crate::backend::breaker::BreakerState;

fn backend(endpoint: SocketAddr, policy: &str) -> Arc<Backend> {
    let yaml =
        format!("backends: [{{name: db, endpoints: [\"{endpoint}\"], protocol: tcp, {policy}}}]");
    let config = vakt_api::load_str(&yaml).expect("a valid backend");
    assert_eq!(config.backends[0].protocol, Protocol::Tcp);
    Backend::new(&config.backends[0]).unwrap()
}

/// An address nothing listens on (bound, then closed).
fn closed_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(start_paused = true)]
async fn connect_failures_open_the_breaker_and_a_probe_closes_it() {
    let addr = closed_addr();
    let b = backend(
        addr,
        "circuitBreaker: {consecutiveFailures: 2, openFor: 10s}",
    );
    let breaker = b.breaker.clone().unwrap();
    for _ in 0..2 {
        let e = connect_backend(&b).await.unwrap_err();
        assert_eq!(e, TcpError::ConnectFailed);
    }
    assert_eq!(breaker.state(), BreakerState::Open);
    assert_eq!(
        connect_backend(&b).await.unwrap_err(),
        TcpError::BreakerOpen
    );

    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::time::advance(Duration::from_secs(9)).await;
    assert_eq!(
        connect_backend(&b).await.unwrap_err(),
        TcpError::BreakerOpen
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    let (stream, _slot) = connect_backend(&b).await.expect("the probe connects");
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(accepted.peer_addr().unwrap(), stream.local_addr().unwrap());
    assert_eq!(breaker.state(), BreakerState::Closed);
}

#[tokio::test]
async fn a_connection_over_the_limit_is_refused_at_once() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let b = backend(
        listener.local_addr().unwrap(),
        "limits: {maxConnections: 1}",
    );
    let first = connect_backend(&b).await.unwrap();
    assert_eq!(connect_backend(&b).await.unwrap_err(), TcpError::Limit);
    drop(first);
    assert!(connect_backend(&b).await.is_ok());
}

#[tokio::test]
async fn a_refusing_endpoint_is_skipped_for_another() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let down = closed_addr();
    let yaml = format!(
        "backends: [{{name: db, endpoints: [\"{down}\", \"{up}\"], protocol: tcp, \
         loadBalancer: round-robin}}]"
    );
    let config = vakt_api::load_str(&yaml).unwrap();
    let b = Backend::new(&config.backends[0]).unwrap();
    for _ in 0..4 {
        let (stream, _slot) = connect_backend(&b).await.expect("one endpoint is up");
        assert_eq!(stream.peer_addr().unwrap(), up);
    }
}
