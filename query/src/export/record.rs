//! The status of export jobs started over HTTP, kept beside the exports so that it
//! survives a restart of the query service: one object per job,
//! `<first export root>/_flowlake_jobs/<id>.json`, written when the job starts, while
//! it runs (its heartbeat), and when it ends. Readers of the export root skip
//! `_`-prefixed directories, and no export may write below it
//! ([`super::ExportPolicy::confine`]).
//!
//! A job whose process stopped without finishing it is reported as `interrupted`: by
//! the process itself when it abandons the job at shutdown, and by any process that
//! reads a `running` record whose heartbeat is older than [`STALE_HEARTBEATS`]
//! heartbeat intervals (the process was killed).

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::{ExportPolicy, JOBS_DIR};
use crate::error::{QueryError, Result};
use crate::storage::{location_url, object_store_for};

/// A `running` record whose heartbeat is this many intervals old is interrupted.
pub const STALE_HEARTBEATS: u32 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
    /// The service stopped (or was killed) while the job ran; the files it had
    /// staged are removed by the next export to the destination.
    Interrupted,
}

/// One export job, as reported to clients and as persisted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportJob {
    pub id: String,
    pub state: JobState,
    pub destination: String,
    pub rows: u64,
    /// Data files written to the destination.
    pub files: u64,
    pub from_version: Option<u64>,
    pub to_version: Option<u64>,
    pub error: Option<String>,
    /// Name of the token that started the job.
    pub token: String,
    /// Namespaces the exported rows were limited to (`None`: every namespace).
    pub namespaces: Option<Vec<String>>,
    /// The process that runs (or ran) the job.
    pub instance: String,
    pub started: DateTime<Utc>,
    /// Last sign of life of the running job.
    pub heartbeat: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
}

impl ExportJob {
    /// Whether `principal` may see this job: the token that started it, or a token
    /// reading every namespace.
    pub fn visible_to(&self, principal: &flowlake_service::Principal) -> bool {
        principal.namespaces.is_none() || principal.name == self.token
    }

    /// Marks a job that will not finish as interrupted.
    pub fn interrupt(&mut self, why: &str, now: DateTime<Utc>) {
        self.state = JobState::Interrupted;
        self.error = Some(format!(
            "{why}; its staged files (in the destination's {}) are removed by the next export there",
            super::STAGING_DIR
        ));
        self.finished = Some(now);
    }
}

/// Where job records are written: the first export root (`None`: no roots, so no
/// exports over HTTP).
#[derive(Clone)]
pub struct JobRecords {
    at: Option<(Arc<dyn ObjectStore>, Path)>,
}

impl std::fmt::Debug for JobRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRecords")
            .field("at", &self.at.as_ref().map(|(_, p)| p.to_string()))
            .finish()
    }
}

impl JobRecords {
    pub fn new(policy: &ExportPolicy) -> Result<Self> {
        let Some(root) = policy.roots.first() else {
            return Ok(JobRecords { at: None });
        };
        let url = location_url(root)?;
        let (store, prefix) = object_store_for(&url, &policy.storage_options)?;
        Ok(JobRecords {
            at: Some((store, prefix.clone().join(JOBS_DIR))),
        })
    }

    /// The object of job `id`; `None` for an id that is not a job id (a UUID).
    fn object(&self, id: &str) -> Option<(&dyn ObjectStore, Path)> {
        let id = uuid::Uuid::parse_str(id).ok()?;
        let (store, dir) = self.at.as_ref()?;
        Some((store.as_ref(), dir.clone().join(format!("{id}.json"))))
    }

    pub async fn write(&self, job: &ExportJob) -> Result<()> {
        let Some((store, path)) = self.object(&job.id) else {
            return Err(QueryError::Config(format!(
                "export job {} cannot be recorded (no export root)",
                job.id
            )));
        };
        let body = serde_json::to_vec_pretty(job).map_err(|e| QueryError::Config(e.to_string()))?;
        store
            .put(&path, PutPayload::from(Bytes::from(body)))
            .await?;
        Ok(())
    }

    pub async fn read(&self, id: &str) -> Result<Option<ExportJob>> {
        let Some((store, path)) = self.object(id) else {
            return Ok(None);
        };
        match store.get(&path).await {
            Ok(r) => {
                let bytes = r.bytes().await?;
                let job = serde_json::from_slice(&bytes).map_err(|e| {
                    QueryError::Config(format!("export job record {path} is corrupt: {e}"))
                })?;
                Ok(Some(job))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str) -> ExportJob {
        let t: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        ExportJob {
            id: id.into(),
            state: JobState::Running,
            destination: "/x".into(),
            rows: 0,
            files: 0,
            from_version: None,
            to_version: None,
            error: None,
            token: "t".into(),
            namespaces: Some(vec!["a".into()]),
            instance: "i".into(),
            started: t,
            heartbeat: t,
            finished: None,
        }
    }

    #[tokio::test]
    async fn records_round_trip_below_the_first_root() {
        let dir = tempfile::tempdir().unwrap();
        let policy = ExportPolicy {
            roots: vec![dir.path().to_str().unwrap().into()],
            ..ExportPolicy::default()
        };
        let records = JobRecords::new(&policy).unwrap();
        let id = uuid::Uuid::new_v4().to_string();
        let mut j = job(&id);
        records.write(&j).await.unwrap();
        j.interrupt("stopped", j.started);
        records.write(&j).await.unwrap();
        assert_eq!(records.read(&id).await.unwrap(), Some(j));
        assert!(
            dir.path()
                .join(JOBS_DIR)
                .join(format!("{id}.json"))
                .is_file()
        );
        // Not a job id: never a path.
        assert_eq!(records.read("../../etc/passwd").await.unwrap(), None);
        let none = JobRecords::new(&ExportPolicy::default()).unwrap();
        assert_eq!(none.read(&id).await.unwrap(), None);
        assert!(none.write(&job(&id)).await.is_err());
    }
}
