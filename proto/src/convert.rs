//! Conversions between the YAML model ([`crate::config`]) and its protobuf
//! mirror ([`crate::pb::config`]).
//!
//! Model to protobuf cannot fail. Protobuf to model checks what the wire
//! cannot promise (durations, enum values, ports) and names every problem
//! with its path, as loading a file does.

use std::collections::BTreeMap;

use crate::config as m;
use crate::pb::config::v1 as p;
use crate::{Duration, Problems};

/// Routes, backends and named rate limits: the dynamic part of a config.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Objects {
    pub routes: Vec<m::Route>,
    pub backends: Vec<m::Backend>,
    pub rate_limits: Vec<m::NamedRateLimit>,
}

impl Objects {
    /// The dynamic part of a whole config.
    pub fn from_config(c: &m::Config) -> Self {
        Self {
            routes: c.routes.clone(),
            backends: c.backends.clone(),
            rate_limits: c.rate_limits.clone(),
        }
    }

    /// A config with these objects and default listeners, admin and limits.
    pub fn into_config(self) -> m::Config {
        m::Config {
            routes: self.routes,
            backends: self.backends,
            rate_limits: self.rate_limits,
            ..m::Config::default()
        }
    }

    pub fn to_proto(&self) -> p::Objects {
        p::Objects {
            routes: self.routes.iter().map(route_to).collect(),
            backends: self.backends.iter().map(backend_to).collect(),
            rate_limits: self.rate_limits.iter().map(named_rate_to).collect(),
        }
    }

    /// Reads objects off the wire; every problem is named.
    pub fn from_proto(o: &p::Objects) -> Result<Self, Problems> {
        let mut cx = Cx::default();
        let out = Self {
            routes: o
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| cx.route(r, &item("routes", i, &r.name)))
                .collect(),
            backends: o
                .backends
                .iter()
                .enumerate()
                .map(|(i, b)| cx.backend(b, &item("backends", i, &b.name)))
                .collect(),
            rate_limits: o.rate_limits.iter().map(named_rate_from).collect(),
        };
        cx.problems.into_result().map(|()| out)
    }
}

fn item(key: &str, i: usize, name: &str) -> String {
    if name.is_empty() {
        format!("{key}[{i}]")
    } else {
        format!("{key}[{name}]")
    }
}

fn d(v: Duration) -> String {
    v.to_string()
}

// Model to protobuf.

fn route_to(r: &m::Route) -> p::Route {
    p::Route {
        name: r.name.clone(),
        listeners: r
            .listeners
            .as_ref()
            .map(|l| p::StringList { items: l.clone() }),
        hostnames: r.hostnames.clone(),
        auth: r.auth.as_ref().map(auth_to),
        rate_limit: r.rate_limit.as_ref().map(|rl| p::RateLimit {
            policy: rl.policy.clone(),
            requests_per_second: rl.requests_per_second,
            burst: rl.burst,
            key: rl.key.clone(),
        }),
        rules: r.rules.iter().map(rule_to).collect(),
    }
}

fn auth_to(a: &m::Auth) -> p::Auth {
    p::Auth {
        jwt: a.jwt.as_ref().map(|j| p::JwtAuth {
            issuer: j.issuer.clone(),
            audiences: j.audiences.clone(),
            jwks_file: j.jwks_file.clone(),
            forward_claims: j.forward_claims.clone().into_iter().collect(),
            required_claims: j.required_claims.clone().into_iter().collect(),
            leeway: d(j.leeway),
        }),
        api_keys: a.api_keys.as_ref().map(|k| p::ApiKeyAuth {
            header: k.header.clone(),
            keys_file: k.keys_file.clone(),
        }),
    }
}

