//! The fleet's verdict on each endpoint.
//!
//! Proxies report what they observe; the control plane may probe endpoints
//! itself. An endpoint is unhealthy fleet-wide only when at least `quorum`
//! distinct nodes report it failing within `report_ttl`, or when its own
//! probe has failed `probe_failures` times in a row. One confused proxy
//! therefore cannot take an endpoint away from everyone.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;
use vakt_api::convert::Objects;
use vakt_api::pb::discovery::v1::EndpointObservation;

/// A (backend, endpoint) pair.
pub type EndpointKey = (String, String);

/// Tuning of the verdict.
#[derive(Clone, Debug)]
pub struct HealthPolicy {
    /// Distinct failing reporters that make an endpoint unhealthy; default 2.
    pub quorum: usize,
    /// How long a report counts; default 30 s.
    pub report_ttl: Duration,
    /// Consecutive failed probes that make an endpoint unhealthy; default 2.
    pub probe_failures: u32,
}

/// Reports and probe results, and the verdict drawn from them.
#[derive(Debug)]
pub struct HealthBook {
    policy: HealthPolicy,
    /// Failing reports: endpoint → node → when it was reported.
    failing: HashMap<EndpointKey, HashMap<String, Instant>>,
    /// Consecutive failed probes per endpoint.
    probes: HashMap<EndpointKey, u32>,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            quorum: 2,
            report_ttl: Duration::from_secs(30),
            probe_failures: 2,
        }
    }
}

/// Whether one observation says the endpoint is failing: ejected by the
/// proxy, or at least half of 10 or more recent attempts failed.
pub fn is_failing(o: &EndpointObservation) -> bool {
    o.ejected || (o.requests >= 10 && o.failure_rate >= 0.5)
}

impl HealthBook {
    pub fn new(policy: HealthPolicy) -> Self {
        Self {
            policy,
            failing: HashMap::new(),
            probes: HashMap::new(),
        }
    }

    /// Replaces everything `node` said before with this report.
    pub fn report(&mut self, node: &str, observations: &[EndpointObservation], now: Instant) {
        self.forget(node);
        for o in observations.iter().filter(|o| is_failing(o)) {
            let key = (o.backend.clone(), o.endpoint.clone());
            self.failing
                .entry(key)
                .or_default()
                .insert(node.to_string(), now);
        }
    }

    /// Drops the reports of a node that went away.
    pub fn forget(&mut self, node: &str) {
        self.failing.retain(|_, nodes| {
            nodes.remove(node);
            !nodes.is_empty()
        });
    }

    /// Records one probe of an endpoint.
    pub fn probe(&mut self, key: EndpointKey, ok: bool) {
        if ok {
            self.probes.remove(&key);
        } else {
            *self.probes.entry(key).or_default() += 1;
        }
    }

    /// Failing reporters of an endpoint, counting only fresh reports.
    pub fn reporters(&self, key: &EndpointKey, now: Instant) -> usize {
        let ttl = self.policy.report_ttl;
        self.failing.get(key).map_or(0, |nodes| {
            nodes.values().filter(|&&at| now - at < ttl).count()
        })
    }

    pub fn probe_failed(&self, key: &EndpointKey) -> bool {
        self.probes
            .get(key)
            .is_some_and(|&n| n >= self.policy.probe_failures)
    }

    /// The endpoints of `objects` the fleet considers unhealthy.
    pub fn unhealthy(&self, objects: &Objects, now: Instant) -> BTreeSet<EndpointKey> {
        let mut out = BTreeSet::new();
        for b in &objects.backends {
            for e in &b.endpoints {
                let key = (b.name.clone(), e.clone());
                if self.reporters(&key, now) >= self.policy.quorum || self.probe_failed(&key) {
                    out.insert(key);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> Objects {
        let c = vakt_api::load_str("backends: [{name: a, endpoints: [127.0.0.1:1, 127.0.0.1:2]}]")
            .unwrap();
        Objects::from_config(&c)
    }

    fn ejected(endpoint: &str) -> EndpointObservation {
        EndpointObservation {
            backend: "a".into(),
            endpoint: endpoint.into(),
            ejected: true,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_reporter_is_not_enough() {
        let mut book = HealthBook::new(HealthPolicy::default());
        let now = Instant::now();
        book.report("n1", &[ejected("127.0.0.1:1")], now);
        assert!(book.unhealthy(&objects(), now).is_empty());

        book.report("n2", &[ejected("127.0.0.1:1")], now);
        let bad = book.unhealthy(&objects(), now);
        assert_eq!(bad.len(), 1);
        assert!(bad.contains(&("a".into(), "127.0.0.1:1".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn reports_expire_and_are_replaced() {
        let mut book = HealthBook::new(HealthPolicy::default());
        let start = Instant::now();
        book.report("n1", &[ejected("127.0.0.1:1")], start);
        book.report("n2", &[ejected("127.0.0.1:1")], start);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(book.unhealthy(&objects(), Instant::now()).is_empty());

        book.report("n1", &[ejected("127.0.0.1:1")], Instant::now());
        book.report("n2", &[ejected("127.0.0.1:1")], Instant::now());
        book.report("n2", &[], Instant::now());
        assert!(book.unhealthy(&objects(), Instant::now()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probes_count_alone() {
        let mut book = HealthBook::new(HealthPolicy::default());
        let key: EndpointKey = ("a".into(), "127.0.0.1:2".into());
        book.probe(key.clone(), false);
        assert!(book.unhealthy(&objects(), Instant::now()).is_empty());
        book.probe(key.clone(), false);
        assert!(book.unhealthy(&objects(), Instant::now()).contains(&key));
        book.probe(key, true);
        assert!(book.unhealthy(&objects(), Instant::now()).is_empty());
    }

    #[test]
    fn a_high_failure_rate_counts_as_failing() {
        let o = EndpointObservation {
            failure_rate: 0.6,
            requests: 20,
            ..Default::default()
        };
        assert!(is_failing(&o));
        assert!(!is_failing(&EndpointObservation { requests: 3, ..o }));
    }
}
