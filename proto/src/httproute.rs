//! Reading what an operator applies: YAML documents that are either the
//! proxy's own `routes`/`backends`/`rateLimits` shape or Gateway API
//! `gateway.networking.k8s.io/v1` HTTPRoutes in the GAMMA shape (parentRefs
//! naming a Service), alone, in a `---` stream or in a `kind: List`.
//!
//! An HTTPRoute maps onto one [`Route`]: its name is `metadata.name`, or
//! `name.namespace` when a namespace is given; its hostnames are the
//! Service's in-cluster names plus `spec.hostnames`; its rules are read as
//! the model's rules, which share the Gateway API shape. Every field the
//! product does not support is refused by name, never ignored. `status`
//! and the rest of `metadata` are Kubernetes bookkeeping and are skipped.

use serde_json::{Map, Value};

use crate::Problems;
use crate::config::Route;
use crate::convert::Objects;
use crate::load::{parse_tree, read_list};

const API_VERSION: &str = "gateway.networking.k8s.io/v1";
const SECTIONS: &[&str] = &["routes", "backends", "rateLimits"];
const BOOTSTRAP: &[&str] = &["admin", "listeners", "limits", "drain"];

/// Reads every document of a YAML stream; problems name the document and
/// the field.
pub fn read_documents(text: &str) -> Result<Objects, Problems> {
    let mut problems = Problems::default();
    let docs: Vec<Value> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_saphyr::from_multiple::<Value>(text).map_err(|e| {
            let mut p = Problems::default();
            p.push("", format!("not valid YAML: {e}"));
            p
        })?
    };
    let mut out = Objects::default();
    for (i, doc) in docs.into_iter().enumerate() {
        read_document(doc, &format!("documents[{i}]"), &mut out, &mut problems);
    }
    problems.into_result().map(|()| out)
}

/// Reads one HTTPRoute document (already parsed) into a route.
pub fn read_httproute(text: &str) -> Result<Route, Problems> {
    let doc = parse_tree(text)?;
    let mut problems = Problems::default();
    let route = httproute(doc, "httproute", &mut problems);
    match (route, problems.is_empty()) {
        (Some(r), true) => Ok(r),
        _ => Err(problems),
    }
}

fn read_document(doc: Value, at: &str, out: &mut Objects, problems: &mut Problems) {
    let map = match doc {
        Value::Null => return,
        Value::Object(map) => map,
        _ => return problems.push(at, "expected a mapping"),
    };
    match map.get("kind").and_then(Value::as_str) {
        Some("List") => {
            let items = map.get("items").and_then(Value::as_array).cloned();
            for (i, item) in items.unwrap_or_default().into_iter().enumerate() {
                read_document(item, &format!("{at}.items[{i}]"), out, problems);
            }
        }
        Some("HTTPRoute") => {
            let name = map.get("metadata").and_then(|m| m.get("name"));
            let at = match name.and_then(Value::as_str) {
                Some(n) => format!("{at}(HTTPRoute {n})"),
                None => at.to_string(),
            };
            if let Some(r) = httproute(Value::Object(map), &at, problems) {
                out.routes.push(r);
            }
        }
        Some(kind) => problems.push(
            format!("{at}.kind"),
            format!("{kind:?} is not supported; expected HTTPRoute, List or a vakt config"),
        ),
        None => read_sections(map, at, out, problems),
    }
}

fn read_sections(mut map: Map<String, Value>, at: &str, out: &mut Objects, p: &mut Problems) {
    for key in map.keys() {
        if BOOTSTRAP.contains(&key.as_str()) {
            p.push(
                format!("{at}.{key}"),
                "is each proxy's static bootstrap; the control plane stores only routes, backends and rateLimits",
            );
        } else if !SECTIONS.contains(&key.as_str()) {
            p.push(
                format!("{at}.{key}"),
                format!("unknown key, expected one of {SECTIONS:?}"),
            );
        }
    }
    let mut take = |k: &str| map.remove(k).filter(|v| !v.is_null());
    out.routes.extend(read_list("routes", take("routes"), p));
    out.backends
        .extend(read_list("backends", take("backends"), p));
    out.rate_limits
        .extend(read_list("rateLimits", take("rateLimits"), p));
}

fn httproute(doc: Value, at: &str, problems: &mut Problems) -> Option<Route> {
    let api = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if api != API_VERSION {
        problems.push(
            format!("{at}.apiVersion"),
            format!("{api:?} is not supported; expected {API_VERSION:?}"),
        );
    }
    let meta = doc.get("metadata");
    let namespace = meta
        .and_then(|m| m.get("namespace"))
        .and_then(Value::as_str);
    let Some(name) = meta.and_then(|m| m.get("name")).and_then(Value::as_str) else {
        problems.push(format!("{at}.metadata.name"), "is required");
        return None;
    };
    let spec = match doc.get("spec") {
        Some(Value::Object(s)) => s.clone(),
        _ => {
            problems.push(format!("{at}.spec"), "is required");
            return None;
        }
    };
    for key in spec.keys() {
        if !matches!(key.as_str(), "parentRefs" | "hostnames" | "rules") {
            problems.push(format!("{at}.spec.{key}"), "is not supported");
        }
    }
    let mut hostnames = parent_hostnames(&spec, namespace, at, problems);
    if let Some(list) = spec.get("hostnames").and_then(Value::as_array) {
        for h in list.iter().filter_map(Value::as_str) {
            if !hostnames.iter().any(|x| x == h) {
                hostnames.push(h.to_string());
            }
        }
    }
    let rules = rules(&spec, namespace, &format!("{at}.spec"), problems);
    Some(Route {
        name: match namespace {
            Some(ns) => format!("{name}.{ns}"),
            None => name.to_string(),
        },
        listeners: None,
        hostnames,
        auth: None,
        rate_limit: None,
        rules,
    })
}