fn rule_to(r: &m::Rule) -> p::Rule {
    p::Rule {
        matches: r.matches.iter().map(match_to).collect(),
        filters: r.filters.iter().map(filter_to).collect(),
        backend_refs: r
            .backend_refs
            .iter()
            .map(|b| p::BackendRef {
                name: b.name.clone(),
                weight: b.weight,
                port: b.port.map(u32::from),
            })
            .collect(),
        timeouts: r.timeouts.as_ref().map(|t| p::Timeouts {
            request: t.request.map(d),
            backend_request: t.backend_request.map(d),
            idle: t.idle.map(d),
        }),
        retry: r.retry.as_ref().map(|t| p::Retry {
            attempts: t.attempts,
            codes: t.codes.iter().map(|&c| u32::from(c)).collect(),
            backoff: d(t.backoff),
            replay_limit_bytes: t.replay_limit_bytes,
        }),
        fallback: r.fallback.as_ref().map(|f| p::Fallback {
            status: u32::from(f.status),
            headers: f.headers.clone().into_iter().collect(),
            body: f.body.clone(),
        }),
    }
}

fn match_to(x: &m::Match) -> p::Match {
    let value_match = |h: &m::HeaderMatch| p::HeaderMatch {
        r#type: match h.kind {
            m::ValueMatchType::Exact => p::ValueMatchType::Exact,
            m::ValueMatchType::RegularExpression => p::ValueMatchType::RegularExpression,
        } as i32,
        name: h.name.clone(),
        value: h.value.clone(),
    };
    p::Match {
        path: x.path.as_ref().map(|pm| p::PathMatch {
            r#type: match pm.kind {
                m::PathMatchType::Exact => p::PathMatchType::Exact,
                m::PathMatchType::PathPrefix => p::PathMatchType::PathPrefix,
                m::PathMatchType::RegularExpression => p::PathMatchType::RegularExpression,
            } as i32,
            value: pm.value.clone(),
        }),
        method: x.method.clone(),
        headers: x.headers.iter().map(value_match).collect(),
        query_params: x.query_params.iter().map(value_match).collect(),
    }
}

fn filter_to(f: &m::Filter) -> p::Filter {
    p::Filter {
        r#type: match f.kind {
            m::FilterType::RequestHeaderModifier => p::FilterType::RequestHeaderModifier,
            m::FilterType::ResponseHeaderModifier => p::FilterType::ResponseHeaderModifier,
            m::FilterType::RequestRedirect => p::FilterType::RequestRedirect,
            m::FilterType::UrlRewrite => p::FilterType::UrlRewrite,
        } as i32,
        request_header_modifier: f.request_header_modifier.as_ref().map(modifier_to),
        response_header_modifier: f.response_header_modifier.as_ref().map(modifier_to),
        request_redirect: f.request_redirect.as_ref().map(|r| p::RequestRedirect {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            path: r.path.as_ref().map(path_mod_to),
            port: r.port.map(u32::from),
            status_code: u32::from(r.status_code),
        }),
        url_rewrite: f.url_rewrite.as_ref().map(|u| p::UrlRewrite {
            hostname: u.hostname.clone(),
            path: u.path.as_ref().map(path_mod_to),
        }),
    }
}

