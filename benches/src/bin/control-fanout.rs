//! control-fanout: how fast a change reaches a fleet, and what each
//! connected proxy costs the control plane.
//!
//! Starts `vakt-control` in a child process (this binary re-run with
//! `--serve-child`, so its memory is the control plane's alone), connects
//! `VAKT_BENCH_PROXIES` (default 1000) simulated proxies over their own
//! HTTP/2 connections on loopback, then applies `VAKT_BENCH_CHANGES`
//! (default 5) changes and times each from the apply call until the
//! control plane has recorded an ack of the new version from every proxy.
//! Memory per proxy is the child's RSS growth divided by the proxies.
//! Bounded: gives up after 120 s.
//!
//! Run: `cargo run --release -p vakt-benches --bin control-fanout`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::time::Instant;
use vakt_api::pb::Bearer;
use vakt_api::pb::control::v1 as pb;
use vakt_api::pb::control::v1::config_service_client::ConfigServiceClient;
use vakt_api::pb::discovery::v1::discovery_service_client::DiscoveryServiceClient;
use vakt_api::pb::discovery::v1::{Ack, Hello, NodeMessage, control_message, node_message};
use vakt_api::tonic::transport::Channel;

const TOKEN: &str = "bench-token";
const LIMIT: Duration = Duration::from_secs(120);

/// Set once the numbers are in; streams breaking after that are expected.
static FINISHED: AtomicBool = AtomicBool::new(false);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--serve-child") {
        return serve_child(Path::new(&args[2]), &args[3]).await;
    }
    tokio::time::timeout(LIMIT, bench())
        .await
        .context("the benchmark did not finish within 120 s")?
}

async fn serve_child(dir: &Path, listen: &str) -> anyhow::Result<()> {
    let opts = vakt_control::ServeOptions {
        listen: listen.parse()?,
        data_dir: dir.join("data"),
        token_file: dir.join("token"),
        node_token_file: None,
        store: vakt_control::StoreKind::Embedded,
        etcd_endpoints: Vec::new(),
        etcd_prefix: "/vakt".into(),
        replica: None,
        health_quorum: 2,
        health_report_ttl: "30s".parse()?,
        probe_interval: None,
        metrics_listen: None,
    };
    vakt_control::start(opts).await?.wait().await
}

fn env_usize(key: &str, default: usize) -> usize {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .context("bad VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

fn objects(change: usize) -> vakt_api::pb::config::v1::Objects {
    let mut yaml = String::from("backends:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{name: svc{i}, endpoints: [\"127.0.0.1:{}\", \"127.0.0.1:{}\"]}}\n",
            20000 + i,
            21000 + i
        ));
    }
    yaml.push_str("routes:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{name: svc{i}, hostnames: [svc{i}], rules: [{{backendRefs: [{{name: svc{i}}}], timeouts: {{request: {}ms}}}}]}}\n",
            1000 + change
        ));
    }
    vakt_api::httproute::read_documents(&yaml)
        .expect("bench objects are valid")
        .to_proto()
}

async fn bench() -> anyhow::Result<()> {
    let proxies = env_usize("VAKT_BENCH_PROXIES", 1000);
    let changes = env_usize("VAKT_BENCH_CHANGES", 5);
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("token"), TOKEN)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .arg("--serve-child")
        .arg(dir.path())
        .arg(&listen)
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let result = run(&listen, child.id(), proxies, changes).await;
    let _ = child.kill();
    let _ = child.wait();
    result
}

async fn run(listen: &str, pid: u32, proxies: usize, changes: usize) -> anyhow::Result<()> {
    let url = format!("http://{listen}");
    let mut admin = loop {
        if let Ok(ch) = Channel::from_shared(url.clone())?.connect().await {
            break ConfigServiceClient::with_interceptor(ch, Bearer::new(TOKEN)?);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    apply(&mut admin, 0).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let base = rss(pid)?;

    let started = Instant::now();
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    for i in 0..proxies {
        let (url, done) = (url.clone(), done_tx.clone());
        tokio::spawn(simulated_proxy(url, i, done));
    }
    drop(done_tx);
    for _ in 0..proxies {
        done_rx.recv().await.context("a simulated proxy failed")?;
    }
    wait_all_acked(&mut admin, proxies, 1).await?;
    let connect = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let grown = rss(pid)?.saturating_sub(base);

    let mut times = Vec::new();
    for change in 1..=changes {
        let start = Instant::now();
        let version = apply(&mut admin, change).await?;
        wait_all_acked(&mut admin, proxies, version).await?;
        times.push(start.elapsed());
    }
    FINISHED.store(true, Ordering::Relaxed);
    times.sort();
    println!("proxies connected:             {proxies}");
    println!("connect + first snapshot acked: {:.0} ms", ms(connect));
    println!(
        "change → acked by all:          min {:.0} ms, median {:.0} ms, max {:.0} ms ({} changes)",
        ms(times[0]),
        ms(times[times.len() / 2]),
        ms(times[times.len() - 1]),
        times.len()
    );
    println!(
        "control-plane RSS:              {:.1} MiB idle, +{:.1} MiB with proxies",
        base as f64 / 1048576.0,
        grown as f64 / 1048576.0
    );
    println!(
        "memory per connected proxy:     {:.1} KiB",
        grown as f64 / 1024.0 / proxies as f64
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

type Admin =
    ConfigServiceClient<vakt_api::tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn apply(admin: &mut Admin, change: usize) -> anyhow::Result<u64> {
    let req = pb::ApplyRequest {
        objects: Some(objects(change)),
        description: format!("bench change {change}"),
    };
    Ok(admin.apply(req).await?.into_inner().version)
}

/// Polls the control plane until every node has acked `version`.
async fn wait_all_acked(admin: &mut Admin, proxies: usize, version: u64) -> anyhow::Result<()> {
    loop {
        let nodes = admin
            .list_nodes(pb::ListNodesRequest {})
            .await?
            .into_inner();
        let acked = nodes
            .nodes
            .iter()
            .filter(|n| n.connected && n.acked_version >= version)
            .count();
        if acked >= proxies {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One proxy: its own connection, a hello, an ack for every snapshot.
/// Signals `done` after acking the first snapshot, then keeps acking.
async fn simulated_proxy(url: String, i: usize, done: mpsc::UnboundedSender<()>) {
    let run = async {
        let ch = Channel::from_shared(url)?.connect().await?;
        let mut client = DiscoveryServiceClient::with_interceptor(ch, Bearer::new(TOKEN)?);
        let (tx, rx) = mpsc::channel::<NodeMessage>(4);
        let hello = Hello {
            node_id: format!("sim-{i:04}"),
            service: "bench".into(),
            zone: "z".into(),
            version: 0,
            admin_address: String::new(),
        };
        tx.send(msg(node_message::Kind::Hello(hello))).await?;
        let outbound = tokio_stream::wrappers::ReceiverStream::new(rx);
        let mut inbound = client.stream(outbound).await?.into_inner();
        let mut first = Some(done);
        while let Some(m) = inbound.message().await? {
            if let Some(control_message::Kind::Snapshot(s)) = m.kind {
                let ack = Ack { version: s.version };
                tx.send(msg(node_message::Kind::Ack(ack))).await?;
                if let Some(d) = first.take() {
                    let _ = d.send(());
                }
            }
        }
        anyhow::Ok(())
    };
    if let Err(e) = run.await
        && !FINISHED.load(Ordering::Relaxed)
    {
        eprintln!("simulated proxy {i}: {e:#}");
    }
}

fn msg(kind: node_message::Kind) -> NodeMessage {
    NodeMessage { kind: Some(kind) }
}