/// The in-cluster names of each Service parent: `svc`, `svc.ns`,
/// `svc.ns.svc` and `svc.ns.svc.cluster.local`.
fn parent_hostnames(
    spec: &Map<String, Value>,
    namespace: Option<&str>,
    at: &str,
    problems: &mut Problems,
) -> Vec<String> {
    let parents = spec.get("parentRefs").and_then(Value::as_array);
    let Some(parents) = parents.filter(|p| !p.is_empty()) else {
        problems.push(
            format!("{at}.spec.parentRefs"),
            "at least one Service parent is needed",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, parent) in parents.iter().enumerate() {
        let at = format!("{at}.spec.parentRefs[{i}]");
        let Some(map) = parent.as_object() else {
            problems.push(at, "expected a mapping");
            continue;
        };
        if let Some(svc) = service_parent(map, &at, problems) {
            let ns = map
                .get("namespace")
                .and_then(Value::as_str)
                .or(namespace)
                .unwrap_or("default");
            out.push(svc.to_string());
            out.push(format!("{svc}.{ns}"));
            out.push(format!("{svc}.{ns}.svc"));
            out.push(format!("{svc}.{ns}.svc.cluster.local"));
        }
    }
    out
}

fn service_parent<'a>(
    map: &'a Map<String, Value>,
    at: &str,
    problems: &mut Problems,
) -> Option<&'a str> {
    for key in map.keys() {
        if !matches!(key.as_str(), "group" | "kind" | "name" | "namespace") {
            problems.push(
                format!("{at}.{key}"),
                "is not supported; a route applies to every port of its Service",
            );
        }
    }
    let group = map.get("group").and_then(Value::as_str).unwrap_or("");
    // Gateway API defaults a parentRef's kind to Gateway.
    let kind = map.get("kind").and_then(Value::as_str).unwrap_or("Gateway");
    if !matches!(group, "" | "core") || kind != "Service" {
        problems.push(
            format!("{at}.kind"),
            format!("{group:?}/{kind:?} is not supported; only Service parents (GAMMA) are"),
        );
        return None;
    }
    let name = map.get("name").and_then(Value::as_str);
    if name.is_none() {
        problems.push(format!("{at}.name"), "is required");
    }
    name
}

fn rules(
    spec: &Map<String, Value>,
    namespace: Option<&str>,
    at: &str,
    problems: &mut Problems,
) -> Vec<crate::config::Rule> {
    let mut rules = match spec.get("rules") {
        Some(Value::Array(r)) if !r.is_empty() => r.clone(),
        // Gateway API: no rules means one rule sending nowhere; refuse it.
        _ => {
            problems.push(format!("{at}.rules"), "at least one rule is needed");
            return Vec::new();
        }
    };
    for (i, rule) in rules.iter_mut().enumerate() {
        drop_unsupported(rule, &format!("{at}.rules[{i}]"), problems);
        let refs = rule.get_mut("backendRefs").and_then(Value::as_array_mut);
        for (j, r) in refs.into_iter().flatten().enumerate() {
            let at = format!("{at}.rules[{i}].backendRefs[{j}]");
            strip_backend_ref(r, namespace, &at, problems);
        }
    }
    read_list(&format!("{at}.rules"), Some(Value::Array(rules)), problems)
}

/// Names and removes the rule fields and filter types the model lacks, so
/// that each is reported, not only the first.
fn drop_unsupported(rule: &mut Value, at: &str, problems: &mut Problems) {
    const RULE_KEYS: &[&str] = &[
        "matches",
        "filters",
        "backendRefs",
        "timeouts",
        "retry",
        "fallback",
    ];
    const FILTERS: &[&str] = &[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestRedirect",
        "URLRewrite",
    ];
    let Some(map) = rule.as_object_mut() else {
        return;
    };
    map.retain(|key, _| {
        let keep = RULE_KEYS.contains(&key.as_str());
        if !keep {
            problems.push(format!("{at}.{key}"), "is not supported");
        }
        keep
    });
    let Some(Value::Array(filters)) = map.get_mut("filters") else {
        return;
    };
    let mut i = 0;
    filters.retain(|f| {
        let kind = f.get("type").and_then(Value::as_str).unwrap_or("");
        let keep = FILTERS.contains(&kind);
        if !keep {
            problems.push(
                format!("{at}.filters[{i}].type"),
                format!("{kind:?} is not supported; expected one of {FILTERS:?}"),
            );
        }
        i += 1;
        keep
    });
}

/// Removes what a GAMMA backendRef may say beyond the model (group, kind,
/// namespace) after checking it names a Service in the route's namespace.
fn strip_backend_ref(r: &mut Value, namespace: Option<&str>, at: &str, p: &mut Problems) {
    let Some(map) = r.as_object_mut() else { return };
    let group = map.remove("group");
    let kind = map.remove("kind");
    let ns = map.remove("namespace");
    let group = group.as_ref().and_then(Value::as_str).unwrap_or("");
    let kind = kind.as_ref().and_then(Value::as_str).unwrap_or("Service");
    if !matches!(group, "" | "core") || kind != "Service" {
        p.push(
            format!("{at}.kind"),
            format!("{group:?}/{kind:?} is not supported; only Service backends are"),
        );
    }
    if let Some(ns) = ns.as_ref().and_then(Value::as_str)
        && Some(ns) != namespace
    {
        p.push(
            format!("{at}.namespace"),
            "is not supported; backends are in the route's namespace",
        );
    }
}

#[cfg(test)]
mod tests;
