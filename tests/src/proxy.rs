//! Starts the real `vakt-proxy` binary for a test: writes its config to a
//! temporary directory, fills `${NAME}` placeholders with free loopback
//! addresses, waits for admin `/ready`, captures its log lines, and kills
//! it when dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::client::{self, ClientError, Metrics};
use crate::ports;

/// Why a proxy could not be started or driven.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("cannot find or build vakt-proxy: {0}")]
    Binary(String),
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("proxy exited with {status} before it was ready; its log:\n{log}")]
    Exited { status: ExitStatus, log: String },
    #[error("proxy not ready after {timeout:?}; its log:\n{log}")]
    NotReady { timeout: Duration, log: String },
    #[error("config has no admin address to probe")]
    NoAdmin,
    #[error("proxy did not exit within {0:?}")]
    NoExit(Duration),
    #[error("signal failed: {0}")]
    Signal(#[from] nix::Error),
}

/// Placeholder names mapped to the free addresses they stand for.
type Addrs = HashMap<String, SocketAddr>;

/// Configures one proxy process.
#[derive(Clone, Debug)]
pub struct ProxyBuilder {
    text: String,
    addrs: Addrs,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    ready_timeout: Duration,
}

impl ProxyBuilder {
    /// A proxy running this YAML config. Every `${NAME}` becomes
    /// `127.0.0.1:PORT` with a free port (the same for the same name).
    /// Without an `admin.address`, the `${admin}` address is added (and the
    /// file is then written as JSON).
    pub fn yaml(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            addrs: Addrs::new(),
            args: vec!["--log-format".into(), "json".into()],
            envs: Vec::new(),
            ready_timeout: Duration::from_secs(10),
        }
    }

    /// A proxy running `config`, written as JSON (which YAML includes).
    pub fn config(config: &vakt_api::Config) -> Self {
        Self::yaml(serde_json::to_string_pretty(config).expect("config serializes"))
    }

    /// The address placeholder `name` will stand for, chosen now so
    /// upstreams or other configs can refer to it before start.
    pub fn addr(&mut self, name: &str) -> SocketAddr {
        *self
            .addrs
            .entry(name.to_owned())
            .or_insert_with(ports::free_addr)
    }

    /// An extra command-line argument. `--log-format json` is passed by
    /// default; [`ProxyBuilder::text_logs`] drops it.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Runs with the default text log format.
    pub fn text_logs(mut self) -> Self {
        self.args.retain(|a| a != "--log-format" && a != "json");
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// How long [`ProxyBuilder::start`] waits for `/ready`; default 10 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Spawns the proxy and waits until admin `/ready` answers 200.
    pub async fn start(self) -> Result<Proxy, ProxyError> {
        let timeout = self.ready_timeout;
        let mut proxy = self.spawn().await?;
        proxy.wait_ready(timeout).await?;
        Ok(proxy)
    }

    /// Spawns the proxy without waiting for it to be ready (for configs
    /// that should be refused, say).
    pub async fn spawn(mut self) -> Result<Proxy, ProxyError> {
        let bin = binary()?;
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("vakt.yaml");
        let written = prepare(&self.text, &mut self.addrs);
        std::fs::write(&path, &written.text)?;

        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&path).args(&self.args);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let stderr = Lines::capture(child.stderr.take());
        let stdout = Lines::capture(child.stdout.take());
        Ok(Proxy {
            child,
            _dir: dir,
            path,
            addrs: self.addrs,
            admin: written.admin,
            listeners: written.listeners,
            stderr,
            stdout,
        })
    }
}

