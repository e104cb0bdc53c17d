//! Reading the files under `deploy/` for the deploy tests.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A file of the repository as text.
pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Every document of a YAML stream, blank ones left out.
pub fn documents(rel: &str) -> Vec<Value> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(&read(rel)).expect("valid YAML");
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The one document of a kind and name.
pub fn object<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind}/{name}"))
}

/// The strings of a sequence.
pub fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The value after `flag` in an argument list.
pub fn flag<'a>(args: &[&'a str], flag: &str) -> Option<&'a str> {
    args.windows(2).find(|w| w[0] == flag).map(|w| w[1])
}

/// The containers and init containers of a pod spec.
pub fn all_containers(pod: &Value) -> Vec<&Value> {
    let list = |k: &str| pod[k].as_array().into_iter().flatten();
    list("initContainers").chain(list("containers")).collect()
}

/// Runs `vakt-proxy --check` on a config; panics with its output when it
/// is refused.
pub async fn assert_valid_config(what: &str, config: &str) {
    let out = vakt_tests::proxy::check(config).await.expect("check runs");
    assert_eq!(out.status.code(), Some(0), "{what}: {}", out.stderr);
}
