//! Backends: a named destination service, its endpoints and the policy
//! that guards them.
//!
//! A backend owns its guards: the breaker that fails fast while it is
//! unwell, the bulkhead that bounds its share of the proxy, the retry
//! budget, and per endpoint set the ejection state that outlier detection,
//! health checks and fleet health feed. Endpoints given as host names are
//! re-resolved in the background; endpoints that stay keep their pools,
//! load figures and ejection state.

pub mod balancer;
pub mod breaker;
pub mod bulkhead;
pub mod ejection;
pub mod endpoint;
pub mod health_check;
pub mod outcome;
pub mod pool;
mod resolve;
pub mod tls;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vakt_api::config;

use crate::attempt::budget::Budget;
use crate::telemetry::metrics::{ConnectionGauge, TcpMetrics};
pub use balancer::Balancer;
use breaker::Breaker;
use bulkhead::Bulkhead;
use ejection::Ejection;
pub use endpoint::{Endpoint, InFlight};
use health_check::HealthChecker;
use outcome::Classifier;
pub use pool::Pool;

/// How often host-name endpoints are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// The endpoints of a backend at one moment, with their availability.
pub struct EndpointSet {
    pub list: Vec<Arc<Endpoint>>,
    pub ejection: Arc<Ejection>,
    _health: Option<HealthChecker>,
}

/// A destination service.
pub struct Backend {
    pub name: Arc<str>,
    pub config: config::Backend,
    endpoints: ArcSwap<EndpointSet>,
    pub balancer: Balancer,
    pub breaker: Option<Breaker>,
    pub bulkhead: Bulkhead,
    pub budget: Budget,
    pub classifier: Classifier,
    /// Endpoints the fleet reports unhealthy, kept across endpoint changes.
    fleet_down: Mutex<Vec<String>>,
    connections: ConnectionGauge,
    /// `limits.maxConnections`, shared by the endpoints' pools.
    connection_slots: Arc<tokio::sync::Semaphore>,
    tls: Option<Arc<tls::UpstreamTls>>,
    /// Series of connections proxied as TCP: outbound, inbound.
    tcp_metrics: [std::sync::OnceLock<TcpMetrics>; 2],
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend").field("name", &self.name).finish()
    }
}

impl Backend {
    /// Builds a backend, resolving host names and reading TLS files once
    /// now; background tasks then keep names resolved and idle
    /// connections reaped until the backend is dropped.
    pub fn new(config: &config::Backend) -> Result<Arc<Self>, tls::TlsError> {
        let name: Arc<str> = config.name.as_str().into();
        let tls = match &config.tls {
            Some(t) => Some(Arc::new(tls::UpstreamTls::from_config(
                &name,
                t,
                config.protocol,
            )?)),
            None => None,
        };
        let addrs = resolve::now(&config.endpoints);
        let mut backend = Self {
            connections: ConnectionGauge::new(&name),
            breaker: config
                .circuit_breaker
                .as_ref()
                .map(|cb| Breaker::new(&name, cb)),
            bulkhead: Bulkhead::new(&name, &config.limits),
            budget: Budget::new(&name, &config.retry_budget),
            classifier: Classifier::for_breaker(config.circuit_breaker.as_ref()),
            balancer: Balancer::new(config.load_balancer),
            endpoints: ArcSwap::from_pointee(EndpointSet {
                list: Vec::new(),
                ejection: Arc::new(Ejection::new(&name, None, &[])),
                _health: None,
            }),
            fleet_down: Mutex::new(Vec::new()),
            connection_slots: Arc::new(tokio::sync::Semaphore::new(
                config.limits.max_connections as usize,
            )),
            tls,
            tcp_metrics: Default::default(),
            name,
            config: config.clone(),
            tasks: Vec::new(),
        };
        backend.set_endpoints(&addrs);
        Ok(Arc::new_cyclic(|weak| {
            backend.tasks = backend.spawn_tasks(weak.clone());
            backend
        }))
    }

