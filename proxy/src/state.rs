//! The running config: what the request path reads, swapped atomically.
//!
//! A [`Routing`] is built from a validated config: backends first (reusing
//! the ones whose config did not change, so their pools stay warm), then
//! the route table over them. Requests load the current routing once and
//! finish on it even if a new one is swapped in meanwhile.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use arc_swap::{ArcSwap, Guard};
use vakt_api::config::{Limits, Listener, Tracing};
use vakt_api::{Config, Problems};

use crate::backend::Backend;
use crate::discovery::{self, EndpointObservation, SnapshotSink};
use crate::edge::auth::Authenticator;
use crate::edge::client_ip::TrustedProxies;
use crate::edge::conn_limit::ConnLimiter;
use crate::edge::ratelimit::RateLimiter;
use crate::edge::tls::EdgeTls;
use crate::edge::watch::DEFAULT_RELOAD_INTERVAL;
use crate::intercept::{Addressed, Implicit};
use crate::route::{Listeners, RouteTable};
use crate::telemetry::metrics::RequestMetrics;
use crate::telemetry::trace::Tracer;

/// Routes and backends of one config.
pub struct Routing {
    pub version: u64,
    pub config: Arc<Config>,
    pub table: RouteTable,
    pub backends: HashMap<String, Arc<Backend>>,
    pub rate_limiter: Arc<RateLimiter>,
    /// Per route name, for routes with `auth`.
    pub auth: HashMap<String, Arc<Authenticator>>,
    /// Backends by the service addresses they claim, for transparent
    /// listeners.
    pub addressed: HashMap<SocketAddr, Arc<Addressed>>,
}

/// What a listener needs beyond its socket: TLS, whose forwarded
/// headers to believe, whether to send clients to HTTPS.
pub struct ListenerEdge {
    pub tls: Option<Arc<EdgeTls>>,
    pub trusted: TrustedProxies,
    pub redirect_to_https: bool,
    /// `maxConnections` of a transparent listener.
    pub connections: Option<Arc<tokio::sync::Semaphore>>,
    /// `maxRequests` of a transparent listener.
    pub requests: Option<Arc<tokio::sync::Semaphore>>,
}

/// The proxy's shared state.
pub struct Proxy {
    /// Listeners of the config the proxy started with, in index order.
    pub listeners: Vec<Listener>,
    pub listener_names: Vec<Arc<str>>,
    /// The `direction` metric label of each listener; `None` on HTTP
    /// listeners.
    pub listener_directions: Vec<Option<&'static str>>,
    pub limits: Limits,
    pub edge: Vec<ListenerEdge>,
    pub conn_limit: Arc<ConnLimiter>,
    routing: ArcSwap<Routing>,
    /// Metrics of requests no route matched, per listener.
    pub unrouted: Vec<Arc<RequestMetrics>>,
    /// Rules for transparent connections to destinations no backend
    /// claims.
    pub implicit: Implicit,
    /// Present when tracing is on; fixed at start.
    pub tracer: Option<Arc<Tracer>>,
    /// The tracing settings read at start (with the command line's).
    tracing: Tracing,
    ready: AtomicBool,
    draining: AtomicBool,
    versions: AtomicU64,
    /// The config file's part and the control plane's part; applies are
    /// serialised on this lock.
    layers: Mutex<Layers>,
    fleet: Mutex<HashMap<String, Vec<String>>>,
    /// The control-plane client's status, when one runs.
    discovery: OnceLock<discovery::Handle>,
}

/// The two sources of routes and backends.
struct Layers {
    file: Config,
    snapshot: Option<Config>,
}

