//! Routing: from a request's listener, host, path, method and headers to
//! the rule that handles it.
//!
//! The table is built once per config. Candidates are grouped by host
//! (exact names, then wildcards longest first, then routes without
//! hostnames) and, inside a group, sorted by Gateway API precedence, so
//! finding a rule is a walk that stops at the first match. The result is
//! a plain value, testable without sockets.

pub mod filters;
pub mod matcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use vakt_api::config::{self, Config};

use crate::backend::Backend;
use crate::edge::auth::Authenticator;
use crate::telemetry::metrics::{RequestMetrics, RouteMetrics};
pub use filters::Filters;
pub use matcher::{RequestMatch, RequestView};

/// Per-route facts shared by its rules.
#[derive(Debug)]
pub struct RouteInfo {
    pub name: Arc<str>,
    pub config: config::Route,
    pub auth: Option<Arc<Authenticator>>,
    pub metrics: RouteMetrics,
}

/// One compiled rule of a route.
#[derive(Debug)]
pub struct RuleEntry {
    pub route: Arc<RouteInfo>,
    pub index: usize,
    pub matches: Vec<RequestMatch>,
    pub filters: Filters,
    pub backends: Vec<WeightedBackend>,
    total_weight: u32,
    pub timeouts: Timeouts,
    pub retry: Option<config::Retry>,
    pub fallback: Option<config::Fallback>,
}

/// A backend of a rule with its share and its metrics per listener.
#[derive(Debug)]
pub struct WeightedBackend {
    pub backend: Arc<Backend>,
    pub weight: u32,
    /// Indexed by listener.
    pub metrics: Vec<Arc<RequestMetrics>>,
}

/// Timeouts of a rule; `None` means no limit.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timeouts {
    pub request: Option<Duration>,
    pub backend_request: Option<Duration>,
    pub idle: Option<Duration>,
}

/// The rule chosen for a request and which of its matches fired.
#[derive(Clone, Copy)]
pub struct Decision<'a> {
    pub rule: &'a Arc<RuleEntry>,
    pub matched: usize,
}

/// Every rule, organised for lookup per listener.
#[derive(Debug, Default)]
pub struct RouteTable {
    listeners: Vec<HostIndex>,
}

#[derive(Debug, Default)]
struct HostIndex {
    exact: HashMap<String, Vec<Candidate>>,
    /// Candidates by wildcard suffix with its leading dot (`*.a.b` is
    /// `.a.b`); a lookup tries the host's own suffixes, longest first,
    /// so its cost follows the host's labels, not the number of routes.
    wildcard: HashMap<String, Vec<Candidate>>,
    any: Vec<Candidate>,
}

#[derive(Debug, Clone)]
struct Candidate {
    rule: Arc<RuleEntry>,
    matched: usize,
}

/// The listeners a table serves, in index order, with the `direction`
/// label of each (`None` on HTTP listeners).
#[derive(Clone, Copy, Debug)]
pub struct Listeners<'a> {
    pub names: &'a [Arc<str>],
    pub directions: &'a [Option<&'static str>],
}

impl Listeners<'_> {
    /// Request metrics of (route, backend), one per listener.
    pub fn metrics(&self, route: &str, backend: &str) -> Vec<Arc<RequestMetrics>> {
        self.names
            .iter()
            .zip(self.directions)
            .map(|(l, d)| Arc::new(RequestMetrics::with_direction(l, *d, route, backend)))
            .collect()
    }
}

/// Default gap allowed between response body frames.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

impl RouteTable {
    /// Builds the table. `listeners` are the listener names in index order;
    /// `backends` must hold every backend the routes name.
    pub fn build(
        config: &Config,
        listeners: &[Arc<str>],
        backends: &HashMap<String, Arc<Backend>>,
        auth: &HashMap<String, Arc<Authenticator>>,
    ) -> Self {
        let directions = vec![None; listeners.len()];
        let labels = Listeners {
            names: listeners,
            directions: &directions,
        };
        Self::build_for(config, labels, backends, auth)
    }

