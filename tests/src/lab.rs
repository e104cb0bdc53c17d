//! Network namespaces for the tests that build a mesh the way a cluster
//! would: each pod a namespace with its own address, linked by veth pairs.
//! Needs root, `ip` (iproute2) and, for interception, `iptables`.
//!
//! A [`Lab`] owns everything it makes: namespaces (named with a random
//! prefix under the test's family name) and the processes it starts in
//! them. Dropping it, also on panic, kills the processes and deletes the
//! namespaces, which takes their veth ends (and so the pairs) with them.
//! On creation it removes what an earlier, killed run of the same family
//! left behind.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// Environment variable that turns "not root, skipped" into a failure.
pub const REQUIRE_ENV: &str = "VAKT_REQUIRE_NETNS";

/// The flags a pod's init step passes to `vakt-iptables`: the sidecar's
/// ports and UID, admin port left alone.
pub const INIT_FLAGS: [&str; 10] = [
    "--proxy-uid",
    "1717",
    "--outbound-port",
    "17001",
    "--inbound-port",
    "17006",
    "--inbound-ports-to-ignore",
    "17000",
    "--outbound-ports-to-ignore",
    "",
];

/// Why a lab step failed.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("io error: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether namespace tests can run here: root, with `ip` and `iptables`.
/// When they cannot, prints why and returns false, or panics when
/// `VAKT_REQUIRE_NETNS=1`.
pub fn available(test: &str) -> bool {
    let reason = if !nix::unistd::geteuid().is_root() {
        Some("it needs root (network namespaces and iptables)".to_owned())
    } else {
        ["ip", "iptables", "iptables-save", "setpriv", "curl"]
            .into_iter()
            .find(|tool| !on_path(tool))
            .map(|tool| format!("`{tool}` is not installed"))
    };
    let Some(reason) = reason else {
        return true;
    };
    assert!(
        std::env::var(REQUIRE_ENV).as_deref() != Ok("1"),
        "{test}: {REQUIRE_ENV}=1 but {reason}"
    );
    eprintln!("skipped {test}: {reason} (set {REQUIRE_ENV}=1 to make this a failure)");
    false
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Runs `program args`, returning its output when it exits 0.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let command = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(LabError::Failed { command, stderr });
    }
    Ok(out)
}

/// A process the lab started.
struct Proc {
    name: String,
    child: Child,
}

/// Namespaces and processes of one test; see the module doc.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    procs: Vec<Proc>,
    dir: tempfile::TempDir,
}

impl Lab {
    /// A lab whose namespaces are named `{family}{random}-{name}`; first
    /// removes namespaces (and their processes) left by an earlier run of
    /// `family`.
    pub fn new(family: &str) -> Result<Self, LabError> {
        remove_leftovers(family)?;
        let prefix = format!("{family}{:04x}-", fastrand::u16(..));
        let dir = tempfile::Builder::new().prefix(family).tempdir()?;
        // Processes that run as another user read binaries and files here.
        set_mode(dir.path(), 0o755)?;
        Ok(Self {
            prefix,
            namespaces: Vec::new(),
            procs: Vec::new(),
            dir,
        })
    }

