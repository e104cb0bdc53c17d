//! The running config: what the request path reads, swapped atomically.
//!
//! A [`Routing`] is built from a validated config: backends first (reusing
//! the ones whose config did not change, so their pools stay warm), then
//! the route table over them. Requests load the current routing once and
//! finish on it even if a new one is swapped in meanwhile.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};
use vakt_api::config::{Limits, Listener};
use vakt_api::{Config, Problems};

use crate::backend::Backend;
use crate::route::RouteTable;
use crate::telemetry::metrics::RequestMetrics;

/// Routes and backends of one config.
pub struct Routing {
    pub version: u64,
    pub config: Arc<Config>,
    pub table: RouteTable,
    pub backends: HashMap<String, Arc<Backend>>,
}

/// The proxy's shared state.
pub struct Proxy {
    /// Listeners of the config the proxy started with, in index order.
    pub listeners: Vec<Listener>,
    pub listener_names: Vec<Arc<str>>,
    pub limits: Limits,
    routing: ArcSwap<Routing>,
    /// Metrics of requests no route matched, per listener.
    pub unrouted: Vec<Arc<RequestMetrics>>,
    ready: AtomicBool,
    draining: AtomicBool,
    versions: AtomicU64,
}

impl Proxy {
    /// State for a validated config; listeners are fixed from here on.
    pub fn new(config: Config) -> Arc<Self> {
        let listener_names: Vec<Arc<str>> = config
            .listeners
            .iter()
            .map(|l| Arc::from(l.name.as_str()))
            .collect();
        let unrouted = listener_names
            .iter()
            .map(|l| Arc::new(RequestMetrics::new(l, "", "")))
            .collect();
        let routing = build(1, config.clone(), &listener_names, &HashMap::new());
        Arc::new(Self {
            listeners: config.listeners.clone(),
            listener_names,
            limits: config.limits.clone(),
            routing: ArcSwap::from_pointee(routing),
            unrouted,
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            versions: AtomicU64::new(1),
        })
    }

    /// The routing requests use right now.
    pub fn routing(&self) -> Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// Validates `config` against the running listeners and swaps it in.
    /// Listener and admin changes are kept for the next start.
    pub fn apply(&self, config: Config) -> Result<u64, Problems> {
        let mut problems = Problems::default();
        vakt_api::validate::check_backends(&config.backends, &mut problems);
        let names: Vec<&str> = self.listener_names.iter().map(|n| &**n).collect();
        vakt_api::validate::check_routes(&config, Some(&names), &mut problems);
        problems.into_result()?;

        if config.listeners != self.listeners {
            tracing::warn!("listener changes take effect at the next start");
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let current = self.routing.load();
        let routing = build(version, config, &self.listener_names, &current.backends);
        self.routing.store(Arc::new(routing));
        tracing::info!(version, "config applied");
        Ok(version)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.is_draining()
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }
}

fn build(
    version: u64,
    config: Config,
    listeners: &[Arc<str>],
    previous: &HashMap<String, Arc<Backend>>,
) -> Routing {
    let backends: HashMap<String, Arc<Backend>> = config
        .backends
        .iter()
        .map(|b| {
            let backend = match previous.get(&b.name) {
                Some(old) if old.config == *b => old.clone(),
                _ => Backend::new(b),
            };
            (b.name.clone(), backend)
        })
        .collect();
    let table = RouteTable::build(&config, listeners, &backends);
    Routing {
        version,
        config: Arc::new(config),
        table,
        backends,
    }
}
