//! Routing through the real `vakt-proxy`: Gateway API precedence between
//! rules and hostnames, listener-bound routes, unrouted requests and
//! weights, each observed at the client and at the upstreams. The HTTPRoute
//! filters are in `route_filters.rs`.

use std::collections::HashMap;
use std::time::Duration;

use http::Request;
use vakt_tests::body::empty;
use vakt_tests::client::HttpClient;
use vakt_tests::example::ExampleConfig;
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::upstream::Upstream;

const T: Duration = Duration::from_secs(10);

/// Starts one example service per name on the address `${name}` stands
/// for in `config`, then the proxy.
async fn mesh(config: &str, names: &[&str]) -> (Proxy, Vec<Upstream>) {
    let mut builder = ProxyBuilder::yaml(config);
    let mut ups = Vec::new();
    for name in names {
        let addr = builder.addr(name);
        ups.push(Upstream::example_at(addr, ExampleConfig::named(*name)).await);
    }
    let proxy = builder.start().await.expect("proxy starts");
    (proxy, ups)
}

/// Which example service answered, or `status N` for anything else.
async fn served_by(c: &mut HttpClient, req: Request<vakt_tests::body::BoxBody>) -> String {
    let what = format!("{} {}", req.method(), req.uri());
    let r = tokio::time::timeout(T, c.send(req))
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within {T:?}"))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    match (r.status.as_u16(), r.header("x-served-by")) {
        (200, Some(name)) => name.to_owned(),
        (code, _) => format!("status {code}"),
    }
}

fn get(host: &str, path: &str) -> Request<vakt_tests::body::BoxBody> {
    Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap()
}

const PATHS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: paths
    rules:
      - matches: [{path: {type: PathPrefix, value: /}}]
        backendRefs: [{name: root}]
      - matches: [{path: {type: PathPrefix, value: /api}}]
        backendRefs: [{name: api}]
      - matches: [{path: {type: PathPrefix, value: /api/v1}}]
        backendRefs: [{name: v1}]
      - matches: [{path: {type: Exact, value: /api/v1/users}}]
        backendRefs: [{name: users}]
backends:
  - {name: root, endpoints: ["${root}"]}
  - {name: api, endpoints: ["${api}"]}
  - {name: v1, endpoints: ["${v1}"]}
  - {name: users, endpoints: ["${users}"]}
"#;

#[tokio::test]
async fn exact_path_beats_prefix_and_longest_prefix_wins() {
    let (proxy, _ups) = mesh(PATHS, &["root", "api", "v1", "users"]).await;
    // Rules are listed least specific first, so config order alone would
    // send everything to `root`.
    let cases = [
        ("/api/v1/users", "users"),
        ("/api/v1/users/7", "v1"),
        ("/api/v1/users?x=1", "users"),
        ("/api/v1", "v1"),
        ("/api/v1/", "v1"),
        ("/api/v1x", "api"),
        ("/api/other", "api"),
        ("/api", "api"),
        ("/apix", "root"),
        ("/", "root"),
    ];
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        for (path, want) in cases {
            let got = served_by(&mut c, get("svc", path)).await;
            assert_eq!(got, want, "GET {path} went to the wrong rule");
        }
    }
}

const CONDITIONS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: conditions
    rules:
      - matches: [{path: {value: /x}}]
        backendRefs: [{name: plain}]
      - matches: [{path: {value: /x}, queryParams: [{name: v, value: "2"}]}]
        backendRefs: [{name: query}]
      - matches: [{path: {value: /x}, headers: [{name: x-canary, value: "1"}]}]
        backendRefs: [{name: header}]
      - matches:
          - path: {value: /x}
            headers: [{name: x-canary, value: "1"}, {name: x-team, value: red}]
        backendRefs: [{name: twoheaders}]
      - matches: [{path: {value: /x}, method: POST}]
        backendRefs: [{name: method}]
backends:
  - {name: plain, endpoints: ["${plain}"]}
  - {name: query, endpoints: ["${query}"]}
  - {name: header, endpoints: ["${header}"]}
  - {name: twoheaders, endpoints: ["${twoheaders}"]}
  - {name: method, endpoints: ["${method}"]}