    /// The endpoints right now.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<EndpointSet>> {
        self.endpoints.load()
    }

    /// The slots of `limits.maxConnections`, shared by every connection
    /// to the backend's endpoints, HTTP or TCP.
    pub fn connection_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.connection_slots
    }

    /// `vakt_tcp_*` series of this backend for `direction` (`outbound`
    /// or `inbound`), registered on first use.
    pub fn tcp_metrics(&self, direction: &'static str) -> &TcpMetrics {
        let i = usize::from(direction == "inbound");
        self.tcp_metrics[i].get_or_init(|| TcpMetrics::new(direction, &self.name))
    }

    /// Picks an available endpoint of `set`, avoiding `avoid` when
    /// another is available.
    pub fn pick(&self, set: &EndpointSet, avoid: Option<usize>) -> Option<usize> {
        let now = Instant::now();
        self.balancer
            .pick(&set.list, |i| set.ejection.is_available(i, now), avoid)
    }

    /// Marks the endpoints the fleet reports unhealthy; all others are
    /// marked healthy.
    pub fn set_fleet_health(&self, unhealthy: &[String]) {
        *self.fleet_down.lock().expect("fleet lock") = unhealthy.to_vec();
        let set = self.endpoints.load();
        apply_fleet(&set, unhealthy);
    }

    /// Replaces the endpoint set, keeping the endpoints that remain.
    fn set_endpoints(&self, addrs: &[SocketAddr]) {
        let current = self.endpoints.load();
        let same = addrs.len() == current.list.len()
            && addrs
                .iter()
                .zip(current.list.iter())
                .all(|(a, e)| *a == e.addr);
        if same && !current.list.is_empty() {
            return;
        }
        let list: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| match current.list.iter().find(|e| e.addr == *addr) {
                Some(e) => e.clone(),
                None => {
                    let pool = Pool::new(
                        *addr,
                        &self.config,
                        self.connections.clone(),
                        self.connection_slots.clone(),
                        self.tls.clone(),
                    );
                    Arc::new(Endpoint::new(*addr, Arc::new(pool)))
                }
            })
            .collect();
        let labels: Vec<String> = list.iter().map(|e| e.label.to_string()).collect();
        let ejection = Arc::new(Ejection::new(
            &self.name,
            self.config.outlier_detection.as_ref(),
            &labels,
        ));
        let health = self.config.health_check.as_ref().and_then(|hc| {
            tokio::runtime::Handle::try_current().ok()?;
            Some(HealthChecker::spawn(
                &self.name,
                hc,
                &labels,
                ejection.clone(),
            ))
        });
        let set = EndpointSet {
            list,
            ejection,
            _health: health,
        };
        apply_fleet(&set, &self.fleet_down.lock().expect("fleet lock"));
        tracing::info!(backend = %self.name, endpoints = set.list.len(), "endpoints set");
        self.endpoints.store(Arc::new(set));
    }

    /// The backend's state for `/backends`.
    pub fn snapshot(&self) -> serde_json::Value {
        let set = self.endpoints.load();
        let now = Instant::now();
        let ejection = set.ejection.snapshot(now);
        let endpoints: Vec<_> = set
            .list
            .iter()
            .zip(ejection.endpoints.iter())
            .map(|(e, state)| {
                json!({
                    "address": &*e.label,
                    "inFlight": e.in_flight(),
                    "idleConnections": e.pool.idle_count(),
                    "state": state,
                })
            })
            .collect();
        json!({
            "name": &*self.name,
            "protocol": self.config.protocol,
            "loadBalancer": self.config.load_balancer,
            "breaker": self.breaker.as_ref().map(|b| b.snapshot()),
            "panic": ejection.panic,
            "endpoints": endpoints,
            "limits": self.bulkhead.snapshot(),
            "budget": self.budget.snapshot(),
        })
    }

    fn spawn_tasks(&self, weak: Weak<Self>) -> Vec<JoinHandle<()>> {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return Vec::new();
        };
        let mut tasks = Vec::new();
        let reap_every =
            (self.config.connection_pool.idle_timeout.get() / 2).max(Duration::from_millis(250));
        tasks.push(handle.spawn(reap(weak.clone(), reap_every)));
        if resolve::has_names(&self.config.endpoints) {
            tasks.push(handle.spawn(re_resolve(weak)));
        }
        tasks
    }
}

fn apply_fleet(set: &EndpointSet, unhealthy: &[String]) {
    for (i, e) in set.list.iter().enumerate() {
        let down = unhealthy.iter().any(|u| *u == *e.label);
        set.ejection.set_fleet(i, !down);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn reap(backend: Weak<Backend>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let Some(b) = backend.upgrade() else { return };
        for e in b.endpoints().list.iter() {
            e.pool.reap();
        }
    }
}

async fn re_resolve(backend: Weak<Backend>) {
    loop {
        tokio::time::sleep(RESOLVE_EVERY).await;
        let Some(specs) = backend.upgrade().map(|b| b.config.endpoints.clone()) else {
            return;
        };
        let addrs = resolve::lookup(&specs).await;
        let Some(b) = backend.upgrade() else { return };
        if addrs.is_empty() {
            tracing::warn!(backend = %b.name, "no endpoint resolved; keeping the last ones");
            continue;
        }
        b.set_endpoints(&addrs);
    }
}