    /// Like [`RouteTable::build`], with the `direction` label of each
    /// listener's metrics (transparent listeners have one).
    pub fn build_for(
        config: &Config,
        listeners: Listeners<'_>,
        backends: &HashMap<String, Arc<Backend>>,
        auth: &HashMap<String, Arc<Authenticator>>,
    ) -> Self {
        let names = listeners.names;
        let mut table = Self {
            listeners: names.iter().map(|_| HostIndex::default()).collect(),
        };
        for route in &config.routes {
            let info = Arc::new(RouteInfo {
                name: route.name.as_str().into(),
                config: route.clone(),
                auth: auth.get(&route.name).cloned(),
                metrics: RouteMetrics::new(&route.name),
            });
            for (i, rule) in route.rules.iter().enumerate() {
                let entry = Arc::new(RuleEntry::compile(&info, i, rule, listeners, backends));
                table.insert(&entry, names);
            }
        }
        for index in &mut table.listeners {
            index.sort();
        }
        table
    }

    fn insert(&mut self, rule: &Arc<RuleEntry>, listeners: &[Arc<str>]) {
        let route = &rule.route.config;
        for (li, name) in listeners.iter().enumerate() {
            let attached = route
                .listeners
                .as_ref()
                .is_none_or(|ls| ls.iter().any(|l| **l == **name));
            if !attached {
                continue;
            }
            let index = &mut self.listeners[li];
            for matched in 0..rule.matches.len() {
                let c = Candidate {
                    rule: rule.clone(),
                    matched,
                };
                index.add(&route.hostnames, c);
            }
        }
    }

    /// Finds the rule for a request on listener `listener`; `host` is
    /// the request's host, lowercase, without a port.
    pub fn find(&self, listener: usize, host: &str, req: &RequestView<'_>) -> Option<Decision<'_>> {
        let index = self.listeners.get(listener)?;
        let exact = index.exact.get(host).into_iter();
        // Each dot after the first label starts a suffix a wildcard may
        // name; the leftmost is the longest, so the most specific wins.
        let wild = host
            .match_indices('.')
            .filter(|&(i, _)| i > 0)
            .filter_map(|(i, _)| index.wildcard.get(&host[i..]));
        exact
            .chain(wild)
            .chain(std::iter::once(&index.any))
            .flat_map(|cands| cands.iter())
            .find(|c| c.rule.matches[c.matched].matches(req))
            .map(|c| Decision {
                rule: &c.rule,
                matched: c.matched,
            })
    }
}

impl HostIndex {
    fn add(&mut self, hostnames: &[String], c: Candidate) {
        if hostnames.is_empty() {
            self.any.push(c);
            return;
        }
        for h in hostnames {
            let h = h.to_ascii_lowercase();
            match h.strip_prefix('*') {
                Some(suffix) => self
                    .wildcard
                    .entry(suffix.to_string())
                    .or_default()
                    .push(c.clone()),
                None => self.exact.entry(h).or_default().push(c.clone()),
            }
        }
    }

    /// Sorts every group by precedence; the sort is stable, so config
    /// order (route, then rule) breaks ties.
    fn sort(&mut self) {
        let by_precedence = |a: &Candidate, b: &Candidate| {
            a.rule.matches[a.matched].precedence(&b.rule.matches[b.matched])
        };
        for list in self.exact.values_mut() {
            list.sort_by(by_precedence);
        }
        for list in self.wildcard.values_mut() {
            list.sort_by(by_precedence);
        }
        self.any.sort_by(by_precedence);
    }
}

impl RuleEntry {
    fn compile(
        route: &Arc<RouteInfo>,
        index: usize,
        rule: &config::Rule,
        listeners: Listeners<'_>,
        backends: &HashMap<String, Arc<Backend>>,
    ) -> Self {
        let mut matches: Vec<RequestMatch> =
            rule.matches.iter().map(RequestMatch::compile).collect();
        if matches.is_empty() {
            matches.push(RequestMatch::any());
        }
        let backends: Vec<WeightedBackend> = rule
            .backend_refs
            .iter()
            .filter(|r| r.weight > 0)
            .filter_map(|r| {
                let backend = backends.get(&r.name)?.clone();
                let metrics = listeners.metrics(&route.name, &backend.name);
                Some(WeightedBackend {
                    backend,
                    weight: r.weight,
                    metrics,
                })
            })
            .collect();
        let t = rule.timeouts.clone().unwrap_or_default();
        let nonzero = |d: Option<vakt_api::Duration>| d.map(|d| d.get()).filter(|d| !d.is_zero());
        Self {
            route: route.clone(),
            index,
            matches,
            filters: Filters::compile(&rule.filters),
            total_weight: backends.iter().map(|b| b.weight).sum(),
            backends,
            timeouts: Timeouts {
                request: nonzero(t.request),
                backend_request: nonzero(t.backend_request),
                idle: nonzero(t.idle).or(Some(DEFAULT_IDLE_TIMEOUT)),
            },
            retry: rule.retry.clone(),
            fallback: rule.fallback.clone(),
        }
    }

