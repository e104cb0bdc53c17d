use std::sync::Barrier;
use std::sync::atomic::AtomicUsize;

use http::StatusCode;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio::time::advance;
use vakt_api::Duration as ConfigDuration;
use vakt_api::config::{FailureRate, SlowCall};

use super::*;
use crate::backend::outcome::{Classifier, FailureReason};

const FAIL: Outcome = Outcome::Failure(FailureReason::Status);

fn config() -> CircuitBreaker {
    CircuitBreaker {
        consecutive_failures: Some(5),
        failure_rate: None,
        slow_call: None,
        open_for: ConfigDuration::from_secs(30),
        max_open_for: ConfigDuration::from_secs(300),
        half_open_requests: 1,
        grpc_failure_codes: vec![4, 8, 13, 14],
    }
}

fn record(b: &Breaker, outcome: Outcome, times: usize) {
    for _ in 0..times {
        b.try_acquire().expect("admitted").record(outcome);
    }
}

/// Trips `b` with consecutive failures and waits out the open period,
/// which is at most `upper`.
async fn trip_and_wait(b: &Breaker, failures: usize, upper: Duration) {
    record(b, FAIL, failures);
    assert_eq!(b.state(), BreakerState::Open);
    advance(upper).await;
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_trip_and_successes_reset() {
    let b = Breaker::new("api", &config());
    record(&b, FAIL, 4);
    record(&b, Outcome::Success, 1);
    record(&b, FAIL, 4);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().consecutive_failures, 4);
    record(&b, FAIL, 1);
    assert_eq!(b.state(), BreakerState::Open);
    let err = b.try_acquire().unwrap_err();
    assert!(err.until.is_some());
    assert_eq!(b.snapshot().rejected_total, 1);
}

#[tokio::test(start_paused = true)]
async fn no_condition_means_five_in_a_row() {
    let mut c = config();
    c.consecutive_failures = None;
    let b = Breaker::new("api", &c);
    record(&b, FAIL, 4);
    assert_eq!(b.state(), BreakerState::Closed);
    record(&b, FAIL, 1);
    assert_eq!(b.state(), BreakerState::Open);
}

fn rate_config() -> CircuitBreaker {
    let mut c = config();
    c.consecutive_failures = None;
    c.failure_rate = Some(FailureRate {
        percent: 50,
        min_requests: 20,
        window: ConfigDuration::from_secs(10),
    });
    c
}

#[tokio::test(start_paused = true)]
async fn failure_rate_needs_min_requests() {
    let b = Breaker::new("api", &rate_config());
    for _ in 0..9 {
        record(&b, FAIL, 1);
        record(&b, Outcome::Success, 1);
    }
    record(&b, FAIL, 1);
    assert_eq!(b.state(), BreakerState::Closed, "19 requests");
    record(&b, Outcome::Success, 1);
    assert_eq!(b.state(), BreakerState::Open, "10 of 20 failed");
}

#[tokio::test(start_paused = true)]
async fn failure_rate_forgets_old_failures() {
    let b = Breaker::new("api", &rate_config());
    record(&b, FAIL, 10);
    advance(Duration::from_secs(11)).await;
    record(&b, Outcome::Success, 10);
    record(&b, FAIL, 9);
    assert_eq!(b.state(), BreakerState::Closed, "9 of 19 in window");
    record(&b, Outcome::Success, 1);
    assert_eq!(b.state(), BreakerState::Closed, "9 of 20 in window");
    record(&b, FAIL, 1);
    assert_eq!(b.state(), BreakerState::Closed, "10 of 21 is below 50%");
    record(&b, FAIL, 1);
    assert_eq!(b.state(), BreakerState::Open, "11 of 22");
}

