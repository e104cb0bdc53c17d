//! Messages and gRPC stubs generated from `proto/vakt/**/*.proto`; the
//! module tree follows the protobuf packages (`vakt.config.v1` is
//! `pb::config::v1`).
//!
//! `config` mirrors the YAML model ([`crate::config`]); [`crate::convert`]
//! turns one into the other. `control` is the operators' config service,
//! `discovery` the stream every proxy keeps open.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// The route and backend model as protobuf messages.
pub mod config {
    /// `vakt.config.v1`.
    pub mod v1 {
        tonic::include_proto!("vakt.config.v1");
    }
}

/// The operators' config service.
pub mod control {
    /// `vakt.control.v1`.
    pub mod v1 {
        tonic::include_proto!("vakt.control.v1");
    }
}

/// The proxies' discovery stream.
pub mod discovery {
    /// `vakt.discovery.v1`.
    pub mod v1 {
        tonic::include_proto!("vakt.discovery.v1");
    }
}

/// Adds `authorization: Bearer <token>` to every call of a client.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::AsciiMetadataValue);

impl Bearer {
    /// Fails when the token is not printable ASCII.
    pub fn new(token: &str) -> Result<Self, tonic::metadata::errors::InvalidMetadataValue> {
        format!("Bearer {token}").parse().map(Self)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}