"#;

#[tokio::test]
async fn method_header_and_query_matches_beat_plain_ones() {
    let names = ["plain", "query", "header", "twoheaders", "method"];
    let (proxy, _ups) = mesh(CONDITIONS, &names).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    let req = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "svc");
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(empty()).unwrap()
    };
    let canary = ("x-canary", "1");
    let cases = [
        (req("GET", "/x", &[]), "plain"),
        (req("GET", "/x?v=2", &[]), "query"),
        (req("GET", "/x?v=3", &[]), "plain"),
        (req("GET", "/x", &[canary]), "header"),
        (req("GET", "/x", &[("x-canary", "2")]), "plain"),
        // More header matches beat fewer; headers beat query parameters.
        (req("GET", "/x", &[canary, ("x-team", "red")]), "twoheaders"),
        (req("GET", "/x?v=2", &[canary]), "header"),
        // A method match beats header and query matches.
        (
            req("POST", "/x?v=2", &[canary, ("x-team", "red")]),
            "method",
        ),
        (req("POST", "/x", &[]), "method"),
    ];
    for (request, want) in cases {
        let what = format!(
            "{} {} {:?}",
            request.method(),
            request.uri(),
            request.headers()
        );
        let got = served_by(&mut c, request).await;
        assert_eq!(got, want, "{what} went to the wrong rule");
    }
}

const HOSTS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: catch-all
    rules: [{backendRefs: [{name: any}]}]
  - name: wildcard
    hostnames: ["*.example.com"]
    rules: [{backendRefs: [{name: wild}]}]
  - name: deeper-wildcard
    hostnames: ["*.eu.example.com"]
    rules: [{backendRefs: [{name: euwild}]}]
  - name: exact
    hostnames: [api.example.com]
    rules: [{backendRefs: [{name: exact}]}]
backends:
  - {name: any, endpoints: ["${any}"]}
  - {name: wild, endpoints: ["${wild}"]}
  - {name: euwild, endpoints: ["${euwild}"]}
  - {name: exact, endpoints: ["${exact}"]}
"#;

#[tokio::test]
async fn exact_host_beats_wildcard_beats_no_hostnames() {
    let (proxy, _ups) = mesh(HOSTS, &["any", "wild", "euwild", "exact"]).await;
    let cases = [
        ("api.example.com", "exact"),
        ("API.Example.COM", "exact"),
        ("api.example.com:8080", "exact"),
        ("web.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("x.eu.example.com", "euwild"),
        ("x.eu.example.com:443", "euwild"),
        // A wildcard needs at least one label before its suffix.
        ("example.com", "any"),
        ("other.org", "any"),
    ];
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        for (host, want) in cases {
            let got = served_by(&mut c, get(host, "/")).await;
            assert_eq!(got, want, "Host {host} went to the wrong route");
        }
    }
}

const TIES: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: z-listed-first
    rules:
      - matches: [{path: {value: /tie}}]
        backendRefs: [{name: first}]
      - matches: [{path: {value: /rules}}]
        backendRefs: [{name: first}]
      - matches: [{path: {value: /rules}}]
        backendRefs: [{name: second}]
  - name: a-listed-second
    rules:
      - matches: [{path: {value: /tie}}]
        backendRefs: [{name: second}]
backends:
  - {name: first, endpoints: ["${first}"]}
  - {name: second, endpoints: ["${second}"]}
"#;

#[tokio::test]
async fn config_order_breaks_ties_between_equal_matches() {
    let (proxy, _ups) = mesh(TIES, &["first", "second"]).await;
    let mut c = HttpClient::h1(proxy.listener()).await.unwrap();
    for _ in 0..5 {
        let got = served_by(&mut c, get("svc", "/tie/a")).await;
        assert_eq!(got, "first", "the route listed first must win a tie");
        let got = served_by(&mut c, get("svc", "/rules")).await;
        assert_eq!(got, "first", "the rule listed first must win a tie");
    }
}

