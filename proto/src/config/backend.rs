//! Backends: named destination services, their endpoints and the traffic
//! policy that guards them (pool, balancer, breaker, ejection, limits).

use serde::{Deserialize, Serialize};

use crate::Duration;

/// A destination service and its policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Backend {
    pub name: String,
    /// `ip:port` or `host:port`; host names are re-resolved over time.
    pub endpoints: Vec<String>,
    /// Service addresses (`ip:port`, a cluster IP say) that applications
    /// dial for this backend. A transparent outbound listener sends a
    /// connection whose original destination is one of them here, when no
    /// route matches first. Each address belongs to one backend at most.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<String>,
    /// Default `http1`.
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub protocol: Protocol,
    #[serde(default, skip_serializing_if = "super::is_default")]
    pub load_balancer: LoadBalancer,
    /// Default `2s`.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    #[serde(default)]
    pub connection_pool: ConnectionPool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<CircuitBreaker>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub limits: BackendLimits,
    #[serde(default)]
    pub retry_budget: RetryBudget,
    /// TLS toward the endpoints; plain TCP when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// What the proxy speaks to a backend's endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http1,
    Http2,
    /// Opaque bytes: each downstream connection is joined to one upstream
    /// connection. No routes, retries or HTTP health checks apply; the
    /// connect timeout, `limits.maxConnections` and the breaker (fed by
    /// connect results) do.
    Tcp,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadBalancer {
    #[default]
    P2cEwma,
    RoundRobin,
    LeastRequest,
}

/// Idle upstream connections kept per endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    /// Default 32.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_endpoint: usize,
    /// Default `4s`: below the 5 s keep-alive of common app servers, so the
    /// proxy closes an idle connection before the upstream does.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: Duration,
}

/// The backend's circuit breaker. Any of the three trip conditions may be
/// set; with none set, `consecutiveFailures: 5` applies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive_failures: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<FailureRate>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow_call: Option<SlowCall>,
    /// First open period; default `30s`. Grows on each re-trip, with jitter.
    #[serde(default = "default_open_for")]
    pub open_for: Duration,
    /// Default `5m`.
    #[serde(default = "default_max_open_for")]
    pub max_open_for: Duration,
    /// Probes admitted at once while half-open; default 1.
    #[serde(default = "default_half_open")]
    pub half_open_requests: u32,
    /// gRPC status codes that count as failures; default
    /// `[4, 8, 13, 14]` (DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL,
    /// UNAVAILABLE).
    #[serde(default = "default_grpc_failure_codes")]
    pub grpc_failure_codes: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FailureRate {
    pub percent: u32,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
    #[serde(default = "default_window")]
    pub window: Duration,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SlowCall {
    pub threshold: Duration,
    pub percent: u32,
    #[serde(default = "default_min_requests")]
    pub min_requests: u32,
}

/// Per-endpoint ejection, like `max_fails` / `fail_timeout`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Default 5.
    #[serde(default = "default_outlier_failures")]
    pub consecutive_failures: u32,
    /// Default `30s`; longer on each repeat.
    #[serde(default = "default_ejection_time")]
    pub ejection_time: Duration,
    /// Default 50.
    #[serde(default = "default_max_ejection")]
    pub max_ejection_percent: u32,
}

/// Active HTTP health checks of each endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default = "default_health_path")]
    pub path: String,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
    #[serde(default = "default_unhealthy")]
    pub unhealthy_threshold: u32,
    #[serde(default = "default_healthy")]
    pub healthy_threshold: u32,
}

/// Bulkhead limits of one backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackendLimits {
    /// Requests in flight at once; default 1024.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
    /// Requests waiting for a slot; default 1024.
    #[serde(default = "default_max_pending")]
    pub max_pending_requests: u32,
    /// Longest wait for a slot; default `1s`.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout: Duration,
    /// Upstream connections open at once, all endpoints; default 1024.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

/// Caps retries so they never multiply load on a backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RetryBudget {
    /// Retries allowed as a share of requests; default 20.
    #[serde(default = "default_budget_percent")]
    pub percent: u32,
    /// Retries always allowed per second; default 10.
    #[serde(default = "default_budget_min")]
    pub min_retries_per_second: u32,
}

/// TLS toward a backend's endpoints.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpstreamTls {
    /// CA bundle that signs the endpoints' certificates.
    pub ca_file: String,
    /// Name checked against the certificate; default the endpoint host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Client certificate for mTLS, re-read when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_certificate: Option<super::CertificateFiles>,
}

impl Backend {
    /// A backend with every policy at its default, as a config naming only
    /// `name` and `endpoints` gives.
    pub fn with_defaults(name: impl Into<String>, endpoints: Vec<String>) -> Self {
        Self {
            name: name.into(),
            endpoints,
            addresses: Vec::new(),
            protocol: Protocol::default(),
            load_balancer: LoadBalancer::default(),
            connect_timeout: default_connect_timeout(),
            connection_pool: ConnectionPool::default(),
            circuit_breaker: None,
            outlier_detection: None,
            health_check: None,
            limits: BackendLimits::default(),
            retry_budget: RetryBudget::default(),
            tls: None,
        }
    }
}

impl Default for ConnectionPool {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: default_max_idle(),
            idle_timeout: default_idle_timeout(),
        }
    }
}

impl Default for BackendLimits {
    fn default() -> Self {
        Self {
            max_requests: default_max_requests(),
            max_pending_requests: default_max_pending(),
            queue_timeout: default_queue_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self {
            percent: default_budget_percent(),
            min_retries_per_second: default_budget_min(),
        }
    }
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_max_idle() -> usize {
    32
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(4)
}
fn default_open_for() -> Duration {
    Duration::from_secs(30)
}
fn default_max_open_for() -> Duration {
    Duration::from_secs(300)
}
fn default_half_open() -> u32 {
    1
}
fn default_grpc_failure_codes() -> Vec<u32> {
    vec![4, 8, 13, 14]
}
fn default_min_requests() -> u32 {
    20
}
fn default_window() -> Duration {
    Duration::from_secs(10)
}
fn default_outlier_failures() -> u32 {
    5
}
fn default_ejection_time() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection() -> u32 {
    50
}
fn default_health_path() -> String {
    "/healthz".into()
}
fn default_health_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_unhealthy() -> u32 {
    3
}
fn default_healthy() -> u32 {
    2
}
fn default_max_requests() -> u32 {
    1024
}
fn default_max_pending() -> u32 {
    1024
}
fn default_queue_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_max_connections() -> u32 {
    1024
}
fn default_budget_percent() -> u32 {
    20
}
fn default_budget_min() -> u32 {
    10
}
