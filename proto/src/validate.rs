//! Checks that need the whole config: names are unique, references point
//! at things that exist, values make sense together. Every problem is
//! collected; nothing stops at the first.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use crate::Problems;
use crate::config::*;

/// Checks a whole proxy config.
pub fn check(config: &Config, problems: &mut Problems) {
    if config.admin.address.parse::<SocketAddr>().is_err() {
        problems.push("admin.address", "expected ip:port");
    }
    check_listeners(&config.listeners, problems);
    check_backends(&config.backends, problems);
    let listeners: Vec<&str> = config.listeners.iter().map(|l| l.name.as_str()).collect();
    check_routes(config, Some(&listeners), problems);
    check_tracing(&config.tracing, problems);
}

/// Checks `tracing`: a share from 0 to 1 and a plain-HTTP collector
/// address.
pub fn check_tracing(tracing: &Tracing, problems: &mut Problems) {
    if !(0.0..=1.0).contains(&tracing.sample_rate) {
        problems.push("tracing.sampleRate", "expected a number from 0 to 1");
    }
    let Some(otlp) = &tracing.otlp else { return };
    let uri = otlp.endpoint.parse::<http::Uri>();
    let plain = uri.as_ref().is_ok_and(|u| {
        u.scheme_str() == Some("http") && u.authority().is_some_and(|a| a.port().is_some())
    });
    if !plain {
        problems.push("tracing.otlp.endpoint", "expected http://host:port");
    }
    if otlp.service_name.is_empty() {
        problems.push("tracing.otlp.serviceName", "must not be empty");
    }
    if otlp.timeout.get().is_zero() {
        problems.push("tracing.otlp.timeout", "must be above zero");
    }
}

/// Checks listeners on their own.
pub fn check_listeners(listeners: &[Listener], problems: &mut Problems) {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    for l in listeners {
        let at = format!("listeners[{}]", l.name);
        check_name(&l.name, &at, &mut names, problems);
        match l.address.parse::<SocketAddr>() {
            Ok(a) if !addrs.insert(a) => problems.push(format!("{at}.address"), "used twice"),
            Ok(_) => {}
            Err(_) => problems.push(format!("{at}.address"), "expected ip:port"),
        }
        for (i, cidr) in l.trusted_proxies.iter().enumerate() {
            if parse_cidr(cidr).is_none() {
                problems.push(format!("{at}.trustedProxies[{i}]"), "expected a CIDR");
            }
        }
        if let Some(tls) = &l.tls {
            check_listener_tls(tls, &format!("{at}.tls"), problems);
        }
        check_listener_mode(l, &at, problems);
    }
}

/// Transparent listeners take no TLS or redirect; their own settings make
/// no sense on an HTTP listener.
fn check_listener_mode(l: &Listener, at: &str, problems: &mut Problems) {
    if !l.mode.is_transparent() {
        let only = "only for mode outbound or inbound";
        if !l.opaque_ports.is_empty() {
            problems.push(format!("{at}.opaquePorts"), only);
        }
        if l.detect_timeout.get() != DEFAULT_DETECT_TIMEOUT {
            problems.push(format!("{at}.detectTimeout"), only);
        }
        if l.max_connections.is_some() {
            problems.push(format!("{at}.maxConnections"), only);
        }
        if l.max_requests.is_some() {
            problems.push(format!("{at}.maxRequests"), only);
        }
        return;
    }
    let not = "not for a transparent listener";
    if l.tls.is_some() {
        problems.push(format!("{at}.tls"), not);
    }
    if l.redirect_to_https {
        problems.push(format!("{at}.redirectToHttps"), not);
    }
    if l.opaque_ports.contains(&0) {
        problems.push(format!("{at}.opaquePorts"), "ports are 1 to 65535");
    }
    if l.detect_timeout.get().is_zero() {
        problems.push(format!("{at}.detectTimeout"), "must be above 0");
    }
    if l.max_connections == Some(0) {
        problems.push(format!("{at}.maxConnections"), "must be at least 1");
    }
    if l.max_requests == Some(0) {
        problems.push(format!("{at}.maxRequests"), "must be at least 1");
    }
}

fn check_listener_tls(tls: &ListenerTls, at: &str, problems: &mut Problems) {
    if tls.certificates.is_empty() {
        problems.push(format!("{at}.certificates"), "at least one is needed");
    }
    if !matches!(tls.min_version.as_str(), "1.2" | "1.3") {
        problems.push(format!("{at}.minVersion"), "expected \"1.2\" or \"1.3\"");
    }
    for (i, p) in tls.alpn.iter().enumerate() {
        if !matches!(p.as_str(), "h2" | "http/1.1") {
            problems.push(format!("{at}.alpn[{i}]"), "expected h2 or http/1.1");
        }
    }
}

