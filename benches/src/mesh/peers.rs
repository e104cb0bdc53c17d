//! NGINX and HAProxy configs: one worker or thread each, keep-alive to
//! the example upstream on both sides, logs off, and file-descriptor
//! limits high enough (within a hard limit of 20,000) for 10,000 idle
//! client connections. gRPC goes to the upstream over h2c; everything
//! else over HTTP/1.1, as a sidecar would send it.

use std::path::Path;

use super::procs::{local, port};

/// `nginx.conf` with its temp paths under `dir`.
pub fn nginx_conf(dir: &Path) -> String {
    let dir = dir.display();
    let up = local(port::UPSTREAM);
    let h1 = local(port::NGINX_H1);
    let h2 = local(port::NGINX_H2);
    let user = if Path::new("/etc/passwd").exists()
        && std::fs::read_to_string("/etc/passwd")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("www-data:"))
    {
        "www-data www-data"
    } else {
        "nobody nogroup"
    };
    format!(
        "user {user};
worker_processes 1;
worker_rlimit_nofile 20000;
daemon off;
master_process on;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 19000; }}
http {{
  access_log off;
  default_type text/plain;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  keepalive_timeout 300s;
  keepalive_requests 10000000;
  http2_max_requests 10000000;
  upstream bench_h1 {{ server {up}; keepalive 256; keepalive_requests 10000000; }}
  upstream bench_grpc {{ server {up}; keepalive 256; keepalive_requests 10000000; }}
  server {{
    listen {h1} backlog=4096;
    listen {h2} http2 backlog=4096;
    location / {{
      proxy_pass http://bench_h1;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }}
    location /vakt.example.v1.Echo/ {{
      grpc_pass grpc://bench_grpc;
    }}
  }}
}}
"
    )
}

/// HAProxy's `maxconn` under an open-file limit of `nofile`: it wants two
/// descriptors per connection and 14 more.
pub fn haproxy_maxconn(nofile: u64) -> usize {
    (nofile.saturating_sub(100) / 2).min(25_000) as usize
}

/// `haproxy.cfg` for an open-file limit of `nofile`.
pub fn haproxy_conf(nofile: u64) -> String {
    let maxconn = haproxy_maxconn(nofile);
    let up = local(port::UPSTREAM);
    let h1 = local(port::HAPROXY_H1);
    let h2 = local(port::HAPROXY_H2);
    format!(
        "global
    nbthread 1
    maxconn {maxconn}

defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 60s
    timeout http-keep-alive 300s
    option http-keep-alive
    http-reuse safe

frontend fe_h1
    bind {h1}
    default_backend be_h1

frontend fe_h2c
    bind {h2} proto h2
    use_backend be_grpc if {{ path_beg /vakt.example.v1.Echo/ }}
    default_backend be_h1

backend be_h1
    server up1 {up}

backend be_grpc
    server up1 {up} proto h2
"
    )
}
