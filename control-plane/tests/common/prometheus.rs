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
