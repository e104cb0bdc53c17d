//! The four HTTPRoute filters through the real `vakt-proxy`: request and
//! response header modifiers, redirects and URL rewrites, each observed at
//! the client and at the upstream.

use std::time::Duration;

use http::Request;
use vakt_tests::body::empty;
use vakt_tests::client::{Collected, HttpClient};
use vakt_tests::example::{Echoed, ExampleConfig};
use vakt_tests::proxy::{Proxy, ProxyBuilder};
use vakt_tests::server::handler;
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

#[tokio::test]
async fn request_header_modifier_reaches_the_upstream() {
    let config = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: mod
    rules:
      - filters:
          - type: RequestHeaderModifier
            requestHeaderModifier:
              set: [{name: x-set, value: by-proxy}, {name: x-new, value: fresh}]
              add: [{name: x-add, value: two}]
              remove: [x-drop]
        backendRefs: [{name: up}]
backends:
  - {name: up, endpoints: ["${up}"]}
"#;
    let (proxy, ups) = mesh(config, &["up"]).await;
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        let req = Request::get("/echo")
            .header("host", "svc")
            .header("x-set", "from-client")
            .header("x-set", "again")
            .header("x-add", "one")
            .header("x-drop", "secret")
            .header("x-keep", "k")
            .body(empty())
            .unwrap();
        let r = c.send(req).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        let e: Echoed = r.json().unwrap();
        assert_eq!(
            e.header_all("x-set"),
            ["by-proxy"],
            "set must replace every value"
        );
        assert_eq!(
            e.header_all("x-new"),
            ["fresh"],
            "set adds a missing header"
        );
        assert_eq!(e.header_all("x-add"), ["one", "two"], "add must append");
        assert!(e.header_all("x-drop").is_empty(), "remove must drop x-drop");
        assert_eq!(e.header_all("x-keep"), ["k"]);
    }
    assert_eq!(ups[0].request_count(), 2);
}

#[tokio::test]
async fn response_header_modifier_changes_what_the_client_gets() {
    let config = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: mod
    rules:
      - filters:
          - type: ResponseHeaderModifier
            responseHeaderModifier:
              set: [{name: x-resp-set, value: by-proxy}]
              add: [{name: x-resp-add, value: two}]
              remove: [x-resp-drop]
        backendRefs: [{name: up}]
backends:
  - {name: up, endpoints: ["${up}"]}
"#;
    let mut builder = ProxyBuilder::yaml(config);
    let addr = builder.addr("up");
    let h = handler(|_req| async {
        http::Response::builder()
            .header("x-resp-set", "from-upstream")
            .header("x-resp-add", "one")
            .header("x-resp-drop", "secret")
            .header("x-resp-keep", "k")
            .body(vakt_tests::body::full("ok"))
            .unwrap()
    });
    let _up = Upstream::start_at(addr, h).await;
    let proxy = builder.start().await.unwrap();
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        let r = c.get("svc", "/").await.unwrap();
        assert_eq!(r.status, 200);
        let all = |n: &str| -> Vec<&str> {
            r.headers
                .get_all(n)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect()
        };
        assert_eq!(all("x-resp-set"), ["by-proxy"]);
        assert_eq!(all("x-resp-add"), ["one", "two"]);
        assert!(all("x-resp-drop").is_empty(), "x-resp-drop not removed");
        assert_eq!(all("x-resp-keep"), ["k"]);
        assert_eq!(r.text(), "ok");
    }
}

const REDIRECTS: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: moved
    hostnames: [old.example.com]
    rules:
      - matches: [{path: {value: /old}}]
        filters:
          - type: RequestRedirect
            requestRedirect:
              scheme: https
              hostname: new.example.com
              path: {type: ReplacePrefixMatch, replacePrefixMatch: /new}
              statusCode: 301
        backendRefs: [{name: up}]
      - matches: [{path: {value: /port}}]
        filters:
          - type: RequestRedirect
            requestRedirect: {port: 8443, path: {type: ReplaceFullPath, replaceFullPath: /landing}}
        backendRefs: [{name: up}]
backends:
  - {name: up, endpoints: ["${up}"]}
"#;

#[tokio::test]
async fn request_redirect_answers_without_reaching_the_upstream() {
    let (proxy, ups) = mesh(REDIRECTS, &["up"]).await;
    for mut c in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ] {
        let r = c.get("old.example.com", "/old/page?q=1").await.unwrap();
        assert_eq!(r.status, 301);
        assert_eq!(
            r.header("location"),
            Some("https://new.example.com/new/page?q=1")
        );
        let r = c.get("old.example.com:8080", "/port/x").await.unwrap();
        assert_eq!(r.status, 302, "the default redirect status is 302");
        assert_eq!(
            r.header("location"),
            Some("http://old.example.com:8443/landing"),
            "the port replaces the Host's port"
        );
    }
    assert_eq!(
        ups[0].request_count(),
        0,
        "a redirect must not be forwarded"
    );
}

const REWRITES: &str = r#"
listeners:
  - name: main
    address: "${main}"
routes:
  - name: rewrite
    hostnames: [svc]
    rules:
      - matches: [{path: {value: /api/v1}}]
        filters:
          - type: URLRewrite
            urlRewrite:
              hostname: internal.svc
              path: {type: ReplacePrefixMatch, replacePrefixMatch: /v2}
        backendRefs: [{name: up}]
      - matches: [{path: {value: /strip}}]
        filters:
          - type: URLRewrite
            urlRewrite: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}
        backendRefs: [{name: up}]
      - matches: [{path: {value: /full}}]
        filters:
          - type: URLRewrite
            urlRewrite: {path: {type: ReplaceFullPath, replaceFullPath: /fixed}}
        backendRefs: [{name: up}]
backends:
  - {name: up, endpoints: ["${up}"]}
"#;

#[tokio::test]
async fn url_rewrite_replaces_prefix_full_path_and_hostname() {
    let (proxy, ups) = mesh(REWRITES, &["up"]).await;
    // Gateway API's table for ReplacePrefixMatch: a trailing `/` after
    // the matched prefix is kept (`/foo/` with `/xyz` gives `/xyz/`).
    let cases = [
        ("/api/v1/items?x=1", "/v2/items?x=1", "internal.svc"),
        ("/api/v1", "/v2", "internal.svc"),
        ("/api/v1/", "/v2/", "internal.svc"),
        ("/strip/a/b", "/a/b", "svc"),
        ("/strip", "/", "svc"),
        ("/strip/", "/", "svc"),
        ("/full/anything?k=v", "/fixed?k=v", "svc"),
    ];
    let mut wrong = Vec::new();
    for (i, mut c) in [
        HttpClient::h1(proxy.listener()).await.unwrap(),
        HttpClient::h2c(proxy.listener()).await.unwrap(),
    ]
    .into_iter()
    .enumerate()
    {
        for (sent, want_path, want_host) in cases {
            let before = ups[0].request_count();
            let r: Collected = c.get("svc", sent).await.unwrap();
            assert_eq!(r.status, 200, "{sent}: {}", r.text());
            let got = ups[0].log().wait_for(before + 1, T).await;
            let got = got.last().unwrap();
            let path = got.uri.path_and_query().map(|p| p.as_str()).unwrap_or("");
            let host = got
                .uri
                .authority()
                .map(|a| a.to_string())
                .or_else(|| got.header("host").map(str::to_owned));
            if path != want_path || host.as_deref() != Some(want_host) {
                wrong.push(format!(
                    "client {i}: {sent} became {path} for {host:?}, want {want_path} for {want_host}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "URLRewrite went wrong:\n{}",
        wrong.join("\n")
    );
}