fn modifier_to(h: &m::HeaderModifier) -> p::HeaderModifier {
    let values = |v: &[m::HeaderValue]| {
        v.iter()
            .map(|h| p::HeaderValue {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    p::HeaderModifier {
        set: values(&h.set),
        add: values(&h.add),
        remove: h.remove.clone(),
    }
}

fn path_mod_to(x: &m::PathModifier) -> p::PathModifier {
    p::PathModifier {
        r#type: match x.kind {
            m::PathModifierType::ReplaceFullPath => p::PathModifierType::ReplaceFullPath,
            m::PathModifierType::ReplacePrefixMatch => p::PathModifierType::ReplacePrefixMatch,
        } as i32,
        replace_full_path: x.replace_full_path.clone(),
        replace_prefix_match: x.replace_prefix_match.clone(),
    }
}

fn named_rate_to(r: &m::NamedRateLimit) -> p::NamedRateLimit {
    p::NamedRateLimit {
        name: r.name.clone(),
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        key: r.key.clone(),
    }
}

fn named_rate_from(r: &p::NamedRateLimit) -> m::NamedRateLimit {
    m::NamedRateLimit {
        name: r.name.clone(),
        requests_per_second: r.requests_per_second,
        burst: r.burst,
        key: r.key.clone(),
    }
}

fn backend_to(b: &m::Backend) -> p::Backend {
    p::Backend {
        name: b.name.clone(),
        endpoints: b.endpoints.clone(),
        addresses: b.addresses.clone(),
        protocol: match b.protocol {
            m::Protocol::Http1 => p::Protocol::Http1,
            m::Protocol::Http2 => p::Protocol::Http2,
            m::Protocol::Tcp => p::Protocol::Tcp,
        } as i32,
        load_balancer: match b.load_balancer {
            m::LoadBalancer::P2cEwma => p::LoadBalancer::P2cEwma,
            m::LoadBalancer::RoundRobin => p::LoadBalancer::RoundRobin,
            m::LoadBalancer::LeastRequest => p::LoadBalancer::LeastRequest,
        } as i32,
        connect_timeout: d(b.connect_timeout),
        connection_pool: Some(p::ConnectionPool {
            max_idle_per_endpoint: b.connection_pool.max_idle_per_endpoint as u64,
            idle_timeout: d(b.connection_pool.idle_timeout),
        }),
        circuit_breaker: b.circuit_breaker.as_ref().map(breaker_to),
        outlier_detection: b.outlier_detection.as_ref().map(|o| p::OutlierDetection {
            consecutive_failures: o.consecutive_failures,
            ejection_time: d(o.ejection_time),
            max_ejection_percent: o.max_ejection_percent,
        }),
        health_check: b.health_check.as_ref().map(|h| p::HealthCheck {
            path: h.path.clone(),
            interval: d(h.interval),
            timeout: d(h.timeout),
            unhealthy_threshold: h.unhealthy_threshold,
            healthy_threshold: h.healthy_threshold,
        }),
        limits: Some(p::BackendLimits {
            max_requests: b.limits.max_requests,
            max_pending_requests: b.limits.max_pending_requests,
            queue_timeout: d(b.limits.queue_timeout),
            max_connections: b.limits.max_connections,
        }),
        retry_budget: Some(p::RetryBudget {
            percent: b.retry_budget.percent,
            min_retries_per_second: b.retry_budget.min_retries_per_second,
        }),
        tls: b.tls.as_ref().map(|t| p::UpstreamTls {
            ca_file: t.ca_file.clone(),
            server_name: t.server_name.clone(),
            client_certificate: t.client_certificate.as_ref().map(|c| p::CertificateFiles {
                cert_file: c.cert_file.clone(),
                key_file: c.key_file.clone(),
            }),
        }),
    }
}

fn breaker_to(c: &m::CircuitBreaker) -> p::CircuitBreaker {
    p::CircuitBreaker {
        consecutive_failures: c.consecutive_failures,
        failure_rate: c.failure_rate.as_ref().map(|f| p::FailureRate {
            percent: f.percent,
            min_requests: f.min_requests,
            window: d(f.window),
        }),
        slow_call: c.slow_call.as_ref().map(|s| p::SlowCall {
            threshold: d(s.threshold),
            percent: s.percent,
            min_requests: s.min_requests,
        }),
        open_for: d(c.open_for),
        max_open_for: d(c.max_open_for),
        half_open_requests: c.half_open_requests,
        grpc_failure_codes: c.grpc_failure_codes.clone(),
    }
}

// Protobuf to model.

/// Collects problems while reading messages off the wire.
#[derive(Default)]
struct Cx {
    problems: Problems,
}

impl Cx {
    fn dur(&mut self, s: &str, at: &str) -> Duration {
        s.parse()
            .unwrap_or_else(|e: crate::duration::DurationError| {
                self.problems.push(at, e.to_string());
                Duration::default()
            })
    }

    fn opt_dur(&mut self, s: &Option<String>, at: &str) -> Option<Duration> {
        s.as_deref().map(|s| self.dur(s, at))
    }

    fn u16(&mut self, v: u32, at: &str) -> u16 {
        u16::try_from(v).unwrap_or_else(|_| {
            self.problems.push(at, format!("{v} is above 65535"));
            0
        })
    }

    fn bad_enum<T: Default>(&mut self, v: i32, at: &str) -> T {
        self.problems.push(at, format!("unknown value {v}"));
        T::default()
    }

    fn route(&mut self, r: &p::Route, at: &str) -> m::Route {
        m::Route {
            name: r.name.clone(),
            listeners: r.listeners.as_ref().map(|l| l.items.clone()),
            hostnames: r.hostnames.clone(),
            auth: r.auth.as_ref().map(|a| self.auth(a, &format!("{at}.auth"))),
            rate_limit: r.rate_limit.as_ref().map(|rl| m::RateLimit {
                policy: rl.policy.clone(),
                requests_per_second: rl.requests_per_second,
                burst: rl.burst,
                key: rl.key.clone(),
            }),
            rules: r
                .rules
                .iter()
                .enumerate()
                .map(|(i, rule)| self.rule(rule, &format!("{at}.rules[{i}]")))
                .collect(),
        }
    }

    fn auth(&mut self, a: &p::Auth, at: &str) -> m::Auth {
        m::Auth {
            jwt: a.jwt.as_ref().map(|j| m::JwtAuth {
                issuer: j.issuer.clone(),
                audiences: j.audiences.clone(),
                jwks_file: j.jwks_file.clone(),
                forward_claims: sorted(&j.forward_claims),
                required_claims: sorted(&j.required_claims),
                leeway: self.dur(&j.leeway, &format!("{at}.jwt.leeway")),
            }),
            api_keys: a.api_keys.as_ref().map(|k| m::ApiKeyAuth {
                header: k.header.clone(),
                keys_file: k.keys_file.clone(),
            }),
        }
    }

    fn rule(&mut self, r: &p::Rule, at: &str) -> m::Rule {
        let matches = r.matches.iter().enumerate();
        let filters = r.filters.iter().enumerate();
        let refs = r.backend_refs.iter().enumerate();
        m::Rule {
            matches: matches
                .map(|(i, x)| self.matcher(x, &format!("{at}.matches[{i}]")))
                .collect(),
            filters: filters
                .map(|(i, f)| self.filter(f, &format!("{at}.filters[{i}]")))
                .collect(),
            backend_refs: refs
                .map(|(i, b)| m::BackendRef {
                    name: b.name.clone(),
                    weight: b.weight,
                    port: b
                        .port
                        .map(|v| self.u16(v, &format!("{at}.backendRefs[{i}].port"))),
                })
                .collect(),
            timeouts: r.timeouts.as_ref().map(|t| m::Timeouts {
                request: self.opt_dur(&t.request, &format!("{at}.timeouts.request")),
                backend_request: self
                    .opt_dur(&t.backend_request, &format!("{at}.timeouts.backendRequest")),
                idle: self.opt_dur(&t.idle, &format!("{at}.timeouts.idle")),
            }),
            retry: r.retry.as_ref().map(|t| m::Retry {
                attempts: t.attempts,
                codes: t
                    .codes
                    .iter()
                    .map(|&c| self.u16(c, &format!("{at}.retry.codes")))
                    .collect(),
                backoff: self.dur(&t.backoff, &format!("{at}.retry.backoff")),
                replay_limit_bytes: t.replay_limit_bytes,
            }),
            fallback: r.fallback.as_ref().map(|f| m::Fallback {
                status: self.u16(f.status, &format!("{at}.fallback.status")),
                headers: sorted(&f.headers),
                body: f.body.clone(),
            }),
        }
    }

    fn matcher(&mut self, x: &p::Match, at: &str) -> m::Match {
        let mut values = |list: &[p::HeaderMatch], key: &str| -> Vec<m::HeaderMatch> {
            list.iter()
                .enumerate()
                .map(|(i, h)| m::HeaderMatch {
                    kind: match p::ValueMatchType::try_from(h.r#type) {
                        Ok(p::ValueMatchType::Exact) => m::ValueMatchType::Exact,
                        Ok(p::ValueMatchType::RegularExpression) => {
                            m::ValueMatchType::RegularExpression
                        }
                        Err(_) => self.bad_enum(h.r#type, &format!("{at}.{key}[{i}].type")),
                    },
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect()
        };
        let headers = values(&x.headers, "headers");
        let query_params = values(&x.query_params, "queryParams");
        m::Match {
            path: x.path.as_ref().map(|pm| m::PathMatch {
                kind: match p::PathMatchType::try_from(pm.r#type) {
                    Ok(p::PathMatchType::Exact) => m::PathMatchType::Exact,
                    Ok(p::PathMatchType::PathPrefix) => m::PathMatchType::PathPrefix,
                    Ok(p::PathMatchType::RegularExpression) => m::PathMatchType::RegularExpression,
                    Err(_) => self.bad_enum(pm.r#type, &format!("{at}.path.type")),
                },
                value: pm.value.clone(),
            }),
            method: x.method.clone(),
            headers,
            query_params,
        }
    }

    fn filter(&mut self, f: &p::Filter, at: &str) -> m::Filter {
        let kind = match p::FilterType::try_from(f.r#type) {
            Ok(p::FilterType::RequestHeaderModifier) => m::FilterType::RequestHeaderModifier,
            Ok(p::FilterType::ResponseHeaderModifier) => m::FilterType::ResponseHeaderModifier,
            Ok(p::FilterType::RequestRedirect) => m::FilterType::RequestRedirect,
            Ok(p::FilterType::UrlRewrite) => m::FilterType::UrlRewrite,
            Ok(p::FilterType::Unspecified) | Err(_) => {
                self.problems
                    .push(format!("{at}.type"), format!("unknown value {}", f.r#type));
                m::FilterType::RequestHeaderModifier
            }
        };
        m::Filter {
            kind,
            request_header_modifier: f.request_header_modifier.as_ref().map(modifier_from),
            response_header_modifier: f.response_header_modifier.as_ref().map(modifier_from),
            request_redirect: f.request_redirect.as_ref().map(|r| m::RequestRedirect {
                scheme: r.scheme.clone(),
                hostname: r.hostname.clone(),
                path: r
                    .path
                    .as_ref()
                    .map(|x| self.path_mod(x, &format!("{at}.requestRedirect.path"))),
                port: r
                    .port
                    .map(|v| self.u16(v, &format!("{at}.requestRedirect.port"))),
                status_code: self.u16(r.status_code, &format!("{at}.requestRedirect.statusCode")),
            }),
            url_rewrite: f.url_rewrite.as_ref().map(|u| m::UrlRewrite {
                hostname: u.hostname.clone(),
                path: u
                    .path
                    .as_ref()
                    .map(|x| self.path_mod(x, &format!("{at}.urlRewrite.path"))),
            }),
        }
    }

    fn path_mod(&mut self, x: &p::PathModifier, at: &str) -> m::PathModifier {
        let kind = match p::PathModifierType::try_from(x.r#type) {
            Ok(p::PathModifierType::ReplaceFullPath) => m::PathModifierType::ReplaceFullPath,
            Ok(p::PathModifierType::ReplacePrefixMatch) => m::PathModifierType::ReplacePrefixMatch,
            Ok(p::PathModifierType::Unspecified) | Err(_) => {
                self.problems
                    .push(format!("{at}.type"), format!("unknown value {}", x.r#type));
                m::PathModifierType::ReplaceFullPath
            }
        };
        m::PathModifier {
            kind,
            replace_full_path: x.replace_full_path.clone(),
            replace_prefix_match: x.replace_prefix_match.clone(),
        }
    }

    fn backend(&mut self, b: &p::Backend, at: &str) -> m::Backend {
        let protocol = match p::Protocol::try_from(b.protocol) {
            Ok(p::Protocol::Http1) => m::Protocol::Http1,
            Ok(p::Protocol::Http2) => m::Protocol::Http2,
            Ok(p::Protocol::Tcp) => m::Protocol::Tcp,
            Err(_) => self.bad_enum(b.protocol, &format!("{at}.protocol")),
        };
        let load_balancer = match p::LoadBalancer::try_from(b.load_balancer) {
            Ok(p::LoadBalancer::P2cEwma) => m::LoadBalancer::P2cEwma,
            Ok(p::LoadBalancer::RoundRobin) => m::LoadBalancer::RoundRobin,
            Ok(p::LoadBalancer::LeastRequest) => m::LoadBalancer::LeastRequest,
            Err(_) => self.bad_enum(b.load_balancer, &format!("{at}.loadBalancer")),
        };
        let defaults = m::Backend {
            name: String::new(),
            endpoints: Vec::new(),
            addresses: Vec::new(),
            protocol,
            load_balancer,
            connect_timeout: self.dur(&b.connect_timeout, &format!("{at}.connectTimeout")),
            connection_pool: Default::default(),
            circuit_breaker: None,
            outlier_detection: None,
            health_check: None,
            limits: Default::default(),
            retry_budget: Default::default(),
            tls: None,
        };
        self.backend_policy(b, at, defaults)
    }

    fn backend_policy(&mut self, b: &p::Backend, at: &str, base: m::Backend) -> m::Backend {
        m::Backend {
            name: b.name.clone(),
            endpoints: b.endpoints.clone(),
            addresses: b.addresses.clone(),
            connection_pool: match &b.connection_pool {
                Some(c) => m::ConnectionPool {
                    max_idle_per_endpoint: c.max_idle_per_endpoint as usize,
                    idle_timeout: self
                        .dur(&c.idle_timeout, &format!("{at}.connectionPool.idleTimeout")),
                },
                None => base.connection_pool,
            },
            circuit_breaker: b
                .circuit_breaker
                .as_ref()
                .map(|c| self.breaker(c, &format!("{at}.circuitBreaker"))),
            outlier_detection: b.outlier_detection.as_ref().map(|o| m::OutlierDetection {
                consecutive_failures: o.consecutive_failures,
                ejection_time: self.dur(
                    &o.ejection_time,
                    &format!("{at}.outlierDetection.ejectionTime"),
                ),
                max_ejection_percent: o.max_ejection_percent,
            }),
            health_check: b.health_check.as_ref().map(|h| m::HealthCheck {
                path: h.path.clone(),
                interval: self.dur(&h.interval, &format!("{at}.healthCheck.interval")),
                timeout: self.dur(&h.timeout, &format!("{at}.healthCheck.timeout")),
                unhealthy_threshold: h.unhealthy_threshold,
                healthy_threshold: h.healthy_threshold,
            }),
            limits: match &b.limits {
                Some(l) => m::BackendLimits {
                    max_requests: l.max_requests,
                    max_pending_requests: l.max_pending_requests,
                    queue_timeout: self.dur(&l.queue_timeout, &format!("{at}.limits.queueTimeout")),
                    max_connections: l.max_connections,
                },
                None => base.limits,
            },
            retry_budget: match &b.retry_budget {
                Some(r) => m::RetryBudget {
                    percent: r.percent,
                    min_retries_per_second: r.min_retries_per_second,
                },
                None => base.retry_budget,
            },
            tls: b.tls.as_ref().map(|t| m::UpstreamTls {
                ca_file: t.ca_file.clone(),
                server_name: t.server_name.clone(),
                client_certificate: t.client_certificate.as_ref().map(|c| m::CertificateFiles {
                    cert_file: c.cert_file.clone(),
                    key_file: c.key_file.clone(),
                }),
            }),
            ..base
        }
    }

    fn breaker(&mut self, c: &p::CircuitBreaker, at: &str) -> m::CircuitBreaker {
        m::CircuitBreaker {
            consecutive_failures: c.consecutive_failures,
            failure_rate: c.failure_rate.as_ref().map(|f| m::FailureRate {
                percent: f.percent,
                min_requests: f.min_requests,
                window: self.dur(&f.window, &format!("{at}.failureRate.window")),
            }),
            slow_call: c.slow_call.as_ref().map(|s| m::SlowCall {
                threshold: self.dur(&s.threshold, &format!("{at}.slowCall.threshold")),
                percent: s.percent,
                min_requests: s.min_requests,
            }),
            open_for: self.dur(&c.open_for, &format!("{at}.openFor")),
            max_open_for: self.dur(&c.max_open_for, &format!("{at}.maxOpenFor")),
            half_open_requests: c.half_open_requests,
            grpc_failure_codes: c.grpc_failure_codes.clone(),
        }
    }
}

fn modifier_from(h: &p::HeaderModifier) -> m::HeaderModifier {
    let values = |v: &[p::HeaderValue]| {
        v.iter()
            .map(|h| m::HeaderValue {
                name: h.name.clone(),
                value: h.value.clone(),
            })
            .collect()
    };
    m::HeaderModifier {
        set: values(&h.set),
        add: values(&h.add),
        remove: h.remove.clone(),
    }
}

fn sorted(map: &std::collections::HashMap<String, String>) -> BTreeMap<String, String> {
    map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[cfg(test)]
mod tests;
