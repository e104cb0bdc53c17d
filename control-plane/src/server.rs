//! `vakt-control serve`: opens the store, loads the newest version and
//! serves the config and discovery services on one gRPC listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use vakt_api::pb::control::v1::config_service_server::ConfigServiceServer;
use vakt_api::pb::discovery::v1::discovery_service_server::DiscoveryServiceServer;

use crate::auth::{TokenCheck, read_tokens};
use crate::config_api::ConfigApi;
use crate::discovery::DiscoveryApi;
use crate::health::HealthPolicy;
use crate::state::Shared;
use crate::store::{EmbeddedStore, EtcdStore, Store};

/// Where versions are kept.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    /// A redb file in `--data-dir`.
    #[default]
    Embedded,
    /// A shared etcd cluster (`--etcd-endpoints`).
    Etcd,
}

/// Options of `vakt-control serve`.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeOptions {
    /// gRPC listen address; loopback by default.
    #[arg(long, default_value = "127.0.0.1:7070")]
    pub listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, default_value = "./vakt-data")]
    pub data_dir: PathBuf,
    /// Operators' bearer token(s), one per line.
    #[arg(long, env = "VAKT_TOKEN_FILE")]
    pub token_file: PathBuf,
    /// Proxies' bearer token(s), one per line; default the operators'.
    #[arg(long)]
    pub node_token_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = StoreKind::Embedded)]
    pub store: StoreKind,
    /// etcd client URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/vakt")]
    pub etcd_prefix: String,
    /// Name of this replica in `get nodes`; default the listen address.
    #[arg(long)]
    pub replica: Option<String>,
    /// Distinct proxies that must report an endpoint failing before it is
    /// unhealthy fleet-wide.
    #[arg(long, default_value_t = 2)]
    pub health_quorum: usize,
    /// How long a proxy's health report counts.
    #[arg(long, default_value = "30s")]
    pub health_report_ttl: vakt_api::Duration,
    /// Probe every endpoint with a TCP connect this often; off by default.
    #[arg(long)]
    pub probe_interval: Option<vakt_api::Duration>,
    /// Serve Prometheus `/metrics` over plain HTTP on this address; off by
    /// default.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

/// A running replica.
pub struct Running {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    /// The `/metrics` address actually bound, when one was asked for.
    pub metrics_addr: Option<SocketAddr>,
    pub shared: Arc<Shared>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
    background: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving and waits for the listener to close.
    /// Stops serving: ends every proxy stream, then waits up to 5 s for
    /// the listener to close.
    pub async fn shutdown(mut self) {
        self.shared.close();
        let _ = self.stop.send(());
        for t in &self.background {
            t.abort();
        }
        let wait = tokio::time::timeout(Duration::from_secs(5), &mut self.task);
        if wait.await.is_err() {
            self.task.abort();
        }
    }

    /// Serves until the process ends or the server fails.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await??;
        Ok(())
    }

    /// Serves until SIGINT or SIGTERM, then shuts down; proxies keep
    /// their last snapshot and reconnect when a replica is back.
    pub async fn wait_for_signal(mut self, mut stop: StopSignals) -> anyhow::Result<()> {
        let signal = tokio::select! {
            served = &mut self.task => return Ok(served??),
            signal = stop.recv() => signal,
        };
        tracing::info!(signal, "stopping");
        self.shutdown().await;
        Ok(())
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (before the
/// listener binds, so none is lost to the default action).
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// Opens the store, binds the listener and starts serving.
pub async fn start(opts: ServeOptions) -> anyhow::Result<Running> {
    let admin = read_tokens(&opts.token_file)?;
    let nodes = match &opts.node_token_file {
        Some(p) => read_tokens(p)?,
        None => admin.clone(),
    };
    let store = open_store(&opts).await?;
    let policy = HealthPolicy {
        quorum: opts.health_quorum.max(1),
        report_ttl: opts.health_report_ttl.get(),
        ..HealthPolicy::default()
    };
    let listener = TcpListener::bind(opts.listen)
        .await
        .with_context(|| format!("cannot listen on {}", opts.listen))?;
    let addr = listener.local_addr()?;
    let replica = opts.replica.clone().unwrap_or_else(|| addr.to_string());
    let shared = Shared::load(store.clone(), replica, policy).await?;
    tracing::info!(%addr, version = shared.current().version, "control plane serving");

    let mut background = vec![tokio::spawn(expire_reports(shared.clone()))];
    if let Store::Etcd(etcd) = store {
        background.push(tokio::spawn(follow_etcd(shared.clone(), etcd)));
    }
    if let Some(every) = opts.probe_interval {
        background.push(tokio::spawn(crate::probe::run(shared.clone(), every.get())));
    }
    let mut metrics_addr = None;
    if let Some(at) = opts.metrics_listen {
        let l = TcpListener::bind(at)
            .await
            .with_context(|| format!("cannot listen on {at} for metrics"))?;
        metrics_addr = Some(l.local_addr()?);
        tracing::info!(addr = %l.local_addr()?, "metrics serving");
        background.push(tokio::spawn(crate::metrics::serve(l, shared.clone())));
    }

    let config = ConfigServiceServer::with_interceptor(
        ConfigApi::new(shared.clone()),
        TokenCheck::new(admin),
    );
    let discovery = DiscoveryServiceServer::with_interceptor(
        DiscoveryApi::new(shared.clone()),
        TokenCheck::new(nodes),
    );
    let (stop, stopped) = oneshot::channel();
    let task = tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(Duration::from_secs(10)))
            .add_service(config)
            .add_service(discovery)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                let _ = stopped.await;
            }),
    );
    Ok(Running {
        addr,
        metrics_addr,
        shared,
        stop,
        task,
        background,
    })
}

async fn open_store(opts: &ServeOptions) -> anyhow::Result<Store> {
    Ok(match opts.store {
        StoreKind::Embedded => {
            let s = EmbeddedStore::open(&opts.data_dir)
                .with_context(|| format!("cannot open store in {}", opts.data_dir.display()))?;
            Store::Embedded(Arc::new(s))
        }
        StoreKind::Etcd => {
            anyhow::ensure!(
                !opts.etcd_endpoints.is_empty(),
                "--store etcd needs --etcd-endpoints"
            );
            let connect = EtcdStore::connect(&opts.etcd_endpoints, &opts.etcd_prefix);
            let s = tokio::time::timeout(Duration::from_secs(10), connect)
                .await
                .context("etcd did not answer within 10s")??;
            Store::Etcd(Arc::new(s))
        }
    })
}

/// Re-draws the health verdict as reports age out.
async fn expire_reports(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        shared.recompute_health();
    }
}

/// Publishes each version any replica stores in etcd; re-watches after
/// errors, catching up on what was missed.
async fn follow_etcd(shared: Arc<Shared>, etcd: Arc<EtcdStore>) {
    loop {
        if let Ok(Some(rev)) = etcd.head().await {
            shared.publish(rev);
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let watch = etcd.watch_head(move |v| {
            let _ = tx.send(v);
        });
        let fetch = async {
            while let Some(v) = rx.recv().await {
                if v > shared.current().version
                    && let Ok(Some(rev)) = etcd.get(v).await
                {
                    shared.publish(rev);
                }
            }
        };
        let (r, ()) = tokio::join!(watch, fetch);
        if let Err(e) = r {
            tracing::warn!(error = %e, "etcd watch ended; retrying");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
