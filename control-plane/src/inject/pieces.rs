//! The pieces injection adds to a pod template: the `vakt-init`
//! container that installs the iptables redirect, the `vakt-proxy`
//! native sidecar, the token volume and the pod annotations.

use super::node::{Map, Node};
use super::options::{
    ADMIN_PORT, CACHE_DIR, INBOUND_PORT, InjectOptions, OUTBOUND_PORT, PROXY_UID, TOKEN_DIR,
    TOKEN_FILE, VERSION, join,
};

/// Name of the init container running `vakt-iptables`.
pub const INIT_NAME: &str = "vakt-init";
/// Name of the sidecar (an init container with `restartPolicy: Always`).
pub const PROXY_NAME: &str = "vakt-proxy";
/// Name of the volume carrying the proxy's token.
pub const TOKEN_VOLUME: &str = "vakt-token";
/// Name of the volume holding the proxy's snapshot cache.
pub const CACHE_VOLUME: &str = "vakt-cache";
/// Set on every injected pod template to the injector's version.
pub const INJECTED: &str = "vakt.dev/injected";
/// `disabled` skips the workload.
pub const INJECT: &str = "vakt.dev/inject";
/// Per-workload override of `--opaque-ports`.
pub const OPAQUE_PORTS: &str = "vakt.dev/opaque-ports";
/// Per-workload override of `--inbound-ports-to-ignore`.
pub const INBOUND_IGNORE: &str = "vakt.dev/inbound-ports-to-ignore";
/// Per-workload override of `--outbound-ports-to-ignore`.
pub const OUTBOUND_IGNORE: &str = "vakt.dev/outbound-ports-to-ignore";
/// The Prometheus annotations pointing at the admin listener.
pub const SCRAPE: [(&str, &str); 3] = [
    ("prometheus.io/scrape", "true"),
    ("prometheus.io/port", "17000"),
    ("prometheus.io/path", "/metrics"),
];

/// What one workload's pieces depend on.
#[derive(Debug)]
pub struct Settings {
    pub opaque_ports: Vec<u16>,
    pub inbound_ports_to_ignore: Vec<u16>,
    pub outbound_ports_to_ignore: Vec<u16>,
    /// Where `VAKT_SERVICE` comes from.
    pub service: ServiceName,
}

/// The source of the service name the sidecar announces.
#[derive(Debug)]
pub enum ServiceName {
    /// A pod label, read through the downward API.
    Label(String),
    /// A fixed name (the workload's).
    Fixed(String),
}

/// The init container: runs `vakt-iptables` as root with only the
/// capabilities iptables needs, then exits.
pub fn init_container(opts: &InjectOptions, s: &Settings) -> Node {
    let mut inbound_ignore = vec![ADMIN_PORT];
    inbound_ignore.extend(&s.inbound_ports_to_ignore);
    let command = [
        "vakt-iptables",
        "--proxy-uid",
        &PROXY_UID.to_string(),
        "--outbound-port",
        &OUTBOUND_PORT.to_string(),
        "--inbound-port",
        &INBOUND_PORT.to_string(),
        "--inbound-ports-to-ignore",
        &join(&inbound_ignore),
        "--outbound-ports-to-ignore",
        &join(&s.outbound_ports_to_ignore),
    ];
    let security = map([
        ("allowPrivilegeEscalation", Node::Bool(false)),
        ("privileged", Node::Bool(false)),
        (
            "capabilities",
            map([
                ("add", strs(&["NET_ADMIN", "NET_RAW"])),
                ("drop", strs(&["ALL"])),
            ]),
        ),
        ("runAsUser", Node::Int(0)),
        ("runAsNonRoot", Node::Bool(false)),
    ]);
    map([
        ("name", Node::str(INIT_NAME)),
        ("image", Node::str(&opts.image)),
        ("command", strs(&command)),
        ("securityContext", security),
        ("resources", resources()),
    ])
}

