//! Loading config files: the documented shape is accepted, and every
//! problem in a bad file is named with its path.

use vakt_api::config::{ListenerMode, LoadBalancer, PathMatchType, Protocol};
use vakt_api::load_str;

const ISSUE_EXAMPLE: &str = r#"
admin:
  address: 127.0.0.1:15000
listeners:
  - name: outbound
    address: 127.0.0.1:15001
routes:
  - name: orders
    listeners: [outbound]
    hostnames: [orders, "*.shop.example"]
    rules:
      - matches:
          - path: {type: PathPrefix, value: /orders/}
            method: GET
            headers: [{name: x-canary, value: "1"}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {set: [{name: x-a, value: b}], remove: [x-b]}
        backendRefs:
          - {name: orders-v1, weight: 90}
          - {name: orders-v2, weight: 10}
        timeouts: {request: 5s, backendRequest: 2s}
backends:
  - name: orders-v1
    endpoints: [127.0.0.1:8080, 127.0.0.1:8081]
    protocol: http1
    loadBalancer: p2c-ewma
    connectTimeout: 2s
    connectionPool: {maxIdlePerEndpoint: 32, idleTimeout: 90s}
  - name: orders-v2
    endpoints: [orders-v2.shop.svc:8080]
    protocol: http2
    loadBalancer: round-robin
"#;

#[test]
fn the_documented_example_loads() {
    let c = load_str(ISSUE_EXAMPLE).expect("example loads");
    assert_eq!(c.listeners[0].address, "127.0.0.1:15001");
    let rule = &c.routes[0].rules[0];
    assert_eq!(
        rule.matches[0].path.as_ref().unwrap().kind,
        PathMatchType::PathPrefix
    );
    assert_eq!(rule.backend_refs[1].weight, 10);
    let t = rule.timeouts.as_ref().unwrap();
    assert_eq!(t.backend_request.unwrap().get().as_secs(), 2);
    assert_eq!(
        c.backends[0].connection_pool.idle_timeout.get().as_secs(),
        90
    );
    assert_eq!(c.backends[1].protocol, Protocol::Http2);
    assert_eq!(c.backends[1].load_balancer, LoadBalancer::RoundRobin);
    assert_eq!(c.backends[1].connection_pool.max_idle_per_endpoint, 32);
}

#[test]
fn every_problem_is_named_with_its_path() {
    let bad = r#"
listeners:
  - {name: outbound, address: "nowhere"}
routes:
  - name: orders
    listeners: [inbound]
    rules:
      - backendRefs: [{name: missing}]
        timeouts: {request: 1s, backendRequest: 2s}
  - name: orders
    rules:
      - matches: [{path: {type: Prefix, value: /}}]
        backendRefs: [{name: orders-v1}]
backends:
  - name: orders-v1
    endpoints: [127.0.0.1:8080]
    connectTimeout: soon
  - name: orders-v2
    endpoints: []
colour: blue
"#;
    let problems = load_str(bad).unwrap_err();
    let text = problems.to_string();
    for expected in [
        "colour: unknown key",
        "listeners[outbound].address: expected ip:port",
        "routes[orders].listeners[0]: no listener \"inbound\"",
        "routes[orders].rules[0].backendRefs[0].name: no backend \"missing\"",
        "routes[orders].rules[0].timeouts.backendRequest: longer than request",
        "routes[orders].rules[0].matches[0].path.type",
        "backends[orders-v1].connectTimeout: invalid duration \"soon\"",
        "backends[orders-v2].endpoints: at least one is needed",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn a_duplicate_name_is_refused() {
    let bad = r#"
backends:
  - {name: a, endpoints: ["127.0.0.1:1"]}
  - {name: a, endpoints: ["127.0.0.1:2"]}
"#;
    let text = load_str(bad).unwrap_err().to_string();
    assert!(text.contains("backends[a].name: duplicate name"), "{text}");
}

#[test]
fn transparent_listeners_and_tcp_backends_load() {
    let text = r#"
listeners:
  - {name: outbound, address: "127.0.0.1:17001", mode: outbound, opaquePorts: [3306, 25]}
  - {name: inbound, address: "0.0.0.0:17006", mode: inbound, detectTimeout: 250ms, maxConnections: 100, maxRequests: 50}
backends:
  - name: orders-db
    addresses: ["10.96.0.20:5432"]
    endpoints: ["10.244.1.7:5432"]
    protocol: tcp
"#;
    let c = load_str(text).expect("loads");
    assert_eq!(c.listeners[0].mode, ListenerMode::Outbound);
    assert_eq!(c.listeners[0].opaque_ports, vec![3306, 25]);
    assert_eq!(c.listeners[0].detect_timeout.get().as_secs(), 1);
    assert_eq!(c.listeners[1].mode, ListenerMode::Inbound);
    assert_eq!(c.listeners[1].detect_timeout.get().as_millis(), 250);
    assert_eq!(c.listeners[1].max_requests, Some(50));
    assert_eq!(c.backends[0].protocol, Protocol::Tcp);
    assert_eq!(c.backends[0].addresses, vec!["10.96.0.20:5432"]);
}

#[test]
fn every_transparent_problem_is_named() {
    let bad = r#"
listeners:
  - {name: plain, address: "127.0.0.1:1", opaquePorts: [25], maxRequests: 3}
  - name: out
    address: "127.0.0.1:2"
    mode: outbound
    redirectToHttps: true
    opaquePorts: [0]
    detectTimeout: 0s
    maxConnections: 0
    tls: {certificates: [{certFile: a, keyFile: b}]}
routes:
  - name: r
    rules: [{backendRefs: [{name: db}]}]
backends:
  - name: db
    endpoints: ["127.0.0.1:5432"]
    addresses: ["10.0.0.1:5432", "10.0.0.1:5432", "db:5432", "10.0.0.2:0"]
    protocol: tcp
    healthCheck: {path: /hc}
    tls: {caFile: ca.pem}
  - name: other
    endpoints: ["127.0.0.1:5433"]
    addresses: ["10.0.0.1:5432"]
"#;
    let text = load_str(bad).unwrap_err().to_string();
    for expected in [
        "listeners[plain].opaquePorts: only for mode outbound or inbound",
        "listeners[plain].maxRequests: only for mode outbound or inbound",
        "listeners[out].tls: not for a transparent listener",
        "listeners[out].redirectToHttps: not for a transparent listener",
        "listeners[out].opaquePorts: ports are 1 to 65535",
        "listeners[out].detectTimeout: must be above 0",
        "listeners[out].maxConnections: must be at least 1",
        "backends[db].addresses[1]: listed twice",
        "backends[db].addresses[2]: expected ip:port",
        "backends[db].addresses[3]: port must be above 0",
        "backends[db].tls: not supported with protocol tcp",
        "backends[db].healthCheck: HTTP health checks need protocol http1 or http2",
        "backends[other].addresses[0]: also claimed by backend \"db\"",
        "routes[r].rules[0].backendRefs[0].name: backend \"db\" has protocol tcp",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}

#[test]
fn tracing_is_off_by_default_and_checked_when_given() {
    let c = load_str("listeners: []\n").expect("loads");
    assert!(!c.tracing.enabled);
    assert_eq!(c.tracing.sample_rate, 0.01);

    let on = "tracing:\n  enabled: true\n  sampleRate: 0.5\n  \
        otlp: {endpoint: \"http://127.0.0.1:4317\"}\n";
    let c = load_str(on).expect("loads");
    let otlp = c.tracing.otlp.expect("otlp");
    assert_eq!(otlp.service_name, "vakt-proxy");
    assert_eq!(otlp.timeout.get().as_secs(), 10);

    let bad = "tracing:\n  enabled: true\n  sampleRate: 2\n  \
        otlp: {endpoint: \"https://collector\", serviceName: \"\"}\n";
    let text = load_str(bad).expect_err("refused").to_string();
    for path in [
        "tracing.sampleRate",
        "tracing.otlp.endpoint",
        "tracing.otlp.serviceName",
    ] {
        assert!(text.contains(path), "{path} not named in:\n{text}");
    }
}
