//! Trace context: whether the proxy takes part in W3C traces, how often a
//! trace it starts is sampled, and where its spans go.

use serde::{Deserialize, Serialize};

use crate::Duration;

/// Tracing of requests. When off (the default), `traceparent` and
/// `tracestate` cross the proxy untouched. When on, the proxy makes a
/// span of each request: it keeps an incoming trace id, starts a trace
/// when none (or an invalid one) arrives, and sends its own span id
/// upstream as the parent id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tracing {
    /// Default `false`.
    #[serde(default)]
    pub enabled: bool,
    /// Share of the traces the proxy starts that are sampled, from 0 to 1;
    /// default `0.01`. A trace that arrives keeps its own sampled flag.
    #[serde(default = "default_sample_rate")]
    pub sample_rate: f64,
    /// Where sampled spans are exported; none by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub otlp: Option<Otlp>,
}

/// An OTLP/gRPC collector (`opentelemetry.proto.collector.trace.v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Otlp {
    /// `http://host:port`, such as `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `service.name` of the exported spans; default `vakt-proxy`.
    #[serde(default = "default_service_name")]
    pub service_name: String,
    /// Time allowed for one export call; default `10s`.
    #[serde(default = "default_export_timeout")]
    pub timeout: Duration,
}

impl Otlp {
    /// A collector at `endpoint`, other keys at their defaults.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            service_name: default_service_name(),
            timeout: default_export_timeout(),
        }
    }
}

impl Default for Tracing {
    fn default() -> Self {
        Self {
            enabled: false,
            sample_rate: default_sample_rate(),
            otlp: None,
        }
    }
}

fn default_sample_rate() -> f64 {
    0.01
}

fn default_service_name() -> String {
    "vakt-proxy".into()
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}
