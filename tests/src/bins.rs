//! The workspace's binaries for tests that run whole processes: the
//! `vakt-proxy`, `vakt-control` and `vakt-example` next to the running
//! test executable, brought up to date first when run under cargo.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The directory holding up-to-date `vakt-proxy`, `vakt-control` and
/// `vakt-example`: `$VAKT_BIN_DIR` as it is, else that of this test's
/// profile. Under cargo (`$CARGO` set) the first two are then built once
/// per process unless `$VAKT_PROXY_NO_BUILD` is set; `cargo test` builds
/// `vakt-example`.
///
/// # Panics
/// When the build fails or a binary is missing.
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| find().unwrap_or_else(|e| panic!("{e}")))
}

fn find() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VAKT_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().ok_or("test executable has no directory")?;
    if dir.ends_with("deps") {
        dir = dir.parent().ok_or("deps has no parent")?;
    }
    let cargo = std::env::var("CARGO").ok();
    if let Some(cargo) = cargo.filter(|_| std::env::var_os("VAKT_PROXY_NO_BUILD").is_none()) {
        // One package per build, as `proxy::binary` does, so that the
        // features cargo unifies stay the same and nothing is rebuilt
        // back and forth; `vakt-example` is built by `cargo test` itself.
        for package in ["vakt-proxy", "vakt-control"] {
            let mut cmd = Command::new(&cargo);
            cmd.args(["build", "--quiet", "-p", package, "--bin", package]);
            if dir.ends_with("release") {
                cmd.arg("--release");
            }
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            match cmd.current_dir(workspace).status() {
                Ok(s) if s.success() => {}
                other => return Err(format!("cargo build -p {package} failed: {other:?}")),
            }
        }
    }
    for bin in ["vakt-proxy", "vakt-control", "vakt-example"] {
        if !dir.join(bin).is_file() {
            return Err(format!("{bin} is missing in {}", dir.display()));
        }
    }
    Ok(dir.to_path_buf())
}