/// Holds `n` permits for `held`, then records them as successes one by
/// one, returning the state after each.
async fn hold(b: &Breaker, n: usize, held: Duration) -> Vec<BreakerState> {
    let permits: Vec<_> = (0..n).map(|_| b.try_acquire().unwrap()).collect();
    advance(held).await;
    let mut states = Vec::new();
    for p in permits {
        p.record(Outcome::Success);
        states.push(b.state());
    }
    states
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip() {
    use BreakerState::{Closed, Open};
    let mut c = config();
    c.consecutive_failures = None;
    c.slow_call = Some(SlowCall {
        threshold: ConfigDuration::from_millis(800),
        percent: 80,
        min_requests: 5,
    });
    let b = Breaker::new("api", &c);
    record(&b, Outcome::Success, 1);
    let ms = Duration::from_millis;
    assert_eq!(hold(&b, 3, ms(800)).await, [Closed; 3], "4 < min requests");
    assert_eq!(hold(&b, 1, ms(799)).await, [Closed], "3 of 5 slow");
    assert_eq!(b.snapshot().window_slow_calls, 3);
    assert_eq!(hold(&b, 1, ms(1000)).await, [Closed], "4 of 6 slow");
    let states = hold(&b, 4, ms(1000)).await;
    assert_eq!(states, [Closed, Closed, Closed, Open], "8 of 10 slow");
}

#[tokio::test(start_paused = true)]
async fn open_then_half_open_then_closed() {
    let b = Breaker::new("api", &config());
    record(&b, FAIL, 5);
    let snap = b.snapshot();
    let remaining = snap.open_remaining_ms.unwrap();
    assert!((27_000..=30_000).contains(&remaining), "{remaining}");
    advance(Duration::from_millis(26_999)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_millis(3_001)).await;
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().unwrap();
    assert!(probe.is_probe());
    assert!(b.try_acquire().is_err(), "one probe at a time");
    probe.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
    assert_eq!(b.snapshot().trips, 0);
    assert!(!b.try_acquire().unwrap().is_probe());
}

#[tokio::test(start_paused = true)]
async fn failed_probe_reopens_for_longer_up_to_the_cap() {
    let mut c = config();
    c.max_open_for = ConfigDuration::from_secs(100);
    let b = Breaker::new("api", &c);
    record(&b, FAIL, 5);
    for (trip, full) in [(2u32, 60u64), (3, 100), (4, 100)] {
        let before = b.snapshot().open_remaining_ms.unwrap();
        advance(Duration::from_millis(before + 1)).await;
        b.try_acquire().unwrap().record(FAIL);
        let snap = b.snapshot();
        assert_eq!(snap.state, BreakerState::Open);
        assert_eq!(snap.trips, trip);
        let ms = snap.open_remaining_ms.unwrap();
        assert!(ms <= full * 1000 && ms >= full * 900, "trip {trip}: {ms}");
    }
}

#[tokio::test(start_paused = true)]
async fn all_probes_must_succeed_and_neutral_frees_a_slot() {
    let mut c = config();
    c.half_open_requests = 3;
    let b = Breaker::new("api", &c);
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    let p3 = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p3);
    let p3 = b.try_acquire().expect("a dropped probe frees its slot");
    p1.record(Outcome::Success);
    p2.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    assert!(b.try_acquire().is_err(), "a succeeded probe keeps its slot");
    p3.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn one_failed_probe_reopens_and_late_results_are_ignored() {
    let mut c = config();
    c.half_open_requests = 2;
    let b = Breaker::new("api", &c);
    let stale = b.try_acquire().unwrap();
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    stale.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    p1.record(Outcome::Success);
    p2.record(FAIL);
    assert_eq!(b.state(), BreakerState::Open);
    assert_eq!(b.snapshot().trips, 2);
}

#[tokio::test(start_paused = true)]
async fn br17_client_errors_hangups_and_429_never_count() {
    let c = Classifier::default();
    let b = Breaker::new("api", &config());
    record(&b, FAIL, 4);
    for _ in 0..20 {
        b.try_acquire()
            .unwrap()
            .record(c.http_status(StatusCode::TOO_MANY_REQUESTS));
        drop(b.try_acquire().unwrap());
    }
    assert_eq!(b.snapshot().consecutive_failures, 0, "429 is an answer");
    record(&b, FAIL, 4);
    for _ in 0..20 {
        drop(b.try_acquire().unwrap());
    }
    let snap = b.snapshot();
    assert_eq!(snap.state, BreakerState::Closed);
    assert_eq!(
        snap.consecutive_failures, 4,
        "hang-ups leave the count alone"
    );
    let before = b.snapshot();
    for _ in 0..20 {
        b.try_acquire()
            .unwrap()
            .record(c.http_status(StatusCode::NOT_FOUND));
    }
    let after = b.snapshot();
    assert_eq!(after.consecutive_failures, 0);
    assert_eq!(after.window_failures, before.window_failures);
    assert_eq!(after.window_requests, before.window_requests + 20);
}

#[tokio::test(start_paused = true)]
async fn br17_a_404_probe_closes_the_breaker() {
    let c = Classifier::default();
    let b = Breaker::new("api", &config());
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    let probe = b.try_acquire().unwrap();
    probe.record(c.http_status(StatusCode::NOT_FOUND));
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn br17_a_hung_up_probe_neither_closes_nor_reopens() {
    let b = Breaker::new("api", &config());
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    drop(b.try_acquire().unwrap());
    assert_eq!(b.state(), BreakerState::HalfOpen);
    let probe = b.try_acquire().expect("slot released by the hang-up");
    probe.record(Outcome::Success);
    assert_eq!(b.state(), BreakerState::Closed);
}

/// Races `threads` OS threads for permits of a half-open breaker; returns
/// how many were granted. Permits are dropped (neutral) afterwards.
fn race(b: &Breaker, handle: &tokio::runtime::Handle, threads: usize) -> usize {
    let barrier = Barrier::new(threads);
    let granted = AtomicUsize::new(0);
    let held = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let _clock = handle.enter();
                barrier.wait();
                if let Ok(p) = b.try_acquire() {
                    granted.fetch_add(1, Ordering::SeqCst);
                    held.lock().unwrap().push(p);
                }
            });
        }
    });
    granted.into_inner()
}

