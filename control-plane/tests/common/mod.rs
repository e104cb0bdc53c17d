//! Test harness: a control plane on a free loopback port with a temp data
//! dir, authenticated clients, a recording snapshot sink, and a real etcd.

#![allow(dead_code)]

pub mod prometheus;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vakt_api::convert::Objects;
use vakt_api::pb::Bearer;
use vakt_api::pb::control::v1 as pb;
use vakt_api::pb::control::v1::config_service_client::ConfigServiceClient;
use vakt_api::tonic::service::interceptor::InterceptedService;
use vakt_api::tonic::transport::Channel;
use vakt_control::{Running, ServeOptions, StoreKind};
use vakt_proxy::discovery::{self, EndpointObservation, SnapshotSink};

pub const TOKEN: &str = "operator-token";
pub const NODE_TOKEN: &str = "node-token";

pub type Client = ConfigServiceClient<InterceptedService<Channel, Bearer>>;

/// Token files for both kinds of caller in `dir`.
pub fn token_files(dir: &Path) -> (PathBuf, PathBuf) {
    let admin = dir.join("admin.token");
    let node = dir.join("node.token");
    std::fs::write(&admin, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&node, format!("{NODE_TOKEN}\n")).unwrap();
    (admin, node)
}

pub fn options(dir: &Path) -> ServeOptions {
    let (admin, node) = token_files(dir);
    ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.join("data"),
        token_file: admin,
        node_token_file: Some(node),
        store: StoreKind::Embedded,
        etcd_endpoints: Vec::new(),
        etcd_prefix: "/vakt".into(),
        replica: None,
        health_quorum: 2,
        health_report_ttl: "30s".parse().unwrap(),
        probe_interval: None,
        metrics_listen: None,
    }
}

/// An embedded control plane with its store in `dir`.
pub async fn start(dir: &Path) -> Running {
    vakt_control::start(options(dir)).await.unwrap()
}

pub async fn client_with(addr: SocketAddr, token: &str) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    ConfigServiceClient::with_interceptor(channel, Bearer::new(token).unwrap())
}

pub async fn client(addr: SocketAddr) -> Client {
    client_with(addr, TOKEN).await
}

/// Applies YAML objects; the version stored.
pub async fn apply(c: &mut Client, yaml: &str) -> Result<u64, vakt_api::tonic::Status> {
    let objects = vakt_api::httproute::read_documents(yaml).unwrap();
    let req = pb::ApplyRequest {
        objects: Some(objects.to_proto()),
        description: String::new(),
    };
    c.apply(req).await.map(|r| r.into_inner().version)
}

pub async fn current(c: &mut Client) -> (u64, Objects) {
    let r = c
        .get(pb::GetRequest { version: 0 })
        .await
        .unwrap()
        .into_inner();
    (r.version, Objects::from_proto(&r.objects.unwrap()).unwrap())
}

