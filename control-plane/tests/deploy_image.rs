//! `deploy/Dockerfile` and `.dockerignore`: the stages, what the builder
//! builds, the runtime's user, and that everything copied into the image
//! comes from the repository or from the builder's own output.

mod deploy_support;

use deploy_support::{read, repo};

/// Files the image copies that another part of the product delivers; a
/// missing one is allowed only while it is listed here, and is checked
/// like every other file as soon as it exists.
const DELIVERED_ELSEWHERE: &[&str] = &["deploy/iptables/vakt-iptables"];

/// One `FROM ... AS name` stage and its instructions.
struct Stage {
    name: String,
    base: String,
    lines: Vec<String>,
}

/// Reads the Dockerfile into stages, joining `\` continuations.
fn stages() -> Vec<Stage> {
    let text = read("deploy/Dockerfile").replace("\\\n", " ");
    let mut stages: Vec<Stage> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if words[0] == "FROM" {
            assert_eq!(words.get(2), Some(&"AS"), "every stage is named: {line}");
            stages.push(Stage {
                name: words[3].to_string(),
                base: words[1].to_string(),
                lines: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("FROM first")
                .lines
                .push(line.to_string());
        }
    }
    stages
}

fn stage<'a>(all: &'a [Stage], name: &str) -> &'a Stage {
    all.iter().find(|s| s.name == name).expect(name)
}

#[test]
fn the_builder_builds_both_binaries_locked() {
    let all = stages();
    let build = stage(&all, "build");
    assert_eq!(build.base, "rust:1-bookworm");
    let run = build
        .lines
        .iter()
        .find(|l| l.contains("cargo build"))
        .unwrap();
    assert!(
        run.contains("cargo build --release --locked -p vakt-proxy -p vakt-control"),
        "{run}"
    );
    for bin in ["vakt-proxy", "vakt-control"] {
        assert!(run.contains(&format!("target/release/{bin}")), "{bin} kept");
    }
}

#[test]
fn the_runtime_is_the_last_stage_and_runs_as_the_proxy_uid() {
    let all = stages();
    let runtime = all.last().unwrap();
    assert_eq!(runtime.name, "runtime", "a plain build gives the runtime");
    assert_eq!(runtime.base, "debian:bookworm-slim");
    let users: Vec<&String> = runtime
        .lines
        .iter()
        .filter(|l| l.starts_with("USER"))
        .collect();
    assert_eq!(users.last().map(|s| s.as_str()), Some("USER 1717:1717"));
    let install = runtime.lines.iter().find(|l| l.contains("apt-get install"));
    let install = install.expect("iptables is installed");
    assert!(install.contains("iptables"));
    assert!(
        !install.contains("curl"),
        "nothing beyond iptables: {install}"
    );
    assert!(
        runtime
            .lines
            .iter()
            .any(|l| l == "ENTRYPOINT [\"vakt-proxy\"]")
    );

    let example = stage(&all, "example");
    let users: Vec<&String> = example
        .lines
        .iter()
        .filter(|l| l.starts_with("USER"))
        .collect();
    assert_eq!(users.last().map(|s| s.as_str()), Some("USER 1000:1000"));
}

#[test]
fn every_file_copied_into_the_image_exists() {
    let all = stages();
    let names: Vec<&str> = all.iter().map(|s| s.name.as_str()).collect();
    for s in &all {
        for line in s.lines.iter().filter(|l| l.starts_with("COPY ")) {
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            let from = words.iter().find_map(|w| w.strip_prefix("--from="));
            let paths: Vec<&&str> = words.iter().filter(|w| !w.starts_with("--")).collect();
            let (dest, sources) = paths.split_last().unwrap();
            if let Some(from) = from {
                assert!(names.contains(&from), "{line}: no stage {from}");
                let built = all.iter().find(|b| b.name == from).unwrap();
                for src in sources {
                    let bin = src.rsplit('/').next().unwrap();
                    let made = built
                        .lines
                        .iter()
                        .any(|l| l.contains(&format!("release/{bin}")));
                    assert!(made, "{line}: stage {from} does not produce {bin}");
                }
            } else if !(sources.len() == 1 && *sources[0] == ".") {
                sources.iter().for_each(|src| check_source(src, dest));
            }
        }
    }
    assert!(repo().join("proxy/src/main.rs").exists());
    assert!(repo().join("control-plane/src/main.rs").exists());
    assert!(repo().join("tests/src/bin/vakt-example.rs").exists());
}

fn check_source(src: &str, dest: &str) {
    let path = repo().join(src);
    if !path.exists() {
        assert!(
            DELIVERED_ELSEWHERE.contains(&src),
            "{src} is copied but missing"
        );
        return;
    }
    assert!(dest.starts_with("/usr/local/bin/"), "{src} goes to {dest}");
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap_or("");
    assert!(
        first.starts_with("#!") && first.ends_with("sh"),
        "{src}: a shell script"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_ne!(mode & 0o111, 0, "{src} is executable");
}

#[test]
fn the_build_context_leaves_out_only_what_is_built_or_secret() {
    let ignore = read(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for needed in [
        "Cargo.lock",
        "Cargo.toml",
        "proxy",
        "deploy",
        "tests",
        "proto",
    ] {
        assert!(!rules.contains(&needed), "{needed} must reach the builder");
    }
    assert!(rules.contains(&"target") && rules.contains(&".git"));
}
