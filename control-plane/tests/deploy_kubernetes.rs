//! The Kubernetes manifests under `deploy/kubernetes/` stay true: the
//! example app is exactly `inject` of its source, every workload is
//! probed, limited and non-root, every mounted config passes
//! `vakt-proxy --check`, and the control plane's tokens, volume and
//! Service line up with its flags.

mod deploy_support;

use serde_json::Value;
use vakt_control::inject::{InjectOptions, Mode, transform};

use deploy_support::{
    all_containers, assert_valid_config, documents, flag, object, read, repo, strings,
};

const MANIFESTS: &[&str] = &[
    "deploy/kubernetes/control-plane.yaml",
    "deploy/kubernetes/edge.yaml",
    "deploy/kubernetes/shop.yaml",
];

/// Pod specs of every workload in a manifest, with a name for messages.
fn pods(docs: &[Value]) -> Vec<(String, &Value)> {
    let kinds = ["Deployment", "StatefulSet", "DaemonSet", "Job"];
    docs.iter()
        .filter(|d| kinds.iter().any(|k| d["kind"] == *k))
        .map(|d| {
            let name = format!("{}/{}", d["kind"], d["metadata"]["name"]);
            (name, &d["spec"]["template"]["spec"])
        })
        .collect()
}

#[test]
fn the_example_app_is_its_source_injected() {
    let source = read("deploy/kubernetes/source/shop.yaml");
    let out = transform(&source, Mode::Inject, &InjectOptions::default()).unwrap();
    let generated = repo().join("deploy/kubernetes/shop.yaml");
    if std::env::var_os("VAKT_BLESS").is_some() {
        std::fs::write(&generated, &out.text).unwrap();
    }
    assert_eq!(
        out.text,
        read("deploy/kubernetes/shop.yaml"),
        "regenerate: vakt-control inject -f deploy/kubernetes/source/shop.yaml > deploy/kubernetes/shop.yaml"
    );
}

#[test]
fn the_example_app_carries_the_sidecar_and_its_token() {
    let docs = documents("deploy/kubernetes/shop.yaml");
    let secret = object(&docs, "Secret", "vakt-node-token");
    assert!(secret["stringData"]["token"].is_string());
    for name in ["orders", "payments"] {
        let d = object(&docs, "Deployment", name);
        let tpl = &d["spec"]["template"];
        assert_eq!(tpl["metadata"]["annotations"]["vakt.dev/injected"], "0.1.0");
        let init = &tpl["spec"]["initContainers"];
        assert_eq!(init[0]["name"], "vakt-init", "{name}: the redirect first");
        assert_eq!(init[1]["name"], "vakt-proxy");
        assert_eq!(init[1]["restartPolicy"], "Always");
        let volume = &tpl["spec"]["volumes"][0];
        assert_eq!(volume["secret"]["secretName"], "vakt-node-token");
        assert_eq!(d["metadata"]["namespace"], secret["metadata"]["namespace"]);

        let service = object(&docs, "Service", name);
        assert_eq!(service["spec"]["selector"], tpl["metadata"]["labels"]);
        let target = &service["spec"]["ports"][0]["targetPort"];
        let ports = &tpl["spec"]["containers"][0]["ports"];
        assert!(
            ports
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == *target)
        );
    }
}

#[test]
fn every_workload_is_probed_limited_and_non_root() {
    for file in MANIFESTS {
        for (name, pod) in pods(&documents(file)) {
            let pod_uid = &pod["securityContext"]["runAsUser"];
            for c in all_containers(pod) {
                let at = format!("{file}: {name}: {}", c["name"]);
                let limits = &c["resources"]["limits"];
                assert!(
                    limits["cpu"].is_string() && limits["memory"].is_string(),
                    "{at}"
                );
                assert!(c["resources"]["requests"]["memory"].is_string(), "{at}");
                if c["name"] == "vakt-init" {
                    continue;
                }
                assert!(c["readinessProbe"].is_object(), "{at}: readiness");
                assert!(c["livenessProbe"].is_object(), "{at}: liveness");
                let uid = c["securityContext"]["runAsUser"].as_u64();
                let uid = uid.or(pod_uid.as_u64()).expect("a UID is set");
                assert_ne!(uid, 0, "{at}: runs as root");
                assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true, "{at}");
                let image = c["image"].as_str().unwrap();
                assert!(image.starts_with("ghcr.io/vakt-mesh/"), "{at}: {image}");
            }
        }
    }
}

#[tokio::test]
async fn the_edge_config_passes_check_and_is_mounted_where_the_flag_points() {
    let docs = documents("deploy/kubernetes/edge.yaml");
    let map = object(&docs, "ConfigMap", "vakt-edge");
    let config = map["data"]["edge.yaml"].as_str().unwrap();
    assert_valid_config("vakt-edge ConfigMap", config).await;

    let d = object(&docs, "Deployment", "vakt-edge");
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    assert_eq!(flag(&args, "--config"), Some("/etc/vakt/edge.yaml"));
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/etc/vakt");
    assert_eq!(pod["volumes"][0]["configMap"]["name"], "vakt-edge");
    assert_eq!(c["startupProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/live");

    let drain = vakt_api::load_str(config).unwrap().drain;
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!((drain.delay.get() + drain.timeout.get()).as_secs() < grace);
    let service = object(&docs, "Service", "vakt-edge");
    assert_eq!(
        service["spec"]["selector"],
        d["spec"]["selector"]["matchLabels"]
    );
}

#[test]
fn the_control_plane_keeps_its_store_on_a_volume_and_reads_its_tokens() {
    let docs = documents("deploy/kubernetes/control-plane.yaml");
    object(&docs, "Namespace", "vakt-system");
    object(&docs, "ServiceAccount", "vakt-control");
    let secret = object(&docs, "Secret", "vakt-control-tokens");
    let set = object(&docs, "StatefulSet", "vakt-control");
    let pod = &set["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    assert_eq!(args[0], "serve");
    assert_eq!(flag(&args, "--listen"), Some("0.0.0.0:7070"));

    let mount = |name: &str| {
        let mounts = c["volumeMounts"].as_array().unwrap();
        let m = mounts.iter().find(|m| m["name"] == name).expect(name);
        m["mountPath"].as_str().unwrap().to_string()
    };
    let claim = &set["spec"]["volumeClaimTemplates"][0]["metadata"]["name"];
    assert_eq!(
        flag(&args, "--data-dir"),
        Some(mount(claim.as_str().unwrap()).as_str())
    );
    assert_eq!(
        pod["securityContext"]["fsGroup"], 1717,
        "the volume is writable"
    );
    for f in ["--token-file", "--node-token-file"] {
        let path = flag(&args, f).unwrap();
        let (dir, key) = path.rsplit_once('/').unwrap();
        assert_eq!(dir, mount("tokens"), "{f}");
        assert!(secret["stringData"][key].is_string(), "{f}: no key {key}");
    }

    let service = object(&docs, "Service", "vakt-control");
    assert_eq!(service["spec"]["ports"][0]["port"], 7070);
    assert_eq!(
        service["spec"]["selector"],
        set["spec"]["selector"]["matchLabels"]
    );
    assert_eq!(c["ports"][0]["containerPort"], 7070);
    assert!(c["startupProbe"]["tcpSocket"].is_object());
    let injected = vakt_control::inject::options::DEFAULT_CONTROL_PLANE;
    assert_eq!(injected, "http://vakt-control.vakt-system.svc:7070");
}
