//! Detection of each protocol from real first bytes, one byte at a time
//! too, with the timeout on a paused clock.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::*;

const HELLO: &[u8] = &[
    0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03,
];

fn every_prefix_then(buf: &[u8]) -> Option<Detected> {
    for n in 1..buf.len() {
        if let Some(d) = classify(&buf[..n]) {
            return Some(d);
        }
    }
    classify(buf)
}

#[test]
fn an_http1_request_line_is_http1() {
    for line in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"POST /orders?id=1 HTTP/1.0\r\n",
        b"OPTIONS * HTTP/1.1\r\n",
        b"GET http://a.example/x HTTP/1.1\n",
    ] {
        assert_eq!(every_prefix_then(line), Some(Detected::Http1), "{line:?}");
    }
}

#[test]
fn an_incomplete_request_line_waits() {
    for part in [
        &b"GE"[..],
        b"GET ",
        b"GET /a",
        b"GET /a HTTP/1.",
        b"GET / HTTP/1.1\r",
    ] {
        assert_eq!(classify(part), None, "{part:?}");
    }
}

#[test]
fn the_h2_preface_is_http2() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04";
    assert_eq!(every_prefix_then(preface), Some(Detected::Http2));
    assert_eq!(classify(&preface[..23]), None);
}

#[test]
fn a_client_hello_is_tls() {
    assert_eq!(every_prefix_then(HELLO), Some(Detected::Tls));
    let mut alert = HELLO.to_vec();
    alert[5] = 0x02;
    assert_eq!(classify(&alert), Some(Detected::Tcp));
}

#[test]
fn other_bytes_are_tcp() {
    // A PostgreSQL startup message, a Redis command, lower-case text, a
    // request line of another protocol version.
    let pg = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    for bytes in [
        &pg[..],
        b"*1\r\n$4\r\nPING\r\n",
        b"get / HTTP/1.1\r\n",
        b"GET / HTTP/2.0\r\n",
        b"GET  / HTTP/1.1\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ] {
        assert_eq!(every_prefix_then(bytes), Some(Detected::Tcp), "{bytes:?}");
    }
}

#[tokio::test]
async fn bytes_over_a_socket_decide_and_stay_for_the_reader() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    let task = tokio::spawn(async move {
        for b in b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n" {
            client.write_all(&[*b]).await.unwrap();
            tokio::task::yield_now().await;
        }
        client
    });
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
    assert_eq!(got, (Detected::Http1, Ended::Decided));
    assert!(buf.starts_with(b"GET /x HTTP/1.1\r\n"));
    drop(task.await.unwrap());
}

#[tokio::test(start_paused = true)]
async fn a_silent_client_is_tcp_after_the_timeout() {
    let (_client, mut server) = tokio::io::duplex(1024);
    let started = tokio::time::Instant::now();
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_millis(500)).await;
    assert_eq!(got, (Detected::Tcp, Ended::Timeout));
    assert_eq!(started.elapsed(), Duration::from_millis(500));
    assert!(buf.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_byte_past_the_timeout_is_http() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"P").await.unwrap();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = client.write_all(b"OST / HTTP/1.1\r\n\r\n").await;
        client
    });
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
    assert_eq!(got, (Detected::Http1, Ended::Timeout));
    assert_eq!(buf, b"P");
}

#[tokio::test(start_paused = true)]
async fn a_request_line_cut_by_the_timeout_is_http_with_its_bytes_kept() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"GET /slow").await.unwrap();
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
    assert_eq!(got, (Detected::Http1, Ended::Timeout));
    assert_eq!(buf, b"GET /slow");
}

#[tokio::test(start_paused = true)]
async fn a_preface_cut_by_the_timeout_is_http2() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"PRI * HTTP/2").await.unwrap();
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
    assert_eq!(got, (Detected::Http2, Ended::Timeout));
}

#[tokio::test(start_paused = true)]
async fn a_client_hello_cut_by_the_timeout_is_tcp() {
    for first in [&HELLO[..1], &HELLO[..3], &HELLO[..5]] {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(first).await.unwrap();
        let mut buf = Vec::new();
        let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
        assert_eq!(got, (Detected::Tcp, Ended::Timeout), "{first:?}");
        drop(client);
    }
}

#[tokio::test]
async fn a_client_that_closes_early_is_tcp() {
    let (mut client, mut server) = tokio::io::duplex(1024);
    client.write_all(b"GE").await.unwrap();
    drop(client);
    let mut buf = Vec::new();
    let got = detect(&mut server, &mut buf, Duration::from_secs(1)).await;
    assert_eq!(got, (Detected::Tcp, Ended::Closed));
    assert_eq!(buf, b"GE");
}

#[test]
fn an_overlong_request_line_stops_at_the_cap() {
    let mut line = b"GET /".to_vec();
    line.resize(MAX_DETECT_BYTES, b'a');
    assert_eq!(classify(&line), None);
}

#[test]
fn a_decision_never_changes_as_more_bytes_arrive() {
    let seeds: [&[u8]; 5] = [
        b"GET /a HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        HELLO,
        b"*1\r\n$4\r\nPING\r\n",
        b"",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    for round in 0..2_000 {
        let mut bytes = seeds[round % seeds.len()].to_vec();
        // Cut, flip one byte, and extend with noise.
        bytes.truncate(rng.usize(..=bytes.len()));
        if !bytes.is_empty() && rng.bool() {
            let i = rng.usize(..bytes.len());
            bytes[i] = rng.u8(..);
        }
        bytes.extend((0..rng.usize(..40)).map(|_| rng.u8(..)));
        let mut decided = None;
        for n in 1..=bytes.len() {
            match (decided, classify(&bytes[..n])) {
                (None, d) => decided = d,
                (Some(a), b) => assert_eq!(Some(a), b, "{bytes:?} at {n}"),
            }
        }
    }
}
