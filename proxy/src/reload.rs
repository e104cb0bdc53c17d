//! Reloading the config file: on SIGHUP, or when its content changes.
//!
//! The file is read again every half second and compared with what was
//! last applied, which also catches Kubernetes' symlink swaps of mounted
//! ConfigMaps. A new file is validated before anything changes; an
//! invalid one is refused with every problem logged, and the running
//! config keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::state::Proxy;
use crate::telemetry::metrics;

const POLL_EVERY: Duration = Duration::from_millis(500);

/// Watches `path` and applies each new valid version to `proxy`.
pub async fn watch(proxy: Arc<Proxy>, path: PathBuf) {
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP");
            None
        }
    };
    let mut last = std::fs::read(&path).ok();
    let mut tick = tokio::time::interval(POLL_EVERY);
    loop {
        let forced = tokio::select! {
            _ = tick.tick() => false,
            _ = async { hup.as_mut()?.recv().await } => true,
        };
        let Ok(now) = tokio::fs::read(&path).await else {
            continue;
        };
        if !forced && last.as_deref() == Some(&now[..]) {
            continue;
        }
        last = Some(now);
        reload(&proxy, &path);
    }
}

fn reload(proxy: &Proxy, path: &Path) {
    let result = vakt_api::load_file(path).and_then(|config| proxy.apply(config));
    match result {
        Ok(version) => {
            metrics::config_reload(true);
            tracing::info!(path = %path.display(), version, "config reloaded");
        }
        Err(problems) => {
            metrics::config_reload(false);
            tracing::error!(
                path = %path.display(),
                "config refused; the running config keeps serving:\n{problems}"
            );
        }
    }
}
