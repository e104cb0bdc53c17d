//! Balancers pick an endpoint for each attempt.
//!
//! Peak-EWMA power-of-two-choices (the default) compares two random
//! endpoints by latency times load; round robin takes turns; least
//! request takes the endpoint with the fewest requests in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::time::Instant;
use vakt_api::config::LoadBalancer;

use super::endpoint::Endpoint;

#[derive(Debug)]
pub struct Balancer {
    kind: LoadBalancer,
    next: AtomicUsize,
}

impl Balancer {
    pub fn new(kind: LoadBalancer) -> Self {
        Self {
            kind,
            next: AtomicUsize::new(fastrand::usize(..1024)),
        }
    }

    /// Picks among `endpoints` those for which `usable` holds, avoiding
    /// index `avoid` when another is usable (a retry goes elsewhere).
    pub fn pick(
        &self,
        endpoints: &[Arc<Endpoint>],
        usable: impl Fn(usize) -> bool,
        avoid: Option<usize>,
    ) -> Option<usize> {
        let ok = |i: usize| usable(i) && Some(i) != avoid;
        let count = (0..endpoints.len()).filter(|&i| ok(i)).count();
        if count == 0 {
            return avoid.filter(|&i| i < endpoints.len() && usable(i));
        }
        let nth = |n: usize| (0..endpoints.len()).filter(|&i| ok(i)).nth(n);
        match self.kind {
            LoadBalancer::RoundRobin => nth(self.next.fetch_add(1, Ordering::Relaxed) % count),
            LoadBalancer::LeastRequest => (0..endpoints.len())
                .filter(|&i| ok(i))
                .min_by_key(|&i| (endpoints[i].in_flight(), fastrand::u8(..))),
            LoadBalancer::P2cEwma => {
                if count == 1 {
                    return nth(0);
                }
                let a = fastrand::usize(..count);
                let b = (a + 1 + fastrand::usize(..count - 1)) % count;
                let (a, b) = (nth(a)?, nth(b)?);
                let now = Instant::now();
                if endpoints[a].load(now) <= endpoints[b].load(now) {
                    Some(a)
                } else {
                    Some(b)
                }
            }
        }
    }
}
