//! Command-line flags of `vakt-proxy`.

use std::path::PathBuf;

use clap::Parser;

use crate::telemetry::logging::LogFormat;

/// The vakt sidecar and edge proxy.
#[derive(Debug, Parser)]
#[command(name = "vakt-proxy", version)]
pub struct Cli {
    /// `edge` (default): run the config file or the built-in example.
    /// `sidecar`: run the built-in sidecar bootstrap (admin, outbound and
    /// inbound listeners) with routes and backends from the control plane.
    #[arg(long, value_enum, default_value = "edge", env = "VAKT_ROLE")]
    pub role: Role,

    #[command(flatten)]
    pub sidecar: crate::sidecar::Options,

    /// Config file (YAML). Without it, a built-in local example runs:
    /// listener 127.0.0.1:15001 in front of example services on
    /// 127.0.0.1:18080 and 127.0.0.1:18081.
    #[arg(long, short, env = "VAKT_CONFIG")]
    pub config: Option<PathBuf>,

    /// Validate the config, print every problem, and exit.
    #[arg(long)]
    pub check: bool,

    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "text", env = "VAKT_LOG_FORMAT")]
    pub log_format: LogFormat,

    /// Worker threads; default: one per available core. A sidecar is
    /// usually given one or two.
    #[arg(long, env = "VAKT_WORKERS")]
    pub workers: Option<usize>,

    #[command(flatten)]
    pub discovery: crate::discovery::Options,

    /// OTLP/gRPC collector (`http://host:port`) for the proxy's spans:
    /// turns tracing on and sets `tracing.otlp.endpoint`, keeping the
    /// file's other tracing keys. Spans are exported only by a build with
    /// the `otlp` feature.
    #[arg(long, env = "VAKT_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// Write one JSON access-log line per request.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "VAKT_ACCESS_LOG")]
    pub access_log: bool,
}

/// What the proxy is deployed as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// A config file (or the built-in example) names every listener.
    #[default]
    Edge,
    /// Beside an application in a pod, behind iptables redirection.
    Sidecar,
}
