//! Asynchronous export jobs of `POST /api/v1/export`: run on the query runtime under
//! the service's limits, their status kept in memory and recorded beside the exports
//! ([`super::record`]) so that it survives a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flowlake_service::Principal;
use tokio_util::task::TaskTracker;

use super::record::{JobRecords, STALE_HEARTBEATS};
use super::{ExportConfig, ExportJob, ExportPolicy, ExportSummary, JobState, run_export};
use crate::access::Access;
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};

/// The current time (injected so tests control it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The jobs of this process, newest last, bounded.
pub struct ExportJobs {
    engine: Arc<QueryEngine>,
    jobs: Mutex<VecDeque<Arc<Mutex<ExportJob>>>>,
    max_jobs: usize,
    policy: ExportPolicy,
    records: JobRecords,
    /// This process, as named in the records of the jobs it runs.
    instance: String,
    clock: Clock,
    tasks: TaskTracker,
}

impl ExportJobs {
    pub fn new(
        engine: Arc<QueryEngine>,
        max_jobs: usize,
        policy: ExportPolicy,
        clock: Clock,
    ) -> Result<Self> {
        Ok(ExportJobs {
            engine,
            jobs: Mutex::new(VecDeque::new()),
            max_jobs: max_jobs.max(1),
            records: JobRecords::new(&policy)?,
            policy,
            instance: uuid::Uuid::new_v4().to_string(),
            clock,
            tasks: TaskTracker::new(),
        })
    }

    /// Waits until no job runs (for the drain on shutdown).
    pub async fn wait_idle(&self) {
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// Records the jobs still running as interrupted (the drain gave up on them).
    pub async fn interrupt_running(&self) {
        let running: Vec<Arc<Mutex<ExportJob>>> = self
            .jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .filter(|j| j.lock().expect("job lock").state == JobState::Running)
            .cloned()
            .collect();
        for shared in running {
            let job = {
                let mut j = shared.lock().expect("job lock");
                j.interrupt(
                    "the query service stopped while the job ran",
                    (self.clock)(),
                );
                j.clone()
            };
            if let Err(e) = self.records.write(&job).await {
                tracing::warn!(job = %job.id, error = %e.full_message(), "could not record an interrupted export");
            }
        }
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

    /// Starts a job (checked by [`Self::confine`]) for `principal` on the query runtime,
    /// reading only what the principal may read, under the service's memory pool,
    /// timeout and concurrency bound; returns its initial status once it is recorded.
    pub async fn start(&self, mut cfg: ExportConfig, principal: &Principal) -> Result<ExportJob> {
        cfg.source = self.engine.table().location().clone();
        cfg.runtime_env = Some(self.engine.context().runtime_env());
        cfg.access = Access::of(principal);
        let now = (self.clock)();
        let job = ExportJob {
            id: uuid::Uuid::new_v4().to_string(),
            state: JobState::Running,
            destination: cfg.destination.clone(),
            rows: 0,
            files: 0,
            from_version: None,
            to_version: None,
            error: None,
            token: principal.name.clone(),
            namespaces: cfg.access.list().map(<[String]>::to_vec),
            instance: self.instance.clone(),
            started: now,
            heartbeat: now,
            finished: None,
        };
        self.records.write(&job).await?;
        let shared = Arc::new(Mutex::new(job.clone()));
        self.remember(Arc::clone(&shared));
        let metrics_rows = self.engine.metrics().export_rows.clone();
        let exec = Arc::clone(self.engine.exec());
        let timeout = self.engine.limits().timeout;
        let (records, clock, heartbeat) = (
            self.records.clone(),
            Arc::clone(&self.clock),
            self.policy.job_heartbeat,
        );
        let work = self.tasks.track_future(async move {
            let deadline = tokio::time::Instant::now() + timeout;
            let run = async {
                let _permit = exec.permit(deadline).await?;
                tokio::time::timeout_at(deadline, run_export(&cfg, None))
                    .await
                    .unwrap_or(Err(QueryError::Timeout(timeout)))
            };
            let beat = || {
                let mut j = shared.lock().expect("job lock");
                j.heartbeat = clock();
                j.clone()
            };
            let outcome = with_heartbeat(run, heartbeat, &records, beat).await;
            let job = {
                let mut j = shared.lock().expect("job lock");
                finish(&mut j, outcome, clock());
                if j.state == JobState::Succeeded {
                    metrics_rows.inc_by(j.rows);
                }
                j.clone()
            };
            if let Err(e) = records.write(&job).await {
                tracing::warn!(job = %job.id, error = %e.full_message(), "could not record the end of an export");
            }
        });
        self.engine.exec().handle().spawn(work);
        Ok(job)
    }

    /// Keeps a job in memory, forgetting the oldest finished ones beyond the bound.
    fn remember(&self, job: Arc<Mutex<ExportJob>>) {
        let mut jobs = self.jobs.lock().expect("jobs lock");
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
        jobs.push_back(job);
    }

    /// Job `id` as `principal` may see it: from memory, else from its record (a job of
    /// a process that stopped: `interrupted` if it was still running).
    pub async fn get(&self, id: &str, principal: &Principal) -> Result<Option<ExportJob>> {
        let here = self
            .jobs
            .lock()
            .expect("jobs lock")
            .iter()
            .map(|j| j.lock().expect("job lock").clone())
            .find(|j| j.id == id);
        let job = match here {
            Some(j) => Some(j),
            None => match self.records.read(id).await? {
                Some(mut j) if j.state == JobState::Running && self.stale(&j) => {
                    j.interrupt(
                        "the query service running the job stopped (no heartbeat since it)",
                        (self.clock)(),
                    );
                    self.records.write(&j).await?;
                    Some(j)
                }
                other => other,
            },
        };
        Ok(job.filter(|j| j.visible_to(principal)))
    }

    /// Whether a running job of another process has stopped beating.
    fn stale(&self, job: &ExportJob) -> bool {
        let limit = self.policy.job_heartbeat * STALE_HEARTBEATS;
        let age = (self.clock)() - job.heartbeat;
        job.instance != self.instance && age.to_std().is_ok_and(|age| age > limit)
    }
}

/// Runs `work`, writing the record `beat` returns every `every` until it ends.
async fn with_heartbeat<T>(
    work: impl Future<Output = T>,
    every: Duration,
    records: &JobRecords,
    beat: impl Fn() -> ExportJob,
) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick() => {
                let job = beat();
                if let Err(e) = records.write(&job).await {
                    tracing::warn!(job = %job.id, error = %e.full_message(), "could not record an export's heartbeat");
                }
            }
        }
    }
}

fn finish(j: &mut ExportJob, outcome: Result<ExportSummary>, now: DateTime<Utc>) {
    j.finished = Some(now);
    match outcome {
        Ok(s) => {
            j.state = JobState::Succeeded;
            j.rows = s.rows;
            j.files = s.files_written;
            j.from_version = s.from_version;
            j.to_version = Some(s.to_version);
        }
        Err(e) => {
            tracing::warn!(job = %j.id, error = %e.full_message(), "export failed");
            j.state = JobState::Failed;
            j.error = Some(e.full_message());
        }
    }
}
