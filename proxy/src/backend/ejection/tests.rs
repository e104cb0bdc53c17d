use http::StatusCode;
use tokio::time::advance;
use vakt_api::Duration as ConfigDuration;

use super::*;
use crate::backend::outcome::{Classifier, FailureReason};

const FAIL: Outcome = Outcome::Failure(FailureReason::Reset);

fn outlier(max_percent: u32) -> OutlierDetection {
    OutlierDetection {
        consecutive_failures: 2,
        ejection_time: ConfigDuration::from_secs(30),
        max_ejection_percent: max_percent,
    }
}

fn endpoints(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("10.0.0.{i}:80")).collect()
}

fn fail(e: &Ejection, index: usize, times: usize) {
    for _ in 0..times {
        e.record(index, FAIL, Instant::now());
    }
}

fn available(e: &Ejection) -> Vec<bool> {
    (0..e.len())
        .map(|i| e.is_available(i, Instant::now()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_for_ejection_time() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(4));
    fail(&e, 0, 1);
    e.record(0, Outcome::Success, Instant::now());
    fail(&e, 0, 1);
    assert_eq!(available(&e), [true; 4], "a success resets the count");
    fail(&e, 0, 1);
    assert_eq!(available(&e), [false, true, true, true]);
    advance(Duration::from_millis(29_999)).await;
    assert!(!e.is_available(0, Instant::now()));
    advance(Duration::from_millis(1)).await;
    assert!(e.is_available(0, Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn repeat_ejections_last_longer_and_are_forgiven() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(2));
    fail(&e, 0, 2);
    advance(Duration::from_secs(30)).await;
    fail(&e, 0, 2);
    let snap = e.snapshot(Instant::now());
    assert_eq!(snap.endpoints[0].times_ejected, 2);
    assert_eq!(snap.endpoints[0].ejected_remaining_ms, Some(60_000));
    advance(Duration::from_secs(60)).await;
    fail(&e, 0, 2);
    let snap = e.snapshot(Instant::now());
    assert_eq!(snap.endpoints[0].ejected_remaining_ms, Some(90_000));
    // 60 s in service forgives two of the three.
    advance(Duration::from_secs(150)).await;
    fail(&e, 0, 2);
    let snap = e.snapshot(Instant::now());
    assert_eq!(snap.endpoints[0].times_ejected, 2);
    assert_eq!(snap.endpoints[0].ejected_remaining_ms, Some(60_000));
    assert_eq!(snap.endpoints[0].ejections_total, 4);
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(2));
    for _ in 0..15 {
        fail(&e, 0, 2);
        let left = e.snapshot(Instant::now()).endpoints[0].ejected_remaining_ms;
        assert!(left.unwrap() <= 300_000);
        advance(Duration::from_millis(left.unwrap())).await;
    }
    let snap = e.snapshot(Instant::now());
    assert_eq!(snap.endpoints[0].times_ejected, 15);
}

#[tokio::test(start_paused = true)]
async fn never_more_than_max_ejection_percent() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(4));
    for i in 0..4 {
        fail(&e, i, 5);
    }
    assert_eq!(available(&e), [false, false, true, true]);
    assert!(!e.in_panic(Instant::now()), "2 of 4 is not below half");
    advance(Duration::from_secs(30)).await;
    fail(&e, 3, 2);
    assert_eq!(available(&e), [true, true, true, false]);
}

#[tokio::test(start_paused = true)]
async fn br20_all_ejected_means_all_used() {
    let e = Ejection::new("api", Some(&outlier(100)), &endpoints(3));
    let c = Classifier::default();
    let not_implemented = c.http_status(StatusCode::NOT_IMPLEMENTED);
    for _ in 0..100 {
        for i in 0..3 {
            e.record(i, not_implemented, Instant::now());
        }
    }
    let now = Instant::now();
    assert_eq!(e.up_count(now), 0);
    assert!(e.in_panic(now));
    assert_eq!(available(&e), [true; 3], "panic: traffic goes to all");
    let snap = e.snapshot(now);
    assert!(snap.panic);
    assert!(snap.endpoints.iter().all(|p| p.ejections_total > 0));
    assert!(
        snap.endpoints
            .iter()
            .all(|p| p.ejected_remaining_ms.is_some())
    );
}

#[tokio::test(start_paused = true)]
async fn panic_only_when_none_is_in() {
    let e = Ejection::new("api", Some(&outlier(100)), &endpoints(4));
    fail(&e, 0, 2);
    assert_eq!(available(&e), [false, true, true, true]);
    fail(&e, 1, 2);
    assert_eq!(available(&e), [false, false, true, true], "2 of 4 in");
    fail(&e, 2, 2);
    assert_eq!(available(&e), [false, false, false, true], "1 of 4 in");
    assert!(!e.in_panic(Instant::now()));
    fail(&e, 3, 2);
    assert_eq!(available(&e), [true; 4], "none in: panic");
    assert!(e.in_panic(Instant::now()));
    advance(Duration::from_secs(30)).await;
    assert_eq!(available(&e), [true; 4]);
    assert!(!e.in_panic(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn client_errors_and_neutral_outcomes_do_not_eject() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(2));
    let c = Classifier::default();
    for code in [400, 404, 429] {
        let status = StatusCode::from_u16(code).unwrap();
        fail(&e, 0, 1);
        e.record(0, c.http_status(status), Instant::now());
        e.record(0, Outcome::Neutral, Instant::now());
    }
    assert_eq!(available(&e), [true, true]);
    assert_eq!(
        e.snapshot(Instant::now()).endpoints[0].consecutive_failures,
        0
    );
}

#[tokio::test(start_paused = true)]
async fn health_and_fleet_marks_take_endpoints_out_and_back() {
    let e = Ejection::new("api", None, &endpoints(3));
    fail(&e, 0, 10);
    assert_eq!(available(&e), [true; 3], "no outlier detection");
    e.set_health(0, false);
    assert_eq!(available(&e), [false, true, true]);
    e.set_fleet(1, false);
    assert_eq!(available(&e), [false, false, true], "1 of 3 in");
    e.set_health(2, false);
    assert_eq!(available(&e), [true; 3], "none in: panic");
    e.set_health(2, true);
    e.set_health(0, true);
    assert_eq!(available(&e), [true, false, true]);
    let snap = e.snapshot(Instant::now());
    assert!(!snap.endpoints[1].fleet_healthy && snap.endpoints[1].healthy);
    e.set_fleet(1, true);
    assert_eq!(available(&e), [true; 3]);
    assert!(!e.is_available(3, Instant::now()), "no such endpoint");
    e.set_health(7, false);
}

#[tokio::test(start_paused = true)]
async fn snapshot_serializes_for_backends() {
    let e = Ejection::new("api", Some(&outlier(50)), &endpoints(2));
    fail(&e, 1, 2);
    let json = serde_json::to_value(e.snapshot(Instant::now())).unwrap();
    assert_eq!(json["panic"], false);
    assert_eq!(json["endpoints"][1]["address"], "10.0.0.2:80");
    assert_eq!(json["endpoints"][1]["ejectedRemainingMs"], 30_000);
    assert_eq!(json["endpoints"][1]["available"], false);
    assert!(json["endpoints"][0].get("ejectedRemainingMs").is_none());
}
