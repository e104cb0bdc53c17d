//! A Prometheus text-format scrape of the proxy's admin `/metrics`, and
//! lookups by name and labels.

use std::net::SocketAddr;

use super::ClientError;

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    /// Whether every `(name, value)` pair is among this sample's labels.
    pub fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.iter().any(|(n, x)| n == k && x == v))
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        let found = self.labels.iter().find(|(n, _)| n == name);
        found.map(|(_, v)| v.as_str())
    }
}

/// Every sample of one scrape.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    pub samples: Vec<Sample>,
}

impl Metrics {
    /// Parses Prometheus text; comment and malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let samples = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .filter_map(parse_line)
            .collect();
        Self { samples }
    }

    /// Samples of series `name` that carry all of `labels`.
    pub fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has(labels))
    }

    /// The value of the first sample of `name` that carries all of
    /// `labels` (other labels may differ).
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.find(name, labels).next().map(|s| s.value)
    }

    /// The sum over every sample of `name` that carries all of `labels`;
    /// 0 when there is none.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).map(|s| s.value).sum()
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.find(name, &[]).next().is_some()
    }
}

/// `GET /metrics` from an admin listener, parsed.
pub async fn scrape(admin: SocketAddr) -> Result<Metrics, ClientError> {
    let resp = super::http::get(admin, "/metrics").await?;
    if !resp.status.is_success() {
        let why = format!("/metrics answered {}", resp.status);
        return Err(ClientError::Malformed(why));
    }
    Ok(Metrics::parse(&resp.text()))
}

fn parse_line(line: &str) -> Option<Sample> {
    let (name, labels, rest) = match line.find('{') {
        Some(open) => {
            let (labels, used) = parse_labels(&line[open + 1..])?;
            (&line[..open], labels, &line[open + 1 + used..])
        }
        None => {
            let (name, rest) = line.split_once(char::is_whitespace)?;
            (name, Vec::new(), rest)
        }
    };
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.trim().to_owned(),
        labels,
        value,
    })
}

/// Parses `a="x",b="y"}`; returns the labels and the bytes used,
/// closing brace included.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, usize)> {
    let mut labels = Vec::new();
    let mut chars = s.char_indices().peekable();
    loop {
        while chars
            .next_if(|(_, c)| *c == ',' || c.is_whitespace())
            .is_some()
        {}
        let (i, c) = chars.next()?;
        if c == '}' {
            return Some((labels, i + 1));
        }
        let mut name = String::from(c);
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=') {
            name.push(c);
        }
        chars.next()?; // '='
        if chars.next()?.1 != '"' {
            return None;
        }
        let mut value = String::new();
        loop {
            match chars.next()?.1 {
                '"' => break,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                c => value.push(c),
            }
        }
        labels.push((name.trim().to_owned(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_series_by_name_and_labels() {
        let text = "# HELP vakt_requests_total Requests.\n\
            # TYPE vakt_requests_total counter\n\
            vakt_requests_total{listener=\"main\",route=\"a\",code=\"200\"} 3\n\
            vakt_requests_total{listener=\"main\",route=\"b\",code=\"503\"} 2\n\
            vakt_up 1\n\
            weird{msg=\"a \\\"q\\\", b\"} 7 1700000000\n";
        let m = Metrics::parse(text);
        assert_eq!(m.get("vakt_requests_total", &[("route", "a")]), Some(3.0));
        assert_eq!(m.sum("vakt_requests_total", &[("listener", "main")]), 5.0);
        assert_eq!(m.get("vakt_requests_total", &[("route", "c")]), None);
        assert_eq!(m.get("vakt_up", &[]), Some(1.0));
        assert_eq!(m.get("weird", &[("msg", "a \"q\", b")]), Some(7.0));
    }
}
