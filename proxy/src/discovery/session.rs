//! One stream to the control plane at a time, reopened with backoff.
//!
//! A session says hello with the version served, then applies each
//! snapshot through the sink and acks or nacks it, passes fleet health on,
//! and reports observations every `--report-interval`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use vakt_api::convert::Objects;
use vakt_api::pb::Bearer;
use vakt_api::pb::discovery::v1::discovery_service_client::DiscoveryServiceClient;
use vakt_api::pb::discovery::v1::{
    Ack, ControlMessage, EndpointHealth, HealthReport, Hello, Nack, NodeMessage, Snapshot,
    control_message, node_message,
};
use vakt_api::tonic::transport::Endpoint;

use super::cache::{self, Cached};
use super::{Backoff, Handle, Options, SnapshotSink, Source};

/// A session that lasted this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);

pub(crate) struct Context<S> {
    pub url: String,
    pub token: Option<String>,
    pub options: Options,
    pub sink: Arc<S>,
    pub handle: Handle,
}

/// Applies the snapshot found on disk at start.
pub(crate) fn apply_cached<S: SnapshotSink>(sink: &S, handle: &Handle, cached: Cached) {
    let version = cached.snapshot.version;
    match to_config(&cached.snapshot).and_then(|c| sink.apply(version, c)) {
        Ok(()) => {
            sink.set_fleet_health(&unhealthy(&cached.snapshot.endpoints));
            handle.set_served(version, Source::Cache, cached.written_at);
            tracing::info!(version, "serving the cached snapshot");
        }
        Err(p) => tracing::warn!(version, problems = %p, "cached snapshot refused"),
    }
}

/// Keeps a session open forever.
pub(crate) async fn run<S: SnapshotSink>(cx: Context<S>) {
    let mut backoff = Backoff::new();
    loop {
        let started = tokio::time::Instant::now();
        match session(&cx).await {
            Ok(()) => tracing::warn!("control plane closed the stream"),
            Err(e) => tracing::warn!(error = %e, "control plane stream failed"),
        }
        cx.handle.set_connected(false);
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        tokio::time::sleep(backoff.wait()).await;
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn session<S: SnapshotSink>(cx: &Context<S>) -> Result<(), BoxError> {
    let channel = Endpoint::from_shared(cx.url.clone())?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let bearer = Bearer::new(cx.token.as_deref().unwrap_or(""))?;
    let mut client = DiscoveryServiceClient::with_interceptor(channel, bearer);

    let (tx, rx) = mpsc::channel::<NodeMessage>(16);
    let hello = Hello {
        node_id: cx.options.node_id.clone(),
        service: cx.options.service.clone(),
        zone: cx.options.zone.clone(),
        version: cx.handle.version(),
        admin_address: cx
            .options
            .admin_address
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    tx.send(node(node_message::Kind::Hello(hello))).await?;
    let outbound =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) });
    let mut inbound = client.stream(outbound).await?.into_inner();
    cx.handle.set_connected(true);
    tracing::info!(url = %cx.url, "control plane connected");

    let mut report = tokio::time::interval(
        cx.options
            .report_interval
            .get()
            .max(Duration::from_millis(100)),
    );
    loop {
        tokio::select! {
            msg = inbound.message() => match msg? {
                Some(m) => on_message(cx, m, &tx).await?,
                None => return Ok(()),
            },
            _ = report.tick() => {
                let observations = cx.sink.observations();
                let msg = node(node_message::Kind::Health(HealthReport { observations }));
                tx.send(msg).await?;
            }
        }
    }
}

async fn on_message<S: SnapshotSink>(
    cx: &Context<S>,
    m: ControlMessage,
    tx: &mpsc::Sender<NodeMessage>,
) -> Result<(), BoxError> {
    match m.kind {
        Some(control_message::Kind::Snapshot(s)) => {
            let reply = apply(cx, s).await;
            tx.send(reply).await?;
        }
        Some(control_message::Kind::Health(h)) => {
            cx.sink.set_fleet_health(&unhealthy(&h.endpoints));
        }
        None => {}
    }
    Ok(())
}

/// Applies one snapshot and says how it went.
async fn apply<S: SnapshotSink>(cx: &Context<S>, s: Snapshot) -> NodeMessage {
    let version = s.version;
    match to_config(&s).and_then(|c| cx.sink.apply(version, c)) {
        Ok(()) => {
            cx.sink.set_fleet_health(&unhealthy(&s.endpoints));
            cx.handle
                .set_served(version, Source::ControlPlane, SystemTime::now());
            metrics::counter!("vakt_snapshots_total", "result" => "ack").increment(1);
            metrics::gauge!("vakt_snapshot_acked_version").set(version as f64);
            tracing::info!(version, "snapshot applied");
            let dir = cx.options.cache_dir.clone();
            let saved = tokio::task::spawn_blocking(move || cache::save(&dir, &s)).await;
            if let Ok(Err(e)) = saved {
                tracing::warn!(error = %e, "cannot write the snapshot cache");
            }
            node(node_message::Kind::Ack(Ack { version }))
        }
        Err(problems) => {
            metrics::counter!("vakt_snapshots_total", "result" => "nack").increment(1);
            tracing::warn!(
                version,
                problems = %problems,
                "snapshot refused; the last good one keeps serving"
            );
            let reason = problems.to_string().trim_end().to_string();
            node(node_message::Kind::Nack(Nack { version, reason }))
        }
    }
}

fn to_config(s: &Snapshot) -> Result<vakt_api::Config, vakt_api::Problems> {
    let objects = s.objects.clone().unwrap_or_default();
    Objects::from_proto(&objects).map(Objects::into_config)
}

fn unhealthy(endpoints: &[EndpointHealth]) -> Vec<(String, String)> {
    endpoints
        .iter()
        .filter(|e| !e.healthy)
        .map(|e| (e.backend.clone(), e.endpoint.clone()))
        .collect()
}

fn node(kind: node_message::Kind) -> NodeMessage {
    NodeMessage { kind: Some(kind) }
}
