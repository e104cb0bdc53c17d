//! The `vakt-control` command line: `serve`, and the operator commands
//! that call a running control plane.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use tonic::transport::Channel;
use vakt_api::convert::Objects;
use vakt_api::pb::Bearer;
use vakt_api::pb::control::v1 as pb;
use vakt_api::pb::control::v1::config_service_client::ConfigServiceClient;

use crate::server::ServeOptions;
use crate::stat::StatOptions;

/// vakt-control: stores routes and backends and streams them to proxies.
#[derive(Debug, Parser)]
#[command(name = "vakt-control", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane.
    Serve(ServeOptions),
    /// Create or replace objects from YAML (vakt routes/backends, or
    /// Gateway API HTTPRoutes); `-f -` reads standard input.
    Apply {
        #[arg(short = 'f', long = "filename")]
        file: String,
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Show routes, backends, rate-limits, nodes or health.
    Get {
        #[arg(value_parser = ["routes", "backends", "rate-limits", "nodes", "health"])]
        what: String,
        /// An older version instead of the current one.
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Delete one object: `delete route orders`.
    Delete {
        #[arg(value_parser = ["route", "backend", "rate-limit"])]
        kind: String,
        name: String,
        #[command(flatten)]
        client: ClientOptions,
    },
    /// List stored versions, newest first.
    History {
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Store the objects of an older version as the next version.
    Rollback {
        #[arg(long)]
        to: u64,
        #[command(flatten)]
        client: ClientOptions,
    },
    /// Add the vakt-proxy sidecar to the pod templates of Kubernetes
    /// manifests (`-f -` reads standard input); writes them to standard
    /// output. Nothing is written when a workload is refused.
    Inject {
        /// Manifests to read; `-` is standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
        /// Remove what injection added instead.
        #[arg(long)]
        uninject: bool,
        #[command(flatten)]
        opts: crate::inject::InjectOptions,
    },
    /// Show each route's and backend's request rate, success rate and p99
    /// latency, read from the proxies' /metrics, refreshed every interval.
    Stat(StatOptions),
}

/// How the operator commands reach the control plane.
#[derive(Clone, Debug, clap::Args)]
pub struct ClientOptions {
    /// Control-plane URL.
    #[arg(long, env = "VAKT_SERVER", default_value = "http://127.0.0.1:7070")]
    pub server: String,
    /// File holding the operators' bearer token.
    #[arg(long, env = "VAKT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
}

/// The config-service client the operator commands use.
pub type Client =
    ConfigServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// A config-service client for `opts`.
pub async fn connect(opts: &ClientOptions) -> anyhow::Result<Client> {
    let token = match &opts.token_file {
        Some(p) => crate::auth::read_tokens(p)?.remove(0),
        None => bail!("--token-file (or VAKT_TOKEN_FILE) is required"),
    };
    let channel = Channel::from_shared(opts.server.clone())?
        .connect()
        .await
        .with_context(|| format!("cannot reach {}", opts.server))?;
    let bearer = Bearer::new(&token)?;
    Ok(ConfigServiceClient::with_interceptor(channel, bearer))
}

/// Runs an operator command, printing its result.
pub async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve(opts) => {
            let stop = crate::server::StopSignals::install()?;
            crate::server::start(opts)
                .await?
                .wait_for_signal(stop)
                .await
        }
        Command::Stat(opts) => crate::stat::run(opts).await,
        Command::Apply { file, client } => apply(&file, &client).await,
        Command::Get {
            what,
            version,
            client,
        } => get(&what, version.unwrap_or(0), &client).await,
        Command::Delete { kind, name, client } => {
            let kind = match kind.as_str() {
                "route" => pb::Kind::Route,
                "backend" => pb::Kind::Backend,
                _ => pb::Kind::RateLimit,
            };
            let req = pb::DeleteRequest {
                objects: vec![pb::ObjectRef {
                    kind: kind as i32,
                    name,
                }],
                description: String::new(),
            };
            let resp = connect(&client).await?.delete(req).await;
            print_change(resp)
        }
        Command::History { client } => history(&client).await,
        Command::Inject {
            file,
            uninject,
            opts,
        } => inject(&file, uninject, &opts),
        Command::Rollback { to, client } => {
            let req = pb::RollbackRequest { to_version: to };
            let resp = connect(&client).await?.rollback(req).await;
            print_change(resp)
        }
    }
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        Ok(s)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))
    }
}

fn inject(file: &str, uninject: bool, opts: &crate::inject::InjectOptions) -> anyhow::Result<()> {
    use crate::inject::{Mode, transform};
    let text = read_input(file)?;
    let mode = if uninject {
        Mode::Uninject
    } else {
        Mode::Inject
    };
    let out = transform(&text, mode, opts).map_err(|e| anyhow::anyhow!("{file}:\n{e}"))?;
    for note in &out.notes {
        eprintln!("note: {note}");
    }
    std::io::stdout().write_all(out.text.as_bytes())?;
    Ok(())
}

async fn apply(file: &str, client: &ClientOptions) -> anyhow::Result<()> {
    let text = read_input(file)?;
    let objects = vakt_api::httproute::read_documents(&text)
        .map_err(|p| anyhow::anyhow!("{}", p.with_source(file.to_string())))?;
    let req = pb::ApplyRequest {
        objects: Some(objects.to_proto()),
        description: format!("apply -f {file}"),
    };
    let resp = connect(client).await?.apply(req).await;
    print_change(resp)
}

fn print_change(
    resp: Result<tonic::Response<pb::ChangeResponse>, tonic::Status>,
) -> anyhow::Result<()> {
    match resp {
        Ok(r) => {
            let r = r.into_inner();
            let what = if r.changed { "stored" } else { "unchanged" };
            println!("{what}: version {}", r.version);
            Ok(())
        }
        Err(s) => bail!("{:?}: {}", s.code(), s.message()),
    }
}

async fn get(what: &str, version: u64, client: &ClientOptions) -> anyhow::Result<()> {
    let mut c = connect(client).await?;
    match what {
        "nodes" => {
            let nodes = c.list_nodes(pb::ListNodesRequest {}).await?.into_inner();
            crate::client::print_nodes(&nodes.nodes);
            return Ok(());
        }
        "health" => {
            let h = c.list_health(pb::ListHealthRequest {}).await?.into_inner();
            crate::client::print_health(&h.endpoints);
            return Ok(());
        }
        _ => {}
    }
    let resp = c.get(pb::GetRequest { version }).await?.into_inner();
    let objects = Objects::from_proto(&resp.objects.unwrap_or_default())
        .map_err(|p| anyhow::anyhow!("{p}"))?;
    println!("# version {}", resp.version);
    let text = match what {
        "routes" => crate::client::yaml("routes", &objects.routes)?,
        "backends" => crate::client::yaml("backends", &objects.backends)?,
        _ => crate::client::yaml("rateLimits", &objects.rate_limits)?,
    };
    print!("{text}");
    Ok(())
}

async fn history(client: &ClientOptions) -> anyhow::Result<()> {
    let h = connect(client)
        .await?
        .history(pb::HistoryRequest {})
        .await?
        .into_inner();
    println!(
        "{:<8} {:<12} {:>6} {:>8}  DESCRIPTION",
        "VERSION", "CREATED", "ROUTES", "BACKENDS"
    );
    for v in h.versions {
        println!(
            "{:<8} {:<12} {:>6} {:>8}  {}",
            v.version, v.created_at_unix, v.routes, v.backends, v.description
        );
    }
    Ok(())
}
