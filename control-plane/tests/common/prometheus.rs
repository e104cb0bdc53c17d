//! Finding Debian's `prometheus` and `promtool`, and the files of
//! `deploy/prometheus`. A test that needs them skips when they are not
//! installed, unless `VAKT_REQUIRE_PROMETHEUS` is set (as CI does): then
//! it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `deploy/prometheus` of this repository.
pub fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus")
}

/// `deploy/grafana` of this repository.
pub fn grafana_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana")
}

/// The path of `tool` when it runs; `None` (after saying why) when it is
/// missing and not required.
pub fn find(tool: &str) -> Option<PathBuf> {
    let ran = Command::new(tool).arg("--version").output();
    if matches!(&ran, Ok(o) if o.status.success()) {
        return Some(PathBuf::from(tool));
    }
    let required = std::env::var_os("VAKT_REQUIRE_PROMETHEUS").is_some();
    assert!(
        !required,
        "{tool} is required (VAKT_REQUIRE_PROMETHEUS is set) but does not run: \
         install the Debian package prometheus (apt-get install -y prometheus)"
    );
    eprintln!("skipped: {tool} is not installed (apt-get install -y prometheus)");
    None
}

/// Runs `promtool` with `args` in `dir`.
pub fn promtool(tool: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs")
}

/// Both output streams, for assertion messages.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A real Prometheus server on a free loopback port with a temporary data
/// directory; killed, and its directory removed, on drop.
pub struct Prometheus {
    pub addr: std::net::SocketAddr,
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `bin` with `config` (a prometheus.yml naming its rule files
    /// by bare name) and `rules` as `(file name, text)`, and waits up to
    /// 20 s for `/-/ready`.
    pub async fn start(bin: &Path, config: &str, rules: &[(&str, String)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        for (name, text) in rules {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let port = super::free_port();
        let child = Command::new(bin)
            .current_dir(dir.path())
            .arg("--config.file=prometheus.yml")
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("prometheus starts");
        let server = Self {
            addr: ([127, 0, 0, 1], port).into(),
            child,
            _dir: dir,
        };
        let addr = server.addr;
        let ready = super::eventually_async(std::time::Duration::from_secs(20), || async move {
            matches!(vakt_tests::client::get(addr, "/-/ready").await, Ok(r) if r.status == 200)
        });
        assert!(ready.await, "prometheus did not get ready on {addr}");
        server
    }

    /// `GET path` from the HTTP API, parsed; panics unless the API says
    /// `success`.
    pub async fn api(&self, path: &str) -> serde_json::Value {
        let rsp = vakt_tests::client::get(self.addr, path).await.unwrap();
        let v: serde_json::Value = rsp.json().unwrap_or_default();
        assert_eq!(v["status"], "success", "{path}: {}", rsp.text());
        v["data"].clone()
    }

    /// The samples of an instant query of `expr`, as (labels, value).
    pub async fn query(&self, expr: &str) -> Vec<(serde_json::Value, f64)> {
        let data = self
            .api(&format!("/api/v1/query?query={}", encode(expr)))
            .await;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        result
            .into_iter()
            .map(|s| {
                let value = s["value"][1].as_str().unwrap_or("NaN").parse().unwrap();
                (s["metric"].clone(), value)
            })
            .collect()
    }

    /// Alerts now pending or firing.
    pub async fn alerts(&self) -> Vec<serde_json::Value> {
        let data = self.api("/api/v1/alerts").await;
        data["alerts"].as_array().cloned().unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter (RFC 3986 unreserved bytes stay).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The rule file `text` with every alert's `for:` set to `hold`.
pub fn shorten_for(text: &str, hold: &str) -> String {
    let lines = text
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: {hold}", &l[..l.len() - l.trim_start().len()]),
            None => l.to_string(),
        });
    lines.collect::<Vec<_>>().join("\n") + "\n"
}

/// Every PromQL expression of a Grafana dashboard: the `expr` of every
/// panel target, rows' nested panels included.
pub fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dashboard];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                stack.extend(m.values());
            }
            serde_json::Value::Array(a) => stack.extend(a),
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}
