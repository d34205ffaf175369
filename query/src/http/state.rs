//! The state every handler shares.

use std::sync::Arc;

use chrono::Utc;
use flowlake_service::{AuditConfig, Auth};
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::capture::CaptureSettings;
use crate::engine::QueryEngine;
use crate::error::Result;
pub use crate::export::Clock;
use crate::export::{ExportJobs, ExportPolicy};

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<QueryEngine>,
    pub exports: Arc<ExportJobs>,
    pub clock: Clock,
    /// Served on [`super::routes::METRICS`].
    pub registry: Arc<Registry>,
    /// Who may call which route (off: everyone may call everything).
    pub auth: Auth,
    pub audit: AuditConfig,
    /// Cancelled when the service starts draining (`/readyz` then answers 503).
    pub shutdown: CancellationToken,
    pub captures: CaptureSettings,
}

impl AppState {
    /// State with authentication off and exports refused (no export roots).
    pub fn new(engine: Arc<QueryEngine>, max_export_jobs: usize) -> Self {
        Self::with_exports(engine, max_export_jobs, ExportPolicy::default())
            .expect("without export roots there is no job record store to open")
    }

    /// State with exports below the roots of `policy` (whose first root holds the
    /// jobs' status records).
    pub fn with_exports(
        engine: Arc<QueryEngine>,
        max_export_jobs: usize,
        policy: ExportPolicy,
    ) -> Result<Self> {
        let clock: Clock = Arc::new(Utc::now);
        Ok(AppState {
            exports: Arc::new(ExportJobs::new(
                Arc::clone(&engine),
                max_export_jobs,
                policy,
                Arc::clone(&clock),
            )?),
            engine,
            clock,
            registry: Arc::new(Registry::default()),
            auth: Auth::Open,
            audit: AuditConfig::default(),
            shutdown: CancellationToken::new(),
            captures: CaptureSettings::default(),
        })
    }

    /// Serves `registry` on `/metrics`.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Arc::new(registry);
        self
    }
}
