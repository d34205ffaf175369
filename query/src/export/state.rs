//! What an export leaves at its destination besides the data: the state object
//! (`_flowlake_export.json`, the table version exported up to) and the staging
//! directory Parquet runs are written to before they are moved into place.
//!
//! A Parquet run is published in three steps, so that a run killed at any
//! instant is neither lost nor published twice: the state records the run as
//! *pending* (with the version it exports up to) before its first file is
//! moved; the files are moved; the state records the version. The next export
//! to the destination first finishes a pending run (moving what is still
//! staged: a move is idempotent) and deletes runs that never got that far
//! (their files were only staged, where readers do not look).

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{STAGING_DIR, STATE_FILE};
use crate::error::{QueryError, Result};

/// The state object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportState {
    pub source: String,
    /// Exported up to this version of the source (inclusive).
    pub table_version: u64,
    /// A Parquet run staged and being moved into place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingRun>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRun {
    pub run: String,
    /// The source version the run exports up to.
    pub table_version: u64,
}

/// The destination's store and root.
pub struct Destination<'a> {
    pub store: &'a dyn ObjectStore,
    pub prefix: &'a Path,
    /// The destination's directory when it is local: a killed write leaves
    /// partial uploads there (`<file>#<n>`) that the object store does not list.
    pub local_dir: Option<std::path::PathBuf>,
}

impl Destination<'_> {
    pub async fn read(&self) -> Result<Option<ExportState>> {
        match self.store.get(&self.prefix.clone().join(STATE_FILE)).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                let state = serde_json::from_slice(&bytes)
                    .map_err(|e| QueryError::Config(format!("{STATE_FILE} is corrupt: {e}")))?;
                Ok(Some(state))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn write(&self, state: &ExportState) -> Result<()> {
        let body =
            serde_json::to_vec_pretty(state).map_err(|e| QueryError::Config(e.to_string()))?;
        self.store
            .put(
                &self.prefix.clone().join(STATE_FILE),
                PutPayload::from(Bytes::from(body)),
            )
            .await?;
        Ok(())
    }

    /// Finishes what an interrupted export left: a pending run is moved into
    /// place and its version recorded; other staged runs are deleted. Returns
    /// the state to continue from.
    pub async fn recover(&self, state: Option<ExportState>) -> Result<Option<ExportState>> {
        let state = match state {
            Some(ExportState {
                source,
                pending: Some(p),
                ..
            }) => {
                tracing::warn!(run = %p.run, to_version = p.table_version, "finishing an export that was interrupted while publishing");
                self.publish(&p.run).await?;
                let done = ExportState {
                    source,
                    table_version: p.table_version,
                    pending: None,
                };
                self.write(&done).await?;
                Some(done)
            }
            other => other,
        };
        let staging = self.prefix.clone().join(STAGING_DIR);
        let left: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&staging)).try_collect().await?;
        if !left.is_empty() {
            tracing::warn!(
                files = left.len(),
                "deleting the staged files of an export that was interrupted before publishing"
            );
        }
        for meta in left {
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(dir) = &self.local_dir {
            match std::fs::remove_dir_all(dir.join(STAGING_DIR)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            }
        }
        Ok(state)
    }

    /// Whether the destination is a Delta table already (has a `_delta_log/`).
    pub async fn has_delta_log(&self) -> Result<bool> {
        use futures::StreamExt;
        let log = self.prefix.clone().join("_delta_log");
        match self.store.list(Some(&log)).next().await {
            None => Ok(false),
            Some(Ok(_)) => Ok(true),
            Some(Err(e)) => Err(e.into()),
        }
    }

    /// Moves the files of a staged run into place; returns how many it moved.
    pub async fn publish(&self, run: &str) -> Result<u64> {
        let staged = self.prefix.clone().join(STAGING_DIR).join(run);
        let files: Vec<object_store::ObjectMeta> =
            self.store.list(Some(&staged)).try_collect().await?;
        let mut moved = 0;
        for meta in files {
            let Some(rel) = meta.location.prefix_match(&staged) else {
                continue;
            };
            let mut target = self.prefix.clone();
            for part in rel {
                target = target.join(part.as_ref());
            }
            self.store.rename(&meta.location, &target).await?;
            moved += 1;
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;

    use super::*;

    async fn put(store: &InMemory, path: &str) {
        store
            .put(&Path::from(path), PutPayload::from_static(b"x"))
            .await
            .unwrap();
    }

    async fn paths(store: &InMemory) -> Vec<String> {
        let mut out: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        out.sort();
        out
    }

    /// A run killed halfway through publishing is finished by the next export;
    /// a run killed while staging is deleted.
    #[tokio::test]
    async fn interrupted_runs_are_finished_or_deleted() {
        let store = InMemory::new();
        let prefix = Path::from("dest");
        let dest = Destination {
            store: &store,
            prefix: &prefix,
            local_dir: None,
        };
        put(&store, "dest/date=2026-01-01/hour=00/a.parquet").await; // moved already
        put(
            &store,
            "dest/_flowlake_staging/r1/date=2026-01-01/hour=01/b.parquet",
        )
        .await;
        put(
            &store,
            "dest/_flowlake_staging/r0/date=2026-01-01/hour=02/c.parquet",
        )
        .await;
        let state = ExportState {
            source: "s".into(),
            table_version: 3,
            pending: Some(PendingRun {
                run: "r1".into(),
                table_version: 7,
            }),
        };
        dest.write(&state).await.unwrap();
        let read = dest.read().await.unwrap();
        assert_eq!(read.as_ref(), Some(&state));
        let after = dest.recover(read).await.unwrap().unwrap();
        assert_eq!((after.table_version, after.pending), (7, None));
        assert_eq!(dest.read().await.unwrap().unwrap().table_version, 7);
        assert_eq!(
            paths(&store).await,
            [
                "dest/_flowlake_export.json",
                "dest/date=2026-01-01/hour=00/a.parquet",
                "dest/date=2026-01-01/hour=01/b.parquet",
            ]
        );
    }
}
