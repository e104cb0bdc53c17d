//! mesh-bench: vakt-proxy (guards on and off), NGINX (one worker) and
//! HAProxy (one thread) side by side in front of the example upstream,
//! each proxy pinned to one core, with the direct path as the floor.
//!
//! Run through `benches/run.sh [--smoke]`, which builds the binaries this
//! one starts. Writes `report.md`, `report.json` and `latency.svg` into
//! the results folder (default `benches/results/`). Every process it
//! starts listens on 127.0.0.1 only and is stopped before it exits.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context as _;
use clap::Parser;
use vakt_benches::mesh::load::{self, Proto, Spec};
use vakt_benches::mesh::procs::{self, Paths};
use vakt_benches::mesh::report::Report;
use vakt_benches::mesh::run::{self, Memory, Plan, WORKLOADS};
use vakt_benches::mesh::soak::{self, SoakPlan};
use vakt_benches::mesh::{chart, sys};

/// Set in the re-run pinned to the client core.
const PINNED: &str = "VAKT_BENCH_PINNED";

#[derive(Debug, Parser)]
#[command(name = "mesh-bench")]
struct Args {
    /// Seconds long: tiny counts, proves every piece works.
    #[arg(long)]
    smoke: bool,
    /// Rounds (default 3; smoke 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per measured load (default 5).
    #[arg(long)]
    duration: Option<f64>,
    /// Idle keep-alive connections for the memory measure (default 10000).
    #[arg(long)]
    idle_conns: Option<usize>,
    /// Folder for report.md, report.json and latency.svg.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Only drive load at `--target` in this protocol (h1, h2c or grpc)
    /// for `--duration` seconds and print what it measured: for profiling
    /// a proxy started by hand.
    #[arg(long, requires = "target")]
    drive: Option<String>,
    /// Address for `--drive`.
    #[arg(long)]
    target: Option<std::net::SocketAddr>,
    /// Run only the soak: vakt-proxy (guards on) at half its saturating
    /// HTTP/1.1 rate, open-loop, its RSS read every 5 s; writes soak.md,
    /// soak.json and soak.svg. `--smoke` runs a 3 s soak after the loads.
    #[arg(long)]
    soak: bool,
    /// Seconds of the soak (default 600; smoke 3).
    #[arg(long)]
    soak_seconds: Option<f64>,
    /// Open-loop rate of the soak in req/s (default: half the saturating
    /// rate a short closed-loop run finds).
    #[arg(long)]
    soak_rate: Option<u64>,
    /// Folder holding vakt-proxy and vakt-example (default: beside this
    /// binary).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = plan(&args);
    if std::env::var_os(PINNED).is_none() {
        // Re-run on the client core; the children pin themselves.
        let status = Command::new("taskset")
            .arg("-c")
            .arg(plan.client_cpu.to_string())
            .arg(std::env::current_exe()?)
            .args(std::env::args_os().skip(1))
            .env(PINNED, "1")
            .status()
            .context("taskset")?;
        std::process::exit(status.code().unwrap_or(1));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match (&args.drive, args.target) {
        (Some(proto), Some(addr)) => runtime.block_on(drive(proto, addr, &plan)),
        _ => runtime.block_on(bench(args, plan)),
    }
}

async fn drive(proto: &str, addr: std::net::SocketAddr, plan: &Plan) -> anyhow::Result<()> {
    let proto = match proto {
        "h1" => Proto::H1,
        "h2c" => Proto::H2c,
        "grpc" => Proto::Grpc,
        other => anyhow::bail!("unknown protocol {other}: h1, h2c or grpc"),
    };
    let spec = Spec {
        addr,
        proto,
        path: "/?size=128".into(),
        conns: plan.conns,
        streams: 10,
        duration: plan.duration,
        rate: None,
    };
    let out = load::run(&spec).await?;
    println!(
        "{} requests, {} errors, {:.0} req/s, p50 {:.3} ms, p99 {:.3} ms",
        out.requests,
        out.errors,
        out.requests as f64 / out.elapsed.as_secs_f64(),
        out.latency.value_at_quantile(0.5) as f64 / 1e6,
        out.latency.value_at_quantile(0.99) as f64 / 1e6
    );
    Ok(())
}

fn plan(args: &Args) -> Plan {
    let mut plan = if args.smoke {
        Plan::smoke()
    } else {
        Plan::full()
    };
    if let Some(r) = args.rounds {
        plan.rounds = r.max(1);
    }
    if let Some(d) = args.duration {
        plan.duration = std::time::Duration::from_secs_f64(d);
    }
    if let Some(n) = args.idle_conns {
        plan.idle_conns = n;
    }
    plan
}

fn soak_plan(args: &Args) -> SoakPlan {
    let mut plan = if args.smoke {
        SoakPlan::smoke()
    } else {
        SoakPlan::full()
    };
    if let Some(s) = args.soak_seconds {
        plan.duration = std::time::Duration::from_secs_f64(s.max(0.1));
    }
    plan.rate = args.soak_rate;
    plan
}

async fn bench(args: Args, plan: Plan) -> anyhow::Result<()> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin_dir = match args.bin_dir.clone() {
        Some(d) => d,
        None => std::env::current_exe()?
            .parent()
            .context("binary folder")?
            .to_owned(),
    };
    let out = args.out.clone().unwrap_or_else(|| manifest.join("results"));
    std::fs::create_dir_all(&out)?;
    let soak_plan = soak_plan(&args);
    let cpus = (plan.proxy_cpu, plan.client_cpu);
    let nofile = sys::raise_nofile(plan.idle_conns as u64 * 2 + 2_000);
    anyhow::ensure!(
        nofile as usize > plan.idle_conns + 100,
        "open-file limit {nofile} is too low for {} idle connections",
        plan.idle_conns
    );
    let tmp = tempfile::tempdir()?;
    let paths = Paths {
        proxy: bin_dir.join("vakt-proxy"),
        example: bin_dir.join("vakt-example"),
        configs: manifest.join("config"),
        tmp: tmp.path().to_owned(),
    };
    if args.soak {
        return soak_only(&paths, soak_plan, cpus, &out).await;
    }
    let (upstream, targets) = run::start(&paths, &plan).await?;
    let mut memory: Vec<Memory> = targets
        .iter()
        .map(|t| Memory {
            target: t.name,
            idle_kib: sys::rss_kib(&run::pids(t)),
            ..Memory::default()
        })
        .collect();
    let mut samples = Vec::new();
    for round in 1..=plan.rounds {
        for w in &WORKLOADS {
            for i in 0..targets.len() {
                let t = &targets[(i + round - 1) % targets.len()];
                eprintln!("round {round}: {} {}", w.key, t.name);
                let sample = run::measure(&plan, round, t, &upstream, w).await?;
                anyhow::ensure!(
                    sample.requests > 0,
                    "{} answered no {} request",
                    t.name,
                    w.key
                );
                samples.push(sample);
            }
        }
    }
    eprintln!("idle connections: {}", plan.idle_conns);
    run::idle_memory(&plan, &targets, &mut memory).await?;
    drop(targets);
    drop(upstream);
    let soak = if args.smoke {
        eprintln!("soak");
        Some(soak::run(&paths, soak_plan, cpus).await?)
    } else {
        None
    };

