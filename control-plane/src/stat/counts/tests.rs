use std::time::Duration;

use super::*;

const BEFORE: &str = r#"# TYPE vakt_requests_total counter
vakt_requests_total{listener="outbound",route="orders",backend="orders-v1",code="200"} 10
vakt_requests_total{listener="outbound",route="",backend="",code="404"} 4
# TYPE vakt_request_duration_seconds histogram
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="0.05"} 10
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="0.1"} 10
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="+Inf"} 10
vakt_request_duration_seconds_sum{listener="outbound",route="orders",backend="orders-v1",code_class="2xx"} 0.1
vakt_request_duration_seconds_count{listener="outbound",route="orders",backend="orders-v1",code_class="2xx"} 10
"#;

const NOW: &str = r#"# TYPE vakt_requests_total counter
vakt_requests_total{listener="outbound",route="orders",backend="orders-v1",code="200"} 40
vakt_requests_total{listener="outbound",route="orders",backend="orders-v1",code="503"} 10
vakt_requests_total{listener="outbound",route="",backend="",code="404"} 9
# TYPE vakt_request_duration_seconds histogram
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="0.05"} 10
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="0.1"} 50
vakt_request_duration_seconds_bucket{listener="outbound",route="orders",backend="orders-v1",code_class="2xx",le="+Inf"} 50
"#;

fn totals(text: &str) -> Totals {
    let mut t = Totals::default();
    t.add_text(text).unwrap();
    t
}

#[test]
fn a_window_shows_rate_success_and_p99_of_what_changed() {
    let w = Window::between(&totals(BEFORE), &totals(NOW), Duration::from_secs(2));
    let route = &w.rows[&(Kind::Route, "orders".into())];
    assert_eq!(route.requests, 40.0);
    assert_eq!(w.rate(route), 20.0);
    assert_eq!(success(route), Some(0.75));
    // All 40 new requests took between 50 and 100 ms.
    let p99 = quantile(0.99, &route.buckets).unwrap();
    assert!((p99 - 0.0995).abs() < 1e-9, "{p99}");
    assert_eq!(w.rows[&(Kind::Backend, "orders-v1".into())], *route);
    assert_eq!(w.rows.len(), 2, "unrouted requests have no row");

    let table = w.render();
    let line = table.lines().find(|l| l.starts_with("orders ")).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells, ["orders", "20.0", "75.0%", "99.5ms"]);
}

#[test]
fn a_restarted_proxy_counts_from_zero() {
    let w = Window::between(&totals(NOW), &totals(BEFORE), Duration::from_secs(1));
    let route = &w.rows[&(Kind::Route, "orders".into())];
    assert_eq!(route.requests, 10.0);
    assert_eq!(success(route), Some(1.0));
}

#[test]
fn quantiles_follow_histogram_quantile() {
    let b = |pairs: &[(f64, f64)]| pairs.iter().map(|(l, c)| (Bound(*l), *c)).collect();
    let h = b(&[(1.0, 0.0), (2.5, 10.0), (f64::INFINITY, 10.0)]);
    assert_eq!(quantile(0.5, &h), Some(1.75));
    let above = b(&[(1.0, 0.0), (f64::INFINITY, 10.0)]);
    assert_eq!(quantile(0.99, &above), Some(1.0), "past the last bound");
    let empty = b(&[(1.0, 0.0), (f64::INFINITY, 0.0)]);
    assert_eq!(quantile(0.99, &empty), None);
}
