//! Rate limits: a token bucket per (policy, key), where the key is the
//! client address, a header value or the JWT subject.
//!
//! A route's inline `rateLimit` is its own policy, so two routes with equal
//! inline settings never share buckets; a `policy: NAME` reference shares
//! the named top-level limit with every route that names it. Buckets are
//! GCRA cells: one instant per key (the theoretical arrival time), exact in
//! integer nanoseconds, so a fresh key passes exactly `burst` requests at
//! once and then one per `1 / requestsPerSecond` seconds.
//!
//! The pipeline resolves [`RateLimiter::route`] once per request after
//! routing and authentication, builds the key with [`KeySource::key`],
//! calls [`RateLimiter::check`] and, when refused, answers 429 with
//! [`Decision::write_headers`].

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use vakt_api::config::{NamedRateLimit, RateLimit, Route};

/// Keys tracked per policy before idle ones are evicted early and, if
/// none are idle, new keys share one overflow bucket: 100 000.
pub const DEFAULT_MAX_KEYS: usize = 100_000;

/// Why rate limits could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    #[error("route {route}: no rate limit named {policy:?}")]
    UnknownPolicy { route: String, policy: String },
    #[error("{at}: requestsPerSecond and burst are both needed")]
    Incomplete { at: String },
    #[error("{at}: requestsPerSecond must be above 0 and burst at least 1")]
    OutOfRange { at: String },
    #[error("{at}: key {key:?} is not client-ip, header:NAME or jwt-sub")]
    Key { at: String, key: String },
}

/// What identifies a caller to a policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The client address (see [`crate::edge::client_ip`]).
    ClientIp,
    /// The value of a request header; requests without it share one bucket.
    Header(HeaderName),
    /// The authenticated subject; requests without one share one bucket.
    JwtSubject,
}

/// A key value borrowed from the request, or the bytes of an address.
#[derive(Clone, Copy, Debug)]
pub enum RateKey<'a> {
    Ip([u8; 16]),
    Bytes(&'a [u8]),
}

/// A policy, as the routes that use it refer to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PolicyId(u32);

/// The outcome of one [`RateLimiter::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst: requests a fresh key may send at once.
    pub limit: u32,
    /// Requests the key may still send right now.
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
    /// Until the next request would pass; zero when allowed.
    pub retry_after: Duration,
}

/// Every policy of one config, and which route uses which.
#[derive(Debug)]
pub struct RateLimiter {
    policies: Vec<Arc<Policy>>,
    routes: HashMap<String, PolicyId>,
}

#[derive(Debug)]
struct Policy {
    /// `NAME` for a shared policy, `route/NAME` for an inline one.
    name: String,
    settings: Settings,
    key: KeySource,
    /// Between two tokens.
    interval: Duration,
    /// How far ahead of now a key's arrival time may run: `burst - 1`
    /// intervals.
    tolerance: Duration,
    max_keys: usize,
    buckets: DashMap<Box<[u8]>, Instant>,
    overflow: Mutex<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
struct Settings {
    rps: f64,
    burst: u32,
}

impl RateLimiter {
    /// Builds one policy per top-level rate limit and one per route with
    /// an inline limit; see [`DEFAULT_MAX_KEYS`].
    pub fn from_config(routes: &[Route], named: &[NamedRateLimit]) -> Result<Self, RateLimitError> {
        let mut policies = Vec::new();
        let mut by_name = HashMap::new();
        for n in named {
            let at = format!("rateLimits[{}]", n.name);
            let p = Policy::new(n.name.clone(), n.requests_per_second, n.burst, &n.key, &at)?;
            by_name.insert(n.name.as_str(), PolicyId(policies.len() as u32));
            policies.push(Arc::new(p));
        }
        let mut by_route = HashMap::new();
        for r in routes {
            let Some(rl) = &r.rate_limit else { continue };
            let id =
                match &rl.policy {
                    Some(name) => *by_name.get(name.as_str()).ok_or_else(|| {
                        RateLimitError::UnknownPolicy {
                            route: r.name.clone(),
                            policy: name.clone(),
                        }
                    })?,
                    None => {
                        policies.push(Arc::new(Policy::inline(&r.name, rl)?));
                        PolicyId(policies.len() as u32 - 1)
                    }
                };
            by_route.insert(r.name.clone(), id);
        }
        Ok(Self {
            policies,
            routes: by_route,
        })
    }

    /// Keeps the buckets of `previous` for every policy whose name,
    /// rate, burst and key are unchanged, so a config reload does not hand
    /// every client a fresh burst.
    pub fn carry_over(mut self, previous: &RateLimiter) -> Self {
        for p in &mut self.policies {
            let same = previous
                .policies
                .iter()
                .find(|old| old.name == p.name && old.settings == p.settings && old.key == p.key);
            if let Some(old) = same {
                *p = old.clone();
            }
        }
        self
    }

    /// The policy of route `route`, if it has a rate limit.
    pub fn route(&self, route: &str) -> Option<PolicyId> {
        self.routes.get(route).copied()
    }

    /// What the policy counts by.
    pub fn key_source(&self, id: PolicyId) -> &KeySource {
        &self.policies[id.0 as usize].key
    }

    /// Takes a token for `key` under policy `id` now.
    pub fn check(&self, id: PolicyId, key: RateKey<'_>) -> Decision {
        self.policies[id.0 as usize].take(key.as_bytes(), Instant::now())
    }

