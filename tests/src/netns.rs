//! Network namespaces for interception tests: a namespace of its own
//! (`vakt-t-<random>`), deleted when dropped whatever the test's outcome,
//! commands run inside it, and async code run on a thread that entered
//! it, so its sockets and the processes it spawns live there.
//!
//! Creating one needs root; [`crate::lab::available`] says whether a test
//! can, and makes it fail instead of skipping under `VAKT_REQUIRE_NETNS=1`.

use std::future::Future;
use std::process::Command;

use nix::sched::CloneFlags;

/// Why a namespace could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
    #[error("`{command}` failed: {output}")]
    Failed { command: String, output: String },
    #[error("entering the namespace failed: {0}")]
    Enter(#[from] nix::Error),
}

/// A network namespace, deleted on drop.
pub struct Netns {
    name: String,
}

fn run(program: &str, args: &[&str]) -> Result<(), NetnsError> {
    let out = Command::new(program).args(args).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(NetnsError::Failed {
        command: format!("{program} {}", args.join(" ")),
        output: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

impl Netns {
    /// Creates `vakt-t-<random>` with its loopback up.
    pub fn create() -> Result<Self, NetnsError> {
        let name = format!("vakt-t-{:08x}", fastrand::u32(..));
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n NAME args`.
    pub fn ip(&self, args: &[&str]) -> Result<(), NetnsError> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `program args` inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<(), NetnsError> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `f` to completion on a new thread that entered the namespace,
    /// on a current-thread runtime of its own.
    pub fn block_on<F, Fut, T>(&self, f: F) -> Result<T, NetnsError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = T>,
        T: Send + 'static,
    {
        let path = format!("/var/run/netns/{}", self.name);
        let thread = std::thread::spawn(move || -> Result<T, NetnsError> {
            let ns = std::fs::File::open(path)?;
            nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok(runtime.block_on(f()))
        });
        match thread.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("deleting network namespace {}: {e}", self.name);
        }
    }
}
