//! Gateway API HTTPRoutes map onto routes; what is not supported is named.

use super::*;
use crate::config::{FilterType, PathMatchType};

const GAMMA: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: orders
  namespace: shop
  resourceVersion: "42"
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: orders
  rules:
    - matches:
        - path: {type: PathPrefix, value: /v2}
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier: {set: [{name: x-v, value: "2"}]}
      backendRefs:
        - {name: orders-v2, port: 8080, weight: 10, kind: Service}
        - {name: orders-v1, port: 8080, weight: 90}
      timeouts: {request: 3s}
status:
  parents: []
"#;

#[test]
fn gamma_route_maps_onto_the_model() {
    let objects = read_documents(GAMMA).unwrap();
    let r = &objects.routes[0];
    assert_eq!(r.name, "orders.shop");
    assert_eq!(
        r.hostnames,
        [
            "orders",
            "orders.shop",
            "orders.shop.svc",
            "orders.shop.svc.cluster.local"
        ]
    );
    let rule = &r.rules[0];
    let path = rule.matches[0].path.as_ref().unwrap();
    assert_eq!(
        (path.kind, path.value.as_str()),
        (PathMatchType::PathPrefix, "/v2")
    );
    assert_eq!(rule.filters[0].kind, FilterType::RequestHeaderModifier);
    assert_eq!(rule.backend_refs[0].name, "orders-v2");
    assert_eq!(rule.backend_refs[1].weight, 90);
    let timeout = rule.timeouts.as_ref().unwrap().request.unwrap();
    assert_eq!(timeout.get().as_secs(), 3);
}

#[test]
fn list_and_streams_of_documents_are_read() {
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        GAMMA
            .trim_start()
            .lines()
            .enumerate()
            .map(|(i, l)| if i == 0 {
                format!("- {l}\n")
            } else {
                format!("  {l}\n")
            })
            .collect::<String>()
    );
    let stream = format!("{list}---\nbackends: [{{name: orders-v1, endpoints: [127.0.0.1:1]}}]\n");
    let objects = read_documents(&stream).unwrap();
    assert_eq!(objects.routes.len(), 1);
    assert_eq!(objects.backends[0].name, "orders-v1");
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let doc = GAMMA
        .replace(
            "      name: orders\n  rules",
            "      name: orders\n      port: 80\n  rules",
        )
        .replace("      timeouts:", "      sessionPersistence: {}\n      timeouts:")
        .replace(
            "        - type: RequestHeaderModifier",
            "        - type: RequestMirror\n          requestMirror: {}\n        - type: RequestHeaderModifier",
        );
    let problems = read_documents(&doc).unwrap_err().to_string();
    assert!(problems.contains("parentRefs[0].port"), "{problems}");
    assert!(problems.contains("sessionPersistence"), "{problems}");
    assert!(problems.contains("RequestMirror"), "{problems}");
}

#[test]
fn gateway_parents_and_bootstrap_sections_are_refused() {
    let doc = GAMMA.replace("      kind: Service\n", "");
    let problems = read_documents(&doc).unwrap_err();
    assert_eq!(
        problems.items[0].path,
        "documents[0](HTTPRoute orders).spec.parentRefs[0].kind"
    );

    let problems = read_documents("listeners: []\nroutes: []\n").unwrap_err();
    assert_eq!(problems.items[0].path, "documents[0].listeners");
}
