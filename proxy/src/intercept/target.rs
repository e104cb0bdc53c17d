//! Where HTTP on a transparent listener goes when no route matches: the
//! backend claiming the original destination, else the destination
//! itself (outbound), or the local application (inbound). Each is a
//! [`RuleEntry`] of no route, so the request takes the usual path with
//! its metrics, limits and error mapping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vakt_api::config::{self, ListenerMode, Protocol};

use crate::backend::Backend;
use crate::respond::ProxyError;
use crate::route::{Listeners, RuleEntry};
use crate::state::{Proxy, Routing};

/// Implicit rules kept for destinations no backend claims; past this
/// many the cache starts over.
const MAX_IMPLICIT: usize = 256;

/// A backend found by one of its service addresses.
#[derive(Debug)]
pub struct Addressed {
    pub backend: Arc<Backend>,
    /// The rule HTTP requests take; `None` for a TCP backend.
    pub http: Option<Arc<RuleEntry>>,
}

/// What the request path knows of a transparent connection.
#[derive(Debug)]
pub struct Intercept {
    pub mode: ListenerMode,
    /// Where the connection goes when no route or backend takes it: the
    /// original destination outbound, the application inbound.
    pub upstream: SocketAddr,
    /// The HTTP version the client speaks, kept toward `upstream`.
    pub protocol: Protocol,
    requests: Option<Arc<Semaphore>>,
    implicit: OnceLock<Arc<RuleEntry>>,
}

/// Rules toward destinations no backend claims, shared by connections
/// so their connection pools stay warm.
#[derive(Debug)]
pub struct Implicit {
    names: Vec<Arc<str>>,
    directions: Vec<Option<&'static str>>,
    rules: Mutex<HashMap<(SocketAddr, Protocol), Arc<RuleEntry>>>,
}

impl Addressed {
    /// Every backend by each address it claims. Validation made the
    /// addresses unique and well formed; `backends` holds the built ones.
    pub fn index(
        configs: &[config::Backend],
        backends: &HashMap<String, Arc<Backend>>,
        listeners: Listeners<'_>,
    ) -> HashMap<SocketAddr, Arc<Addressed>> {
        let mut out = HashMap::new();
        for c in configs.iter().filter(|c| !c.addresses.is_empty()) {
            let Some(backend) = backends.get(&c.name) else {
                continue;
            };
            let http = (c.protocol != Protocol::Tcp)
                .then(|| Arc::new(RuleEntry::implicit(backend.clone(), listeners)));
            let entry = Arc::new(Addressed {
                backend: backend.clone(),
                http,
            });
            for a in c.addresses.iter().filter_map(|a| a.parse().ok()) {
                out.insert(a, entry.clone());
            }
        }
        out
    }
}

impl Intercept {
    pub fn new(
        mode: ListenerMode,
        upstream: SocketAddr,
        protocol: Protocol,
        requests: Option<Arc<Semaphore>>,
    ) -> Self {
        Self {
            mode,
            upstream,
            protocol,
            requests,
            implicit: OnceLock::new(),
        }
    }

    /// Whether routes are consulted: outbound yes; inbound no, every
    /// request goes to the application.
    pub fn routes(&self) -> bool {
        self.mode != ListenerMode::Inbound
    }

    /// A slot of the listener's `maxRequests`, or `Overflow`.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, ProxyError> {
        match &self.requests {
            None => Ok(None),
            Some(s) => match s.clone().try_acquire_owned() {
                Ok(p) => Ok(Some(p)),
                Err(_) => Err(ProxyError::Overflow),
            },
        }
    }

    /// The rule for a request no route took: the backend claiming the
    /// original destination (looked up in the current `routing`), else
    /// the connection's implicit rule.
    pub fn rule(&self, proxy: &Proxy, routing: &Routing) -> Arc<RuleEntry> {
        if self.mode == ListenerMode::Outbound
            && let Some(http) = routing
                .addressed
                .get(&self.upstream)
                .and_then(|a| a.http.as_ref())
        {
            return http.clone();
        }
        self.implicit
            .get_or_init(|| proxy.implicit.rule(self.mode, self.upstream, self.protocol))
            .clone()
    }
}

impl Implicit {
    pub fn new(names: &[Arc<str>], directions: &[Option<&'static str>]) -> Self {
        Self {
            names: names.to_vec(),
            directions: directions.to_vec(),
            rules: Mutex::new(HashMap::new()),
        }
    }

    /// The rule sending every request to `upstream` in `protocol`: its
    /// backend is labelled `passthrough` outbound and `app` inbound.
    pub fn rule(
        &self,
        mode: ListenerMode,
        upstream: SocketAddr,
        protocol: Protocol,
    ) -> Arc<RuleEntry> {
        let mut rules = self.rules.lock().expect("implicit rules lock");
        if let Some(r) = rules.get(&(upstream, protocol)) {
            return r.clone();
        }
        if rules.len() >= MAX_IMPLICIT {
            rules.clear();
        }
        let name = match mode {
            ListenerMode::Inbound => super::APP,
            _ => super::PASSTHROUGH,
        };
        let mut c = config::Backend::with_defaults(name, vec![upstream.to_string()]);
        c.protocol = protocol;
        let backend = Backend::new(&c).expect("a backend without TLS builds");
        let listeners = Listeners {
            names: &self.names,
            directions: &self.directions,
        };
        let rule = Arc::new(RuleEntry::implicit(backend, listeners));
        rules.insert((upstream, protocol), rule.clone());
        rule
    }
}
