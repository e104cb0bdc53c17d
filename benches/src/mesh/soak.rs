//! The soak: vakt-proxy (guards on) in front of the example upstream at
//! half its saturating HTTP/1.1 rate, open-loop, for minutes, with its RSS
//! and CPU read every few seconds. The load runs in windows of fresh
//! connections, so each window gives its own p99 and the proxy also sees
//! connections come and go. Whether RSS stays flat is read from the
//! least-squares slope of RSS over time after a warm-up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::load::{self, Proto, Spec};
use super::procs::{self, Paths, local, port};
use super::sys;

/// How long and how hard the soak goes.
#[derive(Clone, Debug, Serialize)]
pub struct SoakPlan {
    /// Length of the open-loop load (default 600 s; smoke 3 s).
    pub duration: Duration,
    /// Length of each load window, each on fresh connections (default 30 s).
    pub window: Duration,
    /// Time between RSS and CPU reads (default 5 s).
    pub every: Duration,
    /// Length of the closed-loop run that finds the saturating rate.
    pub probe: Duration,
    /// Leading share of the soak left out of the slope (default 10 %).
    pub warmup_share: f64,
    /// Open-loop rate; `None` takes half of the measured saturating rate.
    pub rate: Option<u64>,
    /// Connections of the loads.
    pub conns: usize,
}

impl SoakPlan {
    /// Ten minutes, read every 5 s, p99 every 30 s.
    pub fn full() -> Self {
        Self {
            duration: Duration::from_secs(600),
            window: Duration::from_secs(30),
            every: Duration::from_secs(5),
            probe: Duration::from_secs(5),
            warmup_share: 0.1,
            rate: None,
            conns: 32,
        }
    }

    /// Three seconds: proves the soak starts, samples and stops.
    pub fn smoke() -> Self {
        Self {
            duration: Duration::from_secs(3),
            window: Duration::from_secs(1),
            every: Duration::from_millis(250),
            probe: Duration::from_millis(300),
            conns: 2,
            ..Self::full()
        }
    }
}

/// One read of the proxy.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Point {
    /// Seconds since the load began.
    pub t_s: f64,
    pub rss_kib: u64,
    /// CPU since the previous read, percent of one core.
    pub cpu_pct: f64,
}

/// One load window.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Window {
    /// Seconds since the load began, at the window's end.
    pub end_s: f64,
    pub requests: u64,
    pub errors: u64,
    pub p99_us: f64,
}

/// What the soak measured.
#[derive(Clone, Debug, Serialize)]
pub struct Soak {
    pub plan: SoakPlan,
    /// req/s of the closed-loop run (`None` when the rate was given).
    pub saturating_rps: Option<f64>,
    /// The open-loop rate, req/s.
    pub rate: u64,
    /// RSS before the load, KiB.
    pub idle_kib: u64,
    pub points: Vec<Point>,
    pub windows: Vec<Window>,
    /// CPU used meanwhile by anything but proxy, upstream and client,
    /// percent of one core.
    pub noise_pct: f64,
}

/// Starts the upstream and vakt-proxy (guards on), then soaks it.
pub async fn run(paths: &Paths, plan: SoakPlan, cpus: (usize, usize)) -> anyhow::Result<Soak> {
    procs::ports_free()?;
    let (proxy_cpu, client_cpu) = cpus;
    let upstream = procs::upstream(paths, client_cpu).await?;
    let vakt = procs::vakt(paths, proxy_cpu, "guards-on.yaml", port::VAKT_ON).await?;
    let pids = sys::tree(vakt.pid());
    let spec = Spec {
        addr: local(port::VAKT_ON),
        proto: Proto::H1,
        path: "/?size=128".into(),
        conns: plan.conns,
        streams: 1,
        duration: plan.probe,
        rate: None,
    };
    let idle_kib = sys::rss_kib(&pids);
    let (saturating_rps, rate) = match plan.rate {
        Some(r) => (None, r),
        None => {
            let out = load::run(&spec).await?;
            let rps = out.requests as f64 / out.elapsed.as_secs_f64();
            eprintln!("soak: saturating at {rps:.0} req/s");
            (Some(rps), (rps / 2.0).max(1.0) as u64)
        }
    };
    eprintln!("soak: {rate} req/s for {:?}", plan.duration);
    let ours = [vakt.pid(), upstream.pid(), std::process::id()];
    let (o0, h0) = (sys::cpu_seconds(&ours), sys::host_busy_seconds());
    let started = Instant::now();
    let sampler = Sampler::start(pids, plan.every, started);
    let mut windows = Vec::new();
    while started.elapsed() < plan.duration {
        let left = plan.duration.saturating_sub(started.elapsed());
        let spec = Spec {
            duration: plan.window.min(left),
            rate: Some(rate),
            ..spec.clone()
        };
        let out = load::run(&spec).await?;
        windows.push(Window {
            end_s: started.elapsed().as_secs_f64(),
            requests: out.requests,
            errors: out.errors,
            p99_us: out.latency.value_at_quantile(0.99) as f64 / 1e3,
        });
    }
    let points = sampler.stop();
    let wall = started.elapsed().as_secs_f64();
    let busy = sys::host_busy_seconds() - h0 - (sys::cpu_seconds(&ours) - o0);
    drop(vakt);
    drop(upstream);
    Ok(Soak {
        plan,
        saturating_rps,
        rate,
        idle_kib,
        points,
        windows,
        noise_pct: (busy / wall * 100.0).max(0.0),
    })
}

/// Reads RSS and CPU from a plain thread, so a busy client does not delay
/// the reads.
struct Sampler {
    stop: Arc<AtomicBool>,
    points: Arc<Mutex<Vec<Point>>>,
    thread: std::thread::JoinHandle<()>,
}

impl Sampler {
    fn start(pids: Vec<u32>, every: Duration, started: Instant) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let points = Arc::new(Mutex::new(Vec::new()));
        let (flag, out) = (stop.clone(), points.clone());
        let thread = std::thread::spawn(move || {
            let mut last = (started, sys::cpu_seconds(&pids));
            let mut next = started;
            while !flag.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now < next {
                    std::thread::sleep((next - now).min(Duration::from_millis(50)));
                    continue;
                }
                let cpu = sys::cpu_seconds(&pids);
                let dt = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let point = Point {
                    t_s: now.duration_since(started).as_secs_f64(),
                    rss_kib: sys::rss_kib(&pids),
                    cpu_pct: (cpu - last.1) / dt * 100.0,
                };
                out.lock().expect("sampler lock").push(point);
                last = (now, cpu);
                next += every;
            }
        });
        Self {
            stop,
            points,
            thread,
        }
    }

    fn stop(self) -> Vec<Point> {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        let points = self.points.lock().expect("sampler lock");
        points.clone()
    }
}
