//! `vakt-control stat --once` against a real proxy with traffic: the
//! table shows each route's and backend's request rate, success rate and
//! p99 as the upstreams were built to give them.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use vakt_tests::fault::{Fault, FaultyUpstream};
use vakt_tests::proxy::ProxyBuilder;

const MESH: &str = r#"
listeners: [{name: outbound, address: "${main}"}]
routes:
  - {name: slow, hostnames: [slow], rules: [{backendRefs: [{name: slow-v1}]}]}
  - {name: flaky, hostnames: [flaky], rules: [{backendRefs: [{name: flaky-v1}]}]}
backends:
  - {name: slow-v1, endpoints: ["${slow}"]}
  - {name: flaky-v1, endpoints: ["${flaky}"]}
"#;

/// The cells of the first line of `table` whose first cell is `name`.
fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    let found = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.first() == Some(&name));
    found.unwrap_or_else(|| panic!("no row {name} in:\n{table}"))
}

fn percent(cell: &str) -> f64 {
    cell.trim_end_matches('%').parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_once_shows_rate_success_and_p99_per_route_and_backend() {
    let mut builder = ProxyBuilder::yaml(MESH);
    let slow_at = builder.addr("slow");
    let slow = FaultyUpstream::start_at(slow_at, "slow", Fault::Delay(Duration::from_millis(60)));
    let _slow = slow.await;
    let flaky_at = builder.addr("flaky");
    let _flaky = vakt_tests::upstream::Upstream::start_at(flaky_at, one_in_four_fails_handler());
    let _flaky = _flaky.await;
    let proxy = builder.start().await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = ["slow", "flaky"]
        .into_iter()
        .map(|h| traffic(proxy.listener(), h, stop.clone()))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let admin = proxy.admin().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vakt-control"))
            .args(["stat", "--once", "--interval", "2s", "--proxy", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        assert!(s.await.unwrap() > 0);
    }
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for name in ["flaky", "flaky-v1"] {
        let cells = row(&table, name);
        let rate: f64 = cells[1].parse().unwrap();
        assert!(rate > 5.0, "{name} rate: {table}");
        let ok = percent(cells[2]);
        assert!(
            (ok - 75.0).abs() <= 2.0,
            "{name}: one in four fails:\n{table}"
        );
    }
    for name in ["slow", "slow-v1"] {
        let cells = row(&table, name);
        assert_eq!(cells[2], "100.0%", "{table}");
        // Answers take 60 ms and more: above the 50 ms bound. The top is
        // left loose, as a loaded machine delays a few requests.
        let p99 = cells[3];
        let ms: f64 = match p99.strip_suffix("ms") {
            Some(ms) => ms.parse().unwrap(),
            None => p99.trim_end_matches('s').parse::<f64>().unwrap() * 1000.0,
        };
        assert!(ms > 50.0 && ms <= 2500.0, "{name} p99:\n{table}");
    }
    let routes = table.find("ROUTE").unwrap();
    let backends = table.find("BACKEND").unwrap();
    assert!(routes < table.find("flaky ").unwrap());
    assert!(backends < table.find("flaky-v1").unwrap());
}

#[tokio::test]
async fn stat_fails_when_no_proxy_answers() {
    let port = free_port();
    let out = Command::new(env!("CARGO_BIN_EXE_vakt-control"))
        .args(["stat", "--once", "--proxy", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no proxy answered"), "{err}");
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_finds_the_proxies_through_the_control_plane() {
    let dir = tempfile::tempdir().unwrap();
    let cp = start(dir.path()).await;
    let flaky = one_in_four_fails().await;
    let mut c = client(cp.addr).await;
    let yaml = route_yaml("flaky", &flaky.addr().to_string());
    apply(&mut c, &yaml).await.unwrap();
    let proxy = proxy_of(cp.addr, dir.path()).await;
    let listed = nodes(&mut c).await;
    assert_eq!(listed[0].admin_address, proxy.admin().to_string());

    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(proxy.listener(), "flaky", stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (admin, _) = token_files(dir.path());
    let server = format!("http://{}", cp.addr);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_vakt-control"))
            .args(["stat", "--once", "--interval", "1s", "--server", &server])
            .arg("--token-file")
            .arg(admin)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(sender.await.unwrap() > 0);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ok = percent(row(&table, "flaky")[2]);
    assert!((ok - 75.0).abs() <= 2.0, "one in four fails:\n{table}");
    cp.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_redraws_the_table_every_interval_until_stopped() {
    let mut builder = ProxyBuilder::yaml(MESH);
    let _flaky = vakt_tests::upstream::Upstream::start_at(
        builder.addr("flaky"),
        one_in_four_fails_handler(),
    )
    .await;
    let _slow = FaultyUpstream::start_at(builder.addr("slow"), "slow", Fault::None).await;
    let proxy = builder.start().await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = traffic(proxy.listener(), "flaky", stop.clone());

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_vakt-control"))
        .args(["stat", "--interval", "200ms", "--proxy"])
        .arg(proxy.admin().to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let frames = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        // Each frame clears the screen first.
        while String::from_utf8_lossy(&seen).matches("\x1b[2J").count() < 3 {
            let n = stdout.read(&mut buf).await.unwrap();
            assert!(n > 0, "stat ended early");
            seen.extend_from_slice(&buf[..n]);
        }
    });
    assert!(frames.await.is_ok(), "fewer than 3 frames in 20 s");
    assert!(child.try_wait().unwrap().is_none(), "still running");
    child.kill().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(sender.await.unwrap() > 0);

    // Frames measure 200 ms each; at least one of them holds a failure.
    let text = String::from_utf8_lossy(&seen);
    let failing = text.split("\x1b[2J\x1b[H").any(|frame| {
        let cells: Option<Vec<&str>> = frame
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.first() == Some(&"flaky"));
        cells.is_some_and(|c| c[2].ends_with('%') && percent(c[2]) < 100.0)
    });
    assert!(failing, "no frame shows the failures:\n{text}");
}
