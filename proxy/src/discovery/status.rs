//! What the discovery client tells the rest of the proxy: connected or
//! not, which version is served and where it came from, how stale it is.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Where the served snapshot came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// No snapshot yet.
    None,
    /// Read from the disk cache at start.
    Cache,
    /// Received from the control plane.
    ControlPlane,
}

#[derive(Debug)]
struct Inner {
    connected: bool,
    version: u64,
    source: Source,
    /// When the served snapshot was last known to be current.
    confirmed_at: Option<SystemTime>,
}

/// Shared, cheap-to-clone status of the discovery client.
#[derive(Clone, Debug)]
pub struct Handle {
    enabled: bool,
    inner: Arc<Mutex<Inner>>,
}

impl Handle {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            inner: Arc::new(Mutex::new(Inner {
                connected: false,
                version: 0,
                source: Source::None,
                confirmed_at: None,
            })),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("discovery status lock"))
    }

    /// Whether a control plane is configured at all.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Whether the stream to the control plane is up.
    pub fn connected(&self) -> bool {
        self.with(|i| i.connected)
    }

    /// The version served; 0 before the first snapshot.
    pub fn version(&self) -> u64 {
        self.with(|i| i.version)
    }

    pub fn source(&self) -> Source {
        self.with(|i| i.source)
    }

    /// Time since the served snapshot was last known current: zero while
    /// connected, `None` before any snapshot.
    pub fn staleness(&self) -> Option<Duration> {
        self.with(|i| {
            if i.connected {
                return Some(Duration::ZERO);
            }
            let at = i.confirmed_at?;
            Some(SystemTime::now().duration_since(at).unwrap_or_default())
        })
    }

    /// One line for `/ready` detail.
    pub fn detail(&self) -> String {
        if !self.enabled {
            return "static config; no control plane".into();
        }
        let (connected, version, source) = self.with(|i| (i.connected, i.version, i.source));
        let stale = self.staleness().unwrap_or_default().as_secs();
        match (source, connected) {
            (Source::None, _) => "waiting for the first snapshot from the control plane".into(),
            (_, true) => format!("snapshot version {version}; control plane connected"),
            (Source::Cache, false) => format!(
                "serving snapshot version {version} from the disk cache; \
                 control plane unreachable; stale for {stale}s"
            ),
            (Source::ControlPlane, false) => format!(
                "serving snapshot version {version}; control plane unreachable; stale for {stale}s"
            ),
        }
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.with(|i| {
            if i.connected && !connected {
                i.confirmed_at = Some(SystemTime::now());
            }
            i.connected = connected;
        });
        metrics::gauge!("vakt_control_plane_connected").set(u8::from(connected) as f64);
    }

    pub(crate) fn set_served(&self, version: u64, source: Source, confirmed_at: SystemTime) {
        self.with(|i| {
            i.version = version;
            i.source = source;
            i.confirmed_at = Some(confirmed_at);
        });
        metrics::gauge!("vakt_snapshot_version").set(version as f64);
    }
}

/// Keeps the staleness gauge current, once a second.
pub(crate) async fn publish_metrics(handle: Handle) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let stale = handle.staleness().unwrap_or_default();
        metrics::gauge!("vakt_snapshot_staleness_seconds").set(stale.as_secs_f64());
    }
}