/// Checks backends on their own.
pub fn check_backends(backends: &[Backend], problems: &mut Problems) {
    let mut names = HashSet::new();
    let mut claimed: HashMap<SocketAddr, &str> = HashMap::new();
    for b in backends {
        let at = format!("backends[{}]", b.name);
        check_name(&b.name, &at, &mut names, problems);
        if b.endpoints.is_empty() {
            problems.push(format!("{at}.endpoints"), "at least one is needed");
        }
        for (i, e) in b.endpoints.iter().enumerate() {
            if !is_host_port(e) {
                problems.push(format!("{at}.endpoints[{i}]"), "expected host:port");
            }
        }
        check_addresses(b, &at, &mut claimed, problems);
        check_tcp(b, &at, problems);
        check_policy(b, &at, problems);
    }
}

/// Service addresses are `ip:port`, and each belongs to one backend.
fn check_addresses<'a>(
    b: &'a Backend,
    at: &str,
    claimed: &mut HashMap<SocketAddr, &'a str>,
    problems: &mut Problems,
) {
    for (i, a) in b.addresses.iter().enumerate() {
        let at = format!("{at}.addresses[{i}]");
        match a.parse::<SocketAddr>() {
            Ok(addr) if addr.port() == 0 => problems.push(at, "port must be above 0"),
            Ok(addr) => match claimed.insert(addr, &b.name) {
                Some(other) if other == b.name => problems.push(at, "listed twice"),
                Some(other) => problems.push(at, format!("also claimed by backend {other:?}")),
                None => {}
            },
            Err(_) => problems.push(at, "expected ip:port"),
        }
    }
}

/// What a TCP backend cannot do: speak TLS or run HTTP health checks.
fn check_tcp(b: &Backend, at: &str, problems: &mut Problems) {
    if b.protocol != Protocol::Tcp {
        return;
    }
    if b.tls.is_some() {
        problems.push(format!("{at}.tls"), "not supported with protocol tcp");
    }
    if b.health_check.is_some() {
        problems.push(
            format!("{at}.healthCheck"),
            "HTTP health checks need protocol http1 or http2",
        );
    }
}

fn check_policy(b: &Backend, at: &str, problems: &mut Problems) {
    if let Some(cb) = &b.circuit_breaker {
        let at = format!("{at}.circuitBreaker");
        if cb.half_open_requests == 0 {
            problems.push(format!("{at}.halfOpenRequests"), "must be at least 1");
        }
        if cb.open_for > cb.max_open_for {
            problems.push(format!("{at}.openFor"), "longer than maxOpenFor");
        }
        if let Some(fr) = &cb.failure_rate {
            check_percent(fr.percent, &format!("{at}.failureRate.percent"), problems);
        }
        if let Some(sc) = &cb.slow_call {
            check_percent(sc.percent, &format!("{at}.slowCall.percent"), problems);
        }
        if cb.consecutive_failures == Some(0) {
            problems.push(format!("{at}.consecutiveFailures"), "must be at least 1");
        }
    }
    if let Some(od) = &b.outlier_detection {
        let at = format!("{at}.outlierDetection");
        if od.max_ejection_percent > 100 {
            problems.push(format!("{at}.maxEjectionPercent"), "must be 0 to 100");
        }
        if od.consecutive_failures == 0 {
            problems.push(format!("{at}.consecutiveFailures"), "must be at least 1");
        }
    }
    if let Some(hc) = &b.health_check {
        if !hc.path.starts_with('/') {
            problems.push(format!("{at}.healthCheck.path"), "must start with /");
        }
        if hc.interval.get().is_zero() {
            problems.push(format!("{at}.healthCheck.interval"), "must be above 0");
        }
    }
    if b.limits.max_requests == 0 {
        problems.push(format!("{at}.limits.maxRequests"), "must be at least 1");
    }
    if b.limits.max_connections == 0 {
        problems.push(format!("{at}.limits.maxConnections"), "must be at least 1");
    }
    if b.connect_timeout.get().is_zero() {
        problems.push(format!("{at}.connectTimeout"), "must be above 0");
    }
}

