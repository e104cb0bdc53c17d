//! The per-request decisions besides routing: breaker admission and its
//! record, the balancer's pick among three endpoints, the retry budget's
//! deposit and check, and recording a request's metrics (with the
//! Prometheus recorder installed, as in the proxy).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vakt_proxy::attempt::budget::Budget;
use vakt_proxy::backend::Backend;
use vakt_proxy::backend::breaker::Breaker;
use vakt_proxy::backend::outcome::Outcome;
use vakt_proxy::telemetry::metrics::{self, RequestMetrics};

fn backend(yaml: &str) -> vakt_api::config::Backend {
    let text = format!("listeners: [{{name: l, address: 127.0.0.1:1}}]\nbackends:\n  - {yaml}\n");
    vakt_api::load_str(&text)
        .expect("bench config loads")
        .backends
        .remove(0)
}

fn decisions(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _enter = rt.enter();

    let config = backend(
        "{name: b, endpoints: [127.0.0.1:9001, 127.0.0.1:9002, 127.0.0.1:9003], circuitBreaker: {consecutiveFailures: 5}, outlierDetection: {consecutiveFailures: 3}}",
    );
    let breaker = Breaker::new("b", config.circuit_breaker.as_ref().expect("breaker"));
    c.bench_function("breaker/admit-and-record-success", |b| {
        b.iter(|| {
            let permit = breaker.try_acquire().expect("closed");
            permit.record(black_box(Outcome::Success));
        })
    });

    let backend = Backend::new(&config).expect("backend");
    c.bench_function("balancer/p2c-ewma-pick-of-3", |b| {
        b.iter(|| {
            let set = backend.endpoints();
            backend.pick(black_box(&set), None)
        })
    });

    let budget = Budget::new("b", &config.retry_budget);
    c.bench_function("budget/deposit-and-check", |b| {
        b.iter(|| {
            budget.deposit();
            black_box(budget.try_withdraw())
        })
    });

    let _handle = metrics::install().expect("recorder");
    let request = RequestMetrics::new("outbound", "route", "b");
    c.bench_function("metrics/record-200", |b| {
        b.iter(|| request.record(black_box(200), black_box(Duration::from_micros(250))))
    });
}

criterion_group!(benches, decisions);
criterion_main!(benches);
