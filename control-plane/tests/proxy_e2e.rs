//! End to end with the real binaries: `vakt-control serve` and
//! `vakt-proxy --control-plane`, real upstreams and real requests.
//!
//! They run the `vakt-proxy` binary next to this test's own target dir, so
//! build it first: `cargo test --workspace` does, or `cargo build -p
//! vakt-proxy` before `cargo test -p vakt-control --test proxy_e2e`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The proxy binary, built first when needed (the test kit does that).
fn proxy_bin() -> PathBuf {
    vakt_tests::proxy::binary().expect("the vakt-proxy binary")
}

fn control(dir: &Path, port: u16) -> Child {
    let (admin, node) = token_files(dir);
    Command::new(env!("CARGO_BIN_EXE_vakt-control"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.join("data"))
        .arg("--token-file")
        .arg(admin)
        .arg("--node-token-file")
        .arg(node)
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A proxy with a listener and admin on the given ports and no routes of
/// its own.
fn proxy(dir: &Path, cp: u16, listen: u16, admin: u16) -> Child {
    let boot = dir.join("bootstrap.yaml");
    std::fs::write(
        &boot,
        format!(
            "admin: {{address: 127.0.0.1:{admin}}}\n\
             listeners: [{{name: outbound, address: 127.0.0.1:{listen}}}]\n"
        ),
    )
    .unwrap();
    let (_, node) = token_files(dir);
    Command::new(proxy_bin())
        .arg("--config")
        .arg(&boot)
        .args(["--control-plane", &format!("http://127.0.0.1:{cp}")])
        .args(["--node-id", "orders-1", "--token-file"])
        .arg(node)
        .arg("--cache-dir")
        .arg(dir.join("cache"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// An upstream that answers every request with `name`.
async fn upstream(name: &'static str) -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{name}",
                    name.len()
                );
                let _ = s.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

/// GET `path` with `host` through a port; the status and body.
async fn get(port: u16, host: &str, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

async fn serves(port: u16, body: &str, within: Duration) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Some((200, b)) = get(port, "orders", "/").await
            && b == body
        {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the proxy's snapshot cache names `endpoint`.
async fn cached(dir: &Path, endpoint: &str, within: Duration) -> bool {
    let file = dir.join("cache").join("snapshot.pb");
    let end = tokio::time::Instant::now() + within;
    loop {
        let bytes = std::fs::read(&file).unwrap_or_default();
        if bytes
            .windows(endpoint.len())
            .any(|w| w == endpoint.as_bytes())
        {
            return true;
        }
        if tokio::time::Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn cli(dir: &Path, cp: u16, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    use std::io::Write;
    let (admin, _) = token_files(dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_vakt-control"))
        .args(args)
        .args([
            "--server",
            &format!("http://127.0.0.1:{cp}"),
            "--token-file",
        ])
        .arg(admin)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.unwrap_or("").as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn traffic_follows_applies_and_survives_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (upstream("A").await, upstream("B").await);
    let (cp, listen, admin) = (free_port(), free_port(), free_port());
    let mut procs = Procs(vec![
        control(dir.path(), cp),
        proxy(dir.path(), cp, listen, admin),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = cli(
        dir.path(),
        cp,
        &["apply", "-f", "-"],
        Some(&route_yaml("orders", &a.to_string())),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        serves(listen, "A", Duration::from_secs(1)).await,
        "apply → traffic within 1 s"
    );

    // A bad apply is refused and nothing changes.
    let bad = "routes: [{name: orders, rules: [{backendRefs: [{name: nowhere}]}]}]";
    let out = cli(dir.path(), cp, &["apply", "-f", "-"], Some(bad));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nowhere"));

    let out = cli(
        dir.path(),
        cp,
        &["apply", "-f", "-"],
        Some(&route_yaml("orders", &b.to_string())),
    );
    assert!(out.status.success());
    assert!(serves(listen, "B", Duration::from_secs(1)).await);
    // The proxy acks a snapshot once it is on disk, a moment after it
    // serves it; the restart below must find this one there.
    assert!(cached(dir.path(), &b.to_string(), Duration::from_secs(10)).await);

    // The control plane dies: traffic keeps flowing.
    procs.0[0].kill().unwrap();
    procs.0[0].wait().unwrap();
    for _ in 0..20 {
        assert_eq!(get(listen, "orders", "/").await, Some((200, "B".into())));
    }

    // The proxy restarts while it is down: it serves from disk and says so.
    procs.0[1].kill().unwrap();
    procs.0[1].wait().unwrap();
    procs.0[1] = proxy(dir.path(), cp, listen, admin);
    assert!(serves(listen, "B", Duration::from_secs(5)).await);
    let (_, ready) = get(admin, "admin", "/ready").await.unwrap();
    assert!(ready.contains("cache"), "{ready}");
    let (_, metrics) = get(admin, "admin", "/metrics").await.unwrap();
    assert!(
        metrics.contains("vakt_snapshot_staleness_seconds"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_snapshot_the_proxy_refuses_shows_as_a_nack_in_get_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let a = upstream("A").await;
    let (cp, listen, admin) = (free_port(), free_port(), free_port());
    let _procs = Procs(vec![
        control(dir.path(), cp),
        proxy(dir.path(), cp, listen, admin),
    ]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let out = cli(
        dir.path(),
        cp,
        &["apply", "-f", "-"],
        Some(&route_yaml("orders", &a.to_string())),
    );
    assert!(out.status.success());
    assert!(serves(listen, "A", Duration::from_secs(1)).await);

    // A route bound to a listener this proxy lacks passes the control
    // plane (listeners are per proxy) but the proxy refuses it.
    let odd =
        "routes: [{name: odd, listeners: [inbound], rules: [{backendRefs: [{name: orders}]}]}]";
    let out = cli(dir.path(), cp, &["apply", "-f", "-"], Some(odd));
    assert!(out.status.success());
    let mut shown = String::new();
    for _ in 0..50 {
        shown =
            String::from_utf8_lossy(&cli(dir.path(), cp, &["get", "nodes"], None).stdout).into();
        if shown.contains("version 2:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        shown.contains("orders-1") && shown.contains("version 2:"),
        "{shown}"
    );
    assert!(
        serves(listen, "A", Duration::from_secs(1)).await,
        "the last good snapshot serves"
    );
}