/// The output of `vakt-proxy --check`.
#[derive(Clone, Debug)]
pub struct CheckOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `vakt-proxy --check` on this YAML text (placeholders filled).
pub async fn check(text: &str) -> Result<CheckOutput, ProxyError> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vakt.yaml");
    std::fs::write(&path, fill(text, &mut Addrs::new()))?;
    let out = Command::new(binary()?)
        .arg("--config")
        .arg(&path)
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .await?;
    Ok(CheckOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A running `vakt-proxy`; killed when dropped.
pub struct Proxy {
    child: Child,
    _dir: tempfile::TempDir,
    path: PathBuf,
    addrs: Addrs,
    admin: Option<SocketAddr>,
    listeners: Vec<(String, SocketAddr)>,
    stderr: Lines,
    stdout: Lines,
}

impl Proxy {
    /// The admin listener.
    ///
    /// # Panics
    /// When the config had no readable admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("config has an admin address")
    }

    /// The first listener of the config.
    ///
    /// # Panics
    /// When the config has no listener.
    pub fn listener(&self) -> SocketAddr {
        self.listeners.first().expect("config has a listener").1
    }

    /// The listener named `name`.
    ///
    /// # Panics
    /// When there is none.
    pub fn listener_named(&self, name: &str) -> SocketAddr {
        let found = self.listeners.iter().find(|(n, _)| n == name);
        found.unwrap_or_else(|| panic!("no listener {name}")).1
    }

    /// The address placeholder `name` was filled with.
    ///
    /// # Panics
    /// When no such placeholder was used.
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .addrs
            .get(name)
            .unwrap_or_else(|| panic!("no placeholder {name}"))
    }

    pub fn config_path(&self) -> &Path {
        &self.path
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Replaces the config file (placeholders filled as at start; new
    /// names get new free addresses), without signalling.
    pub fn write_config(&mut self, text: &str) -> std::io::Result<()> {
        let written = prepare(text, &mut self.addrs);
        if let Some(admin) = written.admin {
            self.admin = Some(admin);
        }
        self.listeners = written.listeners;
        std::fs::write(&self.path, written.text)
    }

    /// Sends SIGHUP.
    pub fn reload(&self) -> Result<(), ProxyError> {
        self.signal(Signal::SIGHUP)
    }

    /// Writes a new config and sends SIGHUP.
    pub fn reload_with(&mut self, text: &str) -> Result<(), ProxyError> {
        self.write_config(text)?;
        self.reload()
    }

    pub fn signal(&self, signal: Signal) -> Result<(), ProxyError> {
        let pid = self.child.id().ok_or(ProxyError::NoExit(Duration::ZERO))?;
        let pid = i32::try_from(pid).map_err(|_| ProxyError::NoExit(Duration::ZERO))?;
        Ok(kill(Pid::from_raw(pid), signal)?)
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit status.
    pub async fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus, ProxyError> {
        self.signal(Signal::SIGTERM)?;
        self.wait_exit(timeout).await
    }

    /// Waits up to `timeout` for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, ProxyError> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => Err(ProxyError::NoExit(timeout)),
        }
    }

    /// Polls admin `/ready` until it answers 200.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), ProxyError> {
        let admin = self.admin.ok_or(ProxyError::NoAdmin)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let log = self.stderr.joined();
                return Err(ProxyError::Exited { status, log });
            }
            if matches!(client::get(admin, "/ready").await, Ok(r) if r.status == 200) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let log = self.stderr.joined();
                return Err(ProxyError::NotReady { timeout, log });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The status admin `/ready` answers now.
    pub async fn ready_status(&self) -> Result<u16, ClientError> {
        Ok(client::get(self.admin(), "/ready").await?.status.as_u16())
    }

    /// `GET path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> Result<client::Collected, ClientError> {
        client::get(self.admin(), path).await
    }

    /// A scrape of admin `/metrics`.
    pub async fn metrics(&self) -> Result<Metrics, ClientError> {
        client::scrape(self.admin()).await
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.all()
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.all()
    }

    /// Waits up to `timeout` for a stderr line that satisfies `pred`.
    pub async fn wait_for_line(
        &self,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.stderr.all().into_iter().find(|l| pred(l)) {
                return Some(line);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The access-log records so far: JSON objects with a `response_code`
    /// key, found in stderr lines (as the whole line, under its `fields`,
    /// or after a text prefix).
    pub fn access_logs(&self) -> Vec<Value> {
        self.stderr
            .all()
            .iter()
            .filter_map(|l| access_record(l))
            .collect()
    }

    /// Waits up to `timeout` until at least `n` access-log records exist.
    pub async fn wait_for_access_logs(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.access_logs();
            if logs.len() >= n || Instant::now() >= deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("--- vakt-proxy stderr ---\n{}", self.stderr.joined());
        }
    }
}

/// Lines read from a child's pipe as they come.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn capture<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Self {
        let lines = Self::default();
        if let Some(pipe) = pipe {
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        lines
    }

    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn joined(&self) -> String {
        self.all().join("\n")
    }
}

fn access_record(line: &str) -> Option<Value> {
    let start = line.find('{')?;
    let value: Value = serde_json::from_str(line[start..].trim()).ok()?;
    if value.get("response_code").is_some() {
        return Some(value);
    }
    let fields = value.get("fields")?;
    fields
        .get("response_code")
        .is_some()
        .then(|| fields.clone())
}

/// A config ready to write, with the addresses read from it.
struct Prepared {
    text: String,
    admin: Option<SocketAddr>,
    listeners: Vec<(String, SocketAddr)>,
}

