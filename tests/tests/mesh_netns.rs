//! A mesh built the way a cluster runs it, in network namespaces: a node
//! namespace with a bridge, every pod a namespace with its own address on
//! it, the app and its sidecar (`vakt-proxy` as UID 1717) inside and
//! `vakt-iptables` steering the pod's TCP through the sidecar; the control
//! plane, the edge and a client in namespaces of their own.
//!
//! ```text
//!  client 10.44.0.30 ─┐            node: br0 10.44.0.1/16
//!  cp     10.44.0.10 ─┤  pod-a  10.44.1.1  app a (calls b's service address)
//!  edge   10.44.0.20 ─┤  pod-b1 10.44.1.2  app b1
//!                     └─ pod-b2 10.44.1.3  app b2
//! ```
//!
//! Service addresses: a 10.96.0.1:80, b 10.96.0.2:80 (owned by nobody: the
//! app's connection only arrives because its sidecar intercepts it).
//! A request goes client → edge → pod-a (inbound) → app a → sidecar a
//! (outbound) → pod-b1 or pod-b2 (inbound) → app b. Then app b1 is killed
//! (traffic keeps flowing to b2, b1's endpoint is ejected) and b2's sidecar
//! is killed (b2's pod refuses at once, the breaker opens, the fallback
//! answers, the control plane shows the node gone).
//!
//! When `vakt-proxy` has the sidecar role (`--role sidecar`), the sidecars
//! run on its built-in bootstrap and the test also checks routing by the
//! original destination and passthrough; before that, each sidecar runs
//! on a config file with the same listeners. Root only.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use vakt_tests::client::Metrics;
use vakt_tests::lab::Lab;

const PROXY_UID: u32 = 1717;
const APP_UID: u32 = 1000;
const UP: Duration = Duration::from_secs(20);
const PODS: [(&str, &str, &str); 3] = [
    ("a", "a", "10.44.1.1"),
    ("b1", "b", "10.44.1.2"),
    ("b2", "b", "10.44.1.3"),
];

#[test]
fn mesh_in_namespaces_survives_a_dead_app_and_a_dead_sidecar() {
    if !vakt_tests::lab::available("mesh in network namespaces") {
        return;
    }
    let started = Instant::now();
    let bins = vakt_tests::bins::dir();
    let role = sidecar_role(bins);
    eprintln!("binaries ready in {:?}", started.elapsed());
    let phase = |name: &str| eprintln!("{:>8.1?} {name}", started.elapsed());
    let mut mesh = Mesh::build(bins, role);
    phase(&format!("built (sidecar role: {role})"));
    mesh.steady_state();
    phase("steady state checked");
    mesh.app_b1_dies();
    phase("app b1 killed, checked");
    mesh.sidecar_b2_dies();
    phase("sidecar b2 killed, checked");
}

/// Whether this `vakt-proxy` has `--role sidecar`.
fn sidecar_role(bins: &Path) -> bool {
    let help = Command::new(bins.join("vakt-proxy"))
        .arg("--help")
        .output()
        .expect("vakt-proxy --help");
    String::from_utf8_lossy(&help.stdout).contains("--role")
}

struct Mesh {
    lab: Lab,
    bins: &'static Path,
    role: bool,
    token: String,
}

impl Mesh {
    fn build(bins: &'static Path, role: bool) -> Self {
        let lab = Lab::new("vkmesh").expect("lab");
        let token = lab.dir().join("token").to_string_lossy().into_owned();
        std::fs::write(&token, format!("{:032x}\n", fastrand::u128(..))).unwrap();
        let mut mesh = Self {
            lab,
            bins,
            role,
            token,
        };
        mesh.network();
        mesh.control_plane();
        for (pod, service, ip) in PODS {
            mesh.pod(pod, service, ip);
        }
        mesh.edge();
        mesh
    }

    fn bin(&self, name: &str) -> String {
        self.bins.join(name).to_string_lossy().into_owned()
    }

    /// The node's bridge and one veth into it per namespace.
    fn network(&mut self) {
        let lab = &mut self.lab;
        lab.add_ns("node").unwrap();
        lab.ip("node", &["link", "add", "br0", "type", "bridge"])
            .unwrap();
        lab.ip("node", &["addr", "add", "10.44.0.1/16", "dev", "br0"])
            .unwrap();
        lab.ip("node", &["link", "set", "br0", "up"]).unwrap();
        let mut hosts = vec![
            ("cp".to_owned(), "10.44.0.10"),
            ("edge".to_owned(), "10.44.0.20"),
            ("client".to_owned(), "10.44.0.30"),
        ];
        hosts.extend(PODS.map(|(pod, _, ip)| (format!("pod-{pod}"), ip)));
        for (ns, ip) in &hosts {
            let port = format!("v-{}", ns.trim_start_matches("pod-"));
            lab.add_ns(ns).unwrap();
            lab.veth(ns, "eth0", "node", &port).unwrap();
            lab.ip("node", &["link", "set", &port, "master", "br0"])
                .unwrap();
            let cidr = format!("{ip}/16");
            lab.ip(ns, &["addr", "add", &cidr, "dev", "eth0"]).unwrap();
            lab.ip(ns, &["route", "add", "default", "via", "10.44.0.1"])
                .unwrap();
        }
    }

