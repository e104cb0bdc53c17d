//! `protocol: tcp` backends behind a transparent outbound listener: real
//! PostgreSQL and Redis servers driven by `psql` and `redis-cli` through
//! the proxy, the connection limit, and the breaker fed by connect
//! failures.
//!
//! Without iptables, a connection made straight to an outbound listener
//! keeps its own address as original destination; a backend claiming the
//! listener's address in `addresses` takes it, as it would take a
//! redirected connection to a service address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use vakt_tests::external::{self, Postgres, Redis, psql, redis_cli};
use vakt_tests::proxy::{Proxy, ProxyBuilder};

const CONFIG: &str = r#"
listeners:
  - {name: pg, address: "${pg}", mode: outbound}
  - {name: redis, address: "${redis}", mode: outbound}
backends:
  - name: orders-db
    addresses: ["${pg}"]
    endpoints: ["PG"]
    protocol: tcp
  - name: cache
    addresses: ["${redis}"]
    endpoints: ["REDIS"]
    protocol: tcp
    limits: {maxConnections: 1}
"#;

async fn proxy_for(pg: SocketAddr, redis: SocketAddr) -> Proxy {
    let config = CONFIG
        .replace("PG", &pg.to_string())
        .replace("REDIS", &redis.to_string());
    ProxyBuilder::yaml(config).start().await.unwrap()
}

#[tokio::test]
async fn psql_and_redis_cli_work_through_tcp_backends() {
    if !external::require(&["postgres", "psql", "redis-server", "redis-cli"]) {
        return;
    }
    let pg = Postgres::start().await.unwrap();
    let redis = Redis::start().await.unwrap();
    let proxy = proxy_for(pg.addr(), redis.addr()).await;
    let (pg_at, redis_at) = (proxy.addr("pg"), proxy.addr("redis"));

    let sql = "create table orders (id int primary key, item text); \
               insert into orders values (1, 'tea'), (2, 'rice'); \
               select string_agg(item, ',' order by id) from orders";
    assert_eq!(psql(pg_at, sql).await.unwrap(), "tea,rice");
    assert_eq!(
        psql(pg_at, "select count(*) from orders").await.unwrap(),
        "2"
    );

    assert_eq!(
        redis_cli(redis_at, &["SET", "k", "v1"]).await.unwrap(),
        "OK"
    );
    assert_eq!(redis_cli(redis_at, &["GET", "k"]).await.unwrap(), "v1");
    // The value is in the real server, not in the proxy.
    assert_eq!(redis_cli(redis.addr(), &["GET", "k"]).await.unwrap(), "v1");

    let m = proxy.metrics().await.unwrap();
    for backend in ["orders-db", "cache"] {
        let labels = [("direction", "outbound"), ("backend", backend)];
        let conns = m.sum("vakt_tcp_connections_total", &labels);
        assert!(conns >= 2.0, "{backend}: {conns} connections");
        assert!(
            m.sum("vakt_tcp_bytes_sent_total", &labels) > 0.0,
            "{backend}"
        );
        assert!(
            m.sum("vakt_tcp_bytes_received_total", &labels) > 0.0,
            "{backend}"
        );
    }
    let active = [("direction", "outbound"), ("backend", "orders-db")];
    let mut closed = false;
    for _ in 0..250 {
        let m = proxy.metrics().await.unwrap();
        if m.sum("vakt_tcp_active_connections", &active) == 0.0 {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(closed, "active connections never went back to 0");
}

/// Sends a Redis PING and reads the reply; `None` when the proxy closed.
async fn ping(conn: &mut TcpStream) -> Option<String> {
    conn.write_all(b"PING\r\n").await.ok()?;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn a_connection_over_the_limit_is_closed() {
    if !external::require(&["redis-server", "redis-cli"]) {
        return;
    }
    let redis = Redis::start().await.unwrap();
    // The PostgreSQL endpoint is unused here.
    let proxy = proxy_for("127.0.0.1:9".parse().unwrap(), redis.addr()).await;
    let at = proxy.addr("redis");

    let mut first = TcpStream::connect(at).await.unwrap();
    assert_eq!(ping(&mut first).await.as_deref(), Some("+PONG\r\n"));
    let mut second = TcpStream::connect(at).await.unwrap();
    assert_eq!(ping(&mut second).await, None, "over maxConnections: 1");

    drop(first);
    let mut third = None;
    for _ in 0..250 {
        let mut c = TcpStream::connect(at).await.unwrap();
        if ping(&mut c).await.as_deref() == Some("+PONG\r\n") {
            third = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(third.is_some(), "the slot never came back");
}

#[tokio::test]
async fn connect_failures_open_the_breaker() {
    let closed = vakt_tests::ports::free_addr();
    let config = r#"
listeners:
  - {name: out, address: "${out}", mode: outbound}
backends:
  - name: gone
    addresses: ["${out}"]
    endpoints: ["CLOSED"]
    protocol: tcp
    circuitBreaker: {consecutiveFailures: 2, openFor: 1m}
"#
    .replace("CLOSED", &closed.to_string());
    let proxy = ProxyBuilder::yaml(config).start().await.unwrap();
    let at = proxy.addr("out");
    for _ in 0..3 {
        let mut c = TcpStream::connect(at).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(5), c.read(&mut buf)).await;
        assert!(
            matches!(n, Ok(Ok(0)) | Ok(Err(_))),
            "closed without upstream"
        );
    }
    let backends = proxy.admin_get("/backends").await.unwrap();
    let v: serde_json::Value = backends.json().unwrap();
    let gone = v["backends"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["name"] == "gone"))
        .cloned()
        .unwrap_or_else(|| panic!("no backend gone in {v}"));
    assert_eq!(gone["breaker"]["state"], "open", "{gone}");
    assert!(
        gone["breaker"]["rejectedTotal"].as_u64().unwrap() >= 1,
        "{gone}"
    );
}
