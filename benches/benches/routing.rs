//! Route lookup cost as the table grows: 10, 100 and 1,000 routes over 3
//! hostname kinds (exact, wildcard, cluster-local), looked up for a hit
//! on the last exact host, a wildcard host and a miss. Flat lines across
//! the sizes mean no scan over the routes per request.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use vakt_proxy::route::{RequestView, RouteTable};

fn config(routes: usize) -> vakt_api::Config {
    let mut yaml = String::from("listeners: [{name: outbound, address: 127.0.0.1:1}]\nroutes:\n");
    for i in 0..routes {
        let host = match i % 3 {
            0 => format!("svc{i}"),
            1 => format!("\"*.svc{i}.example\""),
            _ => format!("svc{i}.ns.svc.cluster.local"),
        };
        yaml.push_str(&format!(
            "  - name: r{i}\n    hostnames: [{host}]\n    rules:\n      - matches: [{{path: {{type: PathPrefix, value: /api/v{i}}}}}, {{path: {{type: Exact, value: /health}}}}]\n        backendRefs: [{{name: b}}]\n      - backendRefs: [{{name: b}}]\n"
        ));
    }
    yaml.push_str("backends: [{name: b, endpoints: [127.0.0.1:9]}]\n");
    vakt_api::load_str(&yaml).expect("bench config loads")
}

fn table(routes: usize) -> RouteTable {
    let config = config(routes);
    let listeners: Vec<Arc<str>> = vec!["outbound".into()];
    let backends: HashMap<_, _> = config
        .backends
        .iter()
        .map(|b| {
            (
                b.name.clone(),
                vakt_proxy::backend::Backend::new(b).expect("backend"),
            )
        })
        .collect();
    RouteTable::build(&config, &listeners, &backends, &HashMap::new())
}

fn view<'a>(path: &'a str, method: &'a Method, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        path,
        query: None,
        method,
        headers,
    }
}

fn lookup(c: &mut Criterion) {
    let headers = HeaderMap::new();
    let get = Method::GET;
    let mut group = c.benchmark_group("route");
    for routes in [10usize, 100, 1_000] {
        let table = table(routes);
        // The last route of each hostname kind.
        let last = |kind: usize| (0..routes).rev().find(|i| i % 3 == kind).unwrap_or(0);
        let exact = format!("svc{}", last(0));
        let exact_path = format!("/api/v{}/items/1", last(0));
        let wild = format!("a.svc{}.example", last(1));
        assert!(
            table
                .find(0, &exact, &view(&exact_path, &get, &headers))
                .is_some()
        );
        assert!(
            table
                .find(0, &wild, &view("/other", &get, &headers))
                .is_some()
        );
        group.bench_with_input(
            BenchmarkId::new("exact-host-prefix-hit", routes),
            &routes,
            |b, _| {
                b.iter(|| {
                    table.find(
                        0,
                        black_box(&exact),
                        &view(black_box(&exact_path), &get, &headers),
                    )
                })
            },
        );
        group.bench_with_input(
            BenchmarkId::new("wildcard-host-hit", routes),
            &routes,
            |b, _| {
                b.iter(|| {
                    table.find(
                        0,
                        black_box(&wild),
                        &view(black_box("/other"), &get, &headers),
                    )
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("miss", routes), &routes, |b, _| {
            b.iter(|| {
                table.find(
                    0,
                    black_box("nowhere.example"),
                    &view(black_box("/x"), &get, &headers),
                )
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookup);
criterion_main!(benches);
