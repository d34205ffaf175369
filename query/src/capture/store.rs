//! Captures on the table's object store, as the query service sees them:
//! `_captures/<id>/request.json` (written here), `<node>.status.json`
//! (collectors' reports, through the ingester), `<node>.pcapng` and
//! `<node>.json` (the completed files and their descriptions),
//! `<node>.snapshot.txt` (the node's network state at the capture's start).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use flowlake_schemas::capture::{CaptureRequest, FileDescription, NodeStatus};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::{QueryError, Result};

/// The folder of every capture under the table root.
pub const ROOT: &str = "_captures";
const REQUEST: &str = "request.json";
const STATUS_SUFFIX: &str = ".status.json";
const SNAPSHOT_SUFFIX: &str = ".snapshot.txt";

/// What is stored of one capture.
#[derive(Debug, Clone, Default)]
pub struct Stored {
    pub statuses: BTreeMap<String, NodeStatus>,
    /// Completed files by node.
    pub files: BTreeMap<String, FileDescription>,
    /// Nodes whose network snapshot is stored.
    pub snapshots: Vec<String>,
}

/// Capture objects under the table root of `store`.
#[derive(Clone)]
pub struct CaptureFiles {
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for CaptureFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureFiles").finish()
    }
}

fn base(id: &str) -> Path {
    Path::from(ROOT).join(id)
}

impl CaptureFiles {
    /// `store` is rooted at the table (paths relative to the table root).
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        CaptureFiles { store }
    }

    async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(got) => Ok(Some(got.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn json<T: serde::de::DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T> {
        serde_json::from_slice(bytes)
            .map_err(|e| QueryError::Config(format!("unreadable capture object {path}: {e}")))
    }

    /// Stores a request; `if_new` refuses to replace one (a new id that exists).
    pub async fn put_request(&self, r: &CaptureRequest, if_new: bool) -> Result<()> {
        let path = base(&r.id).join(REQUEST);
        let json = serde_json::to_vec_pretty(r)
            .map_err(|e| QueryError::Config(format!("encoding a capture request: {e}")))?;
        let mode = if if_new {
            object_store::PutMode::Create
        } else {
            object_store::PutMode::Overwrite
        };
        match self
            .store
            .put_opts(&path, PutPayload::from(json), mode.into())
            .await
        {
            Err(object_store::Error::AlreadyExists { .. }) => Err(QueryError::BadRequest(format!(
                "capture {} exists already",
                r.id
            ))),
            other => other.map(drop).map_err(Into::into),
        }
    }

    /// The request of `id`, `None` when there is none.
    pub async fn request(&self, id: &str) -> Result<Option<CaptureRequest>> {
        let path = base(id).join(REQUEST);
        match self.get(&path).await? {
            Some(b) => Ok(Some(Self::json(&path, &b)?)),
            None => Ok(None),
        }
    }

    /// Ids of every capture with objects under `_captures/`.
    pub async fn ids(&self) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&Path::from(ROOT)))
            .await?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }

    /// Every stored request (unreadable ones are logged and skipped).
    pub async fn requests(&self) -> Result<Vec<CaptureRequest>> {
        let mut out = Vec::new();
        for id in self.ids().await? {
            match self.request(&id).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(QueryError::Config(e)) => tracing::warn!(capture = %id, error = %e, "skipped"),
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Node statuses and completed files of `id`.
    pub async fn stored(&self, id: &str) -> Result<Stored> {
        let mut out = Stored::default();
        let objects: Vec<_> = self.store.list(Some(&base(id))).try_collect().await?;
        for meta in objects {
            let Some(name) = meta.location.filename() else {
                continue;
            };
            if let Some(node) = name.strip_suffix(SNAPSHOT_SUFFIX) {
                out.snapshots.push(node.to_string());
                continue;
            }
            if name == REQUEST || !name.ends_with(".json") {
                continue;
            }
            let Some(bytes) = self.get(&meta.location).await? else {
                continue;
            };
            if let Some(node) = name.strip_suffix(STATUS_SUFFIX) {
                let s = Self::json(&meta.location, &bytes)?;
                out.statuses.insert(node.to_string(), s);
            } else if let Some(node) = name.strip_suffix(".json") {
                let d = Self::json(&meta.location, &bytes)?;
                out.files.insert(node.to_string(), d);
            }
        }
        out.snapshots.sort();
        Ok(out)
    }

    /// The stored pcapng of `node` in capture `id`.
    pub async fn file(&self, id: &str, node: &str) -> Result<Bytes> {
        let path = base(id).join(format!("{node}.pcapng"));
        self.get(&path)
            .await?
            .ok_or_else(|| QueryError::NotFound(format!("no file of node {node} in capture {id}")))
    }

    /// The network snapshot `node` took when capture `id` started.
    pub async fn snapshot(&self, id: &str, node: &str) -> Result<Bytes> {
        let path = base(id).join(format!("{node}{SNAPSHOT_SUFFIX}"));
        self.get(&path).await?.ok_or_else(|| {
            QueryError::NotFound(format!(
                "no network snapshot of node {node} in capture {id}"
            ))
        })
    }

    /// Removes every object of capture `id` (request, statuses, files, chunks);
    /// the number removed.
    pub async fn delete(&self, id: &str) -> Result<usize> {
        let objects: Vec<_> = self.store.list(Some(&base(id))).try_collect().await?;
        let mut removed = 0;
        for meta in objects {
            match self.store.delete(&meta.location).await {
                Ok(()) => removed += 1,
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(removed)
    }

    /// When the newest object of capture `id` was written.
    pub async fn newest(&self, id: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let objects: Vec<_> = self.store.list(Some(&base(id))).try_collect().await?;
        Ok(objects.iter().map(|m| m.last_modified).max())
    }
}