pub async fn nodes(c: &mut Client) -> Vec<pb::Node> {
    c.list_nodes(pb::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
}

/// Backend `name` and a route of the same name sending to it.
pub fn route_yaml(name: &str, endpoint: &str) -> String {
    format!(
        "backends: [{{name: {name}, endpoints: [\"{endpoint}\"]}}]\n\
         routes: [{{name: {name}, hostnames: [{name}], rules: [{{backendRefs: [{{name: {name}}}]}}]}}]\n"
    )
}

/// Polls `f` every 20 ms until it holds or `limit` passes.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// A sink that records what it is given; it refuses configs whose routes
/// include one named `refuse-me`, the way a proxy refuses what it cannot
/// apply.
#[derive(Default)]
pub struct RecordingSink {
    pub applied: Mutex<Vec<(u64, vakt_api::Config)>>,
    pub refused: Mutex<Vec<u64>>,
    pub unhealthy: Mutex<Vec<(String, String)>>,
    pub observations: Mutex<Vec<EndpointObservation>>,
}

impl RecordingSink {
    pub fn versions(&self) -> Vec<u64> {
        self.applied.lock().unwrap().iter().map(|a| a.0).collect()
    }

    pub fn last_version(&self) -> u64 {
        self.versions().last().copied().unwrap_or(0)
    }

    pub fn route_names(&self) -> Vec<String> {
        let applied = self.applied.lock().unwrap();
        let Some((_, c)) = applied.last() else {
            return Vec::new();
        };
        c.routes.iter().map(|r| r.name.clone()).collect()
    }
}

impl SnapshotSink for RecordingSink {
    fn apply(&self, version: u64, config: vakt_api::Config) -> Result<(), vakt_api::Problems> {
        if config.routes.iter().any(|r| r.name == "refuse-me") {
            self.refused.lock().unwrap().push(version);
            let mut p = vakt_api::Problems::default();
            p.push("routes[refuse-me]", "listener outbound is not bound");
            return Err(p);
        }
        self.applied.lock().unwrap().push((version, config));
        Ok(())
    }

    fn set_fleet_health(&self, unhealthy: &[(String, String)]) {
        *self.unhealthy.lock().unwrap() = unhealthy.to_vec();
    }

    fn observations(&self) -> Vec<EndpointObservation> {
        self.observations.lock().unwrap().clone()
    }
}

/// Discovery options for a node of `addr`, caching in `cache`.
pub fn node_options(addr: SocketAddr, id: &str, dir: &Path, cache: &Path) -> discovery::Options {
    let (_, node) = token_files(dir);
    discovery::Options {
        control_plane: Some(format!("http://{addr}")),
        node_id: id.into(),
        token_file: Some(node),
        service: "orders".into(),
        zone: "z1".into(),
        cache_dir: cache.to_path_buf(),
        report_interval: "100ms".parse().unwrap(),
        admin_address: Some("0.0.0.0:15999".parse().unwrap()),
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real etcd server on free loopback ports with a temp data dir; killed
/// on drop.
pub struct Etcd {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Etcd {
    pub async fn start() -> Etcd {
        let found = Command::new("etcd").arg("--version").output();
        assert!(
            found.is_ok(),
            "etcd is not installed: install the Debian package etcd-server \
             (apt-get install -y etcd-server)"
        );
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "vakt-test", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("vakt-test={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let etcd = Etcd {
            url,
            child,
            _dir: dir,
        };
        let addr = format!("127.0.0.1:{client}");
        let up = eventually(Duration::from_secs(15), || {
            std::net::TcpStream::connect(&addr).is_ok()
        })
        .await;
        assert!(up, "etcd did not start on {addr}");
        etcd
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Spawns the discovery client for one node.
pub fn spawn_node(opts: discovery::Options) -> (Arc<RecordingSink>, discovery::Handle) {
    let sink = Arc::new(RecordingSink::default());
    let handle = discovery::spawn(opts, sink.clone());
    (sink, handle)
}

/// Polls the async check `f` every 100 ms until it holds or `limit`
/// passes.
pub async fn eventually_async<F, Fut>(limit: Duration, mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + limit;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Answers 500 to every fourth request, 200 to the others.
pub async fn one_in_four_fails() -> vakt_tests::upstream::Upstream {
    vakt_tests::upstream::Upstream::start(one_in_four_fails_handler()).await
}

/// The handler of [`one_in_four_fails`].
pub fn one_in_four_fails_handler() -> vakt_tests::server::Handler {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    vakt_tests::server::handler(move |_req| {
        let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        async move {
            let status = if i % 4 == 3 {
                http::StatusCode::INTERNAL_SERVER_ERROR
            } else {
                http::StatusCode::OK
            };
            let mut rsp = http::Response::new(vakt_tests::body::full("flaky\n"));
            *rsp.status_mut() = status;
            rsp
        }
    })
}

/// Sends requests for `host` one after another until `stop`.
pub fn traffic(
    proxy: SocketAddr,
    host: &'static str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<usize> {
    tokio::spawn(async move {
        let mut c = vakt_tests::client::HttpClient::h1(proxy).await.unwrap();
        let mut sent = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let answer = tokio::time::timeout(Duration::from_secs(5), c.get(host, "/")).await;
            assert!(matches!(answer, Ok(Ok(_))), "{host}: {answer:?}");
            sent += 1;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sent
    })
}

/// A real `vakt-proxy` (node `observe-1`) with one listener, following the
/// control plane at `cp`; ready once it has its first snapshot.
pub async fn proxy_of(cp: SocketAddr, dir: &Path) -> vakt_tests::proxy::Proxy {
    let (_, node) = token_files(dir);
    vakt_tests::proxy::ProxyBuilder::yaml("listeners: [{name: outbound, address: \"${main}\"}]\n")
        .arg("--control-plane")
        .arg(format!("http://{cp}"))
        .arg("--node-id")
        .arg("observe-1")
        .arg("--token-file")
        .arg(node.display().to_string())
        .arg("--cache-dir")
        .arg(dir.join("cache").display().to_string())
        .start()
        .await
        .expect("the proxy gets its snapshot and is ready")
}
