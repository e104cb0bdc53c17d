//! The proxy's side of the control plane: routes and backends arrive as
//! versioned snapshots over one long-lived gRPC stream and are handed to
//! the proxy through [`SnapshotSink`]; listeners and admin stay the static
//! bootstrap.
//!
//! Each snapshot is acked when the sink applies it and nacked with the
//! sink's reason when it refuses it (the last good one keeps serving). The
//! last good snapshot is written to `--cache-dir`, so a proxy that starts
//! while the control plane is unreachable serves from disk and says so in
//! [`Handle::detail`]. When the stream breaks the proxy keeps serving and
//! reconnects with exponential backoff and jitter.
//!
//! Metrics: `vakt_snapshot_version` (gauge: the version served, from the
//! control plane or the disk cache), `vakt_snapshot_acked_version` (gauge:
//! the last version acked to the control plane),
//! `vakt_snapshots_total{result}` (`ack`/`nack`),
//! `vakt_control_plane_connected` (gauge, 0 or 1) and
//! `vakt_snapshot_staleness_seconds` (gauge: 0 while connected, else the
//! time since the served snapshot was last known current).

mod cache;
mod session;
mod status;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use status::{Handle, Source};
pub use vakt_api::pb::discovery::v1::EndpointObservation;

/// What the proxy core provides to the discovery client.
pub trait SnapshotSink: Send + Sync + 'static {
    /// Validates and atomically applies the routes, backends and rate
    /// limits of `config` (its listeners and admin are ignored); the error
    /// is the nack reason. Requests in flight must not fail and pools of
    /// unchanged backends should be kept.
    fn apply(&self, version: u64, config: vakt_api::Config) -> Result<(), vakt_api::Problems>;
    /// Endpoints the fleet considers unhealthy, as (backend, endpoint);
    /// every call replaces the previous list.
    fn set_fleet_health(&self, unhealthy: &[(String, String)]);
    /// What this proxy observes of its endpoints, to report.
    fn observations(&self) -> Vec<EndpointObservation>;
}

/// Command-line options of the discovery client.
#[derive(Clone, Debug, clap::Args)]
pub struct Options {
    /// Control-plane URL, e.g. `http://127.0.0.1:7070`; without it the
    /// proxy runs on its config file alone.
    #[arg(long, env = "VAKT_CONTROL_PLANE")]
    pub control_plane: Option<String>,
    /// This proxy's name in the control plane; default `$HOSTNAME`.
    #[arg(long, env = "HOSTNAME", default_value = "vakt-proxy")]
    pub node_id: String,
    /// File holding this proxy's bearer token for the control plane.
    #[arg(long, env = "VAKT_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The service this proxy fronts, reported to the control plane.
    #[arg(long, env = "VAKT_SERVICE", default_value = "")]
    pub service: String,
    /// The zone this proxy runs in, reported to the control plane.
    #[arg(long, env = "VAKT_ZONE", default_value = "")]
    pub zone: String,
    /// Where the last good snapshot is kept (`snapshot.pb`).
    #[arg(long, default_value = "vakt-cache")]
    pub cache_dir: PathBuf,
    /// How often endpoint observations are reported, in the duration
    /// format of config files; default `5s`.
    #[arg(long, default_value = "5s")]
    pub report_interval: vakt_api::Duration,
    /// The admin listener's address, reported in the hello so operators
    /// can find this proxy's `/metrics`; set by the proxy, not a flag.
    #[arg(skip)]
    pub admin_address: Option<std::net::SocketAddr>,
}

/// Backoff between reconnects: doubles from 250 ms up to 30 s, with each
/// wait drawn between half and all of it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const BASE: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(30);

    pub(crate) fn new() -> Self {
        Self { next: Self::BASE }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::BASE;
    }

    /// The wait before the next attempt.
    pub(crate) fn wait(&mut self) -> Duration {
        let cap = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        let half = cap / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

/// Loads the cached snapshot, if any, into `sink`, then keeps a stream to
/// the control plane in the background. Does nothing but report "static"
/// when `--control-plane` is not given.
pub fn spawn<S: SnapshotSink>(options: Options, sink: Arc<S>) -> Handle {
    let handle = Handle::new(options.control_plane.is_some());
    let Some(url) = options.control_plane.clone() else {
        return handle;
    };
    let token = match &options.token_file {
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t.lines().next().unwrap_or("").trim().to_string()),
            Err(e) => {
                tracing::error!(path = %p.display(), error = %e, "cannot read token file");
                None
            }
        },
        None => None,
    };
    if let Some(cached) = cache::load(&options.cache_dir) {
        session::apply_cached(&*sink, &handle, cached);
    }
    let cx = session::Context {
        url,
        token,
        options,
        sink,
        handle: handle.clone(),
    };
    tokio::spawn(session::run(cx));
    tokio::spawn(status::publish_metrics(handle.clone()));
    handle
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let first = b.wait();
        assert!(first >= Duration::from_millis(125) && first <= Duration::from_millis(250));
        let second = b.wait();
        assert!(second >= Duration::from_millis(250) && second <= Duration::from_millis(500));
        for _ in 0..20 {
            assert!(b.wait() <= Backoff::MAX);
        }
        assert!(b.wait() >= Backoff::MAX / 2);
        b.reset();
        assert!(b.wait() <= Backoff::BASE);
    }
}
