//! Token buckets on tokio's paused clock.

use std::net::IpAddr;
use std::time::Duration;

use http::HeaderMap;
use tokio::time::advance;
use vakt_api::config::{NamedRateLimit, RateLimit, Route};

use super::*;

fn route(name: &str, rl: RateLimit) -> Route {
    Route {
        name: name.into(),
        listeners: None,
        hostnames: vec![],
        auth: None,
        rate_limit: Some(rl),
        rules: vec![],
    }
}

fn shared(policy: &str) -> RateLimit {
    RateLimit {
        policy: Some(policy.into()),
        requests_per_second: None,
        burst: None,
        key: None,
    }
}

fn inline(rps: f64, burst: u32, key: &str) -> RateLimit {
    RateLimit {
        policy: None,
        requests_per_second: Some(rps),
        burst: Some(burst),
        key: Some(key.into()),
    }
}

fn named(name: &str, rps: f64, burst: u32) -> NamedRateLimit {
    NamedRateLimit {
        name: name.into(),
        requests_per_second: rps,
        burst,
        key: "client-ip".into(),
    }
}

fn ip(s: &str) -> RateKey<'static> {
    let empty: &'static HeaderMap = Box::leak(Box::default());
    KeySource::ClientIp.key(s.parse::<IpAddr>().unwrap(), empty, None)
}

/// BR-24: one policy of 10 per 10 s with burst 10, shared by /r1 and /r2.
#[tokio::test(start_paused = true)]
async fn shared_policy_passes_exactly_the_burst_across_routes() {
    let routes = [route("r1", shared("per-ip")), route("r2", shared("per-ip"))];
    let rl = RateLimiter::from_config(&routes, &[named("per-ip", 1.0, 10)]).unwrap();
    let (r1, r2) = (rl.route("r1").unwrap(), rl.route("r2").unwrap());
    assert_eq!(r1, r2);

    let mut outcomes = Vec::new();
    for i in 0..20 {
        let id = if i < 10 { r1 } else { r2 };
        outcomes.push(rl.check(id, ip("203.0.113.7")));
        advance(Duration::from_millis(5)).await;
    }
    let passed: Vec<bool> = outcomes.iter().map(|d| d.allowed).collect();
    assert_eq!(passed, [[true; 10], [false; 10]].concat());
    let first_refused = outcomes[10];
    assert_eq!(first_refused.remaining, 0);
    // 100 ms have gone by since the burst began; the next token is due at
    // 1 s.
    assert_eq!(first_refused.retry_after, Duration::from_millis(950));

    advance(Duration::from_secs(1)).await;
    assert!(rl.check(r2, ip("203.0.113.7")).allowed);
    assert!(!rl.check(r1, ip("203.0.113.7")).allowed);
}

#[tokio::test(start_paused = true)]
async fn inline_limits_are_never_shared_between_routes() {
    let routes = [
        route("a", inline(1.0, 2, "client-ip")),
        route("b", inline(1.0, 2, "client-ip")),
        route("open", RateLimit { ..shared("x") }),
    ];
    assert!(matches!(
        RateLimiter::from_config(&routes, &[]),
        Err(RateLimitError::UnknownPolicy { .. })
    ));
    let rl = RateLimiter::from_config(&routes[..2], &[]).unwrap();
    let (a, b) = (rl.route("a").unwrap(), rl.route("b").unwrap());
    assert_ne!(a, b);
    for id in [a, b] {
        assert!(rl.check(id, ip("10.0.0.1")).allowed);
        assert!(rl.check(id, ip("10.0.0.1")).allowed);
        assert!(!rl.check(id, ip("10.0.0.1")).allowed);
    }
    assert!(rl.route("open").is_none());
}

#[tokio::test(start_paused = true)]
async fn keys_have_their_own_buckets() {
    let routes = [route("h", inline(1.0, 1, "header:x-tenant"))];
    let rl = RateLimiter::from_config(&routes, &[]).unwrap();
    let id = rl.route("h").unwrap();
    let src = rl.key_source(id).clone();
    assert_eq!(src, KeySource::Header(HeaderName::from_static("x-tenant")));
    let client: IpAddr = "10.0.0.1".parse().unwrap();

    let mut one = HeaderMap::new();
    one.insert("x-tenant", HeaderValue::from_static("one"));
    let mut two = HeaderMap::new();
    two.insert("x-tenant", HeaderValue::from_static("two"));
    let none = HeaderMap::new();
    for h in [&one, &two, &none] {
        assert!(rl.check(id, src.key(client, h, None)).allowed);
        assert!(!rl.check(id, src.key(client, h, None)).allowed);
    }
    assert_eq!(rl.tracked_keys(id), 3);

    // A v4 client and its v4-mapped v6 form are one client.
    let routes = [route("ip", inline(1.0, 1, "client-ip"))];
    let rl = RateLimiter::from_config(&routes, &[]).unwrap();
    let id = rl.route("ip").unwrap();
    assert!(rl.check(id, ip("192.0.2.1")).allowed);
    assert!(!rl.check(id, ip("::ffff:192.0.2.1")).allowed);
    assert!(rl.check(id, ip("192.0.2.2")).allowed);

    let sub = KeySource::JwtSubject;
    assert_eq!(sub.key(client, &none, Some("alice")).as_bytes(), b"alice");
}

