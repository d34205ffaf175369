//! Capture files on the object store: chunks under
//! `_captures/<id>/<node>.pcapng.parts/<offset>`, then the file and its
//! description once complete. All state is in the store, so an ingester
//! restart resumes where the chunks stand.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::error::{CaptureUploadError, Result};

pub use flowlake_schemas::capture::{CaptureRequest, FileDescription, InterfaceRow, NodeStatus};

/// Name of a capture's request object; no node may take it.
pub const REQUEST_OBJECT: &str = "request.json";

/// Upload state of one node's file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub received: u64,
    pub complete: bool,
}

/// Capture files on a store (the table's).
#[derive(Clone)]
pub struct CaptureStore {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

/// Ids and node names: 1 to 64 of `[a-z0-9.-]`, not starting with a dot.
pub fn check_name(s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(CaptureUploadError::BadName(s.to_string()))
    }
}

impl CaptureStore {
    /// Captures under `<root>/_captures` of `store` (root: the table's prefix).
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        CaptureStore { store, root }
    }

    /// Captures in a local directory (tests, standalone).
    pub fn local(dir: &std::path::Path) -> Result<Self> {
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)?;
        Ok(CaptureStore::new(Arc::new(fs), Path::default()))
    }

    fn base(&self, id: &str) -> Path {
        self.root.clone().join("_captures").join(id)
    }

    /// Where the file of (`id`, `node`) is when complete.
    pub fn file_path(&self, id: &str, node: &str) -> Path {
        self.base(id).join(format!("{node}.pcapng"))
    }

    fn description_path(&self, id: &str, node: &str) -> Path {
        self.base(id).join(format!("{node}.json"))
    }

    fn request_path(&self, id: &str) -> Path {
        self.base(id).join(REQUEST_OBJECT)
    }

    fn status_path(&self, id: &str, node: &str) -> Path {
        self.base(id).join(format!("{node}.status.json"))
    }

    fn parts(&self, id: &str, node: &str) -> Path {
        self.base(id).join(format!("{node}.pcapng.parts"))
    }

    /// Chunks received so far, in order: (offset, size, path). Only the run
    /// contiguous from 0 counts.
    async fn chunks(&self, id: &str, node: &str) -> Result<Vec<(u64, u64, Path)>> {
        let mut all: Vec<(u64, u64, Path)> = self
            .store
            .list(Some(&self.parts(id, node)))
            .try_filter_map(|m| async move {
                let offset = m.location.filename().and_then(|f| f.parse::<u64>().ok());
                Ok(offset.map(|o| (o, m.size, m.location)))
            })
            .try_collect()
            .await?;
        all.sort_by_key(|c| c.0);
        let mut at = 0;
        all.retain(|c| {
            let keep = c.0 == at;
            if keep {
                at += c.1;
            }
            keep
        });
        Ok(all)
    }

    pub async fn progress(&self, id: &str, node: &str) -> Result<Progress> {
        check_name(id)?;
        check_node(node)?;
        if let Ok(meta) = self.store.head(&self.file_path(id, node)).await {
            return Ok(Progress {
                received: meta.size,
                complete: true,
            });
        }
        let received = self.chunks(id, node).await?.iter().map(|c| c.1).sum();
        Ok(Progress {
            received,
            complete: false,
        })
    }

    /// Stores the chunk at `offset` after checking its crc32c; returns the bytes received.
    pub async fn put_chunk(
        &self,
        id: &str,
        node: &str,
        offset: u64,
        crc: u32,
        chunk: bytes::Bytes,
    ) -> Result<u64> {
        let p = self.progress(id, node).await?;
        if p.complete || offset != p.received {
            return Err(CaptureUploadError::WrongOffset {
                offset,
                received: p.received,
            });
        }
        let got = crc32c::crc32c(&chunk);
        if got != crc {
            return Err(CaptureUploadError::Checksum { want: crc, got });
        }
        let len = chunk.len() as u64;
        if len > 0 {
            let path = self.parts(id, node).join(format!("{offset:020}"));
            self.store.put(&path, PutPayload::from(chunk)).await?;
        }
        Ok(offset + len)
    }

    /// Joins the chunks into the file, checks size and crc32c, writes the
    /// description, removes the chunks.
    pub async fn complete(
        &self,
        id: &str,
        node: &str,
        mut d: FileDescription,
    ) -> Result<FileDescription> {
        let p = self.progress(id, node).await?;
        let path = self.file_path(id, node);
        if p.complete {
            return self.description(id, node).await;
        }
        if p.received != d.size {
            return Err(CaptureUploadError::Incomplete {
                size: d.size,
                received: p.received,
            });
        }
        let chunks = self.chunks(id, node).await?;
        let mut crc = 0u32;
        let mut w = object_store::buffered::BufWriter::new(Arc::clone(&self.store), path.clone());
        for (_, _, c) in &chunks {
            let data = self.store.get(c).await?.bytes().await?;
            crc = crc32c::crc32c_append(crc, &data);
            tokio::io::AsyncWriteExt::write_all(&mut w, &data)
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "capture",
                    source: Box::new(e),
                })?;
        }
        if crc != d.crc32c {
            w.abort().await?;
            return Err(CaptureUploadError::FileChecksum {
                want: d.crc32c,
                got: crc,
            });
        }
        tokio::io::AsyncWriteExt::shutdown(&mut w)
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "capture",
                source: Box::new(e),
            })?;
        d.object_path = path.to_string();
        let json = serde_json::to_vec(&d)?;
        self.store
            .put(&self.description_path(id, node), PutPayload::from(json))
            .await?;
        for (_, _, c) in chunks {
            self.store.delete(&c).await?;
        }
        Ok(d)
    }

    pub async fn description(&self, id: &str, node: &str) -> Result<FileDescription> {
        let data = self
            .store
            .get(&self.description_path(id, node))
            .await?
            .bytes()
            .await?;
        Ok(serde_json::from_slice(&data)?)
    }

    /// The request of capture `id` as the query service stored it; `None` when there is none.
    pub async fn request(&self, id: &str) -> Result<Option<CaptureRequest>> {
        check_name(id)?;
        match self.store.get(&self.request_path(id)).await {
            Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every stored request (captures whose request is gone or unreadable are
    /// skipped, the unreadable ones logged).
    pub async fn requests(&self) -> Result<Vec<CaptureRequest>> {
        let listed = self
            .store
            .list_with_delimiter(Some(&self.root.clone().join("_captures")))
            .await?;
        let mut out = Vec::new();
        for dir in listed.common_prefixes {
            let Some(id) = dir.filename() else { continue };
            match self.request(id).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(CaptureUploadError::Json(e)) => {
                    tracing::warn!(capture = id, error = %e, "unreadable capture request skipped");
                }
                Err(CaptureUploadError::BadName(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Where the network snapshot of `node` taken at the start of capture `id` is.
    pub fn snapshot_path(&self, id: &str, node: &str) -> Path {
        self.base(id).join(format!("{node}.snapshot.txt"))
    }

    /// Stores the network snapshot `node` took when capture `id` started;
    /// the capture must exist.
    pub async fn put_snapshot(&self, id: &str, node: &str, text: bytes::Bytes) -> Result<()> {
        check_node(node)?;
        if self.request(id).await?.is_none() {
            return Err(CaptureUploadError::NoCapture(id.to_string()));
        }
        self.store
            .put(&self.snapshot_path(id, node), PutPayload::from(text))
            .await?;
        Ok(())
    }

    /// Records where `node`'s part of capture `id` stands; the capture must exist.
    pub async fn put_status(&self, id: &str, node: &str, status: &NodeStatus) -> Result<()> {
        check_node(node)?;
        if self.request(id).await?.is_none() {
            return Err(CaptureUploadError::NoCapture(id.to_string()));
        }
        if status.node != node {
            return Err(CaptureUploadError::BadName(status.node.clone()));
        }
        let json = serde_json::to_vec(status)?;
        self.store
            .put(&self.status_path(id, node), PutPayload::from(json))
            .await?;
        Ok(())
    }
}

/// A node name: as [`check_name`], and not the name of the request object.
pub fn check_node(node: &str) -> Result<()> {
    check_name(node)?;
    if node == REQUEST_OBJECT.trim_end_matches(".json") {
        return Err(CaptureUploadError::BadName(node.to_string()));
    }
    Ok(())
}
