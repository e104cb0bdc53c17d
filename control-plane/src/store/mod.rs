//! Where versions live: an embedded redb file in `--data-dir` (default)
//! or a shared etcd cluster. A version is acknowledged to the operator only
//! after its store has made it durable.
//!
//! Each stored version is a whole [`Revision`]: every object, so a rollback
//! or a proxy that starts late needs nothing else.

mod embedded;
mod etcd;

use std::sync::Arc;

use prost::Message;
use vakt_api::convert::Objects;
use vakt_api::pb::control::v1 as pb;

pub use embedded::EmbeddedStore;
pub use etcd::EtcdStore;

/// One version of the objects, as stored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Revision {
    /// Starts at 1; 0 means nothing was ever stored.
    pub version: u64,
    /// Seconds since the Unix epoch.
    pub created_at_unix: u64,
    pub description: String,
    pub objects: Objects,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("another change was stored first as version {0}")]
    Conflict(u64),
    #[error("embedded store: {0}")]
    Embedded(String),
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    #[error("stored version {version} cannot be read: {reason}")]
    Corrupt { version: u64, reason: String },
}

/// The store chosen by `--store`.
#[derive(Clone)]
pub enum Store {
    Embedded(Arc<EmbeddedStore>),
    Etcd(Arc<EtcdStore>),
}

impl Revision {
    pub fn encode(&self) -> Vec<u8> {
        pb::Revision {
            version: self.version,
            created_at_unix: self.created_at_unix,
            description: self.description.clone(),
            objects: Some(self.objects.to_proto()),
        }
        .encode_to_vec()
    }

    pub fn decode(version: u64, bytes: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |reason: String| StoreError::Corrupt { version, reason };
        let r = pb::Revision::decode(bytes).map_err(|e| corrupt(e.to_string()))?;
        let objects = Objects::from_proto(&r.objects.unwrap_or_default())
            .map_err(|p| corrupt(p.to_string()))?;
        Ok(Self {
            version: r.version,
            created_at_unix: r.created_at_unix,
            description: r.description,
            objects,
        })
    }
}

impl Store {
    /// The newest version, if any.
    pub async fn head(&self) -> Result<Option<Revision>, StoreError> {
        match self {
            Store::Embedded(s) => s.clone().head().await,
            Store::Etcd(s) => s.head().await,
        }
    }

    /// One version.
    pub async fn get(&self, version: u64) -> Result<Option<Revision>, StoreError> {
        match self {
            Store::Embedded(s) => s.clone().get(version).await,
            Store::Etcd(s) => s.get(version).await,
        }
    }

    /// Every version, oldest first.
    pub async fn history(&self) -> Result<Vec<Revision>, StoreError> {
        match self {
            Store::Embedded(s) => s.clone().history().await,
            Store::Etcd(s) => s.history().await,
        }
    }

    /// Stores `rev`, which must be exactly one past the newest version;
    /// returns once it is durable.
    pub async fn commit(&self, rev: &Revision) -> Result<(), StoreError> {
        match self {
            Store::Embedded(s) => s.clone().commit(rev.clone()).await,
            Store::Etcd(s) => s.commit(rev).await,
        }
    }
}