    /// The lab's directory: logs and files for its processes.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The full name of namespace `name`.
    pub fn ns(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Creates namespace `name` with loopback up.
    pub fn add_ns(&mut self, name: &str) -> Result<String, LabError> {
        let ns = self.ns(name);
        run("ip", &["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        self.ip(name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip -n NS args`.
    pub fn ip(&self, name: &str, args: &[&str]) -> Result<Output, LabError> {
        let ns = self.ns(name);
        let mut all = vec!["-n", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs `args` in namespace `name` and waits for it.
    pub fn exec(&self, name: &str, args: &[&str]) -> Result<Output, LabError> {
        let ns = self.ns(name);
        let mut all = vec!["netns", "exec", ns.as_str()];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// `curl -s --max-time 5 args` in namespace `name`, as `uid` when
    /// given: its standard output, also when curl fails (with `-w`, the
    /// output says how).
    pub fn curl(&self, name: &str, uid: Option<u32>, args: &[&str]) -> Result<String, LabError> {
        let out = self
            .command(name, uid)
            .args(["curl", "-s", "--max-time", "5"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                command: format!("curl {}", args.join(" ")),
                source,
            })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether `curl -fs url` succeeds from namespace `name`.
    fn answers(&self, name: &str, url: &str) -> bool {
        self.exec(
            name,
            &["curl", "-fs", "--max-time", "5", "-o", "/dev/null", url],
        )
        .is_ok()
    }

    /// Polls `url` from namespace `name` until it answers 2xx, for at most
    /// `limit`.
    pub fn wait_for(&self, name: &str, url: &str, limit: Duration) -> Result<(), LabError> {
        let start = std::time::Instant::now();
        while !self.answers(name, url) {
            if start.elapsed() > limit {
                return Err(LabError::Failed {
                    command: format!("curl {url}"),
                    stderr: format!("no 2xx answer in {limit:?}"),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// A veth pair: `a_if` in namespace `a`, `b_if` in namespace `b`, both
    /// up.
    pub fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) -> Result<(), LabError> {
        let (ns_a, ns_b) = (self.ns(a), self.ns(b));
        run(
            "ip",
            &[
                "link", "add", a_if, "netns", &ns_a, "type", "veth", "peer", "name", b_if, "netns",
                &ns_b,
            ],
        )?;
        self.ip(a, &["link", "set", a_if, "up"])?;
        self.ip(b, &["link", "set", b_if, "up"])?;
        Ok(())
    }

    /// Starts `args` in namespace `ns`, as `uid` (and the same GID, no
    /// supplementary groups) when given; its stdout and stderr go to
    /// `{dir}/{name}.log`.
    pub fn spawn(
        &mut self,
        name: &str,
        ns: &str,
        uid: Option<u32>,
        args: &[&str],
    ) -> Result<(), LabError> {
        let log = File::create(self.log_path(name))?;
        let mut cmd = self.command(ns, uid);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: args.join(" "),
            source,
        })?;
        self.procs.push(Proc {
            name: name.to_owned(),
            child,
        });
        Ok(())
    }

    /// Kills process `name` (SIGKILL) and reaps it; false when there is no
    /// such running process.
    pub fn kill(&mut self, name: &str) -> bool {
        let Some(i) = self.procs.iter().position(|p| p.name == name) else {
            return false;
        };
        let mut p = self.procs.remove(i);
        let killed = p.child.kill().is_ok();
        let _ = p.child.wait();
        killed
    }

    /// `ip netns exec NS`, followed by `setpriv` to `uid` (same GID, no
    /// supplementary groups) when given: the command to add arguments to.
    fn command(&self, ns: &str, uid: Option<u32>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns(ns)]);
        if let Some(uid) = uid {
            let id = uid.to_string();
            let user = ["--reuid", &id, "--regid", &id, "--clear-groups", "--"];
            cmd.arg("setpriv").args(user);
        }
        cmd
    }

    /// Where process `name` logs.
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join(format!("{name}.log"))
    }

    /// The last `lines` lines of every process log, for failure messages.
    pub fn logs(&self, lines: usize) -> String {
        let mut out = String::new();
        for p in &self.procs {
            let text = std::fs::read_to_string(self.log_path(&p.name)).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} ---\n", p.name));
            for l in &all[all.len().saturating_sub(lines)..] {
                out.push_str(l);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill();
        }
        for p in &mut self.procs {
            let _ = p.child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            kill_in(ns);
            if let Err(e) = run("ip", &["netns", "del", ns]) {
                eprintln!("cannot delete namespace {ns}: {e}");
            }
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Kills every process still inside namespace `ns`.
fn kill_in(ns: &str) {
    let Ok(out) = run("ip", &["netns", "pids", ns]) else {
        return;
    };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            let pid = nix::unistd::Pid::from_raw(pid);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    }
    // Give the kernel a moment to reap them before the namespace goes.
    std::thread::sleep(Duration::from_millis(50));
}

/// Deletes namespaces named `{family}*` and kills their processes.
fn remove_leftovers(family: &str) -> Result<(), LabError> {
    let out = run("ip", &["netns", "list"])?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        if ns.starts_with(family) {
            eprintln!("removing namespace {ns} left by an earlier run");
            kill_in(ns);
            let _ = run("ip", &["netns", "del", ns]);
        }
    }
    Ok(())
}
