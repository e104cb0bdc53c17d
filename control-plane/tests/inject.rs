//! `vakt-control inject` against checked-in manifests: each input under
//! `testdata/inject/` has its expected output under `expected/`
//! (`VAKT_BLESS=1` rewrites them); injecting twice changes nothing;
//! uninjecting gives the input back; each refusal names its reason; the
//! built binary does the same through stdin and stdout.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use vakt_control::inject::node::Node;
use vakt_control::inject::{InjectOptions, Mode, stream, transform};

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/testdata/inject")
}

/// The input manifests, by file name.
fn inputs(dir: &Path) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    files
}

fn inject(text: &str) -> String {
    let out = transform(text, Mode::Inject, &InjectOptions::default());
    out.unwrap_or_else(|e| panic!("inject failed:\n{e}")).text
}

fn uninject(text: &str) -> String {
    let out = transform(text, Mode::Uninject, &InjectOptions::default());
    out.unwrap_or_else(|e| panic!("uninject failed:\n{e}")).text
}

/// The non-blank documents of a stream as trees.
fn trees(text: &str) -> Vec<Node> {
    stream::split(text)
        .iter()
        .filter(|d| !d.is_blank())
        .map(|d| stream::parse(&d.source()).unwrap())
        .collect()
}

#[test]
fn every_manifest_injects_to_its_expected_output() {
    let bless = std::env::var_os("VAKT_BLESS").is_some();
    for (name, text) in inputs(&testdata()) {
        let got = inject(&text);
        let path = testdata().join("expected").join(&name);
        if bless {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{name}: no expected output; run with VAKT_BLESS=1"));
        assert_eq!(got, want, "{name}: output differs from expected/{name}");
    }
}

#[test]
fn injecting_an_injected_manifest_changes_nothing() {
    for (name, text) in inputs(&testdata()) {
        let once = inject(&text);
        assert_eq!(inject(&once), once, "{name}: second injection changed it");
    }
}

#[test]
fn an_injected_workload_is_recognised_and_left_as_written() {
    let text = std::fs::read_to_string(testdata().join("deployment.yaml")).unwrap();
    let line = "      serviceAccountName: orders\n";
    let commented = inject(&text).replace(line, "      serviceAccountName: orders # kept\n");
    assert!(commented.contains("# kept"));
    assert_eq!(inject(&commented), commented, "not rewritten at all");
}

#[test]
fn uninject_gives_back_the_original() {
    for (name, text) in inputs(&testdata()) {
        let back = uninject(&inject(&text));
        assert_eq!(trees(&back), trees(&text), "{name}: round trip changed it");
        assert_eq!(uninject(&back), back, "{name}: second uninject changed it");
        assert_eq!(uninject(&text), text, "{name}: nothing to remove");
    }
}

#[test]
fn untouched_documents_are_written_back_byte_for_byte() {
    for name in ["optout.yaml", "passthrough.yaml"] {
        let text = std::fs::read_to_string(testdata().join(name)).unwrap();
        assert_eq!(inject(&text), text, "{name}");
    }
    let text = std::fs::read_to_string(testdata().join("deployment.yaml")).unwrap();
    let out = inject(&text);
    assert!(out.starts_with(text.split("---\n").next().unwrap()));
    assert!(out.ends_with(text.rsplit("---\n").next().unwrap()));
}

#[test]
fn a_different_image_replaces_an_earlier_injection() {
    let text = std::fs::read_to_string(testdata().join("replicaset.yaml")).unwrap();
    let first = inject(&text);
    let opts = InjectOptions {
        image: "registry.local/vakt-proxy:dev".into(),
        opaque_ports: vec![3306],
        ..InjectOptions::default()
    };
    let second = transform(&first, Mode::Inject, &opts).unwrap().text;
    assert_eq!(second.matches("registry.local/vakt-proxy:dev").count(), 2);
    assert!(!second.contains("ghcr.io/vakt-mesh"));
    assert_eq!(second.matches("name: vakt-proxy").count(), 1);
    assert!(second.contains("VAKT_OPAQUE_PORTS"));
    assert_eq!(trees(&uninject(&second)), trees(&text));
}

#[test]
fn an_opted_out_workload_is_named_in_a_note() {
    let text = std::fs::read_to_string(testdata().join("optout.yaml")).unwrap();
    let out = transform(&text, Mode::Inject, &InjectOptions::default()).unwrap();
    assert_eq!(out.notes.len(), 1);
    assert!(
        out.notes[0].contains("Deployment/legacy"),
        "{:?}",
        out.notes
    );
}

/// The reason a refusal file expects, from its first line.
fn expected_refusal(name: &str, text: &str) -> String {
    let first = text.lines().next().unwrap();
    let reason = first.strip_prefix("# refused: ");
    reason
        .unwrap_or_else(|| panic!("{name}: first line names no reason"))
        .to_string()
}

#[test]
fn each_refusal_names_its_reason_and_writes_nothing() {
    for (name, text) in inputs(&testdata().join("refuse")) {
        let reason = expected_refusal(&name, &text);
        let err = match transform(&text, Mode::Inject, &InjectOptions::default()) {
            Ok(out) => panic!("{name}: not refused, wrote:\n{}", out.text),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(&reason), "{name}: {err:?} lacks {reason:?}");
    }
}

#[test]
fn refusals_count_documents_from_one_and_place_them_by_line() {
    let text = "kind: Service\nmetadata: {name: a}\n---\nkind: Pod\nspec: [\n\
                ---\n# the third\nkind: Pod\nmetadata: {name: p}\nspec: {}\n";
    let err = match transform(text, Mode::Inject, &InjectOptions::default()) {
        Ok(out) => panic!("not refused, wrote:\n{}", out.text),
        Err(e) => e.to_string(),
    };
    assert!(
        err.contains("document 2 (from line 3): not valid YAML"),
        "{err}"
    );
    assert!(err.contains("document 3, Pod/p: refused"), "{err}");
}

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vakt-control"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_binary_injects_from_stdin_to_stdout_and_back() {
    let text = std::fs::read_to_string(testdata().join("deployment.yaml")).unwrap();
    let out = run(&["inject", "-f", "-"], &text);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let injected = String::from_utf8(out.stdout).unwrap();
    let want = std::fs::read_to_string(testdata().join("expected/deployment.yaml")).unwrap();
    assert_eq!(injected, want);

    let out = run(&["inject", "--uninject", "-f", "-"], &injected);
    assert!(out.status.success());
    assert_eq!(trees(&String::from_utf8(out.stdout).unwrap()), trees(&text));
}

