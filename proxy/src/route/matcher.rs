//! Compiled request matches and their Gateway API precedence.

use std::cmp::Ordering;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use regex::Regex;
use vakt_api::config::{self, PathMatchType, ValueMatchType};

/// One compiled HTTPRoute match: every condition must hold.
#[derive(Debug)]
pub struct RequestMatch {
    path: PathCond,
    method: Option<Method>,
    headers: Vec<(HeaderName, ValueCond)>,
    query: Vec<(String, ValueCond)>,
}

#[derive(Debug)]
enum PathCond {
    Exact(String),
    /// Stored without a trailing `/`, except for the root.
    Prefix(String),
    Regex(Regex),
}

#[derive(Debug)]
enum ValueCond {
    Exact(HeaderValue),
    Regex(Regex),
}

/// What a request offers to matching, borrowed from it once.
pub struct RequestView<'a> {
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

impl RequestMatch {
    /// Compiles a match; the config was validated, so patterns compile.
    pub fn compile(m: &config::Match) -> Self {
        let path = match &m.path {
            None => PathCond::Prefix("/".into()),
            Some(p) => match p.kind {
                PathMatchType::Exact => PathCond::Exact(p.value.clone()),
                PathMatchType::PathPrefix => PathCond::Prefix(trim_prefix(&p.value)),
                PathMatchType::RegularExpression => PathCond::Regex(anchored(&p.value)),
            },
        };
        let method = m.method.as_ref().and_then(|s| s.parse().ok());
        let headers = m
            .headers
            .iter()
            .filter_map(|h| Some((h.name.parse().ok()?, value_cond(h.kind, &h.value)?)))
            .collect();
        let query = m
            .query_params
            .iter()
            .filter_map(|q| Some((q.name.clone(), value_cond(q.kind, &q.value)?)))
            .collect();
        Self {
            path,
            method,
            headers,
            query,
        }
    }

    /// The match for a rule without matches: prefix `/`.
    pub fn any() -> Self {
        Self::compile(&config::Match::default())
    }

    pub fn matches(&self, req: &RequestView<'_>) -> bool {
        self.path_matches(req.path)
            && self.method.as_ref().is_none_or(|m| m == req.method)
            && self
                .headers
                .iter()
                .all(|(n, c)| header_matches(req.headers, n, c))
            && self
                .query
                .iter()
                .all(|(n, c)| query_matches(req.query, n, c))
    }

    fn path_matches(&self, path: &str) -> bool {
        match &self.path {
            PathCond::Exact(p) => path == p,
            PathCond::Prefix(p) if p == "/" => true,
            PathCond::Prefix(p) => {
                path.starts_with(p.as_str())
                    && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
            }
            PathCond::Regex(re) => re.is_match(path),
        }
    }

    /// The prefix a `ReplacePrefixMatch` rewrite replaces.
    pub fn prefix(&self) -> Option<&str> {
        match &self.path {
            PathCond::Prefix(p) => Some(p),
            PathCond::Exact(p) => Some(p),
            PathCond::Regex(_) => None,
        }
    }

    /// Gateway API precedence: exact path, then the longest prefix, then
    /// regular expressions; then a method; then more header matches; then
    /// more query matches. `Less` means this match wins.
    pub fn precedence(&self, other: &Self) -> Ordering {
        let rank = |m: &Self| match &m.path {
            PathCond::Exact(p) => (0, usize::MAX - p.len()),
            PathCond::Prefix(p) => (1, usize::MAX - p.len()),
            PathCond::Regex(_) => (2, 0),
        };
        rank(self)
            .cmp(&rank(other))
            .then(other.method.is_some().cmp(&self.method.is_some()))
            .then(other.headers.len().cmp(&self.headers.len()))
            .then(other.query.len().cmp(&self.query.len()))
    }
}

fn trim_prefix(p: &str) -> String {
    let t = p.trim_end_matches('/');
    if t.is_empty() { "/".into() } else { t.into() }
}

fn anchored(re: &str) -> Regex {
    Regex::new(&format!("^(?:{re})$")).expect("validated")
}

fn value_cond(kind: ValueMatchType, value: &str) -> Option<ValueCond> {
    Some(match kind {
        ValueMatchType::Exact => ValueCond::Exact(value.parse().ok()?),
        ValueMatchType::RegularExpression => ValueCond::Regex(anchored(value)),
    })
}

fn header_matches(headers: &HeaderMap, name: &HeaderName, cond: &ValueCond) -> bool {
    headers.get_all(name).iter().any(|v| match cond {
        ValueCond::Exact(want) => v == want,
        ValueCond::Regex(re) => v.to_str().is_ok_and(|s| re.is_match(s)),
    })
}

fn query_matches(query: Option<&str>, name: &str, cond: &ValueCond) -> bool {
    let Some(query) = query else {
        return false;
    };
    // Gateway API: with a repeated parameter, only the first counts.
    let first = query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    });
    first.is_some_and(|v| match cond {
        ValueCond::Exact(want) => want.as_bytes() == v.as_bytes(),
        ValueCond::Regex(re) => re.is_match(v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> RequestMatch {
        let m: config::Match = serde_json::from_str(yaml).unwrap();
        RequestMatch::compile(&m)
    }

    fn view<'a>(path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            path,
            query: None,
            method,
            headers,
        }
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let m = compile(r#"{"path": {"type": "PathPrefix", "value": "/orders/"}}"#);
        let (get, h) = (Method::GET, HeaderMap::new());
        assert!(m.matches(&view("/orders", &get, &h)));
        assert!(m.matches(&view("/orders/42", &get, &h)));
        assert!(!m.matches(&view("/ordersx", &get, &h)));
        assert!(!m.matches(&view("/", &get, &h)));
    }

    #[test]
    fn regex_paths_are_anchored() {
        let m = compile(r#"{"path": {"type": "RegularExpression", "value": "/v[0-9]+/.*"}}"#);
        let (get, h) = (Method::GET, HeaderMap::new());
        assert!(m.matches(&view("/v2/items", &get, &h)));
        assert!(!m.matches(&view("/api/v2/items", &get, &h)));
    }

    #[test]
    fn precedence_follows_gateway_api() {
        let exact = compile(r#"{"path": {"type": "Exact", "value": "/a"}}"#);
        let long = compile(r#"{"path": {"type": "PathPrefix", "value": "/a/b"}}"#);
        let short = compile(r#"{"path": {"type": "PathPrefix", "value": "/a"}}"#);
        let method = compile(r#"{"path": {"type": "PathPrefix", "value": "/a"}, "method": "GET"}"#);
        let header = compile(
            r#"{"path": {"type": "PathPrefix", "value": "/a"}, "headers": [{"name": "x", "value": "1"}]}"#,
        );
        assert_eq!(exact.precedence(&long), Ordering::Less);
        assert_eq!(long.precedence(&short), Ordering::Less);
        assert_eq!(method.precedence(&short), Ordering::Less);
        assert_eq!(header.precedence(&short), Ordering::Less);
        assert_eq!(method.precedence(&header), Ordering::Less);
    }
}
