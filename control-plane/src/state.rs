//! What one replica holds in memory: the current revision and the fleet's
//! health verdict, each in a watch channel every proxy stream follows.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use crate::health::{EndpointKey, HealthBook, HealthPolicy};
use crate::nodes::Nodes;
use crate::store::{Revision, Store, StoreError};

/// The unhealthy endpoints, shared by every stream.
pub type Unhealthy = Arc<BTreeSet<EndpointKey>>;

/// State shared by the config service, the discovery service and the
/// background tasks of one replica.
pub struct Shared {
    pub store: Store,
    pub nodes: Nodes,
    /// This replica's name, shown in `get nodes`.
    pub replica: String,
    current: watch::Sender<Arc<Revision>>,
    unhealthy: watch::Sender<Unhealthy>,
    health: Mutex<HealthBook>,
    /// Serializes changes made through this replica.
    pub change_lock: tokio::sync::Mutex<()>,
    /// Turns true when the replica shuts down; streams end then.
    closing: watch::Sender<bool>,
}

impl Shared {
    /// Loads the newest stored version.
    pub async fn load(
        store: Store,
        replica: String,
        policy: HealthPolicy,
    ) -> Result<Arc<Self>, StoreError> {
        let head = store.head().await?.unwrap_or_default();
        Ok(Arc::new(Self {
            store,
            nodes: Nodes::default(),
            replica,
            current: watch::Sender::new(Arc::new(head)),
            unhealthy: watch::Sender::new(Arc::default()),
            health: Mutex::new(HealthBook::new(policy)),
            change_lock: tokio::sync::Mutex::new(()),
            closing: watch::Sender::new(false),
        }))
    }

    pub fn current(&self) -> Arc<Revision> {
        self.current.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Revision>> {
        self.current.subscribe()
    }

    /// Resolves when the replica shuts down.
    pub fn closing(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.closing.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
    }

    /// Ends every proxy stream.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub fn subscribe_health(&self) -> watch::Receiver<Unhealthy> {
        self.unhealthy.subscribe()
    }

    /// Makes `rev` current if it is newer than what is served.
    pub fn publish(&self, rev: Revision) {
        let version = rev.version;
        let rev = Arc::new(rev);
        let changed = self.current.send_if_modified(|cur| {
            let newer = rev.version > cur.version;
            if newer {
                *cur = rev.clone();
            }
            newer
        });
        if changed {
            tracing::info!(version, "snapshot published");
            self.recompute_health();
        }
    }

    /// Applies `f` to the health book, then publishes the verdict if it
    /// changed.
    pub fn with_health(&self, f: impl FnOnce(&mut HealthBook)) {
        f(&mut self.health.lock().expect("health lock"));
        self.recompute_health();
    }

    /// Reporters and probe state of one endpoint.
    pub fn health_detail(&self, key: &EndpointKey) -> (usize, bool) {
        let book = self.health.lock().expect("health lock");
        (book.reporters(key, Instant::now()), book.probe_failed(key))
    }

    pub fn unhealthy(&self) -> Unhealthy {
        self.unhealthy.borrow().clone()
    }

    pub fn recompute_health(&self) {
        let cur = self.current();
        let verdict = self
            .health
            .lock()
            .expect("health lock")
            .unhealthy(&cur.objects, Instant::now());
        self.unhealthy.send_if_modified(|old| {
            let changed = **old != verdict;
            if changed {
                tracing::info!(unhealthy = verdict.len(), "fleet health changed");
                *old = Arc::new(verdict);
            }
            changed
        });
    }
}