#[test]
fn the_binary_reads_a_file_and_takes_flags() {
    let path = testdata().join("cronjob.yaml");
    let out = run(
        &[
            "inject",
            "-f",
            path.to_str().unwrap(),
            "--image",
            "registry.local/vakt:1",
            "--control-plane",
            "http://cp.example:7070",
            "--opaque-ports",
            "25,3306",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.matches("image: registry.local/vakt:1").count(), 2);
    assert!(text.contains("- http://cp.example:7070\n"));
    assert!(text.contains("value: 25,3306\n"), "{text}");
}

#[test]
fn the_binary_refuses_with_a_reason_and_empty_stdout() {
    let text = std::fs::read_to_string(testdata().join("refuse/hostnetwork.yaml")).unwrap();
    let out = run(&["inject", "-f", "-"], &text);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DaemonSet/node-exporter: refused: hostNetwork"),
        "{err}"
    );

    let out = run(&["inject", "-f", "-", "--opaque-ports", "http"], "");
    assert_eq!(out.status.code(), Some(2), "clap rejects a bad flag");
}

#[test]
fn the_binary_notes_an_opted_out_workload_on_stderr() {
    let text = std::fs::read_to_string(testdata().join("optout.yaml")).unwrap();
    let out = run(&["inject", "-f", "-"], &text);
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), text);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("skipped, annotation vakt.dev/inject: disabled"),
        "{err}"
    );
}

