//! The vakt integration kit: the example service that the demo, the tests
//! and the benchmarks use as an upstream, and the harness that drives a real
//! `vakt-proxy` process against in-process upstreams over loopback sockets.
//!
//! - [`bins`] finds (and builds) the workspace binaries for tests that
//!   run whole processes.
//! - [`upstream`] starts servers on `127.0.0.1:0` that record what they
//!   receive: HTTP/1.1 + h2c, gRPC, WebSocket, and a raw TCP mock with
//!   scripted replies for framing and smuggling cases.
//! - [`proxy`] writes a config, spawns `vakt-proxy`, waits for `/ready` and
//!   captures its log lines.
//! - [`client`] holds raw TCP, HTTP/1.1, h2c, gRPC and metrics helpers.
//! - [`fault`] serves upstreams that fail on demand and reads the
//!   proxy's view of its backends.
//! - [`external`] starts real PostgreSQL and Redis servers for TCP
//!   proxying, and drives them with `psql` and `redis-cli`.
//! - [`lab`] builds a mesh's network namespaces, veth links and
//!   processes in them for the tests that run as root, and removes them
//!   all.
//! - [`netns`] creates network namespaces (as root) where iptables
//!   redirects connections to a proxy, for interception tests.
//! - [`ports`] hands out free loopback addresses without collisions
//!   between tests that run in parallel.

#![forbid(unsafe_code)]

pub mod bins;
pub mod body;
pub mod client;
pub mod example;
pub mod external;
pub mod fault;
pub mod lab;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod server;
pub mod upstream;

/// The example service's protobuf messages, client and server.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("vakt.example.v1");
}
