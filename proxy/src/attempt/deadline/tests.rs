use tokio::time::advance;

use super::*;

fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.insert(*name, value.parse().unwrap());
    }
    h
}

#[test]
fn parses_every_grpc_unit() {
    let ok = |v: &str| parse_grpc_timeout(v.as_bytes()).unwrap();
    assert_eq!(ok("2H"), Duration::from_secs(7200));
    assert_eq!(ok("3M"), Duration::from_secs(180));
    assert_eq!(ok("30S"), Duration::from_secs(30));
    assert_eq!(ok("2000m"), Duration::from_secs(2));
    assert_eq!(ok("15u"), Duration::from_micros(15));
    assert_eq!(ok("99999999n"), Duration::from_nanos(99_999_999));
    assert_eq!(ok("0m"), Duration::ZERO);
    assert_eq!(ok("00000001S"), Duration::from_secs(1));
    assert_eq!(ok("99999999H"), Duration::from_secs(99_999_999 * 3600));
}

#[test]
fn refuses_malformed_grpc_timeouts() {
    for bad in [
        "",
        "S",
        "100",
        "123456789m",
        "1.5S",
        "-1S",
        "10s",
        "10 S",
        "10SS",
        "1h",
    ] {
        assert_eq!(
            parse_grpc_timeout(bad.as_bytes()),
            Err(MalformedDeadline),
            "{bad:?}"
        );
    }
}

#[test]
fn encodes_in_eight_digits_rounding_down() {
    let enc = |d: Duration| encode_grpc_timeout(d).map(|v| v.to_str().unwrap().to_owned());
    assert_eq!(enc(Duration::from_millis(1999)).as_deref(), Some("1999m"));
    assert_eq!(
        enc(Duration::from_micros(1_999_999)).as_deref(),
        Some("1999m")
    );
    assert_eq!(enc(Duration::from_micros(999)).as_deref(), Some("999u"));
    assert_eq!(enc(Duration::from_nanos(999)).as_deref(), Some("999n"));
    assert_eq!(
        enc(Duration::from_secs(100_000)).as_deref(),
        Some("100000S")
    );
    assert_eq!(
        enc(Duration::from_millis(99_999_999)).as_deref(),
        Some("99999999m")
    );
    assert_eq!(
        enc(Duration::from_secs(100_000_000)).as_deref(),
        Some("1666666M")
    );
    let huge = Duration::from_secs(99_999_999 * 3600 * 70);
    assert_eq!(enc(huge).as_deref(), Some("99999999H"));
    assert_eq!(enc(Duration::ZERO), None);
}

#[test]
fn encoding_round_trips_without_growing() {
    let mut rng = fastrand::Rng::with_seed(11);
    for _ in 0..10_000 {
        let d = Duration::from_nanos(rng.u64(1..1 << 50));
        let text = encode_grpc_timeout(d).unwrap();
        assert!(text.len() <= 9);
        let back = parse_grpc_timeout(text.as_bytes()).unwrap();
        assert!(back <= d && back > Duration::ZERO, "{d:?} -> {text:?}");
    }
}

#[test]
fn parses_vakt_deadline_in_both_forms() {
    let ok = |v: &str| parse_vakt_deadline(v.as_bytes()).unwrap();
    assert_eq!(ok("1500"), Duration::from_millis(1500));
    assert_eq!(ok("0"), Duration::ZERO);
    assert_eq!(ok("1500ms"), Duration::from_millis(1500));
    assert_eq!(ok("1m30s"), Duration::from_secs(90));
    for bad in ["", "soon", "1.5s", "-5", "9999999999999"] {
        assert!(parse_vakt_deadline(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_earliest_bound_wins() {
    let now = Instant::now();
    let secs = Duration::from_secs;
    let at = |h: &HeaderMap, route, max| {
        Deadline::from_request(h, now, route, max).map(|d| d.remaining(now))
    };
    let none = HeaderMap::new();
    assert_eq!(at(&none, None, Some(secs(60))), None);
    assert_eq!(at(&none, Some(secs(15)), None), Some(secs(15)));
    let grpc30 = headers(&[(&GRPC_TIMEOUT, "30S")]);
    assert_eq!(at(&grpc30, None, Some(secs(60))), Some(secs(30)), "BR-12 a");
    assert_eq!(at(&grpc30, None, Some(secs(10))), Some(secs(10)), "capped");
    assert_eq!(at(&grpc30, Some(secs(5)), None), Some(secs(5)));
    let both = headers(&[(&GRPC_TIMEOUT, "3S"), (&VAKT_DEADLINE, "2500")]);
    assert_eq!(at(&both, None, None), Some(Duration::from_millis(2500)));
    let bad = headers(&[(&GRPC_TIMEOUT, "soon"), (&VAKT_DEADLINE, "2s")]);
    assert_eq!(at(&bad, None, None), Some(secs(2)), "malformed is ignored");
}

#[tokio::test(start_paused = true)]
async fn br12_forwards_the_time_left_and_refuses_once_passed() {
    let start = Instant::now();
    let incoming = headers(&[(&GRPC_TIMEOUT, "2S")]);
    let d = Deadline::from_request(&incoming, start, None, Some(Duration::from_secs(60))).unwrap();
    advance(Duration::from_millis(37)).await;
    let mut upstream = incoming.clone();
    d.apply(&mut upstream, Instant::now(), true).unwrap();
    assert_eq!(upstream[&GRPC_TIMEOUT], "1963m");
    assert!(!upstream.contains_key(VAKT_DEADLINE));
    assert!(!d.expired(Instant::now()));
    advance(Duration::from_millis(1963)).await;
    assert!(d.expired(Instant::now()));
    let mut late = HeaderMap::new();
    assert_eq!(
        d.apply(&mut late, Instant::now(), true),
        Err(DeadlineExceeded)
    );
    assert!(late.is_empty(), "nothing written for a request not sent");
}

#[tokio::test(start_paused = true)]
async fn plain_http_carries_milliseconds() {
    let start = Instant::now();
    let d = Deadline::after(start, Duration::from_millis(1500));
    advance(Duration::from_millis(500)).await;
    let mut h = headers(&[(&VAKT_DEADLINE, "9s"), (&GRPC_TIMEOUT, "9S")]);
    d.apply(&mut h, Instant::now(), false).unwrap();
    assert_eq!(h[&VAKT_DEADLINE], "1000");
    assert_eq!(h[&GRPC_TIMEOUT], "1000m", "a larger value never travels on");
    advance(Duration::from_micros(999_500)).await;
    let mut h = HeaderMap::new();
    assert_eq!(
        d.apply(&mut h, Instant::now(), false),
        Err(DeadlineExceeded)
    );
    d.apply(&mut h, Instant::now(), true).unwrap();
    assert_eq!(h[&GRPC_TIMEOUT], "500u");
}

#[tokio::test(start_paused = true)]
async fn attempts_end_by_the_deadline_or_sooner() {
    let now = Instant::now();
    let d = Deadline::after(now, Duration::from_secs(5));
    let per_attempt = Some(Duration::from_secs(2));
    assert_eq!(
        d.attempt_end(now, per_attempt),
        now + Duration::from_secs(2)
    );
    let later = now + Duration::from_secs(4);
    assert_eq!(d.attempt_end(later, per_attempt), d.instant());
    assert_eq!(d.attempt_end(now, None), d.instant());
}