/// The pieces the sidecar contract fixes, read back from an injection.
#[test]
fn the_injected_pieces_are_the_contracts() {
    let text = std::fs::read_to_string(testdata().join("deployment.yaml")).unwrap();
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&inject(&text)).unwrap();
    let tpl = &docs[1]["spec"]["template"];
    let notes = &tpl["metadata"]["annotations"];
    assert_eq!(notes["prometheus.io/scrape"], "true");
    assert_eq!(notes["prometheus.io/port"], "17000");
    assert_eq!(notes["prometheus.io/path"], "/metrics");
    assert_eq!(notes["vakt.dev/injected"], env!("CARGO_PKG_VERSION"));

    let init = &tpl["spec"]["initContainers"][0];
    assert_eq!(init["name"], "vakt-init");
    let image = format!("ghcr.io/vakt-mesh/vakt-proxy:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(init["image"], image.as_str());
    let command: Vec<&str> = init["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        command,
        [
            "vakt-iptables",
            "--proxy-uid",
            "1717",
            "--outbound-port",
            "17001",
            "--inbound-port",
            "17006",
            "--inbound-ports-to-ignore",
            "17000",
            "--outbound-ports-to-ignore",
            ""
        ]
    );
    let sc = &init["securityContext"];
    assert_eq!(
        sc["capabilities"]["add"],
        serde_json::json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["runAsUser"], 0);
    assert_eq!(sc["runAsNonRoot"], false);

    let proxy = &tpl["spec"]["initContainers"][1];
    assert_eq!(proxy["name"], "vakt-proxy");
    assert_eq!(proxy["image"], image.as_str());
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(
        proxy["args"],
        serde_json::json!([
            "--role",
            "sidecar",
            "--control-plane",
            "http://vakt-control.vakt-system.svc:7070",
            "--token-file",
            "/var/run/vakt/token/token",
            "--cache-dir",
            "/var/run/vakt/cache"
        ])
    );
    let env: Vec<(&str, &str)> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let path = e["valueFrom"]["fieldRef"]["fieldPath"].as_str();
            (e["name"].as_str().unwrap(), path.unwrap_or(""))
        })
        .collect();
    assert_eq!(
        env,
        [
            ("HOSTNAME", "metadata.name"),
            ("VAKT_SERVICE", "metadata.labels['app']"),
            ("POD_NAMESPACE", "metadata.namespace"),
            ("POD_IP", "status.podIP")
        ]
    );
    let sc = &proxy["securityContext"];
    assert_eq!(sc["runAsUser"], 1717);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    let res = &proxy["resources"];
    assert_eq!(
        res["requests"],
        serde_json::json!({"cpu": "50m", "memory": "32Mi"})
    );
    assert_eq!(
        res["limits"],
        serde_json::json!({"cpu": "1", "memory": "128Mi"})
    );
    for (probe, path) in [
        ("startupProbe", "/ready"),
        ("readinessProbe", "/ready"),
        ("livenessProbe", "/live"),
    ] {
        assert_eq!(proxy[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(proxy[probe]["httpGet"]["port"], 17000, "{probe}");
    }
    let volumes = tpl["spec"]["volumes"].as_array().unwrap();
    let [.., token, cache] = volumes.as_slice() else {
        panic!("two volumes added")
    };
    let mounts = &proxy["volumeMounts"];
    assert_eq!(mounts[0]["mountPath"], "/var/run/vakt/token");
    assert_eq!(mounts[0]["name"], token["name"]);
    assert_eq!(token["secret"]["secretName"], "vakt-node-token");
    assert_eq!(mounts[1]["mountPath"], "/var/run/vakt/cache");
    assert_eq!(mounts[1]["name"], cache["name"]);
    assert!(cache["emptyDir"].is_object());
    assert_eq!(tpl["spec"]["initContainers"][2]["name"], "migrate");
}

#[test]
fn one_parsed_object_is_rewritten_as_a_webhook_would() {
    use vakt_control::inject::rewrite_object;
    let text = std::fs::read_to_string(testdata().join("pod.yaml")).unwrap();
    let original = stream::parse(&text).unwrap();
    let opts = InjectOptions::default();

    let mut pod = original.clone();
    assert!(matches!(
        rewrite_object(&mut pod, Mode::Inject, &opts),
        Ok((true, _))
    ));
    let want = std::fs::read_to_string(testdata().join("expected/pod.yaml")).unwrap();
    assert_eq!(pod, stream::parse(&want).unwrap());
    let again = rewrite_object(&mut pod, Mode::Inject, &opts).unwrap();
    assert!(!again.0, "already injected");
    assert!(rewrite_object(&mut pod, Mode::Uninject, &opts).unwrap().0);
    assert_eq!(pod, original);

    let text = std::fs::read_to_string(testdata().join("refuse/istio.yaml")).unwrap();
    let mut meshed = stream::parse(&text).unwrap();
    let err = rewrite_object(&mut meshed, Mode::Inject, &opts).unwrap_err();
    assert!(
        err.to_string().contains("object, Pod/meshed: refused"),
        "{err}"
    );
    assert_eq!(
        meshed,
        stream::parse(&text).unwrap(),
        "untouched when refused"
    );
}

#[test]
fn empty_input_and_comment_only_documents_pass_through() {
    for text in ["", "\n", "# only a comment\n", "---\n# nothing\n---\n"] {
        assert_eq!(inject(text), text, "{text:?}");
        assert_eq!(uninject(text), text, "{text:?}");
    }
    let out = run(&["inject", "-f", "-"], "");
    assert!(out.status.success() && out.stdout.is_empty());
}
