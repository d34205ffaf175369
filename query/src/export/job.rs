//! Asynchronous export jobs of `POST /api/v1/export`, kept in memory with their status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;

use super::{ExportConfig, ExportSummary, run_export};
use crate::engine::QueryEngine;

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
}

impl ExportJobs {
    pub fn new(engine: Arc<QueryEngine>, max_jobs: usize) -> Self {
        ExportJobs {
            engine,
            jobs: Mutex::new(VecDeque::new()),
            max_jobs: max_jobs.max(1),
        }
    }

    /// Starts a job reading the service's table; returns its initial status.
    pub fn start(&self, mut cfg: ExportConfig) -> ExportJob {
        cfg.source = self.engine.table().location().clone();
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
        tokio::spawn(async move {
            let outcome = run_export(&cfg, None).await;
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
