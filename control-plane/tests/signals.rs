//! `vakt-control serve` stops on SIGTERM and SIGINT, also when started
//! as a background job that ignores SIGINT.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn serve(dir: &std::path::Path, ignore_int: bool) -> (Child, u16) {
    let (admin, _) = token_files(dir);
    let port = free_port();
    // A shell starts its background jobs with SIGINT ignored; `exec`
    // keeps that for vakt-control, which then runs as the shell's pid.
    let trap = if ignore_int { "trap '' INT; " } else { "" };
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{trap}exec \"$0\" \"$@\""))
        .arg(env!("CARGO_BIN_EXE_vakt-control"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--token-file")
        .arg(admin)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    (child, port)
}

fn listening(port: u16) -> bool {
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn stops_on(signal: &str, ignore_int: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = serve(dir.path(), ignore_int);
    assert!(listening(port), "vakt-control did not start");

    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());

    let until = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > until {
            child.kill().unwrap();
            panic!("vakt-control still running 10 s after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit after SIG{signal}: {status}");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn sigterm_stops_serving_and_exits_zero() {
    stops_on("TERM", false);
}

#[test]
fn sigint_stops_a_background_job_that_ignored_it() {
    stops_on("INT", true);
}
