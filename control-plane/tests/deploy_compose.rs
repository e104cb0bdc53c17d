//! `deploy/compose.yaml`: every service is built or pulled from a known
//! image, limited, health-checked and non-root (but the init step), each
//! app's init and sidecar share its network namespace, and every file it
//! mounts exists, the edge config passing `vakt-proxy --check`.

mod deploy_support;

use serde_json::Value;

use deploy_support::{assert_valid_config, documents, flag, read, repo, strings};

fn compose() -> Value {
    documents("deploy/compose.yaml").remove(0)
}

fn services(c: &Value) -> Vec<(&String, &Value)> {
    c["services"].as_object().unwrap().iter().collect()
}

/// A path of the compose file (relative to `deploy/`) from the repo root.
fn from_deploy(path: &str) -> std::path::PathBuf {
    repo().join("deploy").join(path)
}

#[test]
fn every_service_has_an_image_limits_and_a_user() {
    let c = compose();
    let dockerfile = read("deploy/Dockerfile");
    for (name, s) in services(&c) {
        let image = s["image"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: image"));
        if let Some(build) = s.get("build") {
            assert_eq!(build["context"], "..", "{name}: the repository root");
            let file = build["dockerfile"].as_str().unwrap();
            assert!(repo().join(file).exists(), "{name}: {file}");
            let target = build["target"].as_str().unwrap();
            assert!(
                dockerfile.contains(&format!(" AS {target}\n")),
                "{name}: {target}"
            );
            assert!(image.starts_with("ghcr.io/vakt-mesh/"), "{name}: {image}");
        } else {
            assert!(
                image == "postgres:15",
                "{name}: {image} is neither built nor known"
            );
        }
        assert!(s["mem_limit"].is_string(), "{name}: mem_limit");
        assert!(s["cpus"].as_f64().is_some_and(|c| c > 0.0), "{name}: cpus");
        let user = s["user"].as_str().unwrap_or_else(|| panic!("{name}: user"));
        if name.ends_with("-init") {
            assert_eq!(user, "0:0", "{name}: iptables needs root");
        } else {
            assert!(
                !user.starts_with('0') && user != "root",
                "{name}: runs as {user}"
            );
        }
    }
}

#[test]
fn every_long_running_service_is_health_checked() {
    let c = compose();
    for (name, s) in services(&c) {
        if name.ends_with("-init") {
            assert_eq!(s["restart"], "no", "{name}: runs once");
            continue;
        }
        let test = strings(&s["healthcheck"]["test"]);
        assert_eq!(test.first(), Some(&"CMD"), "{name}: healthcheck");
        if name == "edge" || name.ends_with("-proxy") {
            assert!(test.join(" ").contains("GET /ready"), "{name}: {test:?}");
        }
    }
}

#[test]
fn each_app_has_its_own_database_init_step_and_sidecar() {
    let c = compose();
    let s = &c["services"];
    for app in ["a", "b"] {
        let db = &s[format!("{app}-db")];
        assert_eq!(db["image"], "postgres:15", "{app}: own database");
        assert!(s[app]["depends_on"][format!("{app}-db")].is_object());

        let init = &s[format!("{app}-init")];
        let netns = format!("service:{app}");
        assert_eq!(init["network_mode"], netns.as_str());
        assert_eq!(strings(&init["entrypoint"]), ["vakt-iptables"]);
        assert_eq!(strings(&init["cap_add"]), ["NET_ADMIN", "NET_RAW"]);
        assert_eq!(strings(&init["cap_drop"]), ["ALL"]);
        let args = strings(&init["command"]);
        assert_eq!(flag(&args, "--proxy-uid"), Some("1717"));
        assert_eq!(flag(&args, "--outbound-port"), Some("17001"));
        assert_eq!(flag(&args, "--inbound-port"), Some("17006"));
        assert_eq!(flag(&args, "--inbound-ports-to-ignore"), Some("17000"));

        let proxy = &s[format!("{app}-proxy")];
        assert_eq!(proxy["network_mode"], netns.as_str());
        assert_eq!(proxy["user"], "1717:1717");
        let cond = &proxy["depends_on"][format!("{app}-init")]["condition"];
        assert_eq!(cond, "service_completed_successfully");
        let args = strings(&proxy["command"]);
        assert_eq!(flag(&args, "--role"), Some("sidecar"));
        assert_eq!(flag(&args, "--control-plane"), Some("http://control:7070"));
        assert_eq!(proxy["environment"]["VAKT_OPAQUE_PORTS"], "5432");
        let cache = flag(&args, "--cache-dir").unwrap();
        assert_eq!(
            strings(&proxy["tmpfs"]),
            [cache],
            "{app}: writable under read_only"
        );
    }
}

#[test]
fn the_control_plane_keeps_its_store_in_a_volume() {
    let c = compose();
    let control = &c["services"]["control"];
    assert_eq!(strings(&control["entrypoint"]), ["vakt-control"]);
    let args = strings(&control["command"]);
    assert_eq!(flag(&args, "--listen"), Some("0.0.0.0:7070"));
    let data = flag(&args, "--data-dir").unwrap();
    let volumes = strings(&control["volumes"]);
    assert!(volumes.contains(&format!("control-data:{data}").as_str()));
    assert!(c["volumes"].get("control-data").is_some());
}

#[tokio::test]
async fn every_mounted_file_exists_and_the_edge_config_passes_check() {
    let c = compose();
    for section in ["configs", "secrets"] {
        for (name, v) in c[section].as_object().unwrap() {
            let file = v["file"].as_str().unwrap();
            assert!(from_deploy(file).exists(), "{section}.{name}: {file}");
        }
    }
    let edge = &c["services"]["edge"];
    let target = edge["configs"][0]["target"].as_str().unwrap();
    assert_eq!(flag(&strings(&edge["command"]), "--config"), Some(target));
    let source = edge["configs"][0]["source"].as_str().unwrap();
    let file = c["configs"][source]["file"].as_str().unwrap();
    let config = std::fs::read_to_string(from_deploy(file)).unwrap();
    assert_valid_config(file, &config).await;
    assert_eq!(edge["ports"][0], "127.0.0.1:8080:8080");
}