/// The sidecar: `vakt-proxy --role sidecar`, restarted with the pod,
/// probed on its admin listener.
pub fn proxy_container(opts: &InjectOptions, s: &Settings) -> Node {
    let args = [
        "--role",
        "sidecar",
        "--control-plane",
        &opts.control_plane,
        "--token-file",
        TOKEN_FILE,
        "--cache-dir",
        CACHE_DIR,
    ];
    let port = map([
        ("name", Node::str("vakt-admin")),
        ("containerPort", Node::Int(ADMIN_PORT.into())),
        ("protocol", Node::str("TCP")),
    ]);
    let mounts = vec![
        map([
            ("name", Node::str(TOKEN_VOLUME)),
            ("mountPath", Node::str(TOKEN_DIR)),
            ("readOnly", Node::Bool(true)),
        ]),
        map([
            ("name", Node::str(CACHE_VOLUME)),
            ("mountPath", Node::str(CACHE_DIR)),
        ]),
    ];
    map([
        ("name", Node::str(PROXY_NAME)),
        ("image", Node::str(&opts.image)),
        ("restartPolicy", Node::str("Always")),
        ("args", strs(&args)),
        ("env", env(s)),
        ("ports", Node::Seq(vec![port])),
        ("securityContext", proxy_security()),
        ("resources", resources()),
        ("startupProbe", probe("/ready", 1, 120)),
        ("readinessProbe", probe("/ready", 5, 3)),
        ("livenessProbe", probe("/live", 10, 3)),
        ("volumeMounts", Node::Seq(mounts)),
    ])
}

/// The token volume: the Secret, optional so a pod still starts (and
/// passes traffic through) before the Secret exists.
pub fn token_volume(opts: &InjectOptions) -> Node {
    let secret = map([
        ("secretName", Node::str(&opts.token_secret)),
        ("optional", Node::Bool(true)),
    ]);
    map([("name", Node::str(TOKEN_VOLUME)), ("secret", secret)])
}

/// The snapshot cache: outlives a restart of the sidecar, not the pod.
pub fn cache_volume() -> Node {
    let dir = map([("sizeLimit", Node::str("16Mi"))]);
    map([("name", Node::str(CACHE_VOLUME)), ("emptyDir", dir)])
}

/// The value of the injected marker annotation.
pub fn version() -> Node {
    Node::str(VERSION)
}

fn env(s: &Settings) -> Node {
    let service = match &s.service {
        ServiceName::Label(l) => field("VAKT_SERVICE", &format!("metadata.labels['{l}']")),
        ServiceName::Fixed(name) => value("VAKT_SERVICE", name),
    };
    let mut vars = vec![
        field("HOSTNAME", "metadata.name"),
        service,
        field("POD_NAMESPACE", "metadata.namespace"),
        field("POD_IP", "status.podIP"),
    ];
    if !s.opaque_ports.is_empty() {
        vars.push(value("VAKT_OPAQUE_PORTS", &join(&s.opaque_ports)));
    }
    Node::Seq(vars)
}

fn field(name: &str, path: &str) -> Node {
    let source = map([("fieldRef", map([("fieldPath", Node::str(path))]))]);
    map([("name", Node::str(name)), ("valueFrom", source)])
}

fn value(name: &str, v: &str) -> Node {
    map([("name", Node::str(name)), ("value", Node::str(v))])
}

fn proxy_security() -> Node {
    map([
        ("allowPrivilegeEscalation", Node::Bool(false)),
        ("privileged", Node::Bool(false)),
        ("capabilities", map([("drop", strs(&["ALL"]))])),
        ("readOnlyRootFilesystem", Node::Bool(true)),
        ("runAsUser", Node::Int(PROXY_UID)),
        ("runAsGroup", Node::Int(PROXY_UID)),
        ("runAsNonRoot", Node::Bool(true)),
    ])
}

fn resources() -> Node {
    map([
        (
            "requests",
            map([("cpu", Node::str("50m")), ("memory", Node::str("32Mi"))]),
        ),
        (
            "limits",
            map([("cpu", Node::str("1")), ("memory", Node::str("128Mi"))]),
        ),
    ])
}

fn probe(path: &str, period: i64, failures: i64) -> Node {
    let get = map([
        ("path", Node::str(path)),
        ("port", Node::Int(ADMIN_PORT.into())),
    ]);
    map([
        ("httpGet", get),
        ("periodSeconds", Node::Int(period)),
        ("timeoutSeconds", Node::Int(1)),
        ("failureThreshold", Node::Int(failures)),
    ])
}

fn map<const N: usize>(pairs: [(&str, Node); N]) -> Node {
    Node::Map(Map::of(pairs))
}

fn strs(items: &[&str]) -> Node {
    Node::Seq(items.iter().map(|s| Node::str(*s)).collect())
}