#[tokio::test(start_paused = true)]
async fn tokens_refill_continuously() {
    let routes = [route("r", inline(100.0, 20, "client-ip"))];
    let rl = RateLimiter::from_config(&routes, &[]).unwrap();
    let id = rl.route("r").unwrap();
    for i in 0..20 {
        let d = rl.check(id, ip("10.0.0.1"));
        assert!(d.allowed);
        assert_eq!(d.remaining, 19 - i);
    }
    let refused = rl.check(id, ip("10.0.0.1"));
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Duration::from_millis(10));
    assert_eq!(refused.reset, Duration::from_millis(200));

    advance(Duration::from_millis(5)).await;
    assert!(!rl.check(id, ip("10.0.0.1")).allowed);
    advance(Duration::from_millis(5)).await;
    assert!(rl.check(id, ip("10.0.0.1")).allowed);
    assert!(!rl.check(id, ip("10.0.0.1")).allowed);

    // A long pause refills to the burst and no further.
    advance(Duration::from_secs(60)).await;
    let passed = (0..25)
        .filter(|_| rl.check(id, ip("10.0.0.1")).allowed)
        .count();
    assert_eq!(passed, 20);
}

#[tokio::test(start_paused = true)]
async fn headers_carry_limit_remaining_reset_and_retry_after() {
    let routes = [route("r", inline(0.5, 2, "client-ip"))];
    let rl = RateLimiter::from_config(&routes, &[]).unwrap();
    let id = rl.route("r").unwrap();

    let mut h = HeaderMap::new();
    rl.check(id, ip("10.0.0.1")).write_headers(&mut h);
    assert_eq!(h["ratelimit-limit"], "2");
    assert_eq!(h["ratelimit-remaining"], "1");
    assert_eq!(h["ratelimit-reset"], "2");
    assert!(h.get("retry-after").is_none());

    rl.check(id, ip("10.0.0.1"));
    advance(Duration::from_millis(500)).await;
    let refused = rl.check(id, ip("10.0.0.1"));
    let mut h = HeaderMap::new();
    refused.write_headers(&mut h);
    assert!(!refused.allowed);
    assert_eq!(refused.retry_after, Duration::from_millis(1500));
    assert_eq!(h["retry-after"], "2");
    assert_eq!(h["ratelimit-remaining"], "0");
    assert_eq!(h["ratelimit-reset"], "4");
}

#[tokio::test(start_paused = true)]
async fn idle_keys_are_evicted_and_memory_is_bounded() {
    let routes = [route("r", inline(1.0, 2, "client-ip"))];
    let rl = RateLimiter::from_config(&routes, &[]).unwrap();
    let id = rl.route("r").unwrap();
    rl.check(id, ip("10.0.0.1"));
    rl.check(id, ip("10.0.0.2"));
    rl.check(id, ip("10.0.0.2"));
    advance(Duration::from_secs(1)).await;
    assert_eq!(rl.evict_idle(), 1);
    advance(Duration::from_secs(1)).await;
    assert_eq!(rl.evict_idle(), 1);
    assert_eq!(rl.tracked_keys(id), 0);

    // Past the key cap, new keys share one overflow bucket.
    let mut rl = RateLimiter::from_config(&routes, &[]).unwrap();
    Arc::get_mut(&mut rl.policies[0]).unwrap().max_keys = 2;
    rl.check(id, ip("10.0.0.1"));
    rl.check(id, ip("10.0.0.2"));
    assert!(rl.check(id, ip("10.0.0.3")).allowed);
    assert!(rl.check(id, ip("10.0.0.4")).allowed);
    assert!(!rl.check(id, ip("10.0.0.5")).allowed);
    assert_eq!(rl.tracked_keys(id), 2);
    // Once a tracked key is idle it makes room again.
    advance(Duration::from_secs(3)).await;
    assert!(rl.check(id, ip("10.0.0.6")).allowed);
    assert!(rl.check(id, ip("10.0.0.6")).allowed);
    assert!(!rl.check(id, ip("10.0.0.6")).allowed);
}

#[tokio::test(start_paused = true)]
async fn reload_keeps_buckets_of_unchanged_policies() {
    let routes = [
        route("a", inline(1.0, 1, "client-ip")),
        route("b", inline(1.0, 1, "client-ip")),
    ];
    let old = RateLimiter::from_config(&routes, &[]).unwrap();
    for r in ["a", "b"] {
        assert!(old.check(old.route(r).unwrap(), ip("10.0.0.1")).allowed);
    }
    let changed = [
        route("a", inline(1.0, 1, "client-ip")),
        route("b", inline(1.0, 5, "client-ip")),
    ];
    let new = RateLimiter::from_config(&changed, &[])
        .unwrap()
        .carry_over(&old);
    assert!(!new.check(new.route("a").unwrap(), ip("10.0.0.1")).allowed);
    assert!(new.check(new.route("b").unwrap(), ip("10.0.0.1")).allowed);
}

#[test]
fn bad_settings_are_refused() {
    for rl in [
        inline(0.0, 1, "client-ip"),
        inline(1.0, 0, "client-ip"),
        inline(1.0, 1, "cookie"),
    ] {
        assert!(RateLimiter::from_config(&[route("r", rl)], &[]).is_err());
    }
    let half = RateLimit {
        burst: None,
        ..inline(1.0, 1, "client-ip")
    };
    assert!(RateLimiter::from_config(&[route("r", half)], &[]).is_err());
}