const LISTENERS: &str = r#"
listeners:
  - name: public
    address: "${public}"
  - name: internal
    address: "${internal}"
routes:
  - name: internal-only
    listeners: [internal]
    hostnames: [svc]
    rules:
      - matches: [{path: {value: /private}}]
        backendRefs: [{name: private}]
  - name: everywhere
    hostnames: [svc]
    rules:
      - matches: [{path: {value: /open}}]
        backendRefs: [{name: open}]
backends:
  - {name: private, endpoints: ["${private}"]}
  - {name: open, endpoints: ["${open}"]}
"#;

#[tokio::test]
async fn listeners_key_restricts_a_route_to_its_listeners() {
    let (proxy, ups) = mesh(LISTENERS, &["private", "open"]).await;
    let mut public = HttpClient::h1(proxy.listener_named("public"))
        .await
        .unwrap();
    let mut internal = HttpClient::h1(proxy.listener_named("internal"))
        .await
        .unwrap();

    let r = public.get("svc", "/private").await.unwrap();
    assert_eq!(
        r.status, 404,
        "a route bound to `internal` answered on `public`"
    );
    assert_eq!(r.header("vakt-error"), Some("no-route"));
    assert_eq!(
        ups[0].request_count(),
        0,
        "private backend reached from public"
    );

    assert_eq!(
        served_by(&mut internal, get("svc", "/private")).await,
        "private"
    );
    assert_eq!(served_by(&mut public, get("svc", "/open")).await, "open");
    assert_eq!(served_by(&mut internal, get("svc", "/open")).await, "open");
}

#[tokio::test]
async fn no_matching_route_is_404_no_route_and_reaches_nobody() {
    let config = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: only
    hostnames: [svc]
    rules:
      - matches: [{path: {type: Exact, value: /here}}]
        backendRefs: [{name: only}]
backends:
  - {name: only, endpoints: ["${only}"]}
"#;
    let (proxy, ups) = mesh(config, &["only"]).await;
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        for (host, path) in [("other", "/here"), ("svc", "/there"), ("svc", "/here/x")] {
            let r = c.get(host, path).await.unwrap();
            assert_eq!(r.status, 404, "{host}{path}: {}", r.text());
            assert_eq!(
                r.header("vakt-error"),
                Some("no-route"),
                "{host}{path}: proxy-made 404 without its reason"
            );
        }
        assert_eq!(served_by(&mut c, get("svc", "/here")).await, "only");
    }
    assert_eq!(
        ups[0].request_count(),
        2,
        "only the matching requests arrive"
    );
}

const WEIGHTS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: split
    rules:
      - backendRefs:
          - {name: heavy, weight: 90}
          - {name: light, weight: 10}
          - {name: disabled, weight: 0}
backends:
  - {name: heavy, endpoints: ["${heavy}"]}
  - {name: light, endpoints: ["${light}"]}
  - {name: disabled, endpoints: ["${disabled}"]}
"#;

#[tokio::test]
async fn weights_split_traffic_and_weight_zero_gets_nothing() {
    let (proxy, ups) = mesh(WEIGHTS, &["heavy", "light", "disabled"]).await;
    let listener = proxy.listener();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut c = HttpClient::h1(listener).await.unwrap();
                let mut seen: HashMap<String, usize> = HashMap::new();
                for _ in 0..250 {
                    *seen
                        .entry(served_by(&mut c, get("svc", "/")).await)
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for t in tasks {
        for (k, v) in t.await.unwrap() {
            *seen.entry(k).or_default() += v;
        }
    }
    let heavy = seen.get("heavy").copied().unwrap_or(0);
    let light = seen.get("light").copied().unwrap_or(0);
    assert_eq!(
        heavy + light,
        1000,
        "every request answered by a weighted backend: {seen:?}"
    );
    // 90/10 over 1000: the standard deviation is about 9.5, so +-50 is
    // more than five of them.
    assert!((850..=950).contains(&heavy), "90/10 split gave {seen:?}");
    assert_eq!(ups[2].request_count(), 0, "a weight-0 backend got traffic");
}
