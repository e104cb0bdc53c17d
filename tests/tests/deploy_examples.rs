//! The shipped examples stay true: the proxy configs under
//! `deploy/examples/` pass `vakt-proxy --check`. The image, the Kubernetes
//! manifests and the compose file are checked by vakt-control's deploy
//! tests, beside the `inject` command that writes the example app.

use std::path::{Path, PathBuf};

use vakt_tests::proxy::check;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn assert_valid(name: &str, config: &str) {
    let out = check(config).await.expect("check runs");
    assert_eq!(out.status.code(), Some(0), "{name}: {}", out.stderr);
}

#[tokio::test]
async fn the_sidecar_example_is_a_valid_config() {
    let text = std::fs::read_to_string(repo().join("deploy/examples/sidecar.yaml")).unwrap();
    assert_valid("sidecar.yaml", &text).await;
}
