//! One benchmark run: start every target, then for each round and each
//! workload run the targets one after another in an order that rotates
//! each round, measuring the client's latency, the proxy's CPU time and
//! memory, and how busy the rest of the host was meanwhile.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;

use super::load::{self, Proto, Spec};
use super::procs::{self, Paths, Running, local, port};
use super::sys;

/// How long and how hard a run goes.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// Rounds over all targets and workloads.
    pub rounds: usize,
    /// Length of each measured load, after a warm-up of a fifth of it.
    pub duration: Duration,
    /// Connections of the closed-loop HTTP/1.1 loads.
    pub conns: usize,
    /// Idle keep-alive connections held for the memory measure.
    pub idle_conns: usize,
    /// Core of the proxies; the upstream and the client share the other.
    pub proxy_cpu: usize,
    pub client_cpu: usize,
}

impl Plan {
    /// The full run: 3 rounds of 5 s loads.
    pub fn full() -> Self {
        Self {
            rounds: 3,
            duration: Duration::from_secs(5),
            conns: 32,
            idle_conns: 10_000,
            proxy_cpu: 0,
            client_cpu: 1,
        }
    }

    /// Seconds long: proves every piece starts, measures and stops.
    pub fn smoke() -> Self {
        Self {
            rounds: 1,
            duration: Duration::from_millis(300),
            conns: 2,
            idle_conns: 50,
            ..Self::full()
        }
    }
}

/// One workload.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Workload {
    /// Short key, such as `h1-sat`.
    pub key: &'static str,
    /// Table label.
    pub label: &'static str,
    #[serde(skip)]
    pub proto: Proto,
    pub path: &'static str,
    /// Connections, as a multiple of the plan's (`0` means the plan's).
    pub conns: usize,
    /// Streams per HTTP/2 connection.
    pub streams: usize,
    /// Fixed rate, open-loop.
    pub rate: Option<u64>,
}

/// The workloads, in the order they run for each target.
pub const WORKLOADS: [Workload; 6] = [
    Workload {
        key: "h1-sat",
        label: "HTTP/1.1 keep-alive, saturating",
        proto: Proto::H1,
        path: "/?size=128",
        conns: 0,
        streams: 1,
        rate: None,
    },
    Workload {
        key: "h1-1k",
        label: "HTTP/1.1 at 1,000 req/s",
        proto: Proto::H1,
        path: "/?size=128",
        conns: 0,
        streams: 1,
        rate: Some(1_000),
    },
    Workload {
        key: "h1-5k",
        label: "HTTP/1.1 at 5,000 req/s",
        proto: Proto::H1,
        path: "/?size=128",
        conns: 0,
        streams: 1,
        rate: Some(5_000),
    },
    Workload {
        key: "h2c-sat",
        label: "h2c, 10 streams per connection, saturating",
        proto: Proto::H2c,
        path: "/?size=128",
        conns: 0,
        streams: 10,
        rate: None,
    },
    Workload {
        key: "grpc-sat",
        label: "gRPC unary, 10 streams per connection, saturating",
        proto: Proto::Grpc,
        path: "/",
        conns: 0,
        streams: 10,
        rate: None,
    },
    Workload {
        key: "h1-64k",
        label: "HTTP/1.1, 64 KiB responses, saturating",
        proto: Proto::H1,
        path: "/?size=65536",
        conns: 0,
        streams: 1,
        rate: None,
    },
];

/// One measured load of one target.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub round: usize,
    pub target: &'static str,
    pub workload: &'static str,
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// The proxy's CPU per request, microseconds (`None` for direct).
    pub cpu_us_per_req: Option<f64>,
    /// The proxy's core busy share, percent.
    pub proxy_busy_pct: Option<f64>,
    /// The proxy's RSS at the end of the load, KiB.
    pub rss_kib: Option<u64>,
    /// CPU used meanwhile by anything but proxy, upstream and client, in
    /// percent of one core: other tenants of the machine.
    pub noise_pct: f64,
}

/// Memory of one proxy outside the loads.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Memory {
    pub target: &'static str,
    pub idle_kib: u64,
    /// Before the idle connections were opened (after the loads).
    pub before_idle_conns_kib: u64,
    pub with_idle_conns_kib: u64,
    pub idle_conns: usize,
}

/// A proxy or the direct path.
pub struct Target {
    pub name: &'static str,
    pub h1: SocketAddr,
    pub h2: SocketAddr,
    pub process: Option<Running>,
}

/// The target keys, in report order.
pub const TARGETS: [&str; 5] = ["direct", "vakt", "vakt-off", "nginx", "haproxy"];

