//! The processes under test: the example upstream, vakt-proxy with guards
//! on and off, NGINX with one worker and HAProxy with one thread. Each is
//! started pinned to a core with `taskset`, checked until it answers, and
//! stopped (SIGTERM, then SIGKILL) when its handle drops.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::load::{self, Proto};

/// Where everything listens; the vakt configs in `benches/config/` name
/// the same addresses.
pub mod port {
    /// The example upstream: HTTP/1.1, h2c and gRPC on one port.
    pub const UPSTREAM: u16 = 18080;
    pub const VAKT_ON: u16 = 19080;
    pub const VAKT_OFF: u16 = 19180;
    pub const VAKT_ON_ADMIN: u16 = 19000;
    pub const VAKT_OFF_ADMIN: u16 = 19100;
    pub const NGINX_H1: u16 = 18180;
    pub const NGINX_H2: u16 = 18181;
    pub const HAPROXY_H1: u16 = 18280;
    pub const HAPROXY_H2: u16 = 18281;
    /// Every port above.
    pub const ALL: [u16; 9] = [
        UPSTREAM,
        VAKT_ON,
        VAKT_OFF,
        VAKT_ON_ADMIN,
        VAKT_OFF_ADMIN,
        NGINX_H1,
        NGINX_H2,
        HAPROXY_H1,
        HAPROXY_H2,
    ];
}

/// A loopback address on `port`.
pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Fails when one of the harness's ports is taken.
pub fn ports_free() -> anyhow::Result<()> {
    for p in port::ALL {
        TcpListener::bind(local(p)).with_context(|| format!("port {p} is in use"))?;
    }
    Ok(())
}

/// A started process, stopped on drop.
pub struct Running {
    /// Shown in errors.
    pub name: String,
    child: Child,
}

impl Running {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let until = Instant::now() + Duration::from_secs(3);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `program args` pinned to `cpu`, output to `log`.
fn spawn(
    name: &str,
    cpu: usize,
    program: &Path,
    args: &[&str],
    log: &Path,
) -> anyhow::Result<Running> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(cpu.to_string())
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .spawn()
        .with_context(|| format!("start {name} ({})", program.display()))?;
    Ok(Running {
        name: name.to_owned(),
        child,
    })
}

/// Waits up to 10 s until `addr` answers a request in `proto`.
pub async fn ready(running: &mut Running, addr: SocketAddr, proto: Proto) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = running.child.try_wait() {
            anyhow::bail!("{} exited early: {status}", running.name);
        }
        if load::probe(addr, proto).await {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < until,
            "{} does not answer on {addr}",
            running.name
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The binaries and directories a run uses.
pub struct Paths {
    pub proxy: PathBuf,
    pub example: PathBuf,
    /// `benches/config/`.
    pub configs: PathBuf,
    /// Scratch space for peer configs and logs.
    pub tmp: PathBuf,
}

/// Starts the example upstream on `cpu`.
pub async fn upstream(paths: &Paths, cpu: usize) -> anyhow::Result<Running> {
    let listen = local(port::UPSTREAM).to_string();
    let mut run = spawn(
        "upstream",
        cpu,
        &paths.example,
        &["--listen", &listen, "--name", "bench"],
        &paths.tmp.join("upstream.log"),
    )?;
    ready(&mut run, local(port::UPSTREAM), Proto::H1).await?;
    Ok(run)
}

/// Starts vakt-proxy with `config` (a file in `benches/config/`) on `cpu`.
pub async fn vakt(paths: &Paths, cpu: usize, config: &str, port: u16) -> anyhow::Result<Running> {
    let file = paths.configs.join(config);
    let file = file.to_string_lossy();
    let mut run = spawn(
        config,
        cpu,
        &paths.proxy,
        &["--config", &file, "--workers", "1", "--access-log", "false"],
        &paths.tmp.join(format!("{config}.log")),
    )?;
    ready(&mut run, local(port), Proto::H1).await?;
    Ok(run)
}

/// Starts NGINX, one worker, on `cpu`.
pub async fn nginx(paths: &Paths, cpu: usize) -> anyhow::Result<Running> {
    let dir = paths.tmp.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, super::peers::nginx_conf(&dir))?;
    let prefix = dir.to_string_lossy().into_owned();
    let conf = conf.to_string_lossy().into_owned();
    let nginx = which("nginx")?;
    check_config("nginx", &nginx, &["-t", "-q", "-p", &prefix, "-c", &conf])?;
    let mut run = spawn(
        "nginx",
        cpu,
        &nginx,
        &["-p", &prefix, "-c", &conf],
        &dir.join("stdout.log"),
    )?;
    ready(&mut run, local(port::NGINX_H1), Proto::H1).await?;
    Ok(run)
}

/// Starts HAProxy, one thread, on `cpu`.
pub async fn haproxy(paths: &Paths, cpu: usize) -> anyhow::Result<Running> {
    let conf = paths.tmp.join("haproxy.cfg");
    std::fs::write(&conf, super::peers::haproxy_conf(super::sys::nofile()))?;
    let conf = conf.to_string_lossy().into_owned();
    let haproxy = which("haproxy")?;
    check_config("haproxy", &haproxy, &["-c", "-q", "-f", &conf])?;
    let mut run = spawn(
        "haproxy",
        cpu,
        &haproxy,
        &["-db", "-f", &conf],
        &paths.tmp.join("haproxy.log"),
    )?;
    ready(&mut run, local(port::HAPROXY_H1), Proto::H1).await?;
    Ok(run)
}

/// Finds `name` on `PATH` or in the sbin folders Debian installs to.
/// Runs a peer's own config check; its complaint becomes the error.
fn check_config(name: &str, program: &Path, args: &[&str]) -> anyhow::Result<()> {
    let check = Command::new(program).args(args).output()?;
    anyhow::ensure!(
        check.status.success(),
        "{name} config rejected: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    Ok(())
}

pub fn which(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"])
        .map(|dir| Path::new(dir).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("{name} not found (apt-get install nginx haproxy)"))
}

/// The version line `program` prints.
pub fn version(program: &str, arg: &str) -> String {
    let Ok(path) = which(program) else {
        return format!("{program} missing");
    };
    Command::new(path)
        .arg(arg)
        .output()
        .map(|o| {
            let text = [o.stdout, o.stderr].concat();
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}
