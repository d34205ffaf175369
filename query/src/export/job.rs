//! Asynchronous export jobs of `POST /api/v1/export`, kept in memory with their status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use tokio_util::task::TaskTracker;

use super::{ExportConfig, ExportPolicy, ExportSummary, run_export};
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// One export job as reported to clients.
#[derive(Debug, Clone, Serialize)]
pub struct ExportJob {
    pub id: String,
    pub state: JobState,
    pub destination: String,
    pub rows: u64,
    pub from_version: Option<u64>,
    pub to_version: Option<u64>,
    pub error: Option<String>,
}

/// The jobs of this process, newest last, bounded.
pub struct ExportJobs {
    engine: Arc<QueryEngine>,
    jobs: Mutex<VecDeque<Arc<Mutex<ExportJob>>>>,
    max_jobs: usize,
    policy: ExportPolicy,
    tasks: TaskTracker,
}

impl ExportJobs {
    pub fn new(engine: Arc<QueryEngine>, max_jobs: usize, policy: ExportPolicy) -> Self {
        ExportJobs {
            engine,
            jobs: Mutex::new(VecDeque::new()),
            max_jobs: max_jobs.max(1),
            policy,
            tasks: TaskTracker::new(),
        }
    }

    /// Waits until no job runs (for the drain on shutdown).
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Checks a requested export against the operator's policy: the destination below
    /// an export root, no storage options from the request (the operator's are used).
    pub fn confine(&self, mut cfg: ExportConfig) -> Result<ExportConfig> {
        if !cfg.storage_options.is_empty() {
            return Err(QueryError::ExportRefused(
                "storage options and credentials come from the service's configuration, not the request".into(),
            ));
        }
        cfg.source = self.engine.table().location().clone();
        cfg.destination = self.policy.confine(&cfg.destination, &cfg.source)?;
        cfg.storage_options = self.policy.storage_options.clone();
        Ok(cfg)
    }

    /// Starts a job (checked by [`Self::confine`]) on the query runtime, under the
    /// service's memory pool, timeout and concurrency bound; returns its initial status.
    pub fn start(&self, mut cfg: ExportConfig) -> ExportJob {
        cfg.source = self.engine.table().location().clone();
        cfg.runtime_env = Some(self.engine.context().runtime_env());
        let job = ExportJob {
            id: uuid::Uuid::new_v4().to_string(),
            state: JobState::Running,
            destination: cfg.destination.clone(),
            rows: 0,
            from_version: None,
            to_version: None,
            error: None,
        };
        let shared = Arc::new(Mutex::new(job.clone()));
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            // Forget the oldest finished jobs beyond the bound.
            while jobs.len() >= self.max_jobs {
                let finished = jobs
                    .iter()
                    .position(|j| j.lock().expect("job lock").state != JobState::Running);
                match finished {
                    Some(i) => {
                        jobs.remove(i);
                    }
                    None => break,
                }
            }
            jobs.push_back(Arc::clone(&shared));
        }
        let metrics_rows = self.engine_rows_counter();
        let exec = Arc::clone(self.engine.exec());
        let timeout = self.engine.limits().timeout;
        let work = self.tasks.track_future(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let outcome = match exec.permit(deadline).await {
                Ok(_permit) => tokio::time::timeout_at(deadline, run_export(&cfg, None))
                    .await
                    .unwrap_or(Err(QueryError::Timeout(timeout))),
                Err(e) => Err(e),
            };
            let mut j = shared.lock().expect("job lock");
            match outcome {
                Ok(ExportSummary {
                    rows,
                    from_version,
                    to_version,
                    ..
                }) => {
                    metrics_rows.inc_by(rows);
                    j.state = JobState::Succeeded;
                    j.rows = rows;
                    j.from_version = from_version;
                    j.to_version = Some(to_version);
                }
                Err(e) => {
                    tracing::warn!(job = %j.id, error = %e.full_message(), "export failed");
                    j.state = JobState::Failed;
                    j.error = Some(e.full_message());
                }
            }
        });
        self.engine.exec().handle().spawn(work);
        job
    }

    fn engine_rows_counter(&self) -> prometheus_client::metrics::counter::Counter {
        self.engine.metrics().export_rows.clone()
    }

    pub fn get(&self, id: &str) -> Option<ExportJob> {
        self.jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .map(|j| j.lock().expect("job lock").clone())
            .find(|j| j.id == id)
    }
}
