//! The shipped examples stay true: every proxy config under `deploy/`
//! passes `vakt-proxy --check`, and the Kubernetes example runs the proxy
//! as a native sidecar probed on its admin port.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vakt_tests::proxy::check;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The YAML documents of a multi-document file, as trees.
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split("\n---\n")
        .map(|doc| vakt_api::load::parse_tree(doc).expect("valid YAML"))
        .collect()
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

#[tokio::test]
async fn the_kubernetes_example_carries_a_valid_config_and_a_native_sidecar() {
    let docs = documents(&repo().join("deploy/kubernetes/orders.yaml"));
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).expect(k);

    let config = kind("ConfigMap")["data"]["proxy.yaml"]
        .as_str()
        .unwrap()
        .to_string();
    assert_valid("orders-vakt ConfigMap", &config).await;

    let pod = &kind("Deployment")["spec"]["template"]["spec"];
    let sidecar = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "vakt-proxy")
        .expect("the proxy runs as an init container");
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert_eq!(sidecar["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(sidecar["livenessProbe"]["httpGet"]["path"], "/live");
    let args: Vec<&str> = sidecar["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        args.windows(2)
            .any(|w| w == ["--config", "/etc/vakt/proxy.yaml"])
    );
    let drain = vakt_api::load_str(&config).unwrap().drain;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        (drain.delay.get() + drain.timeout.get()).as_secs() < grace,
        "drain must finish inside the pod's grace period"
    );
}
