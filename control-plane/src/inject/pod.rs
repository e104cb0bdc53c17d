//! Injection into one pod template (`metadata` + `spec`), and its undoing.
//! A template is always cleaned of earlier pieces first, so injecting
//! twice gives what injecting once gave.

use super::Refusal;
use super::node::{Map, Node};
use super::options::port_list;
use super::options::{ADMIN_PORT, INBOUND_PORT, InjectOptions, OUTBOUND_PORT, PROXY_UID};
use super::pieces::{self, ServiceName, Settings};

/// Container names other meshes inject, and whose mesh they are.
const OTHER_MESHES: &[(&str, &str)] = &[
    ("istio-proxy", "Istio"),
    ("istio-init", "Istio"),
    ("istio-validation", "Istio"),
    ("linkerd-proxy", "Linkerd"),
    ("linkerd-init", "Linkerd"),
    ("linkerd-network-validator", "Linkerd"),
];

/// Annotations and labels that make another mesh inject at admission.
const OTHER_MARKS: &[(&str, &str, &str)] = &[
    ("sidecar.istio.io/status", "", "Istio"),
    ("sidecar.istio.io/inject", "true", "Istio"),
    ("linkerd.io/proxy-version", "", "Linkerd"),
    ("linkerd.io/inject", "enabled", "Linkerd"),
];

/// The workload around a template, for names and annotations.
#[derive(Debug)]
pub struct Workload<'a> {
    /// `metadata.name` of the workload.
    pub name: Option<&'a str>,
    /// The workload's own annotations (not the template's).
    pub annotations: Option<&'a Map>,
}

/// What injection made of a template.
#[derive(Debug)]
pub enum Injected {
    /// The template with the pieces.
    Template(Node),
    /// The opt-out annotation is set.
    OptedOut,
}

/// Injects into a copy of `tpl`.
pub fn inject(tpl: &Node, w: &Workload, opts: &InjectOptions) -> Result<Injected, Refusal> {
    let mut out = tpl.clone();
    uninject(&mut out);
    if annotation(&out, w, pieces::INJECT)? == Some("disabled") {
        return Ok(Injected::OptedOut);
    }
    check(&out)?;
    let settings = settings(&out, w, opts)?;

    let meta = out
        .as_map_mut()
        .ok_or(Refusal::NoTemplate)?
        .entry("metadata", Node::Map(Map::default()));
    let notes = meta
        .as_map_mut()
        .ok_or(Refusal::Malformed("metadata"))?
        .entry("annotations", Node::Map(Map::default()))
        .as_map_mut()
        .ok_or(Refusal::Malformed("metadata.annotations"))?;
    if pieces::SCRAPE.iter().all(|(k, _)| notes.get(k).is_none()) {
        for (k, v) in pieces::SCRAPE {
            notes.insert(k, Node::str(v));
        }
    }
    notes.insert(pieces::INJECTED, pieces::version());

    let spec = out.at_mut(&["spec"]).and_then(Node::as_map_mut);
    let spec = spec.ok_or(Refusal::Malformed("spec"))?;
    let init = seq(spec, "initContainers")?;
    init.insert(0, pieces::proxy_container(opts, &settings));
    init.insert(0, pieces::init_container(opts, &settings));
    let volumes = seq(spec, "volumes")?;
    volumes.push(pieces::token_volume(opts));
    volumes.push(pieces::cache_volume());
    Ok(Injected::Template(out))
}

/// Removes every injected piece; true when something was removed.
pub fn uninject(tpl: &mut Node) -> bool {
    let Some(spec) = tpl.at_mut(&["spec"]).and_then(Node::as_map_mut) else {
        return false;
    };
    let ours = |c: &Node| {
        let name = c.at(&["name"]).and_then(Node::as_str);
        name == Some(pieces::INIT_NAME) || name == Some(pieces::PROXY_NAME)
    };
    let mut changed = drop_items(spec, "initContainers", ours);
    let marked = tpl
        .at(&["metadata", "annotations", pieces::INJECTED])
        .is_some();
    if !(changed || marked) {
        return false;
    }
    if let Some(spec) = tpl.at_mut(&["spec"]).and_then(Node::as_map_mut) {
        let ours = |v: &Node| {
            let name = v.at(&["name"]).and_then(Node::as_str);
            name == Some(pieces::TOKEN_VOLUME) || name == Some(pieces::CACHE_VOLUME)
        };
        changed |= drop_items(spec, "volumes", ours);
    }
    changed | drop_annotations(tpl)
}

fn drop_annotations(tpl: &mut Node) -> bool {
    let Some(meta) = tpl.at_mut(&["metadata"]).and_then(Node::as_map_mut) else {
        return false;
    };
    let Some(notes) = meta.get_mut("annotations").and_then(Node::as_map_mut) else {
        return false;
    };
    let mut changed = notes.remove(pieces::INJECTED).is_some();
    let ours = pieces::SCRAPE
        .iter()
        .all(|(k, v)| notes.get(k).and_then(Node::as_str) == Some(v));
    if ours {
        pieces::SCRAPE.iter().for_each(|(k, _)| {
            notes.remove(k);
        });
        changed = true;
    }
    if notes.is_empty() {
        meta.remove("annotations");
    }
    if meta.is_empty() {
        tpl.as_map_mut().map(|t| t.remove("metadata"));
    }
    changed
}

