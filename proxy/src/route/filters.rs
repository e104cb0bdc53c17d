//! Gateway API filters of a rule, compiled once per config: header
//! modifiers, redirects and URL rewrites.

use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use vakt_api::config::{self, FilterType, PathModifier, PathModifierType};

/// The filters of one rule.
#[derive(Debug, Default)]
pub struct Filters {
    pub request_headers: Option<HeaderMods>,
    pub response_headers: Option<HeaderMods>,
    pub redirect: Option<Redirect>,
    pub rewrite: Option<Rewrite>,
}

/// `set`, `add` and `remove` on a header map.
#[derive(Debug, Default)]
pub struct HeaderMods {
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

#[derive(Debug)]
pub struct Redirect {
    scheme: Option<String>,
    hostname: Option<String>,
    port: Option<u16>,
    path: Option<PathMod>,
    pub status: StatusCode,
}

#[derive(Debug)]
pub struct Rewrite {
    pub hostname: Option<HeaderValue>,
    path: Option<PathMod>,
}

#[derive(Debug)]
enum PathMod {
    Full(String),
    Prefix(String),
}

impl Filters {
    pub fn compile(filters: &[config::Filter]) -> Self {
        let mut out = Self::default();
        for f in filters {
            match f.kind {
                FilterType::RequestHeaderModifier => {
                    out.request_headers =
                        f.request_header_modifier.as_ref().map(HeaderMods::compile)
                }
                FilterType::ResponseHeaderModifier => {
                    out.response_headers =
                        f.response_header_modifier.as_ref().map(HeaderMods::compile)
                }
                FilterType::RequestRedirect => {
                    out.redirect = f.request_redirect.as_ref().map(Redirect::compile)
                }
                FilterType::UrlRewrite => {
                    out.rewrite = f.url_rewrite.as_ref().map(Rewrite::compile)
                }
            }
        }
        out
    }
}

impl HeaderMods {
    fn compile(m: &config::HeaderModifier) -> Self {
        let pairs = |list: &[config::HeaderValue]| {
            list.iter()
                .filter_map(|h| Some((h.name.parse().ok()?, h.value.parse().ok()?)))
                .collect()
        };
        Self {
            set: pairs(&m.set),
            add: pairs(&m.add),
            remove: m.remove.iter().filter_map(|n| n.parse().ok()).collect(),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

impl Redirect {
    fn compile(r: &config::RequestRedirect) -> Self {
        Self {
            scheme: r.scheme.clone(),
            hostname: r.hostname.clone(),
            port: r.port,
            path: r.path.as_ref().map(PathMod::compile),
            status: StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::FOUND),
        }
    }

    /// The `Location` for a request to `host` and `uri`; `prefix` is the
    /// matched path prefix, for `ReplacePrefixMatch`.
    pub fn location(&self, scheme: &str, host: &str, uri: &Uri, prefix: Option<&str>) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(scheme);
        let host = self.hostname.as_deref().unwrap_or(host_only(host));
        let path = match &self.path {
            Some(m) => m.apply(uri.path(), prefix),
            None => uri.path().to_string(),
        };
        let port = match self.port {
            Some(p) if !is_default_port(scheme, p) => format!(":{p}"),
            _ => String::new(),
        };
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        format!("{scheme}://{host}{port}{path}{query}")
    }
}

impl Rewrite {
    fn compile(r: &config::UrlRewrite) -> Self {
        Self {
            hostname: r.hostname.as_ref().and_then(|h| h.parse().ok()),
            path: r.path.as_ref().map(PathMod::compile),
        }
    }

    /// The rewritten path and query, if the path changes.
    pub fn path_and_query(&self, uri: &Uri, prefix: Option<&str>) -> Option<PathAndQuery> {
        let m = self.path.as_ref()?;
        let path = m.apply(uri.path(), prefix);
        let pq = match uri.query() {
            Some(q) => format!("{path}?{q}"),
            None => path,
        };
        pq.parse().ok()
    }
}

impl PathMod {
    fn compile(p: &PathModifier) -> Self {
        match p.kind {
            PathModifierType::ReplaceFullPath => {
                Self::Full(p.replace_full_path.clone().unwrap_or_else(|| "/".into()))
            }
            PathModifierType::ReplacePrefixMatch => {
                Self::Prefix(p.replace_prefix_match.clone().unwrap_or_else(|| "/".into()))
            }
        }
    }

    fn apply(&self, path: &str, prefix: Option<&str>) -> String {
        match self {
            Self::Full(p) => p.clone(),
            Self::Prefix(with) => {
                let rest = match prefix {
                    Some("/") => path,
                    Some(p) => path.strip_prefix(p).unwrap_or(path),
                    None => path,
                };
                join_path(with, rest)
            }
        }
    }
}

/// Puts `rest` (empty, or starting with `/`) after a replacement prefix,
/// keeping a trailing slash the request had (Gateway API semantics).
fn join_path(prefix: &str, rest: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    match (prefix.is_empty(), rest.is_empty()) {
        (true, true) => "/".into(),
        (false, true) => prefix.into(),
        (_, false) if !rest.starts_with('/') => format!("{prefix}/{rest}"),
        (_, false) => format!("{prefix}{rest}"),
    }
}

fn host_only(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(']') => h,
        _ => host,
    }
}

fn is_default_port(scheme: &str, port: u16) -> bool {
    (scheme == "http" && port == 80) || (scheme == "https" && port == 443)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_rewrites_keep_the_rest_of_the_path() {
        let m = PathMod::Prefix("/v2".into());
        assert_eq!(m.apply("/api/items/1", Some("/api")), "/v2/items/1");
        assert_eq!(m.apply("/api", Some("/api")), "/v2");
        assert_eq!(m.apply("/api/", Some("/api")), "/v2/");
        let root = PathMod::Prefix("/".into());
        assert_eq!(root.apply("/api/items", Some("/api")), "/items");
    }

    #[test]
    fn redirects_build_a_location() {
        let r = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            port: None,
            path: None,
            status: StatusCode::MOVED_PERMANENTLY,
        };
        let uri: Uri = "/a?b=1".parse().unwrap();
        assert_eq!(
            r.location("http", "shop:8080", &uri, None),
            "https://shop/a?b=1"
        );
    }
}
