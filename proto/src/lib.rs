//! The model that a `vakt-proxy` config file and a `vakt-control` snapshot
//! both describe: listeners, routes, backends and their policies.
//!
//! It is defined once here and shared by the proxy and the control plane.
//! [`load`] turns YAML into a [`Config`], naming every problem it finds;
//! [`validate`] checks the parts that refer to one another.

#![forbid(unsafe_code)]

pub mod config;
pub mod duration;
pub mod load;
pub mod problem;
pub mod validate;

pub use config::Config;
pub use duration::Duration;
pub use load::{load_file, load_str};
pub use problem::{Problem, Problems};

pub mod convert;
pub mod httproute;
pub mod pb;

/// Re-exported so the proxy reaches gRPC through this crate alone.
pub use prost;
/// Re-exported so the proxy reaches gRPC through this crate alone.
pub use tonic;