/// Removes the items `pick` selects from the sequence under `key`, and
/// the key itself when that empties it.
fn drop_items(spec: &mut Map, key: &str, pick: impl Fn(&Node) -> bool) -> bool {
    let Some(Node::Seq(items)) = spec.get_mut(key) else {
        return false;
    };
    let before = items.len();
    items.retain(|c| !pick(c));
    let changed = items.len() != before;
    if changed && items.is_empty() {
        spec.remove(key);
    }
    changed
}

fn seq<'a>(spec: &'a mut Map, key: &'static str) -> Result<&'a mut Vec<Node>, Refusal> {
    match spec.entry(key, Node::Seq(Vec::new())) {
        Node::Seq(items) => Ok(items),
        _ => Err(Refusal::Malformed(key)),
    }
}

/// The refusals: what the sidecar cannot serve or would break.
fn check(tpl: &Node) -> Result<(), Refusal> {
    let spec = tpl.at(&["spec"]).ok_or(Refusal::NoTemplate)?;
    if spec.at(&["hostNetwork"]) == Some(&Node::Bool(true)) {
        return Err(Refusal::HostNetwork);
    }
    for (key, want, mesh) in OTHER_MARKS {
        for place in ["annotations", "labels"] {
            let v = tpl.at(&["metadata", place, key]).and_then(Node::as_str);
            if v.is_some_and(|v| want.is_empty() || v == *want) {
                return Err(Refusal::OtherMesh(format!("{mesh}, {place} {key}")));
            }
        }
    }
    let apps = containers(spec, "containers");
    if apps.is_empty() {
        return Err(Refusal::NoContainers);
    }
    let pod = spec.at(&["securityContext"]).unwrap_or(&Node::Null);
    for c in apps.iter().chain(&containers(spec, "initContainers")) {
        check_container(c, pod)?;
    }
    Ok(())
}

/// `pod` is the pod's securityContext, whose IDs a container inherits.
fn check_container(c: &Node, pod: &Node) -> Result<(), Refusal> {
    let name = c.at(&["name"]).and_then(Node::as_str).unwrap_or("");
    if let Some((_, mesh)) = OTHER_MESHES.iter().find(|(n, _)| *n == name) {
        return Err(Refusal::OtherMesh(format!("{mesh}, container {name}")));
    }
    for (key, id) in [("runAsUser", "UID"), ("runAsGroup", "GID")] {
        let set = c.at(&["securityContext", key]).or(pod.at(&[key]));
        if set.and_then(Node::as_i64) == Some(PROXY_UID) {
            let container = name.to_string();
            return Err(Refusal::ProxyId { container, id });
        }
    }
    let ports = c.at(&["ports"]).and_then(Node::as_seq);
    for p in ports.into_iter().flatten() {
        let port = p.at(&["containerPort"]).and_then(Node::as_i64);
        if let Some(port) = port.filter(|p| {
            [ADMIN_PORT, OUTBOUND_PORT, INBOUND_PORT]
                .map(i64::from)
                .contains(p)
        }) {
            return Err(Refusal::PortTaken {
                container: name.to_string(),
                port,
            });
        }
    }
    Ok(())
}

fn containers(spec: &Node, key: &str) -> Vec<Node> {
    spec.at(&[key])
        .and_then(Node::as_seq)
        .cloned()
        .unwrap_or_default()
}

fn settings(tpl: &Node, w: &Workload, opts: &InjectOptions) -> Result<Settings, Refusal> {
    let ports = |key: &'static str, default: &[u16]| match annotation(tpl, w, key)? {
        Some(text) => port_list(text).map_err(|_| Refusal::BadPorts {
            annotation: key,
            value: text.to_string(),
        }),
        None => Ok(default.to_vec()),
    };
    Ok(Settings {
        opaque_ports: ports(pieces::OPAQUE_PORTS, &opts.opaque_ports)?,
        inbound_ports_to_ignore: ports(pieces::INBOUND_IGNORE, &opts.inbound_ports_to_ignore)?,
        outbound_ports_to_ignore: ports(pieces::OUTBOUND_IGNORE, &opts.outbound_ports_to_ignore)?,
        service: service_name(tpl, w)?,
    })
}

/// The label the sidecar reads its service name from, else the
/// workload's name.
fn service_name(tpl: &Node, w: &Workload) -> Result<ServiceName, Refusal> {
    for label in ["app.kubernetes.io/name", "app"] {
        if tpl.at(&["metadata", "labels", label]).is_some() {
            return Ok(ServiceName::Label(label.to_string()));
        }
    }
    w.name
        .map(|n| ServiceName::Fixed(n.to_string()))
        .ok_or(Refusal::NoServiceName)
}

/// A vakt annotation of the template, else of the workload.
fn annotation<'a>(
    tpl: &'a Node,
    w: &'a Workload,
    key: &'static str,
) -> Result<Option<&'a str>, Refusal> {
    let found = tpl
        .at(&["metadata", "annotations", key])
        .or_else(|| w.annotations.and_then(|a| a.get(key)));
    match found {
        None => Ok(None),
        Some(Node::Str(s)) => Ok(Some(s)),
        Some(_) => Err(Refusal::NotAString(key)),
    }
}
