//! `vakt-example`: the example upstream service of the vakt demo, tests and
//! benchmarks. One port answers HTTP/1.1, h2c, gRPC and WebSocket; see
//! `vakt_tests::example` for the paths and knobs.

#![forbid(unsafe_code)]

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use http::StatusCode;
use vakt_tests::example::{Call, Example, ExampleConfig};
use vakt_tests::server::Server;

/// The vakt example service.
#[derive(Debug, Parser)]
#[command(name = "vakt-example", version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:18080")]
    listen: SocketAddr,
    /// Name returned in `x-served-by` and in bodies.
    #[arg(long, default_value = "example")]
    name: String,
    /// Response body size in bytes (default: the name and a newline).
    #[arg(long)]
    size: Option<usize>,
    /// Wait before each answer, such as `20ms` or `1s`.
    #[arg(long, default_value = "0s")]
    delay: vakt_api::Duration,
    /// Share of requests, 0 to 1, that fail with `--failure-status`.
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Status of failed requests.
    #[arg(long, default_value_t = 503)]
    failure_status: u16,
    /// The next service `/chain` calls, `http://IP:PORT/PATH`.
    #[arg(long)]
    call: Option<String>,
    /// Host header of the `/chain` call; default the URL's `IP:PORT`.
    #[arg(long, requires = "call")]
    call_host: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.failure_rate),
        "--failure-rate must be between 0 and 1"
    );
    let call = match &args.call {
        Some(url) => Some(Call::parse(url, args.call_host.as_deref()).context("--call")?),
        None => None,
    };
    let config = ExampleConfig {
        name: args.name,
        size: args.size,
        delay: args.delay.get(),
        failure_rate: args.failure_rate,
        failure_status: StatusCode::from_u16(args.failure_status)
            .context("--failure-status is not an HTTP status")?,
        call,
    };
    let example = Example::new(config);
    let server = Server::bind(args.listen, example.handler())
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(address = %server.addr(), name = %example.config().name, "serving");
    tokio::select! {
        () = server.wait() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = terminated() => {}
    }
    tracing::info!("stopped");
    Ok(())
}

async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}
