//! Route lookup cost: a table of 60 routes over 3 hostname kinds, looked
//! up for hits at the front, the back and misses.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Method};
use vakt_proxy::route::{RequestView, RouteTable};

fn config() -> vakt_api::Config {
    let mut yaml = String::from("listeners: [{name: outbound, address: 127.0.0.1:1}]\nroutes:\n");
    for i in 0..60 {
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

fn lookup(c: &mut Criterion) {
    let config = config();
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
    let table = RouteTable::build(&config, &listeners, &backends, &HashMap::new());
    let headers = HeaderMap::new();
    let get = Method::GET;
    let view = |path| RequestView {
        path,
        query: None,
        method: &get,
        headers: &headers,
    };

    c.bench_function("route/exact-host-prefix-hit", |b| {
        b.iter(|| table.find(0, black_box("svc57"), &view(black_box("/api/v57/items/1"))))
    });
    c.bench_function("route/wildcard-host-fallthrough", |b| {
        b.iter(|| table.find(0, black_box("a.svc58.example"), &view(black_box("/other"))))
    });
    c.bench_function("route/miss", |b| {
        b.iter(|| table.find(0, black_box("nowhere"), &view(black_box("/x"))))
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);
