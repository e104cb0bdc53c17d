//! Trace context parsing and propagation, by the W3C spec's cases.

use super::*;

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn tracer(sample_rate: f64) -> Tracer {
    Tracer {
        sample_rate,
        #[cfg(feature = "otlp")]
        exporter: None,
    }
}

fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append((*name).clone(), HeaderValue::from_str(value).unwrap());
    }
    h
}

fn parts(v: &HeaderValue) -> Vec<String> {
    v.to_str().unwrap().split('-').map(String::from).collect()
}

#[test]
fn parses_the_spec_example() {
    let p = parse(VALID.as_bytes()).expect("valid");
    assert_eq!(p.trace_id[0], 0x4b);
    assert_eq!(p.trace_id[15], 0x36);
    assert_eq!(p.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
    assert_eq!(p.flags, 1);
}

#[test]
fn refuses_what_the_spec_calls_invalid() {
    let bad = [
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
    ];
    for v in bad {
        assert!(parse(v.as_bytes()).is_none(), "accepted {v:?}");
    }
}

#[test]
fn reads_a_later_version_by_its_first_fields() {
    let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more";
    assert!(parse(v.as_bytes()).is_some());
    let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    assert!(parse(v.as_bytes()).is_some());
}

#[test]
fn a_valid_parent_keeps_its_trace_and_gets_a_new_parent_id() {
    let t = tracer(0.0);
    let mut h = headers(&[(&TRACEPARENT, VALID), (&TRACESTATE, "a=1,b=2")]);
    let span = t.start(&h);
    span.inject(&mut h);

    let sent = parts(h.get(&TRACEPARENT).unwrap());
    assert_eq!(sent[0], "00");
    assert_eq!(sent[1], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(sent[2], "00f067aa0ba902b7");
    assert_eq!(sent[3], "01", "the caller's sampled flag holds");
    assert_eq!(h.get(&TRACESTATE).unwrap(), "a=1,b=2");
    assert_eq!(
        span.parent_id,
        Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
    );

    let mut buf = [0u8; 16];
    hex(&span.span_id, &mut buf);
    assert_eq!(sent[2].as_bytes(), buf);
}

#[test]
fn an_unsampled_parent_stays_unsampled_and_unknown_flags_are_dropped() {
    let t = tracer(1.0);
    let h = headers(&[(
        &TRACEPARENT,
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-fe",
    )]);
    let span = t.start(&h);
    assert!(!span.sampled());
    assert_eq!(span.flags, 0);
}

#[test]
fn an_invalid_or_doubled_parent_is_replaced_and_its_state_dropped() {
    let t = tracer(1.0);
    let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
    let cases = [
        headers(&[(&TRACEPARENT, zero), (&TRACESTATE, "a=1")]),
        headers(&[
            (&TRACEPARENT, VALID),
            (&TRACEPARENT, VALID),
            (&TRACESTATE, "a=1"),
        ]),
        headers(&[(&TRACESTATE, "a=1")]),
    ];
    for mut h in cases {
        let span = t.start(&h);
        assert_eq!(span.parent_id, None);
        assert!(span.sampled(), "sample rate 1 samples every new trace");
        span.inject(&mut h);
        assert_eq!(h.get_all(&TRACEPARENT).iter().count(), 1);
        let sent = h.get(&TRACEPARENT).unwrap();
        assert!(parse(sent.as_bytes()).is_some(), "{sent:?} is valid");
        assert_ne!(parts(sent)[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(h.get(&TRACESTATE).is_none());
    }
}

#[test]
fn new_traces_follow_the_sample_rate() {
    let none = tracer(0.0);
    let all = tracer(1.0);
    let h = HeaderMap::new();
    for _ in 0..100 {
        assert!(!none.start(&h).sampled());
        assert!(all.start(&h).sampled());
    }
    let half = tracer(0.5);
    let sampled = (0..2000).filter(|_| half.start(&h).sampled()).count();
    assert!(
        (800..1200).contains(&sampled),
        "{sampled} of 2000 sampled at 0.5"
    );
}

#[test]
fn new_ids_differ() {
    let t = tracer(1.0);
    let h = HeaderMap::new();
    let a = t.start(&h);
    let b = t.start(&h);
    assert_ne!(a.trace_id, b.trace_id);
    assert_ne!(a.span_id, b.span_id);
}