impl Proxy {
    /// State for a validated config; listeners are fixed from here on.
    /// Fails when a file the config names (certificate, key set) cannot
    /// be used.
    pub fn new(config: Config) -> Result<Arc<Self>, Problems> {
        let listener_names: Vec<Arc<str>> = config
            .listeners
            .iter()
            .map(|l| Arc::from(l.name.as_str()))
            .collect();
        let directions: Vec<Option<&'static str>> = config
            .listeners
            .iter()
            .map(|l| l.mode.direction())
            .collect();
        let labels = Listeners {
            names: &listener_names,
            directions: &directions,
        };
        let unrouted = labels.metrics("", "");
        let edge = listener_edges(&config.listeners)?;
        let routing = build(1, config.clone(), labels, None)?;
        let implicit = Implicit::new(&listener_names, &directions);
        Ok(Arc::new(Self {
            listeners: config.listeners.clone(),
            listener_names,
            listener_directions: directions,
            implicit,
            limits: config.limits.clone(),
            edge,
            conn_limit: ConnLimiter::new(config.limits.max_connections_per_ip),
            routing: ArcSwap::from_pointee(routing),
            unrouted,
            tracer: Tracer::from_config(&config.tracing),
            tracing: config.tracing.clone(),
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            versions: AtomicU64::new(1),
            layers: Mutex::new(Layers {
                file: config,
                snapshot: None,
            }),
            fleet: Mutex::new(HashMap::new()),
            discovery: OnceLock::new(),
        }))
    }

    /// The routing requests use right now.
    pub fn routing(&self) -> Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// Applies a new config file: its routes and backends replace the
    /// file's previous ones, next to those from the control plane.
    /// Listener and admin changes are kept for the next start.
    pub fn apply(&self, config: Config) -> Result<u64, Problems> {
        check_bootstrap(&config)?;
        if config.listeners != self.listeners {
            tracing::warn!("listener changes take effect at the next start");
        }
        let mut layers = self.layers.lock().expect("layers lock");
        let version = self.swap(&config, layers.snapshot.as_ref())?;
        layers.file = config;
        Ok(version)
    }

    /// Applies a control-plane snapshot: its routes, backends and rate
    /// limits replace the previous snapshot's, next to the file's.
    pub fn apply_snapshot(&self, snapshot: Config) -> Result<u64, Problems> {
        let mut layers = self.layers.lock().expect("layers lock");
        let version = self.swap(&layers.file, Some(&snapshot))?;
        layers.snapshot = Some(snapshot);
        Ok(version)
    }

    /// Merges the layers, validates the result against the running
    /// listeners and swaps it in.
    fn swap(&self, file: &Config, snapshot: Option<&Config>) -> Result<u64, Problems> {
        let mut config = merge(file, snapshot)?;
        // What runs is what `/config` shows: listeners, limits and
        // tracing are fixed at start.
        config.listeners = self.listeners.clone();
        config.limits = self.limits.clone();
        config.tracing = self.tracing.clone();
        let mut problems = Problems::default();
        vakt_api::validate::check_backends(&config.backends, &mut problems);
        let names: Vec<&str> = self.listener_names.iter().map(|n| &**n).collect();
        vakt_api::validate::check_routes(&config, Some(&names), &mut problems);
        problems.into_result()?;

        let current = self.routing.load();
        let version = self.versions.load(Ordering::Relaxed) + 1;
        let labels = Listeners {
            names: &self.listener_names,
            directions: &self.listener_directions,
        };
        let routing = build(version, config, labels, Some(&current))?;
        self.apply_fleet(&routing);
        self.versions.store(version, Ordering::Relaxed);
        self.routing.store(Arc::new(routing));
        tracing::info!(version, "config applied");
        Ok(version)
    }

    /// Endpoints the fleet reports unhealthy, as (backend, endpoint); kept
    /// for backends built later.
    pub fn set_fleet_health(&self, unhealthy: &[(String, String)]) {
        let mut by_backend: HashMap<String, Vec<String>> = HashMap::new();
        for (b, e) in unhealthy {
            by_backend.entry(b.clone()).or_default().push(e.clone());
        }
        *self.fleet.lock().expect("fleet lock") = by_backend;
        self.apply_fleet(&self.routing.load());
    }

