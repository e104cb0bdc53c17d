//! Real third-party servers for TCP proxying tests: PostgreSQL and Redis,
//! started on loopback ports in temporary directories and stopped when
//! dropped. PostgreSQL refuses to run as root, so under root it runs as
//! `nobody` (through `runuser`).
//!
//! They need the Debian packages `postgresql` and `redis-server`; a test
//! calls [`require`] to skip, or fail under `VAKT_REQUIRE_SERVERS=1`,
//! when they are missing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::ports;

/// Where Debian installs the PostgreSQL server binaries.
const PG_BIN_DIRS: &[&str] = &[
    "/usr/lib/postgresql/17/bin",
    "/usr/lib/postgresql/16/bin",
    "/usr/lib/postgresql/15/bin",
];

/// UID and GID of `nobody`.
const NOBODY: u32 = 65534;

/// Why a server could not be started.
#[derive(Debug, thiserror::Error)]
pub enum ExternalError {
    #[error("{0} is not installed")]
    Missing(&'static str),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("{what} failed: {output}")]
    Failed { what: &'static str, output: String },
    #[error("{0} did not become ready")]
    NotReady(&'static str),
}

/// A running PostgreSQL server with user `vakt` (trust authentication).
pub struct Postgres {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
    _dir: TempDir,
}

/// A running Redis server without persistence.
pub struct Redis {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

/// Whether the tools a test needs are installed. When they are not, the
/// test should return early: this prints why, or panics when
/// `VAKT_REQUIRE_SERVERS=1` says they must be there.
pub fn require(tools: &[&'static str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !installed(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!("skipped: {} not installed", missing.join(", "));
    if std::env::var("VAKT_REQUIRE_SERVERS").as_deref() == Ok("1") {
        panic!("{why} and VAKT_REQUIRE_SERVERS=1");
    }
    eprintln!("{why}");
    false
}

fn installed(tool: &str) -> bool {
    match tool {
        "postgres" => pg_bin().is_some(),
        _ => which(tool).is_some(),
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

fn pg_bin() -> Option<PathBuf> {
    PG_BIN_DIRS
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("postgres").is_file())
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// `program` run as `nobody` when this process is root.
fn unprivileged(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "nobody", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Initialises a cluster in a temporary directory and starts it on a
    /// free loopback port; waits until it accepts queries.
    pub async fn start() -> Result<Self, ExternalError> {
        let bin = pg_bin().ok_or(ExternalError::Missing("postgres"))?;
        let dir = tempfile::tempdir()?;
        if is_root() {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY))?;
        }
        let data = dir.path().join("data");
        let out = unprivileged(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "vakt", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()?;
        if !out.status.success() {
            let output = String::from_utf8_lossy(&out.stderr).into_owned();
            return Err(ExternalError::Failed {
                what: "initdb",
                output,
            });
        }
        let addr = ports::free_addr();
        let child = unprivileged(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(addr.port().to_string())
            .arg("-k")
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let pg = Self {
            child,
            addr,
            data,
            _dir: dir,
        };
        for _ in 0..300 {
            if psql(addr, "select 1").await.is_ok_and(|o| o == "1") {
                return Ok(pg);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(ExternalError::NotReady("postgres"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The server's own pid, not `runuser`'s, which forwards no
        // SIGQUIT: an immediate shutdown of the postmaster and its
        // children. `runuser` exits with it.
        let pid = std::fs::read_to_string(self.data.join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<i32>().ok());
        match pid {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
                let _ = self.child.wait();
            }
            None => stop(&mut self.child, Signal::SIGKILL),
        }
    }
}

impl Redis {
    /// Starts `redis-server` on a free loopback port without persistence;
    /// waits until it answers `PING`.
    pub async fn start() -> Result<Self, ExternalError> {
        let bin = which("redis-server").ok_or(ExternalError::Missing("redis-server"))?;
        let dir = tempfile::tempdir()?;
        let addr = ports::free_addr();
        let child = Command::new(bin)
            .args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let redis = Self {
            child,
            addr,
            _dir: dir,
        };
        for _ in 0..300 {
            if redis_cli(addr, &["PING"]).await.is_ok_and(|o| o == "PONG") {
                return Ok(redis);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(ExternalError::NotReady("redis-server"))
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        stop(&mut self.child, Signal::SIGTERM);
    }
}

fn stop(child: &mut Child, signal: Signal) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
    let _ = child.wait();
}

/// Runs one SQL command with `psql` as user `vakt` against `addr`; its
/// output, unaligned and trimmed.
pub async fn psql(addr: SocketAddr, sql: &str) -> Result<String, ExternalError> {
    let out = tokio::process::Command::new("psql")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(["-U", "vakt", "-d", "postgres", "-X", "-A", "-t", "-q"])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .stdin(Stdio::null())
        .output()
        .await?;
    if !out.status.success() {
        let output = String::from_utf8_lossy(&out.stderr).into_owned();
        return Err(ExternalError::Failed {
            what: "psql",
            output,
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs one command with `redis-cli` against `addr`; its reply, trimmed.
pub async fn redis_cli(addr: SocketAddr, args: &[&str]) -> Result<String, ExternalError> {
    let out = tokio::process::Command::new("redis-cli")
        .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || text.starts_with("Could not connect") || text.is_empty() {
        let output = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
        return Err(ExternalError::Failed {
            what: "redis-cli",
            output,
        });
    }
    Ok(text)
}