    /// A rule of no route that sends every request to `backend` with
    /// default timeouts: what a transparent listener uses when no route
    /// matches (a backend found by address, the original destination, or
    /// the local application). Its metrics carry the route label `""`.
    pub fn implicit(backend: Arc<Backend>, listeners: Listeners<'_>) -> Self {
        let route = Arc::new(RouteInfo {
            name: "".into(),
            config: config::Route {
                name: String::new(),
                listeners: None,
                hostnames: Vec::new(),
                auth: None,
                rate_limit: None,
                rules: Vec::new(),
            },
            auth: None,
            metrics: RouteMetrics::new(""),
        });
        let metrics = listeners.metrics("", &backend.name);
        Self {
            route,
            index: 0,
            matches: vec![RequestMatch::any()],
            filters: Filters::compile(&[]),
            total_weight: 1,
            backends: vec![WeightedBackend {
                backend,
                weight: 1,
                metrics,
            }],
            timeouts: Timeouts {
                request: None,
                backend_request: None,
                idle: Some(DEFAULT_IDLE_TIMEOUT),
            },
            retry: None,
            fallback: None,
        }
    }

    /// Picks a backend by weight; `None` when the rule has none.
    pub fn pick_backend(&self) -> Option<&WeightedBackend> {
        match self.backends.len() {
            0 => None,
            1 => self.backends.first(),
            _ => {
                let mut n = fastrand::u32(..self.total_weight);
                self.backends.iter().find(|b| {
                    if n < b.weight {
                        return true;
                    }
                    n -= b.weight;
                    false
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use http::{HeaderMap, Method};

    use super::*;

    fn table(hosts: &[&str]) -> RouteTable {
        let mut yaml = String::from("listeners: [{name: l, address: 127.0.0.1:1}]\nroutes:\n");
        for (i, h) in hosts.iter().enumerate() {
            yaml.push_str(&format!(
                "  - {{name: r{i}, hostnames: [\"{h}\"], rules: [{{backendRefs: [{{name: b}}]}}]}}\n"
            ));
        }
        yaml.push_str("backends: [{name: b, endpoints: [127.0.0.1:9]}]\n");
        let config = vakt_api::load_str(&yaml).unwrap();
        let backends: HashMap<_, _> = config
            .backends
            .iter()
            .map(|b| (b.name.clone(), crate::backend::Backend::new(b).unwrap()))
            .collect();
        RouteTable::build(&config, &["l".into()], &backends, &HashMap::new())
    }

    fn route<'a>(table: &'a RouteTable, host: &str) -> Option<&'a str> {
        let headers = HeaderMap::new();
        let view = RequestView {
            path: "/",
            query: None,
            method: &Method::GET,
            headers: &headers,
        };
        table.find(0, host, &view).map(|d| &*d.rule.route.name)
    }

    #[test]
    fn exact_then_longest_wildcard_suffix() {
        let t = table(&["*.example.com", "*.b.example.com", "a.b.example.com"]);
        assert_eq!(route(&t, "a.b.example.com"), Some("r2"));
        assert_eq!(route(&t, "x.b.example.com"), Some("r1"));
        assert_eq!(route(&t, "x.y.b.example.com"), Some("r1"));
        assert_eq!(route(&t, "b.example.com"), Some("r0"));
        assert_eq!(route(&t, "x.example.com"), Some("r0"));
        assert_eq!(route(&t, "example.com"), None);
        assert_eq!(route(&t, ".example.com"), None);
        assert_eq!(route(&t, "x.example.org"), None);
    }
}
