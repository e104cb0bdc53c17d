//! Backends: a named destination service, its endpoints and the policy
//! that guards them.
//!
//! A backend owns its balancer and, through its endpoints, their
//! connection pools. Endpoints given as host names are re-resolved in the
//! background; endpoints that stay keep their pools and load figures.

pub mod balancer;
pub mod breaker;
pub mod bulkhead;
pub mod ejection;
pub mod endpoint;
pub mod health_check;
pub mod outcome;
pub mod pool;
mod resolve;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use vakt_api::config;

use crate::telemetry::metrics::ConnectionGauge;
pub use balancer::Balancer;
pub use endpoint::{Endpoint, InFlight};
pub use pool::Pool;

/// How often host-name endpoints are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(30);

/// A destination service.
#[derive(Debug)]
pub struct Backend {
    pub name: Arc<str>,
    pub config: config::Backend,
    endpoints: ArcSwap<Vec<Arc<Endpoint>>>,
    pub balancer: Balancer,
    connections: ConnectionGauge,
    tasks: Vec<JoinHandle<()>>,
}

impl Backend {
    /// Builds a backend, resolving host names once now; background tasks
    /// then keep names resolved and idle connections reaped until the
    /// backend is dropped.
    pub fn new(config: &config::Backend) -> Arc<Self> {
        let name: Arc<str> = config.name.as_str().into();
        let connections = ConnectionGauge::new(&name);
        let addrs = resolve::now(&config.endpoints);
        let mut backend = Self {
            name,
            config: config.clone(),
            endpoints: ArcSwap::from_pointee(Vec::new()),
            balancer: Balancer::new(config.load_balancer),
            connections,
            tasks: Vec::new(),
        };
        backend.set_endpoints(&addrs);
        Arc::new_cyclic(|weak| {
            backend.tasks = backend.spawn_tasks(weak.clone());
            backend
        })
    }

    /// The endpoints right now.
    pub fn endpoints(&self) -> arc_swap::Guard<Arc<Vec<Arc<Endpoint>>>> {
        self.endpoints.load()
    }

    /// Replaces the endpoint set, keeping the endpoints that remain.
    fn set_endpoints(&self, addrs: &[SocketAddr]) {
        let current = self.endpoints.load();
        let next: Vec<Arc<Endpoint>> = addrs
            .iter()
            .map(|addr| match current.iter().find(|e| e.addr == *addr) {
                Some(e) => e.clone(),
                None => {
                    let pool = Pool::new(*addr, &self.config, self.connections.clone());
                    Arc::new(Endpoint::new(*addr, Arc::new(pool)))
                }
            })
            .collect();
        if next.len() != current.len()
            || next
                .iter()
                .zip(current.iter())
                .any(|(a, b)| a.addr != b.addr)
        {
            tracing::info!(backend = %self.name, endpoints = next.len(), "endpoints changed");
        }
        self.endpoints.store(Arc::new(next));
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
        for e in b.endpoints().iter() {
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