/// Checks routes and rate limits against the backends and, when given,
/// the listener names they may refer to.
pub fn check_routes(config: &Config, listeners: Option<&[&str]>, problems: &mut Problems) {
    let backends: HashMap<&str, Protocol> = config
        .backends
        .iter()
        .map(|b| (b.name.as_str(), b.protocol))
        .collect();
    let mut policies = HashSet::new();
    for rl in &config.rate_limits {
        let at = format!("rateLimits[{}]", rl.name);
        check_name(&rl.name, &at, &mut policies, problems);
        check_rate(rl.requests_per_second, rl.burst, &rl.key, &at, problems);
    }

    let mut names = HashSet::new();
    for r in &config.routes {
        let at = format!("routes[{}]", r.name);
        check_name(&r.name, &at, &mut names, problems);
        if let (Some(known), Some(wanted)) = (listeners, &r.listeners) {
            for (i, l) in wanted.iter().enumerate() {
                if !known.contains(&l.as_str()) {
                    problems.push(format!("{at}.listeners[{i}]"), format!("no listener {l:?}"));
                }
            }
        }
        for (i, h) in r.hostnames.iter().enumerate() {
            if !is_hostname(h) {
                problems.push(format!("{at}.hostnames[{i}]"), "not a valid hostname");
            }
        }
        if let Some(rl) = &r.rate_limit {
            check_route_rate(rl, &policies, &format!("{at}.rateLimit"), problems);
        }
        if let Some(auth) = &r.auth {
            check_auth(auth, &format!("{at}.auth"), problems);
        }
        if r.rules.is_empty() {
            problems.push(format!("{at}.rules"), "at least one rule is needed");
        }
        for (i, rule) in r.rules.iter().enumerate() {
            check_rule(rule, &backends, &format!("{at}.rules[{i}]"), problems);
        }
    }
}

fn check_rule(rule: &Rule, backends: &HashMap<&str, Protocol>, at: &str, problems: &mut Problems) {
    for (i, m) in rule.matches.iter().enumerate() {
        check_match(m, &format!("{at}.matches[{i}]"), problems);
    }
    let mut redirects = false;
    for (i, f) in rule.filters.iter().enumerate() {
        redirects |= f.kind == FilterType::RequestRedirect;
        check_filter(f, &format!("{at}.filters[{i}]"), problems);
    }
    for (i, b) in rule.backend_refs.iter().enumerate() {
        let at = format!("{at}.backendRefs[{i}].name");
        match backends.get(b.name.as_str()) {
            None => problems.push(at, format!("no backend {:?}", b.name)),
            Some(Protocol::Tcp) => {
                let msg = format!("backend {:?} has protocol tcp; routes carry HTTP", b.name);
                problems.push(at, msg);
            }
            Some(_) => {}
        }
    }
    let total: u64 = rule.backend_refs.iter().map(|b| b.weight as u64).sum();
    if !redirects && rule.fallback.is_none() && total == 0 {
        let why = if rule.backend_refs.is_empty() {
            "a rule needs a backend, a redirect or a fallback"
        } else {
            "every weight is 0"
        };
        problems.push(format!("{at}.backendRefs"), why);
    }
    if let Some(t) = &rule.timeouts
        && let (Some(req), Some(be)) = (t.request, t.backend_request)
        && !req.get().is_zero()
        && be > req
    {
        problems.push(
            format!("{at}.timeouts.backendRequest"),
            "longer than request",
        );
    }
    if let Some(r) = &rule.retry {
        if r.attempts > 10 {
            problems.push(format!("{at}.retry.attempts"), "at most 10");
        }
        for (i, c) in r.codes.iter().enumerate() {
            if !(400..=599).contains(c) {
                problems.push(format!("{at}.retry.codes[{i}]"), "expected 400 to 599");
            }
        }
    }
    if let Some(f) = &rule.fallback {
        if !(100..=599).contains(&f.status) {
            problems.push(format!("{at}.fallback.status"), "expected 100 to 599");
        }
        for name in f.headers.keys() {
            check_header_name(name, &format!("{at}.fallback.headers.{name}"), problems);
        }
    }
}

fn check_match(m: &Match, at: &str, problems: &mut Problems) {
    if let Some(p) = &m.path {
        let at = format!("{at}.path.value");
        match p.kind {
            PathMatchType::RegularExpression => check_regex(&p.value, &at, problems),
            _ if !p.value.starts_with('/') => problems.push(at, "must start with /"),
            _ => {}
        }
    }
    if let Some(method) = &m.method
        && (method.is_empty() || http::Method::from_bytes(method.as_bytes()).is_err())
    {
        problems.push(format!("{at}.method"), "not an HTTP method");
    }
    for (i, h) in m.headers.iter().enumerate() {
        let at = format!("{at}.headers[{i}]");
        check_header_name(&h.name, &format!("{at}.name"), problems);
        if h.kind == ValueMatchType::RegularExpression {
            check_regex(&h.value, &format!("{at}.value"), problems);
        }
    }
    for (i, q) in m.query_params.iter().enumerate() {
        if q.kind == ValueMatchType::RegularExpression {
            check_regex(&q.value, &format!("{at}.queryParams[{i}].value"), problems);
        }
    }
}