fn prepare(text: &str, addrs: &mut Addrs) -> Prepared {
    let text = fill(text, addrs);
    let Ok(mut tree) = vakt_api::load::parse_tree(&text) else {
        return Prepared {
            text,
            admin: None,
            listeners: Vec::new(),
        };
    };
    let listeners = listeners_of(&tree);
    let admin = tree.pointer("/admin/address").and_then(Value::as_str);
    if let Some(admin) = admin {
        let admin = admin.parse().ok();
        return Prepared {
            text,
            admin,
            listeners,
        };
    }
    let Some(map) = tree.as_object_mut() else {
        return Prepared {
            text,
            admin: None,
            listeners,
        };
    };
    // Kept under the `admin` placeholder so a reload keeps the address.
    let admin = *addrs
        .entry("admin".to_owned())
        .or_insert_with(ports::free_addr);
    let section = map
        .entry("admin")
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(section) = section.as_object_mut() {
        section.insert("address".into(), Value::String(admin.to_string()));
    }
    Prepared {
        text: serde_json::to_string_pretty(&tree).unwrap_or(text),
        admin: Some(admin),
        listeners,
    }
}

fn listeners_of(tree: &Value) -> Vec<(String, SocketAddr)> {
    let Some(list) = tree.get("listeners").and_then(Value::as_array) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|l| {
            let name = l.get("name")?.as_str()?.to_owned();
            let addr = l.get("address")?.as_str()?.parse().ok()?;
            Some((name, addr))
        })
        .collect()
}

/// Replaces each `${NAME}` with the address it stands for.
fn fill(text: &str, addrs: &mut Addrs) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            rest = &rest[start..];
            break;
        };
        let name = &after[..end];
        let addr = *addrs
            .entry(name.to_owned())
            .or_insert_with(ports::free_addr);
        out.push_str(&addr.to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The `vakt-proxy` binary: `$VAKT_PROXY_BIN`, or the one in this test
/// executable's target directory. Under cargo (`$CARGO` set) it is first
/// brought up to date with `cargo build -p vakt-proxy`, once per process,
/// unless `$VAKT_PROXY_NO_BUILD` is set; when that build fails, an
/// existing binary is used with a warning.
pub fn binary() -> Result<PathBuf, ProxyError> {
    static FOUND: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    FOUND
        .get_or_init(find_or_build)
        .clone()
        .map_err(ProxyError::Binary)
}

fn find_or_build() -> Result<PathBuf, String> {
    if let Ok(path) = std::env::var("VAKT_PROXY_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().ok_or("test executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or("deps has no parent")?;
    }
    let bin = dir.join("vakt-proxy");
    let cargo = std::env::var("CARGO").ok();
    let skip = std::env::var_os("VAKT_PROXY_NO_BUILD").is_some();
    if bin.exists() && (cargo.is_none() || skip) {
        return Ok(bin);
    }

    let mut cmd = std::process::Command::new(cargo.as_deref().unwrap_or("cargo"));
    cmd.args([
        "build",
        "--quiet",
        "-p",
        "vakt-proxy",
        "--bin",
        "vakt-proxy",
    ]);
    if dir.ends_with("release") {
        cmd.arg("--release");
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = cmd.current_dir(workspace).status();
    match status {
        Ok(s) if s.success() && bin.exists() => Ok(bin),
        _ if bin.exists() => {
            eprintln!("warning: cargo build -p vakt-proxy failed; testing the existing binary");
            Ok(bin)
        }
        Ok(s) => Err(format!("`cargo build -p vakt-proxy` failed ({s})")),
        Err(e) => Err(format!("cannot run cargo: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_placeholders_and_adds_admin() {
        let mut addrs = Addrs::new();
        let text = "listeners:\n  - name: main\n    address: \"${main}\"\nroutes: []\n";
        let p = prepare(text, &mut addrs);
        let main = addrs["main"];
        assert_eq!(p.listeners, vec![("main".to_owned(), main)]);
        let admin = p.admin.expect("admin added");
        assert_ne!(admin, main);
        assert!(p.text.contains(&admin.to_string()));
        assert!(p.text.contains(&main.to_string()));
    }

    #[test]
    fn keeps_text_with_an_admin_address() {
        let mut addrs = Addrs::new();
        let text = "admin:\n  address: ${admin}\n";
        let p = prepare(text, &mut addrs);
        assert_eq!(p.admin, Some(addrs["admin"]));
        assert_eq!(p.text, format!("admin:\n  address: {}\n", addrs["admin"]));
    }

    #[test]
    fn finds_access_records() {
        let flat = r#"{"response_code":200,"method":"GET"}"#;
        let nested = r#"{"level":"INFO","fields":{"response_code":404},"target":"vakt::access"}"#;
        assert_eq!(access_record(flat).unwrap()["method"], "GET");
        assert_eq!(access_record(nested).unwrap()["response_code"], 404);
        assert!(access_record("INFO starting").is_none());
    }
}