    fn apply_fleet(&self, routing: &Routing) {
        let fleet = self.fleet.lock().expect("fleet lock");
        for (name, backend) in &routing.backends {
            backend.set_fleet_health(fleet.get(name).map_or(&[][..], |v| &v[..]));
        }
    }

    /// Remembers the control-plane client's status for `/ready`.
    pub fn set_discovery(&self, handle: discovery::Handle) {
        let _ = self.discovery.set(handle);
    }

    /// Whether a control plane is configured but no snapshot has been
    /// served yet (neither received nor read from the disk cache).
    pub fn awaiting_snapshot(&self) -> bool {
        self.discovery
            .get()
            .is_some_and(|h| h.enabled() && h.source() == discovery::Source::None)
    }

    /// One line on where the config comes from, for `/ready`.
    pub fn config_detail(&self) -> String {
        match self.discovery.get() {
            Some(h) => h.detail(),
            None => "static config; no control plane".into(),
        }
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
    listeners: Listeners<'_>,
    previous: Option<&Routing>,
) -> Result<Routing, Problems> {
    let mut problems = Problems::default();
    let auth = authenticators(&config, previous, &mut problems);
    let rate_limiter = match RateLimiter::from_config(&config.routes, &config.rate_limits) {
        Ok(r) => match previous {
            Some(p) => r.carry_over(&p.rate_limiter),
            None => r,
        },
        Err(e) => {
            problems.push("rateLimits", e.to_string());
            RateLimiter::from_config(&[], &[]).expect("an empty rate limiter")
        }
    };

    let empty = HashMap::new();
    let old = previous.map_or(&empty, |p| &p.backends);
    let mut backends: HashMap<String, Arc<Backend>> = HashMap::new();
    for b in &config.backends {
        let backend = match old.get(&b.name) {
            Some(old) if old.config == *b => old.clone(),
            _ => match Backend::new(b) {
                Ok(backend) => backend,
                Err(e) => {
                    problems.push(format!("backends[{}].tls", b.name), e.to_string());
                    continue;
                }
            },
        };
        backends.insert(b.name.clone(), backend);
    }
    problems.into_result()?;
    let table = RouteTable::build_for(&config, listeners, &backends, &auth);
    let addressed = Addressed::index(&config.backends, &backends, listeners);
    Ok(Routing {
        version,
        config: Arc::new(config),
        table,
        backends,
        rate_limiter: Arc::new(rate_limiter),
        auth,
        addressed,
    })
}

/// Loads the key files of every route with `auth`, reusing the loaded
/// ones whose settings did not change.
fn authenticators(
    config: &Config,
    previous: Option<&Routing>,
    problems: &mut Problems,
) -> HashMap<String, Arc<Authenticator>> {
    let mut out = HashMap::new();
    for route in &config.routes {
        let Some(auth) = &route.auth else { continue };
        let reused = previous.and_then(|p| {
            let old = p.config.routes.iter().find(|r| r.name == route.name)?;
            (old.auth.as_ref() == Some(auth)).then(|| p.auth.get(&route.name).cloned())?
        });
        let loaded = match reused {
            Some(a) => a,
            None => match Authenticator::from_config(auth) {
                Ok(a) => {
                    let a = Arc::new(a);
                    if tokio::runtime::Handle::try_current().is_ok() {
                        a.spawn_reload(DEFAULT_RELOAD_INTERVAL);
                    }
                    a
                }
                Err(e) => {
                    problems.push(format!("routes[{}].auth", route.name), e.to_string());
                    continue;
                }
            },
        };
        out.insert(route.name.clone(), loaded);
    }
    out
}

/// TLS acceptors and trusted proxies of each listener.
fn listener_edges(listeners: &[Listener]) -> Result<Vec<ListenerEdge>, Problems> {
    let mut problems = Problems::default();
    let mut out = Vec::with_capacity(listeners.len());
    for l in listeners {
        let at = format!("listeners[{}]", l.name);
        let tls = match &l.tls {
            None => None,
            Some(t) => match EdgeTls::from_config(&l.name, t) {
                Ok(tls) => {
                    if tokio::runtime::Handle::try_current().is_ok() {
                        tls.spawn_reload(DEFAULT_RELOAD_INTERVAL);
                    }
                    Some(Arc::new(tls))
                }
                Err(e) => {
                    problems.push(format!("{at}.tls"), e.to_string());
                    None
                }
            },
        };
        let trusted = TrustedProxies::from_config(&l.trusted_proxies).unwrap_or_else(|e| {
            problems.push(format!("{at}.trustedProxies"), e.to_string());
            TrustedProxies::from_config(&[]).expect("no proxies")
        });
        let semaphore =
            |n: Option<u32>| n.map(|n| Arc::new(tokio::sync::Semaphore::new(n as usize)));
        out.push(ListenerEdge {
            tls,
            trusted,
            redirect_to_https: l.redirect_to_https,
            connections: semaphore(l.max_connections),
            requests: semaphore(l.max_requests),
        });
    }
    problems.into_result().map(|()| out)
}

/// What a proxy's own config file needs beyond the shared model: at
/// least one listener. An empty file (a config map caught half-written,
/// say) is refused rather than taken for "no routes".
pub fn check_bootstrap(config: &Config) -> Result<(), Problems> {
    let mut problems = Problems::default();
    if config.listeners.is_empty() {
        problems.push("listeners", "at least one listener is needed");
    }
    problems.into_result()
}

/// The file's routes, backends and rate limits with the snapshot's; a
/// name both define is a problem.
fn merge(file: &Config, snapshot: Option<&Config>) -> Result<Config, Problems> {
    let mut merged = file.clone();
    let Some(snap) = snapshot else {
        return Ok(merged);
    };
    let mut problems = Problems::default();
    let clash = |kind: &str, name: &str, problems: &mut Problems| {
        let why = "defined both in the config file and by the control plane";
        problems.push(format!("{kind}[{name}]"), why);
    };
    for r in &snap.routes {
        if file.routes.iter().any(|f| f.name == r.name) {
            clash("routes", &r.name, &mut problems);
        }
        merged.routes.push(r.clone());
    }
    for b in &snap.backends {
        if file.backends.iter().any(|f| f.name == b.name) {
            clash("backends", &b.name, &mut problems);
        }
        merged.backends.push(b.clone());
    }
    for l in &snap.rate_limits {
        if file.rate_limits.iter().any(|f| f.name == l.name) {
            clash("rateLimits", &l.name, &mut problems);
        }
        merged.rate_limits.push(l.clone());
    }
    problems.into_result().map(|()| merged)
}

impl SnapshotSink for Proxy {
    fn apply(&self, version: u64, config: Config) -> Result<(), Problems> {
        let applied = self.apply_snapshot(config)?;
        tracing::info!(snapshot = version, config = applied, "snapshot applied");
        Ok(())
    }

    fn set_fleet_health(&self, unhealthy: &[(String, String)]) {
        Proxy::set_fleet_health(self, unhealthy);
    }

    fn observations(&self) -> Vec<EndpointObservation> {
        let routing = self.routing.load();
        let now = tokio::time::Instant::now();
        let mut out = Vec::new();
        for (name, backend) in &routing.backends {
            let set = backend.endpoints();
            for (i, e) in set.list.iter().enumerate() {
                let (requests, failures) = set.ejection.take_counts(i);
                let ejected = set.ejection.is_ejected(i, now);
                if requests == 0 && !ejected {
                    continue;
                }
                out.push(EndpointObservation {
                    backend: name.clone(),
                    endpoint: e.label.to_string(),
                    ejected,
                    failure_rate: failures as f64 / requests.max(1) as f64,
                    requests,
                });
            }
        }
        out
    }
}