fn check_filter(f: &Filter, at: &str, problems: &mut Problems) {
    let (field, present) = match f.kind {
        FilterType::RequestHeaderModifier => {
            ("requestHeaderModifier", f.request_header_modifier.is_some())
        }
        FilterType::ResponseHeaderModifier => (
            "responseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        FilterType::RequestRedirect => ("requestRedirect", f.request_redirect.is_some()),
        FilterType::UrlRewrite => ("urlRewrite", f.url_rewrite.is_some()),
    };
    if !present {
        problems.push(format!("{at}.{field}"), "required by the filter type");
    }
    for m in [&f.request_header_modifier, &f.response_header_modifier]
        .into_iter()
        .flatten()
    {
        let names = m.set.iter().chain(&m.add).map(|h| &h.name).chain(&m.remove);
        for name in names {
            check_header_name(name, &format!("{at}.{field}"), problems);
        }
    }
    if let Some(r) = &f.request_redirect
        && !matches!(r.status_code, 301 | 302 | 303 | 307 | 308)
    {
        problems.push(format!("{at}.requestRedirect.statusCode"), "expected a 3xx");
    }
}

fn check_auth(auth: &Auth, at: &str, problems: &mut Problems) {
    if auth.jwt.is_none() && auth.api_keys.is_none() {
        problems.push(at, "name jwt or apiKeys");
    }
    if let Some(jwt) = &auth.jwt {
        if jwt.issuer.is_empty() {
            problems.push(format!("{at}.jwt.issuer"), "must not be empty");
        }
        for header in jwt.forward_claims.values() {
            check_header_name(header, &format!("{at}.jwt.forwardClaims"), problems);
        }
    }
    if let Some(keys) = &auth.api_keys {
        check_header_name(&keys.header, &format!("{at}.apiKeys.header"), problems);
    }
}

fn check_route_rate(rl: &RateLimit, policies: &HashSet<&str>, at: &str, problems: &mut Problems) {
    match (&rl.policy, rl.requests_per_second, rl.burst) {
        (Some(p), None, None) if rl.key.is_none() => {
            if !policies.contains(p.as_str()) {
                problems.push(format!("{at}.policy"), format!("no rate limit {p:?}"));
            }
        }
        (Some(_), ..) => problems.push(at, "policy excludes requestsPerSecond, burst and key"),
        (None, Some(rps), Some(burst)) => {
            let key = rl.key.as_deref().unwrap_or("client-ip");
            check_rate(rps, burst, key, at, problems);
        }
        (None, ..) => problems.push(at, "name a policy, or give requestsPerSecond and burst"),
    }
}

fn check_rate(rps: f64, burst: u32, key: &str, at: &str, problems: &mut Problems) {
    if !(rps.is_finite() && rps > 0.0) {
        problems.push(format!("{at}.requestsPerSecond"), "must be above 0");
    }
    if burst == 0 {
        problems.push(format!("{at}.burst"), "must be at least 1");
    }
    let valid_key = match key.strip_prefix("header:") {
        Some(h) => http::HeaderName::from_bytes(h.as_bytes()).is_ok(),
        None => matches!(key, "client-ip" | "jwt-sub"),
    };
    if !valid_key {
        problems.push(
            format!("{at}.key"),
            "expected client-ip, header:NAME or jwt-sub",
        );
    }
}

fn check_name<'a>(name: &'a str, at: &str, seen: &mut HashSet<&'a str>, problems: &mut Problems) {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        problems.push(
            format!("{at}.name"),
            "expected letters, digits, '-', '_' or '.'",
        );
    } else if !seen.insert(name) {
        problems.push(format!("{at}.name"), "duplicate name");
    }
}

fn check_percent(p: u32, at: &str, problems: &mut Problems) {
    if !(1..=100).contains(&p) {
        problems.push(at, "expected 1 to 100");
    }
}

fn check_regex(re: &str, at: &str, problems: &mut Problems) {
    if let Err(e) = regex::Regex::new(re) {
        problems.push(at, format!("invalid regular expression: {e}"));
    }
}

fn check_header_name(name: &str, at: &str, problems: &mut Problems) {
    if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        problems.push(at, format!("{name:?} is not a valid header name"));
    }
}

/// `host:port` with a non-zero port and a plausible host.
pub fn is_host_port(s: &str) -> bool {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return addr.port() > 0;
    }
    match s.rsplit_once(':') {
        Some((host, port)) => port.parse::<u16>().is_ok_and(|p| p > 0) && is_hostname(host),
        None => false,
    }
}

fn is_hostname(h: &str) -> bool {
    let h = h.strip_prefix("*.").unwrap_or(h);
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Parses `10.0.0.0/8` or a bare address into (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip.parse().ok()?, len.parse().ok()?),
        None => {
            let ip: std::net::IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if matches!(ip, std::net::IpAddr::V4(_)) {
        32
    } else {
        128
    };
    (len <= max).then_some((ip, len))
}
