//! kill -9 of a real `vakt-control serve` during applies loses no
//! acknowledged version and never corrupts the store.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use vakt_api::pb::control::v1 as pb;

fn serve(dir: &Path, port: u16) -> Child {
    let (admin, _) = token_files(dir);
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
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_up(port: u16) {
    let addr = format!("127.0.0.1:{port}");
    let up = eventually(Duration::from_secs(10), || {
        std::net::TcpStream::connect(&addr).is_ok()
    })
    .await;
    assert!(up, "vakt-control did not start");
}

#[tokio::test]
async fn kill_9_during_applies_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut acked: Vec<(u64, String)> = Vec::new();
    let mut next = 0;
    for round in 0..4u64 {
        let mut child = serve(dir.path(), port);
        wait_up(port).await;
        let mut c = client(format!("127.0.0.1:{port}").parse().unwrap()).await;
        check(&mut c, &acked).await;

        // Apply as fast as possible until the process dies under us.
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150 + 70 * round)).await;
            child.kill().unwrap();
            child.wait().unwrap();
        });
        loop {
            let name = format!("r{next}");
            next += 1;
            match apply(&mut c, &route_yaml(&name, "127.0.0.1:18080")).await {
                Ok(v) => acked.push((v, name)),
                Err(_) => break,
            }
        }
        killer.await.unwrap();
    }
    assert!(
        acked.len() >= 8,
        "too few applies went through: {}",
        acked.len()
    );

    let mut child = serve(dir.path(), port);
    wait_up(port).await;
    let mut c = client(format!("127.0.0.1:{port}").parse().unwrap()).await;
    check(&mut c, &acked).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

/// Every acknowledged version is stored with the route it added.
async fn check(c: &mut Client, acked: &[(u64, String)]) {
    for (version, name) in acked {
        let r = c.get(pb::GetRequest { version: *version }).await;
        let objects = r
            .unwrap_or_else(|e| panic!("version {version} lost: {e}"))
            .into_inner()
            .objects
            .unwrap();
        assert!(
            objects.routes.iter().any(|r| &r.name == name),
            "version {version} lacks route {name}"
        );
    }
    if let Some((last, _)) = acked.last() {
        assert!(current(c).await.0 >= *last);
    }
}
