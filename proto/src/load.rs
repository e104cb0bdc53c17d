//! Reading a config from YAML, naming every problem at once.
//!
//! The text is parsed into a generic tree first; each listener, route and
//! backend is then read on its own, so a type error in one does not hide
//! the problems of the others. Cross-references are checked last by
//! [`crate::validate`].

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Config, Problems, validate};

const SECTIONS: &[&str] = &[
    "admin",
    "listeners",
    "routes",
    "backends",
    "limits",
    "rateLimits",
    "drain",
    "tracing",
];

/// Reads and validates a config file; problems carry the file name.
pub fn load_file(path: &Path) -> Result<Config, Problems> {
    let source = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut p = Problems::default();
        p.push("", format!("cannot read file: {e}"));
        p.with_source(source.clone())
    })?;
    load_str(&text).map_err(|p| p.with_source(source))
}

/// Parses and validates YAML (or JSON) config text.
pub fn load_str(text: &str) -> Result<Config, Problems> {
    let value = parse_tree(text)?;
    from_value(value)
}

/// Parses YAML text into a generic tree, without reading it as a config.
pub fn parse_tree(text: &str) -> Result<Value, Problems> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_saphyr::from_str::<Value>(text).map_err(|e| {
        let mut p = Problems::default();
        // The parser's hint about its own options means nothing to a user.
        let text = e
            .to_string()
            .replace(", set DuplicateKeyPolicy in Options if acceptable", "");
        p.push("", format!("not valid YAML: {text}"));
        p
    })
}

/// Reads a config from a generic tree and validates it.
pub fn from_value(value: Value) -> Result<Config, Problems> {
    let mut problems = Problems::default();
    let mut map = match value {
        Value::Object(map) => map,
        Value::Null => Default::default(),
        other => {
            problems.push("", format!("expected a mapping, found {}", kind(&other)));
            return Err(problems);
        }
    };

    for key in map.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            problems.push(
                key.clone(),
                format!("unknown key, expected one of {SECTIONS:?}"),
            );
        }
    }

    let mut config = Config::default();
    let mut take = |key: &str| map.remove(key).filter(|v| !v.is_null());
    if let Some(v) = take("admin") {
        read_into(&mut config.admin, "admin", v, &mut problems);
    }
    if let Some(v) = take("limits") {
        read_into(&mut config.limits, "limits", v, &mut problems);
    }
    if let Some(v) = take("drain") {
        read_into(&mut config.drain, "drain", v, &mut problems);
    }
    if let Some(v) = take("tracing") {
        read_into(&mut config.tracing, "tracing", v, &mut problems);
    }
    config.listeners = read_list("listeners", take("listeners"), &mut problems);
    config.routes = read_list("routes", take("routes"), &mut problems);
    config.backends = read_list("backends", take("backends"), &mut problems);
    config.rate_limits = read_list("rateLimits", take("rateLimits"), &mut problems);

    validate::check(&config, &mut problems);
    problems.into_result().map(|()| config)
}

/// Reads a list whose items are read one by one; a bad item is named and
/// skipped so the others are still checked.
pub fn read_list<T: DeserializeOwned>(
    key: &str,
    value: Option<Value>,
    problems: &mut Problems,
) -> Vec<T> {
    let items = match value {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            problems.push(key, format!("expected a list, found {}", kind(&other)));
            return Vec::new();
        }
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let at = item_path(key, i, &item);
        if let Some(v) = read(&at, item, problems) {
            out.push(v);
        }
    }
    out
}

fn read_into<T: DeserializeOwned>(slot: &mut T, at: &str, v: Value, problems: &mut Problems) {
    if let Some(v) = read(at, v, problems) {
        *slot = v;
    }
}

fn read<T: DeserializeOwned>(at: &str, value: Value, problems: &mut Problems) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                at.to_string()
            } else {
                format!("{at}.{inner}")
            };
            problems.push(path, e.into_inner().to_string());
            None
        }
    }
}

/// `routes[2]`, or `routes[orders]` when the item has a name.
fn item_path(key: &str, index: usize, item: &Value) -> String {
    match item.get("name").and_then(Value::as_str) {
        Some(name) => format!("{key}[{name}]"),
        None => format!("{key}[{index}]"),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}
