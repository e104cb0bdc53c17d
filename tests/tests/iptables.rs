//! `deploy/iptables/vakt-iptables` in a network namespace made for the
//! test: one copy of the rules after two runs, none after `--clean`, the
//! app's TCP redirected to the outbound listener and arriving TCP to the
//! inbound one, while the proxy's UID, loopback and ignored ports pass
//! untouched; those run as root only (see `vakt_tests::lab::available`).
//! `--dry-run` and flag checking are tested everywhere.

use std::path::PathBuf;
use std::time::Duration;

use vakt_tests::lab::{Lab, run};

const PROXY_UID: u32 = 1717;
const APP_UID: u32 = 1000;
const T: Duration = Duration::from_secs(10);

fn script() -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/iptables/vakt-iptables");
    p.to_string_lossy().into_owned()
}

fn nat(lab: &Lab, save: &str) -> String {
    let out = lab
        .exec("pod", &[save, "-t", "nat"])
        .expect("iptables-save");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .filter(|l| l.contains("VAKT_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A lab of `family` (no family a prefix of another: each removes its own
/// leftovers) with a pod namespace (10.99.0.2) linked to a peer (10.99.0.1) serving
/// `direct` on port 80; in the pod, example services stand in for the
/// outbound (17001) and inbound (17006) listeners, the admin port (17000)
/// and the app (8080).
fn pod(family: &str) -> Lab {
    let mut lab = Lab::new(family).expect("lab");
    lab.add_ns("pod").unwrap();
    lab.add_ns("peer").unwrap();
    lab.veth("pod", "eth0", "peer", "eth0").unwrap();
    lab.ip("pod", &["addr", "add", "10.99.0.2/24", "dev", "eth0"])
        .unwrap();
    lab.ip("peer", &["addr", "add", "10.99.0.1/24", "dev", "eth0"])
        .unwrap();
    let example = env!("CARGO_BIN_EXE_vakt-example");
    let servers = [
        ("peer", "10.99.0.1:80", "direct"),
        ("pod", "127.0.0.1:17001", "outbound-listener"),
        ("pod", "0.0.0.0:17006", "inbound-listener"),
        ("pod", "0.0.0.0:17000", "admin"),
        ("pod", "0.0.0.0:8080", "app"),
    ];
    for (ns, addr, name) in servers {
        let args = [example, "--listen", addr, "--name", name];
        lab.spawn(name, ns, None, &args).unwrap();
    }
    lab.wait_for("peer", "http://10.99.0.1/healthz", T).unwrap();
    for port in [17001, 17006, 17000, 8080] {
        let url = format!("http://127.0.0.1:{port}/healthz");
        lab.wait_for("pod", &url, T).unwrap();
    }
    lab
}

fn get(lab: &Lab, ns: &str, uid: Option<u32>, url: &str) -> String {
    lab.curl(ns, uid, &[url]).unwrap().trim().to_owned()
}

#[test]
fn rules_are_idempotent_redirect_the_app_and_clean_up() {
    if !vakt_tests::lab::available("iptables") {
        return;
    }
    let lab = pod("vkipt1");
    let s = script();
    let flags: Vec<&str> = [s.as_str()]
        .into_iter()
        .chain(vakt_tests::lab::INIT_FLAGS)
        .collect();
    let first = lab.exec("pod", &flags).expect("first run");
    let printed = String::from_utf8_lossy(&first.stdout);
    assert!(printed.contains("-A VAKT_REDIRECT -p tcp -j REDIRECT --to-ports 17001"));
    let once = nat(&lab, "iptables-save");
    lab.exec("pod", &flags).expect("second run");
    let twice = nat(&lab, "iptables-save");
    assert_eq!(once, twice, "a second run changed the rules");
    for chain in [
        "VAKT_INBOUND",
        "VAKT_OUTBOUND",
        "VAKT_REDIRECT",
        "VAKT_IN_REDIRECT",
    ] {
        let decl = format!(":{chain} ");
        assert_eq!(twice.matches(&decl).count(), 1, "{chain}:\n{twice}");
    }
    assert_eq!(twice.matches("-A PREROUTING").count(), 1, "{twice}");
    assert_eq!(twice.matches("-A OUTPUT").count(), 1, "{twice}");

    let out = "http://10.99.0.1/";
    assert_eq!(get(&lab, "pod", Some(APP_UID), out), "outbound-listener");
    assert_eq!(get(&lab, "pod", None, out), "outbound-listener");
    assert_eq!(get(&lab, "pod", Some(PROXY_UID), out), "direct");
    let local = "http://127.0.0.1:8080/";
    assert_eq!(get(&lab, "pod", Some(APP_UID), local), "app");
    let pod_ip = "http://10.99.0.2:8080/";
    assert_eq!(get(&lab, "pod", Some(APP_UID), pod_ip), "app");
    assert_eq!(get(&lab, "peer", None, pod_ip), "inbound-listener");
    let admin = "http://10.99.0.2:17000/";
    assert_eq!(get(&lab, "peer", None, admin), "admin");

    lab.exec("pod", &[s.as_str(), "--clean"]).expect("--clean");
    assert_eq!(nat(&lab, "iptables-save"), "");
    assert_eq!(get(&lab, "pod", Some(APP_UID), out), "direct");
    assert_eq!(get(&lab, "peer", None, pod_ip), "app");
}

#[test]
fn legacy_mode_and_port_lists() {
    if !vakt_tests::lab::available("iptables legacy mode") {
        return;
    }
    if run("sh", &["-c", "command -v iptables-legacy-save"]).is_err() {
        eprintln!("skipped: iptables-legacy is not installed");
        return;
    }
    let lab = pod("vkipt2");
    let s = script();
    let flags = [
        s.as_str(),
        "--mode",
        "legacy",
        "--inbound-ports",
        "8080",
        "--outbound-ports-to-ignore",
        "80,443",
    ];
    lab.exec("pod", &flags).expect("legacy run");
    let rules = nat(&lab, "iptables-legacy-save");
    assert!(
        rules.contains("--dport 8080 -j VAKT_IN_REDIRECT"),
        "{rules}"
    );
    assert!(rules.contains("--dport 443 -j RETURN"), "{rules}");
    assert_eq!(nat(&lab, "iptables-nft-save"), "");
    // Port 80 is ignored outbound: the app reaches the peer directly.
    assert_eq!(
        get(&lab, "pod", Some(APP_UID), "http://10.99.0.1/"),
        "direct"
    );
    let pod_ip = "http://10.99.0.2:8080/";
    assert_eq!(get(&lab, "peer", None, pod_ip), "inbound-listener");
    // Auto mode finds the legacy rules and removes them.
    lab.exec("pod", &[s.as_str(), "--clean"]).expect("--clean");
    assert_eq!(nat(&lab, "iptables-legacy-save"), "");
    assert_eq!(get(&lab, "peer", None, pod_ip), "app");
}

/// Without root: `--dry-run` prints the rules the flags ask for, and bad
/// flags are refused before anything is touched.
#[test]
fn dry_run_prints_the_rules_and_bad_flags_are_refused() {
    let s = script();
    let run = |args: &[&str]| {
        std::process::Command::new("sh")
            .arg(&s)
            .args(args)
            .output()
            .expect("run vakt-iptables")
    };
    let out = run(&[
        "--dry-run",
        "--inbound-ports",
        "80,8080",
        "--proxy-uid",
        "1800",
    ]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("*nat\n") && text.ends_with("COMMIT\n"),
        "{text}"
    );
    for rule in [
        "-A VAKT_INBOUND -p tcp --dport 80 -j VAKT_IN_REDIRECT",
        "-A VAKT_INBOUND -p tcp --dport 8080 -j VAKT_IN_REDIRECT",
        "-A VAKT_INBOUND -p tcp --dport 17000 -j RETURN",
        "-m owner --uid-owner 1800 -j RETURN",
        "-m owner --gid-owner 1800 -j RETURN",
        "-A OUTPUT -p tcp -j VAKT_OUTBOUND",
    ] {
        assert!(text.contains(rule), "no {rule:?} in:\n{text}");
    }
    let none = run(&["--dry-run", "--inbound-ports", ""]);
    let text = String::from_utf8_lossy(&none.stdout);
    assert!(!text.contains("PREROUTING"), "{text}");
    assert!(!text.contains("VAKT_IN_REDIRECT -p tcp --dport"), "{text}");

    for bad in [
        &["--outbound-port", "70000"][..],
        &["--inbound-ports-to-ignore", "80,x"],
        &["--proxy-uid", "me"],
        &["--mode", "ebpf"],
        &["--no-such-flag"],
        &["--inbound-port"],
    ] {
        let mut args = vec!["--dry-run"];
        args.extend_from_slice(bad);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(2), "{bad:?} was accepted");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("vakt-iptables: "), "{bad:?}: {err}");
    }
}
