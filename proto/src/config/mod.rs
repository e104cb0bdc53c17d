//! The config model: what a `vakt-proxy` file and a control-plane
//! snapshot describe. Keys are camelCase; routes take the shape of a
//! Gateway API HTTPRoute rule so rules carry over from an HTTPRoute.
//!
//! Defaults live beside each field as `default_*` functions, so the README,
//! the loader and the proxy agree on one value.

mod backend;
mod edge;
mod listener;
mod route;
mod tracing;

pub use backend::*;
pub use edge::*;
pub use listener::*;
pub use route::*;
pub use tracing::*;

use serde::{Deserialize, Serialize};

use crate::Duration;

/// A whole proxy configuration.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub admin: Admin,
    #[serde(default)]
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default)]
    pub backends: Vec<Backend>,
    /// Downstream protection limits, applied on every listener.
    #[serde(default)]
    pub limits: Limits,
    /// Named rate limits that several routes may share on purpose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<NamedRateLimit>,
    #[serde(default)]
    pub drain: Drain,
    /// Trace context and span export; off by default.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tracing: Tracing,
}

/// The admin listener: `/live`, `/ready`, `/metrics`, `/backends`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Admin {
    /// Default `127.0.0.1:15000`.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

/// What happens on SIGTERM: `/ready` fails at once, new connections are
/// still accepted for `delay` (so endpoint removal can spread), then
/// listeners close and requests in flight get up to `timeout` to finish.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Drain {
    /// Default `0s`.
    #[serde(default)]
    pub delay: Duration,
    /// Default `20s`, below Kubernetes' default grace period of 30 s.
    #[serde(default = "default_drain_timeout")]
    pub timeout: Duration,
}

impl Default for Admin {
    fn default() -> Self {
        Self {
            address: default_admin_address(),
        }
    }
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            delay: Duration::default(),
            timeout: default_drain_timeout(),
        }
    }
}

fn default_admin_address() -> String {
    "127.0.0.1:15000".into()
}

fn default_drain_timeout() -> Duration {
    Duration::from_secs(20)
}

pub(crate) fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
