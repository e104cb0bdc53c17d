use tokio::io::AsyncReadExt;

use super::*;

/// What a server reading through [`StrictIo`] receives for `input`,
/// delivered in pieces of `chunk` bytes.
async fn through(input: &[u8], chunk: usize) -> Vec<u8> {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let input = input.to_vec();
    let writer = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for piece in input.chunks(chunk) {
            client.write_all(piece).await.unwrap();
            tokio::task::yield_now().await;
        }
        client.shutdown().await.unwrap();
    });
    let mut io = StrictIo::new(server, 16 * 1024, std::time::Duration::from_secs(10));
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    // A refused connection never reads on: stop when nothing more comes.
    loop {
        let read = tokio::time::timeout(std::time::Duration::from_millis(200), io.read(&mut buf));
        match read.await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("{e}"),
        }
    }
    writer.abort();
    out
}

fn refused(out: &[u8]) -> bool {
    String::from_utf8_lossy(out).contains(REJECT_HEADER)
}

#[tokio::test]
async fn plain_requests_pass_unchanged() {
    let input = b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nPOST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    for chunk in [1, 3, 7, 4096] {
        assert_eq!(through(input, chunk).await, input, "chunk {chunk}");
    }
}

#[tokio::test]
async fn chunked_bodies_are_followed_to_the_next_head() {
    let input = b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nx-t: 1\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n";
    for chunk in [1, 2, 5, 4096] {
        assert_eq!(through(input, chunk).await, input, "chunk {chunk}");
    }
}

#[tokio::test]
async fn a_smuggled_request_in_a_body_is_not_a_head() {
    // The body looks like a request with both lengths; it is body bytes.
    let input = b"POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\n\r\n";
    let out = through(&input[..], 4096).await;
    assert_eq!(out, input);
}

#[tokio::test]
async fn ambiguous_heads_are_refused_and_nothing_after_is_read() {
    let cases: [&[u8]; 9] = [
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n24\r\nGET /admin HTTP/1.1\r\n\r\n0\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-Note: x\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-Pad: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
    ];
    for (i, input) in cases.iter().enumerate() {
        let out = through(input, 4096).await;
        assert!(
            refused(&out),
            "case {i} passed: {:?}",
            String::from_utf8_lossy(&out)
        );
        assert!(!String::from_utf8_lossy(&out).contains("admin"), "case {i}");
        assert!(!String::from_utf8_lossy(&out).contains("POST"), "case {i}");
    }
}

#[tokio::test]
async fn a_refusal_after_good_requests_keeps_those() {
    let input = b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\nHost: a\nX: y\r\n\r\nGET /never HTTP/1.1\r\nHost: a\r\n\r\n";
    let out = String::from_utf8(through(input, 3).await).unwrap();
    assert!(out.starts_with("GET /ok HTTP/1.1\r\n"));
    assert!(out.contains(REJECT_HEADER));
    assert!(!out.contains("/bad") && !out.contains("/never"));
}

#[tokio::test]
async fn http2_and_upgrades_pass_through() {
    let h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00\n\nanything";
    assert_eq!(through(h2, 5).await, h2);
    let ws = b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello\n\n";
    assert_eq!(through(ws, 4096).await, ws);
}

#[test]
fn head_ends_where_a_lenient_parser_sees_them() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
    assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
}

#[tokio::test(start_paused = true)]
async fn a_head_that_does_not_arrive_in_time_ends_the_connection() {
    let (mut client, server) = tokio::io::duplex(1024);
    let mut io = StrictIo::new(server, 16 * 1024, std::time::Duration::from_secs(2));
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 64];
    let err = io.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(2));

    // After a complete request, an idle keep-alive connection waits; a
    // head that starts must finish within the timeout.
    let (mut client2, server2) = tokio::io::duplex(1024);
    let mut io = StrictIo::new(server2, 16 * 1024, std::time::Duration::from_secs(2));
    use tokio::io::AsyncWriteExt;
    client2
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let n = io.read(&mut buf).await.unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    let idle = tokio::time::timeout(std::time::Duration::from_secs(60), io.read(&mut buf)).await;
    assert!(idle.is_err(), "an idle keep-alive connection is not cut");
    client2.write_all(b"GET /slow HTTP/1.1\r\n").await.unwrap();
    let err = io.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    client.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_oversize_head_is_refused_as_too_large() {
    let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    input.extend(std::iter::repeat_n(b'a', 20 * 1024));
    input.extend_from_slice(b"\r\n\r\n");
    let out = String::from_utf8(through(&input, 4096).await).unwrap();
    assert!(
        out.contains(&format!("{REJECT_HEADER}: {TOO_LARGE}")),
        "{out}"
    );
}
