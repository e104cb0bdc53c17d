//! The embedded store: one redb file, `vakt.redb`, in `--data-dir`.
//!
//! redb commits are durable when `commit` returns (copy-on-write B-trees
//! and an fsync), so a kill at any moment leaves either the old or the new
//! version, never a torn one.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Revision, StoreError};

const REVISIONS: TableDefinition<u64, &[u8]> = TableDefinition::new("revisions");

/// Versions in a local redb file.
pub struct EmbeddedStore {
    db: Database,
}

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Embedded(e.to_string())
}

impl EmbeddedStore {
    /// Opens or creates `<dir>/vakt.redb`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(err)?;
        let db = Database::create(dir.join("vakt.redb")).map_err(err)?;
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(REVISIONS).map_err(err)?;
        txn.commit().map_err(err)?;
        Ok(Self { db })
    }

    async fn blocking<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        tokio::task::spawn_blocking(move || f(&self.db))
            .await
            .map_err(err)?
    }

    pub async fn head(self: Arc<Self>) -> Result<Option<Revision>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(REVISIONS).map_err(err)?;
            match table.last().map_err(err)? {
                Some((k, v)) => Revision::decode(k.value(), v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn get(self: Arc<Self>, version: u64) -> Result<Option<Revision>, StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(REVISIONS).map_err(err)?;
            match table.get(version).map_err(err)? {
                Some(v) => Revision::decode(version, v.value()).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    pub async fn history(self: Arc<Self>) -> Result<Vec<Revision>, StoreError> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(REVISIONS).map_err(err)?;
            let mut out = Vec::new();
            for item in table.iter().map_err(err)? {
                let (k, v) = item.map_err(err)?;
                out.push(Revision::decode(k.value(), v.value())?);
            }
            Ok(out)
        })
        .await
    }

    pub async fn commit(self: Arc<Self>, rev: Revision) -> Result<(), StoreError> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(err)?;
            {
                let mut table = txn.open_table(REVISIONS).map_err(err)?;
                let newest = table.last().map_err(err)?.map_or(0, |(k, _)| k.value());
                if newest + 1 != rev.version {
                    return Err(StoreError::Conflict(newest));
                }
                table
                    .insert(rev.version, rev.encode().as_slice())
                    .map_err(err)?;
            }
            txn.commit().map_err(err)
        })
        .await
    }
}