    let report = Report {
        command: command(),
        finished: utc_now(),
        machine: sys::machine(),
        versions: versions(&paths),
        plan,
        samples,
        memory,
        soak,
    };
    std::fs::write(out.join("report.md"), report.markdown())?;
    std::fs::write(
        out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    chart::draw(&report, &out.join("latency.svg"))?;
    if let Some(soak) = &report.soak {
        chart::draw_soak(soak, &out.join("soak.svg"))?;
    }
    print!("{}", report.markdown());
    eprintln!("results in {}", out.display());
    Ok(())
}

/// Runs the soak alone and writes soak.md, soak.json and soak.svg.
async fn soak_only(
    paths: &Paths,
    plan: SoakPlan,
    cpus: (usize, usize),
    out: &std::path::Path,
) -> anyhow::Result<()> {
    let soak = soak::run(paths, plan, cpus).await?;
    let (command, finished) = (command(), utc_now());
    let (machine, versions) = (sys::machine(), versions(paths));
    let md = format!(
        "Command: `{command}`  \nFinished {finished} on {machine}  \n{}  \n\n{}",
        versions.join(" · "),
        soak.markdown()
    );
    let json = serde_json::json!({
        "command": command,
        "finished": finished,
        "machine": machine,
        "versions": versions,
        "summary": soak.summary(),
        "soak": soak,
    });
    std::fs::write(out.join("soak.md"), &md)?;
    std::fs::write(out.join("soak.json"), serde_json::to_string_pretty(&json)?)?;
    chart::draw_soak(&soak, &out.join("soak.svg"))?;
    print!("{md}");
    eprintln!("results in {}", out.display());
    Ok(())
}

fn command() -> String {
    let rest: Vec<String> = std::env::args().skip(1).collect();
    format!("benches/run.sh {}", rest.join(" "))
        .trim()
        .to_owned()
}

fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn versions(paths: &Paths) -> Vec<String> {
    let vakt = Command::new(&paths.proxy)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    vec![
        vakt,
        procs::version("nginx", "-v"),
        procs::version("haproxy", "-v"),
        procs::version("rustc", "--version"),
    ]
}
