//! Running the proxy: load the config, bind every listener, serve, reload
//! on change, drain on SIGTERM.

use std::path::Path;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use vakt_api::config::Otlp;
use vakt_api::{Config, Problems};

use crate::cli::{Cli, Role};
use crate::state::{Proxy, check_bootstrap};
use crate::telemetry::{access_log, logging, metrics};
use crate::{admin, discovery, listener, reload, sidecar};

/// The config used when no file is given: a local mesh in front of the
/// example services.
pub const DEFAULT_CONFIG: &str = include_str!("default.yaml");

/// How long spans still queued for export may take at shutdown.
const SPAN_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Loads the config the command line names, the sidecar bootstrap, or
/// the built-in default.
pub fn load(cli: &Cli) -> Result<Config, Problems> {
    if cli.role == Role::Sidecar {
        let source = "sidecar bootstrap";
        if cli.config.is_some() {
            let why =
                "the sidecar role runs a built-in bootstrap; routes come from the control plane";
            let mut problems = Problems::default();
            problems.push("--config", why);
            return Err(problems.with_source(source));
        }
        let config = sidecar::bootstrap(&cli.sidecar);
        let mut problems = Problems::default();
        vakt_api::validate::check(&config, &mut problems);
        problems.into_result().map_err(|p| p.with_source(source))?;
        return Ok(config);
    }
    let (config, source) = match &cli.config {
        Some(path) => (vakt_api::load_file(path)?, path.display().to_string()),
        None => {
            let source = "built-in config";
            let config = vakt_api::load_str(DEFAULT_CONFIG).map_err(|p| p.with_source(source))?;
            (config, source.to_string())
        }
    };
    check_bootstrap(&config).map_err(|p| p.with_source(source))?;
    let config = with_otlp_endpoint(config, cli.otlp_endpoint.as_deref());
    let mut problems = Problems::default();
    vakt_api::validate::check_tracing(&config.tracing, &mut problems);
    problems
        .into_result()
        .map_err(|p| p.with_source("--otlp-endpoint"))?;
    Ok(config)
}

/// The config with tracing on and spans sent to `endpoint`, when given.
fn with_otlp_endpoint(mut config: Config, endpoint: Option<&str>) -> Config {
    let Some(endpoint) = endpoint else {
        return config;
    };
    config.tracing.enabled = true;
    match &mut config.tracing.otlp {
        Some(otlp) => otlp.endpoint = endpoint.to_owned(),
        None => config.tracing.otlp = Some(Otlp::new(endpoint)),
    }
    config
}

/// Runs the proxy until SIGTERM or SIGINT, then drains. Returns the exit
/// code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    logging::init(cli.log_format);
    access_log::set_enabled(cli.access_log);
    let config = match load(&cli) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("{problems}");
            return Ok(1);
        }
    };
    if cli.check {
        // Builds the state too, so certificate and key files are read.
        if let Err(problems) = Proxy::new(config) {
            eprint!("{problems}");
            return Ok(1);
        }
        println!("config is valid");
        return Ok(0);
    }
    let metrics = metrics::install().context("installing the metrics recorder")?;
    let sources = Sources {
        path: cli.config.as_deref(),
        discovery: cli.discovery.clone(),
    };
    match serve(config, sources, Some(metrics)).await {
        Ok(()) => Ok(0),
        Err(e) => match e.downcast_ref::<Problems>() {
            Some(problems) => {
                eprint!("{problems}");
                Ok(1)
            }
            None => Err(e),
        },
    }
}

/// Where config comes from besides the bootstrap: the file to watch and
/// the control plane to follow.
pub struct Sources<'a> {
    pub path: Option<&'a Path>,
    pub discovery: discovery::Options,
}

/// Serves `config` until a termination signal, then drains and returns.
pub async fn serve(
    config: Config,
    sources: Sources<'_>,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
) -> anyhow::Result<()> {
    let drain = config.drain.clone();
    let admin_addr = config.admin.address.parse().context("admin.address")?;
    let proxy = Proxy::new(config)?;

    let mut bound = Vec::new();
    for l in &proxy.listeners {
        let addr = l.address.parse().context("listener address")?;
        let socket = listener::bind(addr)
            .with_context(|| format!("binding listener {} on {addr}", l.name))?;
        bound.push(socket);
    }
    let admin_socket =
        listener::bind(admin_addr).with_context(|| format!("binding admin on {admin_addr}"))?;
    let mut discovery = sources.discovery;
    discovery.admin_address = admin_socket.local_addr().ok();
    tokio::spawn(admin::serve(admin_socket, proxy.clone(), metrics));

    let (stop, stopped) = watch::channel(false);
    let mut tasks = Vec::new();
    for (i, socket) in bound.into_iter().enumerate() {
        let task = listener::serve(
            proxy.clone(),
            i,
            socket,
            stopped.clone(),
            drain.timeout.get(),
        );
        tasks.push(tokio::spawn(task));
    }
    if let Some(path) = sources.path {
        tokio::spawn(reload::watch(proxy.clone(), path.to_path_buf()));
    }
    proxy.set_discovery(discovery::spawn(discovery, proxy.clone()));
    proxy.set_ready(true);
    tracing::info!(listeners = proxy.listeners.len(), admin = %admin_addr, "proxy ready");

    wait_for_termination().await?;
    proxy.start_draining();
    tracing::info!(delay = ?drain.delay.get(), timeout = ?drain.timeout.get(), "shutting down");
    tokio::time::sleep(drain.delay.get()).await;
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    if let Some(tracer) = &proxy.tracer {
        tracer.flush(SPAN_FLUSH_TIMEOUT).await;
    }
    tracing::info!("drained");
    Ok(())
}

async fn wait_for_termination() -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
