//! The rollup files under the table root: listed (and re-listed when older than the
//! snapshot age, so rollups other replicas built are seen), written and deleted.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use datafusion::arrow::datatypes::SchemaRef;
use deltalake_core::logstore::LogStoreRef;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

use super::{ROLLUP_ROOT, RollupPath};
use crate::error::Result;
use crate::questions::Question;

#[derive(Default)]
struct Listing {
    files: HashMap<RollupPath, ObjectMeta>,
    at: Option<Instant>,
}

/// Rollup files of one table, and the schema of each question's rollup.
pub struct RollupStore {
    log_store: LogStoreRef,
    schemas: HashMap<Question, SchemaRef>,
    max_age: Duration,
    listing: RwLock<Listing>,
}

impl std::fmt::Debug for RollupStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RollupStore")
            .field(
                "files",
                &self.listing.read().expect("listing lock").files.len(),
            )
            .finish()
    }
}

impl RollupStore {
    pub fn new(
        log_store: LogStoreRef,
        schemas: HashMap<Question, SchemaRef>,
        max_age: Duration,
    ) -> Self {
        RollupStore {
            log_store,
            schemas,
            max_age,
            listing: RwLock::new(Listing::default()),
        }
    }

    /// The table root's store (paths relative to the table root).
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.log_store.object_store(None)
    }

    pub fn log_store(&self) -> &LogStoreRef {
        &self.log_store
    }

    pub fn schema(&self, question: Question) -> SchemaRef {
        Arc::clone(&self.schemas[&question])
    }

    /// Lists the rollup files again if the listing is older than the snapshot age.
    pub async fn list_if_stale(&self) -> Result<()> {
        let fresh = self
            .listing
            .read()
            .expect("listing lock")
            .at
            .is_some_and(|at| at.elapsed() < self.max_age && !self.max_age.is_zero());
        if fresh {
            return Ok(());
        }
        self.list().await
    }

    /// Lists every rollup file (objects that do not parse as one are ignored).
    pub async fn list(&self) -> Result<()> {
        let root = Path::from(ROLLUP_ROOT);
        let metas: Vec<ObjectMeta> = self.object_store().list(Some(&root)).try_collect().await?;
        let files = metas
            .into_iter()
            .filter_map(|m| RollupPath::parse(&m.location).map(|p| (p, m)))
            .collect();
        *self.listing.write().expect("listing lock") = Listing {
            files,
            at: Some(Instant::now()),
        };
        Ok(())
    }

    pub fn meta(&self, path: &RollupPath) -> Option<ObjectMeta> {
        self.listing
            .read()
            .expect("listing lock")
            .files
            .get(path)
            .cloned()
    }

    pub fn exists(&self, path: &RollupPath) -> bool {
        self.listing
            .read()
            .expect("listing lock")
            .files
            .contains_key(path)
    }

    /// Every listed file.
    pub fn files(&self) -> Vec<(RollupPath, ObjectMeta)> {
        let listing = self.listing.read().expect("listing lock");
        listing.files.iter().map(|(p, m)| (*p, m.clone())).collect()
    }

    /// Writes one rollup file (a single atomic, create-only put) and lists it. A file
    /// another replica wrote first is kept: rows of the same hour in another order, and
    /// a query that listed it must find the object it listed.
    pub async fn put(&self, path: RollupPath, parquet: Vec<u8>) -> Result<()> {
        let location = path.object_path();
        let create = PutOptions::from(PutMode::Create);
        match self
            .object_store()
            .put_opts(&location, PutPayload::from(parquet), create)
            .await
        {
            Ok(_) => tracing::debug!(path = %location, "rollup written"),
            Err(object_store::Error::AlreadyExists { .. }) => {
                tracing::debug!(path = %location, "rollup already written by another replica")
            }
            Err(e) => return Err(e.into()),
        }
        let meta = self.object_store().head(&location).await?;
        self.listing
            .write()
            .expect("listing lock")
            .files
            .insert(path, meta);
        Ok(())
    }

    pub async fn delete(&self, path: &RollupPath) -> Result<()> {
        match self.object_store().delete(&path.object_path()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.listing
            .write()
            .expect("listing lock")
            .files
            .remove(path);
        Ok(())
    }
}
