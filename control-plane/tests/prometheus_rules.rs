//! `deploy/prometheus` checked by the real `promtool`: both scrape
//! configurations load, the rule files parse, and the alert unit tests in
//! `deploy/prometheus/tests` pass.

mod common;

use common::prometheus::{deploy_dir, find, promtool, text};

#[test]
fn the_local_scrape_config_is_valid() {
    let Some(tool) = find("promtool") else { return };
    let out = promtool(&tool, &deploy_dir(), &["check", "config", "prometheus.yml"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("2 rule files found"), "{}", text(&out));
}

/// Every admin listener `deploy/demo.sh` starts (`NAME_admin=$lo:$((base
/// + N))`, base 16000) is a target of the local scrape config.
#[test]
fn the_local_scrape_config_names_the_demo_proxies() {
    let root = deploy_dir().join("../..");
    let demo = std::fs::read_to_string(root.join("deploy/demo.sh")).unwrap();
    let config = std::fs::read_to_string(deploy_dir().join("prometheus.yml")).unwrap();
    let mut seen = 0;
    for part in demo.split("_admin=$lo:$((base + ").skip(1) {
        let offset: u16 = part.split(')').next().unwrap().trim().parse().unwrap();
        let target = format!("127.0.0.1:{}", 16000 + offset);
        assert!(config.contains(&target), "{target} is not scraped");
        seen += 1;
    }
    assert_eq!(seen, 4, "the demo's admin listeners were not found");
}

/// Debian builds Prometheus without the Kubernetes discovery; with such a
/// build the job is checked with static targets in its place, so its
/// relabelling rules still go through promtool.
#[test]
fn the_kubernetes_scrape_config_is_valid() {
    let Some(tool) = find("promtool") else { return };
    let dir = deploy_dir();
    let out = promtool(&tool, &dir, &["check", "config", "kubernetes.yml"]);
    if out.status.success() {
        return;
    }
    let missing = "field kubernetes_sd_configs not found";
    assert!(text(&out).contains(missing), "{}", text(&out));

    let original = std::fs::read_to_string(dir.join("kubernetes.yml")).unwrap();
    let discovery = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert!(
        original.contains(discovery),
        "the pod discovery block moved"
    );
    let stand_in = "    static_configs:\n      - targets: [127.0.0.1:15000]\n";
    let copy = original
        .replace(discovery, stand_in)
        .replace("  - rules/", &format!("  - {}/rules/", dir.display()));
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("kubernetes.yml"), copy).unwrap();
    let out = promtool(&tool, tmp.path(), &["check", "config", "kubernetes.yml"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn the_rule_files_are_valid() {
    let Some(tool) = find("promtool") else { return };
    let args = ["check", "rules", "rules/recording.yml", "rules/alerts.yml"];
    let out = promtool(&tool, &deploy_dir(), &args);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn every_alert_passes_its_unit_tests() {
    let Some(tool) = find("promtool") else { return };
    let dir = deploy_dir();
    let mut files: Vec<String> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yml"))
        .map(|n| format!("tests/{n}"))
        .collect();
    files.sort();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = promtool(&tool, &dir, &args);
    assert!(out.status.success(), "{}", text(&out));

    // Every alert of alerts.yml is named by some unit test.
    let alerts = std::fs::read_to_string(dir.join("rules/alerts.yml")).unwrap();
    let tests: String = files
        .iter()
        .map(|f| std::fs::read_to_string(dir.join(f)).unwrap())
        .collect();
    for line in alerts.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            let tested = format!("alertname: {name}\n");
            assert!(tests.contains(&tested), "alert {name} has no unit test");
        }
    }
}