    fn control_plane(&mut self) {
        let data = self.lab.dir().join("cp-data");
        let args = [
            self.bin("vakt-control"),
            "serve".into(),
            "--listen".into(),
            "10.44.0.10:7070".into(),
            "--data-dir".into(),
            data.to_string_lossy().into_owned(),
            "--token-file".into(),
            self.token.clone(),
        ];
        self.spawn("control", "cp", None, &args);
        let mesh = self.lab.dir().join("mesh.yaml");
        let mut yaml = MESH_YAML.to_owned();
        if self.role {
            // The service addresses the apps dial, for interception.
            for (name, addr) in [("a", "10.96.0.1:80"), ("b", "10.96.0.2:80")] {
                let at = format!("  - name: {name}\n    endpoints:");
                let with = format!("  - name: {name}\n    addresses: [\"{addr}\"]\n    endpoints:");
                yaml = yaml.replace(&at, &with);
            }
        }
        std::fs::write(&mesh, yaml).unwrap();
        let mesh = mesh.to_string_lossy().into_owned();
        let start = Instant::now();
        while let Err(e) = self.ctl(&["apply", "-f", &mesh]) {
            if start.elapsed() > UP {
                self.fail(&format!("vakt-control apply: {e}"));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `vakt-control ARGS` from the client namespace.
    fn ctl(&self, args: &[&str]) -> Result<String, vakt_tests::lab::LabError> {
        let bin = self.bin("vakt-control");
        let mut all = vec![bin.as_str()];
        all.extend_from_slice(args);
        all.extend(["--server", "http://10.44.0.10:7070"]);
        all.extend(["--token-file", &self.token]);
        let out = self.lab.exec("client", &all)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// One pod: iptables first (as an init container would), then the
    /// app and its sidecar.
    fn pod(&mut self, pod: &str, service: &str, ip: &str) {
        let ns = format!("pod-{pod}");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/iptables/vakt-iptables");
        let script = script.to_string_lossy().into_owned();
        let init: Vec<&str> = [script.as_str()]
            .into_iter()
            .chain(vakt_tests::lab::INIT_FLAGS)
            .collect();
        if let Err(e) = self.lab.exec(&ns, &init) {
            self.fail(&format!("vakt-iptables in {ns}: {e}"));
        }

        let mut app = vec![
            self.bin("vakt-example"),
            "--listen".into(),
            "0.0.0.0:8080".into(),
            "--name".into(),
            pod.into(),
        ];
        if pod == "a" {
            app.extend(["--call", "http://10.96.0.2/work", "--call-host", "b"].map(String::from));
        }
        self.spawn(&format!("{pod}-app"), &ns, Some(APP_UID), &app);

        let cache = self.lab.dir().join(format!("cache-{pod}"));
        std::fs::create_dir_all(&cache).unwrap();
        std::os::unix::fs::chown(&cache, Some(PROXY_UID), Some(PROXY_UID)).unwrap();
        let mut sidecar = vec![self.bin("vakt-proxy")];
        if self.role {
            sidecar.extend(["--role", "sidecar"].map(String::from));
        } else {
            let config = self.lab.dir().join(format!("{pod}.yaml"));
            std::fs::write(&config, sidecar_config(service)).unwrap();
            sidecar.extend(["--config".into(), config.to_string_lossy().into_owned()]);
        }
        sidecar.extend(
            [
                "--control-plane",
                "http://10.44.0.10:7070",
                "--node-id",
                pod,
                "--service",
                service,
                "--access-log",
                "false",
            ]
            .map(String::from),
        );
        sidecar.extend(["--token-file".into(), self.token.clone()]);
        sidecar.extend(["--cache-dir".into(), cache.to_string_lossy().into_owned()]);
        self.spawn(&format!("{pod}-sidecar"), &ns, Some(PROXY_UID), &sidecar);
        self.wait(&format!("http://{ip}:17000/ready"));
        let health = "http://127.0.0.1:8080/healthz";
        if let Err(e) = self.lab.wait_for(&ns, health, UP) {
            self.fail(&format!("app {pod} did not come up: {e}"));
        }
    }

    fn edge(&mut self) {
        let config = self.lab.dir().join("edge.yaml");
        std::fs::write(&config, EDGE_YAML).unwrap();
        let cache = self.lab.dir().join("cache-edge");
        let args = [
            self.bin("vakt-proxy"),
            "--config".into(),
            config.to_string_lossy().into_owned(),
            "--control-plane".into(),
            "http://10.44.0.10:7070".into(),
            "--token-file".into(),
            self.token.clone(),
            "--node-id".into(),
            "edge".into(),
            "--service".into(),
            "edge".into(),
            "--cache-dir".into(),
            cache.to_string_lossy().into_owned(),
            "--access-log".into(),
            "false".into(),
        ];
        self.spawn("edge", "edge", None, &args);
        self.wait("http://10.44.0.20:17000/ready");
    }

    fn spawn(&mut self, name: &str, ns: &str, uid: Option<u32>, args: &[String]) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if let Err(e) = self.lab.spawn(name, ns, uid, &args) {
            self.fail(&format!("cannot start {name}: {e}"));
        }
    }

    /// Waits until `url` answers 2xx from the client namespace.
    fn wait(&self, url: &str) {
        if let Err(e) = self.lab.wait_for("client", url, UP) {
            self.fail(&format!("{url} did not come up: {e}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}\n{}", self.lab.logs(15));
    }

    /// One request client → edge → A → B: (status, body, seconds).
    fn chain(&self) -> (u16, String, f64) {
        let args = [
            "-H",
            "host: a",
            "-w",
            "\n%{http_code} %{time_total}",
            "http://10.44.0.20:8000/chain",
        ];
        let out = self.lab.curl("client", None, &args).unwrap_or_default();
        let (body, tail) = out.rsplit_once('\n').unwrap_or(("", "000 0"));
        let (code, time) = tail.split_once(' ').unwrap_or(("000", "0"));
        (
            code.parse().unwrap_or(0),
            body.trim().to_owned(),
            time.parse().unwrap_or(0.0),
        )
    }

    /// `n` chain requests, each answer as `STATUS BODY`.
    fn chains(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let (code, body, _) = self.chain();
                format!("{code} {body}")
            })
            .collect()
    }

    fn metrics(&self, ip: &str) -> Metrics {
        let url = format!("http://{ip}:17000/metrics");
        Metrics::parse(&self.lab.curl("client", None, &[&url]).unwrap_or_default())
    }

    fn steady_state(&mut self) {
        // Snapshots reach the proxies shortly after they start.
        let start = Instant::now();
        while self.chain().0 != 200 {
            if start.elapsed() > UP {
                self.fail(&format!("no chain answer: {:?}", self.chain()));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let answers = self.chains(10);
        let all = answers.join("\n");
        assert!(answers.iter().all(|a| a.starts_with("200 a -> b")), "{all}");
        assert!(answers.iter().any(|a| a == "200 a -> b1"), "{all}");
        assert!(answers.iter().any(|a| a == "200 a -> b2"), "{all}");

        let a = self.metrics("10.44.1.1");
        let outbound = a.sum("vakt_requests_total", &[("backend", "b"), ("code", "200")]);
        assert!(
            outbound >= 10.0,
            "A's sidecar sent {outbound} requests to b"
        );
        let edge = self.metrics("10.44.0.20");
        let edge_a = edge.sum("vakt_requests_total", &[("backend", "a"), ("code", "200")]);
        assert!(edge_a >= 10.0, "the edge sent {edge_a} requests to a");
        // The app dials b's service address, which no namespace owns: the
        // answers above went through A's sidecar.
        let direct = self.lab.curl(
            "pod-a",
            Some(PROXY_UID),
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
                "http://10.96.0.2/",
            ],
        );
        assert_eq!(
            direct.unwrap_or_default(),
            "000",
            "10.96.0.2 answered UID 1717"
        );
        if self.role {
            self.transparent_checks();
        }
    }

    /// What only interception gives: routing by the original destination
    /// and passthrough to destinations the mesh does not know.
    fn transparent_checks(&mut self) {
        let by_address = self
            .lab
            .curl("pod-a", Some(APP_UID), &["http://10.96.0.2/"])
            .unwrap_or_default();
        assert!(
            by_address == "b1\n" || by_address == "b2\n",
            "by address: {by_address:?}"
        );
        let outside = [
            self.bin("vakt-example"),
            "--listen".into(),
            "10.44.0.30:9000".into(),
            "--name".into(),
            "outside".into(),
        ];
        self.spawn("outside", "client", None, &outside);
        self.wait("http://10.44.0.30:9000/healthz");
        let passed = self
            .lab
            .curl("pod-a", Some(APP_UID), &["http://10.44.0.30:9000/"])
            .unwrap_or_default();
        assert_eq!(passed, "outside\n");
        let a = self.metrics("10.44.1.1");
        assert!(
            a.sum("vakt_requests_total", &[("backend", "passthrough")]) >= 1.0,
            "no passthrough request counted"
        );
        let inbound = a.sum("vakt_requests_total", &[("direction", "inbound")]);
        assert!(inbound >= 10.0, "A's sidecar counted {inbound} inbound");
    }

    fn app_b1_dies(&mut self) {
        assert!(self.lab.kill("b1-app"));
        // Retries hide b1's failures; after its ejection b2 takes it all.
        let answers = self.chains(20);
        let all = answers.join("\n");
        assert!(answers.iter().all(|a| a == "200 a -> b2"), "{all}");
        let a = self.metrics("10.44.1.1");
        let ejections = a.sum("vakt_ejections_total", &[("backend", "b")]);
        assert!(ejections >= 1.0, "b1 was not ejected\n{all}");
        // b1's sidecar lives on and says why: its app is gone.
        let b1 = self.metrics("10.44.1.2");
        let bad = b1.sum("vakt_requests_total", &[("code", "502")])
            + b1.sum("vakt_requests_total", &[("code", "503")]);
        assert!(bad >= 1.0, "b1's sidecar saw no failing request");
    }

    fn sidecar_b2_dies(&mut self) {
        assert!(self.lab.kill("b2-sidecar"));
        // Its pod's app port is redirected to a closed port: refused now,
        // not after a timeout.
        let args = [
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{time_total}",
            "http://10.44.1.3:8080/",
        ];
        let out = self.lab.curl("client", None, &args).unwrap_or_default();
        let (code, time) = out.split_once(' ').unwrap_or(("", "9"));
        assert_eq!(code, "000", "b2's pod answered without its sidecar");
        assert!(time.parse::<f64>().unwrap_or(9.0) < 1.0, "took {time}s");

        // Nothing of b serves: the breaker opens and A gets the fallback,
        // quickly.
        let mut log = String::new();
        for _ in 0..12 {
            let (code, body, time) = self.chain();
            let _ = writeln!(log, "{code} {body} {time}");
            assert!(time < 3.0, "slow answer:\n{log}");
        }
        let (code, body, _) = self.chain();
        assert_eq!((code, body.as_str()), (200, "a -> fallback"), "{log}");
        let a = self.metrics("10.44.1.1");
        assert_eq!(a.get("vakt_breaker_state", &[("backend", "b")]), Some(1.0));
        assert!(a.sum("vakt_fallbacks_total", &[("backend", "b")]) >= 1.0);

        // The control plane still serves and knows who is gone.
        let start = Instant::now();
        loop {
            let nodes = self.ctl(&["get", "nodes"]).unwrap_or_default();
            let connected = |n: &str| {
                nodes
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(n) && l.contains(" true "))
            };
            if ["a", "b1", "edge"].iter().all(|n| connected(n)) && !connected("b2") {
                break;
            }
            assert!(start.elapsed() < UP, "get nodes:\n{nodes}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A sidecar's own file before the sidecar role: the contract's
/// listeners, and the inbound route to the app on 127.0.0.1:8080 (file
/// routes win over the control plane's for the same host).
fn sidecar_config(service: &str) -> String {
    format!(
        "admin: {{address: \"0.0.0.0:17000\"}}
listeners:
  - {{name: outbound, address: \"127.0.0.1:17001\"}}
  - {{name: inbound, address: \"0.0.0.0:17006\"}}
routes:
  - name: local
    listeners: [inbound]
    hostnames: [{service}]
    rules: [{{backendRefs: [{{name: local}}]}}]
backends: [{{name: local, endpoints: [\"127.0.0.1:8080\"]}}]
"
    )
}

const EDGE_YAML: &str = "admin: {address: \"0.0.0.0:17000\"}
listeners: [{name: edge, address: \"0.0.0.0:8000\"}]
";

/// The mesh's routes and backends, pushed through `vakt-control apply`.
const MESH_YAML: &str = "routes:
  - name: a
    hostnames: [a]
    rules:
      - backendRefs: [{name: a}]
        timeouts: {request: 5s}
  - name: b
    hostnames: [b]
    rules:
      - backendRefs: [{name: b}]
        timeouts: {request: 2s, backendRequest: 500ms}
        retry: {attempts: 2, codes: [502, 503, 504], backoff: 10ms}
        fallback: {status: 200, body: fallback}
backends:
  - name: a
    endpoints: [\"10.44.1.1:8080\"]
  - name: b
    endpoints: [\"10.44.1.2:8080\", \"10.44.1.3:8080\"]
    loadBalancer: round-robin
    connectTimeout: 500ms
    circuitBreaker: {consecutiveFailures: 5, openFor: 60s}
    outlierDetection: {consecutiveFailures: 2, ejectionTime: 60s, maxEjectionPercent: 50}
";
