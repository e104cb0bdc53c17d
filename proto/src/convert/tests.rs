//! Round trips: a config with every field set survives model → protobuf
//! → bytes → protobuf → model unchanged, and a bad wire value is named.

use prost::Message;

use super::*;

const FULL: &str = r#"
routes:
  - name: orders
    listeners: [outbound]
    hostnames: [orders, "*.shop.example"]
    auth:
      jwt:
        issuer: https://issuer.example
        audiences: [orders]
        jwksFile: /etc/jwks.json
        forwardClaims: {sub: x-user}
        requiredClaims: {scope: orders}
        leeway: 10s
      apiKeys: {header: x-key, keysFile: /etc/keys}
    rateLimit: {requestsPerSecond: 5.5, burst: 10, key: "header:x-user"}
    rules:
      - matches:
          - path: {type: RegularExpression, value: "/o/[0-9]+"}
            method: GET
            headers: [{name: x-canary, value: "1"}]
            queryParams: [{type: RegularExpression, name: q, value: "a.*"}]
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {set: [{name: x-a, value: b}], add: [{name: x-c, value: d}], remove: [x-b]}
          - type: ResponseHeaderModifier
            responseHeaderModifier: {remove: [server]}
          - type: URLRewrite
            urlRewrite: {hostname: other, path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}}
        backendRefs:
          - {name: orders-v1, weight: 90, port: 8080}
          - {name: orders-v2, weight: 10}
        timeouts: {request: 5s, backendRequest: 2s, idle: 1m30s}
        retry: {attempts: 3, codes: [503], backoff: 50ms, replayLimitBytes: 1024}
        fallback: {status: 503, headers: {content-type: text/plain}, body: sorry}
  - name: old
    rules:
      - filters:
          - type: RequestRedirect
            requestRedirect: {scheme: https, hostname: new, port: 8443, statusCode: 301, path: {type: ReplaceFullPath, replaceFullPath: /}}
    rateLimit: {policy: shared}
backends:
  - name: orders-v1
    endpoints: [127.0.0.1:8080, orders.internal:8080]
    protocol: http2
    loadBalancer: least-request
    connectTimeout: 500ms
    connectionPool: {maxIdlePerEndpoint: 4, idleTimeout: 3s}
    circuitBreaker:
      consecutiveFailures: 3
      failureRate: {percent: 50, minRequests: 10, window: 5s}
      slowCall: {threshold: 1s, percent: 40, minRequests: 5}
      openFor: 10s
      maxOpenFor: 1m
      halfOpenRequests: 2
      grpcFailureCodes: [14]
    outlierDetection: {consecutiveFailures: 2, ejectionTime: 15s, maxEjectionPercent: 30}
    healthCheck: {path: /hc, interval: 2s, timeout: 500ms, unhealthyThreshold: 2, healthyThreshold: 1}
    limits: {maxRequests: 10, maxPendingRequests: 5, queueTimeout: 100ms, maxConnections: 20}
    retryBudget: {percent: 10, minRetriesPerSecond: 3}
    tls:
      caFile: /etc/ca.pem
      serverName: orders
      clientCertificate: {certFile: /etc/c.pem, keyFile: /etc/k.pem}
  - name: orders-v2
    endpoints: [127.0.0.1:8081]
    addresses: ["10.96.0.10:80", "[fd00::10]:80"]
  - name: orders-db
    endpoints: [127.0.0.1:5432]
    addresses: ["10.96.0.20:5432"]
    protocol: tcp
rateLimits:
  - {name: shared, requestsPerSecond: 100, burst: 20}
listeners:
  - {name: outbound, address: 127.0.0.1:15001}
"#;

fn full() -> Objects {
    let config = crate::load_str(FULL).expect("the sample config is valid");
    Objects::from_config(&config)
}

#[test]
fn every_field_survives_the_wire() {
    let objects = full();
    let bytes = objects.to_proto().encode_to_vec();
    let decoded = p::Objects::decode(bytes.as_slice()).unwrap();
    let back = Objects::from_proto(&decoded).unwrap();
    assert_eq!(back, objects);
}

#[test]
fn defaults_survive_the_wire() {
    let config = crate::load_str(
        "backends: [{name: a, endpoints: [127.0.0.1:1]}]\n\
         routes: [{name: r, rules: [{backendRefs: [{name: a}]}]}]\n",
    )
    .unwrap();
    let objects = Objects::from_config(&config);
    assert_eq!(Objects::from_proto(&objects.to_proto()).unwrap(), objects);
}

#[test]
fn bad_wire_values_are_named() {
    let mut wire = full().to_proto();
    wire.routes[0].rules[0].timeouts.as_mut().unwrap().request = Some("soon".into());
    wire.backends[0].connect_timeout = "1 s".into();
    wire.backends[0].protocol = 9;
    wire.routes[1].rules[0].filters[0].r#type = 0;
    let problems = Objects::from_proto(&wire).unwrap_err();
    let paths: Vec<&str> = problems.items.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "routes[orders].rules[0].timeouts.request",
            "routes[old].rules[0].filters[0].type",
            "backends[orders-v1].protocol",
            "backends[orders-v1].connectTimeout",
        ]
    );
}