    /// Drops every bucket that is full again (forgetting it changes
    /// nothing); returns how many were dropped.
    pub fn evict_idle(&self) -> usize {
        let now = Instant::now();
        self.policies.iter().map(|p| p.evict_idle(now)).sum()
    }

    /// Keys currently tracked under policy `id`.
    pub fn tracked_keys(&self, id: PolicyId) -> usize {
        self.policies[id.0 as usize].buckets.len()
    }

    /// Calls [`RateLimiter::evict_idle`] every `every` until the limiter
    /// is dropped.
    pub fn spawn_eviction(self: &Arc<Self>, every: Duration) -> JoinHandle<()> {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(limiter) = weak.upgrade() else { break };
                let evicted = limiter.evict_idle();
                tracing::trace!(evicted, "idle rate limit buckets dropped");
            }
        })
    }
}

impl Policy {
    fn inline(route: &str, rl: &RateLimit) -> Result<Self, RateLimitError> {
        let at = format!("routes[{route}].rateLimit");
        let (Some(rps), Some(burst)) = (rl.requests_per_second, rl.burst) else {
            return Err(RateLimitError::Incomplete { at });
        };
        let key = rl.key.as_deref().unwrap_or("client-ip");
        Self::new(format!("route/{route}"), rps, burst, key, &at)
    }

    fn new(
        name: String,
        rps: f64,
        burst: u32,
        key: &str,
        at: &str,
    ) -> Result<Self, RateLimitError> {
        if !(rps.is_finite() && rps > 0.0) || burst == 0 {
            return Err(RateLimitError::OutOfRange { at: at.into() });
        }
        let key = KeySource::parse(key).ok_or_else(|| RateLimitError::Key {
            at: at.into(),
            key: key.into(),
        })?;
        let interval = Duration::from_nanos((1e9 / rps).round().max(1.0) as u64);
        Ok(Self {
            name,
            settings: Settings { rps, burst },
            key,
            interval,
            tolerance: interval * (burst - 1),
            max_keys: DEFAULT_MAX_KEYS,
            buckets: DashMap::new(),
            overflow: Mutex::new(Instant::now()),
        })
    }

    fn take(&self, key: &[u8], now: Instant) -> Decision {
        if let Some(mut tat) = self.buckets.get_mut(key) {
            return self.gcra(&mut tat, now);
        }
        if self.buckets.len() >= self.max_keys {
            self.evict_idle(now);
            if self.buckets.len() >= self.max_keys {
                let mut tat = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
                return self.gcra(&mut tat, now);
            }
        }
        let mut tat = self.buckets.entry(key.into()).or_insert(now);
        self.gcra(&mut tat, now)
    }

    /// One GCRA step: a request passes when the key's arrival time is at
    /// most `tolerance` ahead of now, and then moves it one interval on.
    fn gcra(&self, tat: &mut Instant, now: Instant) -> Decision {
        let ahead = tat.saturating_duration_since(now);
        if ahead > self.tolerance {
            return Decision {
                allowed: false,
                limit: self.settings.burst,
                remaining: 0,
                reset: ahead,
                retry_after: ahead - self.tolerance,
            };
        }
        *tat = now.max(*tat) + self.interval;
        let slack = self.tolerance - ahead;
        Decision {
            allowed: true,
            limit: self.settings.burst,
            remaining: (slack.as_nanos() / self.interval.as_nanos()) as u32,
            reset: ahead + self.interval,
            retry_after: Duration::ZERO,
        }
    }

    fn evict_idle(&self, now: Instant) -> usize {
        let before = self.buckets.len();
        self.buckets.retain(|_, tat| *tat > now);
        before.saturating_sub(self.buckets.len())
    }
}

impl KeySource {
    /// Parses `client-ip`, `header:NAME` or `jwt-sub`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "client-ip" => Some(Self::ClientIp),
            "jwt-sub" => Some(Self::JwtSubject),
            _ => {
                let name = s.strip_prefix("header:")?;
                HeaderName::from_bytes(name.as_bytes())
                    .ok()
                    .map(Self::Header)
            }
        }
    }

    /// The key of one request. `subject` is the authenticated subject, if
    /// the route authenticates.
    pub fn key<'a>(
        &self,
        client: IpAddr,
        headers: &'a HeaderMap,
        subject: Option<&'a str>,
    ) -> RateKey<'a> {
        match self {
            Self::ClientIp => RateKey::Ip(match client {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            }),
            Self::Header(name) => {
                RateKey::Bytes(headers.get(name).map_or(&[][..], |v| v.as_bytes()))
            }
            Self::JwtSubject => RateKey::Bytes(subject.map_or(&[][..], str::as_bytes)),
        }
    }
}

impl RateKey<'_> {
    /// The bytes buckets are keyed by.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Ip(b) => b,
            Self::Bytes(b) => b,
        }
    }
}

impl Decision {
    /// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`
    /// (whole seconds, rounded up) and, when refused, `Retry-After` (whole
    /// seconds, at least 1).
    pub fn write_headers(&self, headers: &mut HeaderMap) {
        headers.insert(
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(self.limit),
        );
        headers.insert(
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(self.remaining),
        );
        headers.insert(
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(ceil_secs(self.reset)),
        );
        if !self.allowed {
            headers.insert(
                http::header::RETRY_AFTER,
                HeaderValue::from(ceil_secs(self.retry_after).max(1)),
            );
        }
    }
}

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests;
