//! The shared store: versions in an etcd cluster that several control-plane
//! replicas use at once.
//!
//! Keys under the prefix (default `/vakt`): `head` holds the newest version
//! number, `revisions/<20-digit version>` each revision. A commit is one
//! etcd transaction that succeeds only if `head` is still the version the
//! change was based on, so two replicas can never both store version N.
//! Each replica watches `head` and publishes what any replica stored.

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp, WatchOptions};

use super::{Revision, StoreError};

/// Versions in etcd.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl EtcdStore {
    /// Connects to the cluster; `prefix` separates several meshes.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, StoreError> {
        let client = Client::connect(endpoints, None).await?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
        })
    }

    fn head_key(&self) -> String {
        format!("{}/head", self.prefix)
    }

    fn revision_key(&self, version: u64) -> String {
        format!("{}/revisions/{version:020}", self.prefix)
    }

    /// The newest version number, 0 when none.
    pub async fn head_version(&self) -> Result<u64, StoreError> {
        let resp = self.client.clone().get(self.head_key(), None).await?;
        Ok(resp
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok()?.parse().ok())
            .unwrap_or(0))
    }

    pub async fn head(&self) -> Result<Option<Revision>, StoreError> {
        match self.head_version().await? {
            0 => Ok(None),
            v => self.get(v).await,
        }
    }

    pub async fn get(&self, version: u64) -> Result<Option<Revision>, StoreError> {
        let resp = self
            .client
            .clone()
            .get(self.revision_key(version), None)
            .await?;
        match resp.kvs().first() {
            Some(kv) => Revision::decode(version, kv.value()).map(Some),
            None => Ok(None),
        }
    }

    pub async fn history(&self) -> Result<Vec<Revision>, StoreError> {
        let opts = GetOptions::new().with_prefix();
        let key = format!("{}/revisions/", self.prefix);
        let resp = self.client.clone().get(key, Some(opts)).await?;
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let version = kv
                .key_str()
                .ok()
                .and_then(|k| k.rsplit('/').next()?.parse().ok())
                .unwrap_or(0);
            out.push(Revision::decode(version, kv.value())?);
        }
        out.sort_by_key(|r| r.version);
        Ok(out)
    }

    pub async fn commit(&self, rev: &Revision) -> Result<(), StoreError> {
        let head = self.head_key();
        let base = if rev.version == 1 {
            Compare::create_revision(head.clone(), CompareOp::Equal, 0)
        } else {
            let prev = (rev.version - 1).to_string();
            Compare::value(head.clone(), CompareOp::Equal, prev)
        };
        let txn = Txn::new().when([base]).and_then([
            TxnOp::put(self.revision_key(rev.version), rev.encode(), None),
            TxnOp::put(head, rev.version.to_string(), None),
        ]);
        let resp = self.client.clone().txn(txn).await?;
        if resp.succeeded() {
            Ok(())
        } else {
            Err(StoreError::Conflict(self.head_version().await?))
        }
    }

    /// Calls `on_head` with each new head version any replica stores,
    /// until the watch ends (an error or etcd going away).
    pub async fn watch_head(&self, mut on_head: impl FnMut(u64)) -> Result<(), StoreError> {
        let mut stream = self
            .client
            .clone()
            .watch(self.head_key(), Some(WatchOptions::new()))
            .await?;
        while let Some(resp) = stream.message().await? {
            for ev in resp.events() {
                let v = ev.kv().and_then(|kv| kv.value_str().ok()?.parse().ok());
                if let Some(v) = v {
                    on_head(v);
                }
            }
        }
        Ok(())
    }
}