/// Starts everything; the upstream comes first in the returned list.
pub async fn start(paths: &Paths, plan: &Plan) -> anyhow::Result<(Running, Vec<Target>)> {
    procs::ports_free()?;
    let up = procs::upstream(paths, plan.client_cpu).await?;
    let cpu = plan.proxy_cpu;
    let on = procs::vakt(paths, cpu, "guards-on.yaml", port::VAKT_ON).await?;
    let off = procs::vakt(paths, cpu, "guards-off.yaml", port::VAKT_OFF).await?;
    let nginx = procs::nginx(paths, cpu).await?;
    let haproxy = procs::haproxy(paths, cpu).await?;
    let target = |name, h1: u16, h2: u16, process| Target {
        name,
        h1: local(h1),
        h2: local(h2),
        process,
    };
    let targets = vec![
        target("direct", port::UPSTREAM, port::UPSTREAM, None),
        target("vakt", port::VAKT_ON, port::VAKT_ON, Some(on)),
        target("vakt-off", port::VAKT_OFF, port::VAKT_OFF, Some(off)),
        target("nginx", port::NGINX_H1, port::NGINX_H2, Some(nginx)),
        target("haproxy", port::HAPROXY_H1, port::HAPROXY_H2, Some(haproxy)),
    ];
    for t in &targets {
        for proto in [Proto::H2c, Proto::Grpc] {
            anyhow::ensure!(
                load::probe(t.h2, proto).await,
                "{} does not answer {proto:?} on {}",
                t.name,
                t.h2
            );
        }
    }
    Ok((up, targets))
}

/// The proxy's processes (NGINX: master and worker).
pub fn pids(target: &Target) -> Vec<u32> {
    target
        .process
        .as_ref()
        .map_or_else(Vec::new, |p| sys::tree(p.pid()))
}

/// Runs one workload against one target and measures it.
pub async fn measure(
    plan: &Plan,
    round: usize,
    target: &Target,
    upstream: &Running,
    w: &Workload,
) -> anyhow::Result<Sample> {
    let spec = Spec {
        addr: if w.proto == Proto::H1 {
            target.h1
        } else {
            target.h2
        },
        proto: w.proto,
        path: w.path.into(),
        conns: if w.conns == 0 { plan.conns } else { w.conns },
        streams: w.streams,
        duration: plan.duration / 5,
        rate: w.rate,
    };
    load::run(&spec).await?;
    let spec = Spec {
        duration: plan.duration,
        ..spec
    };
    let proxy = pids(target);
    let me = [std::process::id()];
    let up = [upstream.pid()];
    let (p0, u0, m0, h0) = (
        sys::cpu_seconds(&proxy),
        sys::cpu_seconds(&up),
        sys::cpu_seconds(&me),
        sys::host_busy_seconds(),
    );
    let out = load::run(&spec).await?;
    let proxy_cpu = sys::cpu_seconds(&proxy) - p0;
    let ours = proxy_cpu + sys::cpu_seconds(&up) - u0 + sys::cpu_seconds(&me) - m0;
    let wall = out.elapsed.as_secs_f64();
    let noise = ((sys::host_busy_seconds() - h0 - ours) / wall * 100.0).max(0.0);
    let has_proxy = !proxy.is_empty();
    let q = |p: f64| out.latency.value_at_quantile(p) as f64 / 1_000.0;
    Ok(Sample {
        round,
        target: target.name,
        workload: w.key,
        requests: out.requests,
        errors: out.errors,
        rps: out.requests as f64 / wall,
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
        p999_us: q(0.999),
        cpu_us_per_req: has_proxy.then(|| proxy_cpu / out.requests.max(1) as f64 * 1e6),
        proxy_busy_pct: has_proxy.then(|| proxy_cpu / wall * 100.0),
        rss_kib: has_proxy.then(|| sys::rss_kib(&proxy)),
        noise_pct: noise,
    })
}

/// Holds `plan.idle_conns` keep-alive connections to each proxy in turn
/// and reads its memory meanwhile.
pub async fn idle_memory(
    plan: &Plan,
    targets: &[Target],
    memory: &mut [Memory],
) -> anyhow::Result<()> {
    for (t, m) in targets.iter().zip(memory.iter_mut()) {
        let pids = pids(t);
        if pids.is_empty() {
            continue;
        }
        m.before_idle_conns_kib = sys::rss_kib(&pids);
        // HAProxy accepts no more than its maxconn, which the open-file
        // limit bounds; it gets as many as it can take.
        let count = match t.name {
            "haproxy" => plan
                .idle_conns
                .min(super::peers::haproxy_maxconn(sys::nofile()).saturating_sub(50)),
            _ => plan.idle_conns,
        };
        let held = load::idle_connections(t.h1, count).await?;
        tokio::time::sleep(Duration::from_millis(500)).await;
        m.with_idle_conns_kib = sys::rss_kib(&pids);
        m.idle_conns = held.len();
        drop(held);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}
