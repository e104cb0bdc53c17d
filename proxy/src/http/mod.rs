//! HTTP plumbing shared by the request path: the body types that flow
//! through the proxy, strict framing checks, and the headers a proxy must
//! remove or set (RFC 9110 §7.6, RFC 9112).

pub mod body;
pub mod framing;
pub mod headers;
pub mod strict;
pub mod target;
