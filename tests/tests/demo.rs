//! The README's first command, `deploy/demo.sh`, in its exit-after mode:
//! the walk-through shows the chain, the ejection, the breaker and the
//! fallback, and every process it started is gone when it returns.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(90);

/// A base for the demo's ports (base to base+33, and base+70) all free
/// now, between 12000 and 16000: below the range the other tests draw
/// from.
fn port_base() -> u16 {
    for _ in 0..100 {
        let base = 12_000 + 100 * fastrand::u16(0..40);
        let free = (base..=base + 33)
            .chain([base + 70])
            .all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if free {
            return base;
        }
    }
    panic!("no free block of ports for the demo");
}

#[test]
fn demo_walks_through_the_mesh_and_stops_everything() {
    if Command::new("curl").arg("--version").output().is_err() {
        eprintln!("skipped: the demo needs curl");
        return;
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/demo.sh");
    let bins = vakt_tests::bins::dir();
    let base = port_base();
    let start = Instant::now();
    let out = Command::new("timeout")
        .arg(LIMIT.as_secs().to_string())
        .arg(script)
        .arg("--exit")
        .env("VAKT_BIN_DIR", bins)
        .env("VAKT_DEMO_PORT_BASE", base.to_string())
        .output()
        .expect("run deploy/demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("{stdout}\n--- stderr ---\n{stderr}");
    assert!(
        out.status.success(),
        "demo failed ({:?}):\n{all}",
        out.status
    );
    assert!(start.elapsed() < LIMIT);

    let a_metrics = format!("http://127.0.0.1:{}/metrics", base + 13);
    for expected in [
        "stored: version 1",
        "a -> b1 (200)",
        "a -> b2 (200)",
        "a -> fallback (b is unavailable) (200)",
        "vakt_breaker_state{backend=\"b\"} 1",
        "reason=\"breaker-open\"",
        &a_metrics,
    ] {
        assert!(stdout.contains(expected), "no {expected:?} in:\n{all}");
    }
    // Between "B1 fails" and "B2 fails too" every answer comes from B2.
    let step2 = section(&stdout, "== 2.", "== 3.");
    assert!(step2.contains("a -> b2 (200)"), "{step2}");
    assert!(!step2.contains("a -> b1"), "{step2}");
    assert!(!step2.contains("fallback"), "{step2}");
    assert!(
        !section(&stdout, "== 2.", "== 3.").contains("vakt_ejections_total{backend=\"b\"} 0"),
        "B1 was not ejected:\n{step2}"
    );
    // Once both heal, the breaker closes and B answers again.
    let step4 = section(&stdout, "== 4.", "== where");
    assert!(step4.contains("a -> b2 (200)"), "{step4}");
    assert!(!step4.contains("a -> fallback"), "{step4}");
    assert!(
        step4.contains("vakt_breaker_state{backend=\"b\"} 0"),
        "{step4}"
    );
    let nodes = section(&stdout, "get nodes", "stopped:");
    for node in ["edge ", "a ", "b1 ", "b2 "] {
        assert!(
            nodes
                .lines()
                .any(|l| l.starts_with(node) && l.contains("true")),
            "node {node:?} not connected:\n{nodes}"
        );
    }

    let pids = stdout
        .lines()
        .find_map(|l| l.strip_prefix("stopped: "))
        .expect("the demo names what it stopped");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 8, "{pids:?}");
    for pid in pids {
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("vakt-"),
            "process {pid} is left: {cmdline}"
        );
    }
}

fn section<'a>(text: &'a str, from: &str, to: &str) -> &'a str {
    let start = text.find(from).unwrap_or(0);
    let end = text[start..].find(to).map_or(text.len(), |e| start + e);
    &text[start..end]
}
