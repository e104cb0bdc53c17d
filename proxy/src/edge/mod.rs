//! The edge role: what an edge listener does around a request before and
//! after routing. In the order of a request's path:
//!
//! 1. [`conn_limit`]: on accept, refuse a client address holding too many
//!    connections.
//! 2. [`tls`]: terminate TLS (SNI, ALPN, certificate reload).
//! 3. [`client_ip`]: on each request, the client address and the
//!    `x-forwarded-for` to send upstream.
//! 4. [`auth`]: after the route is chosen, check the route's credentials.
//! 5. [`ratelimit`]: then take a token from the route's bucket.

pub mod auth;
pub mod client_ip;
pub mod conn_limit;
pub mod ratelimit;
pub mod tls;
pub mod watch;