#[test]
fn exactly_half_open_requests_are_granted_to_100_racing_threads() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    for n in [1u32, 3, 10] {
        let mut c = config();
        c.half_open_requests = n;
        let b = rt.block_on(async { Breaker::new("api", &c) });
        rt.block_on(trip_and_wait(&b, 5, Duration::from_secs(30)));
        for round in 0..5 {
            let granted = race(&b, rt.handle(), 100);
            assert_eq!(granted, n as usize, "n={n} round={round}");
            assert_eq!(b.snapshot().state, BreakerState::HalfOpen);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn exactly_half_open_requests_are_granted_to_100_tasks() {
    let mut c = config();
    c.half_open_requests = 2;
    let b = Breaker::new("api", &c);
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    let gate = Arc::new(tokio::sync::Barrier::new(100));
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (b, gate) = (b.clone(), gate.clone());
            tokio::spawn(async move {
                gate.wait().await;
                let permit = b.try_acquire().ok()?;
                tokio::time::sleep(Duration::from_millis(10)).await;
                permit.record(Outcome::Success);
                Some(())
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        granted += usize::from(t.await.unwrap().is_some());
    }
    assert_eq!(granted, 2);
    assert_eq!(b.state(), BreakerState::Closed);
}

#[tokio::test(start_paused = true)]
async fn transitions_are_counted_with_backend_labels() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let b = metrics::with_local_recorder(&recorder, || Breaker::new("api", &config()));
    trip_and_wait(&b, 5, Duration::from_secs(30)).await;
    b.try_acquire().unwrap().record(Outcome::Success);
    let _ = b.try_acquire();
    let mut seen = Vec::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let key = key.key();
        let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
        assert!(labels.contains(&("backend", "api")), "{key:?}");
        let to = labels.iter().find(|l| l.0 == "to").map(|l| l.1.to_owned());
        seen.push((key.name().to_owned(), to, value));
    }
    let counter = |to: &str| {
        let to = Some(to.to_owned());
        seen.iter()
            .find(|s| s.0 == "vakt_breaker_transitions_total" && s.1 == to)
            .map(|s| match s.2 {
                DebugValue::Counter(n) => n,
                _ => panic!("not a counter"),
            })
    };
    assert_eq!(counter("open"), Some(1));
    assert_eq!(counter("half-open"), Some(1));
    assert_eq!(counter("closed"), Some(1));
    let gauge = seen.iter().find(|s| s.0 == "vakt_breaker_state").unwrap();
    assert_eq!(gauge.2, DebugValue::Gauge(0.0.into()));
}
