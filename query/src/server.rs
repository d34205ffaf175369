//! The HTTP service: route paths in one place, the router, and start/run.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::QueryConfig;
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::export::ExportJobs;
use crate::metrics::QueryMetrics;
use crate::rollup::build::{RollupPolicy, build_rollups};
use crate::{export, grafana, openapi, pods, sql};

/// Route paths.
pub mod routes {
    pub const HEALTH: &str = "/healthz";
    /// Prometheus scrape endpoint (OpenMetrics text).
    pub const METRICS: &str = "/metrics";
    pub const SQL: &str = "/api/v1/sql";
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    pub const QUESTIONS: &str = "/api/v1/questions";
    pub const QUESTION_RANKED: &str = "/api/v1/questions/{question}";
    pub const POD_QUESTION: &str = "/api/v1/pods/{namespace}/{pod}/{question}";
    pub const WORKLOAD_QUESTION: &str = "/api/v1/workloads/{namespace}/{workload}/{question}";
    pub const EXPORT: &str = "/api/v1/export";
    pub const EXPORT_JOB: &str = "/api/v1/export/{id}";
    /// Prefix of the Grafana JSON datasource.
    pub const GRAFANA: &str = "/grafana";
    /// Grafana's health check calls the prefix with a trailing slash.
    pub const GRAFANA_ROOT: &str = "/grafana/";
}

/// The current time (injected so tests control it).
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// Shared state of all handlers.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<QueryEngine>,
    pub exports: Arc<ExportJobs>,
    pub clock: Clock,
    /// Served on [`routes::METRICS`].
    pub registry: Arc<Registry>,
}

impl AppState {
    pub fn new(engine: Arc<QueryEngine>, max_export_jobs: usize) -> Self {
        AppState {
            exports: Arc::new(ExportJobs::new(Arc::clone(&engine), max_export_jobs)),
            engine,
            clock: Arc::new(Utc::now),
            registry: Arc::new(Registry::default()),
        }
    }

    /// Serves `registry` on `/metrics`.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Arc::new(registry);
        self
    }
}

/// `GET /metrics`: the registry in the OpenMetrics text format.
async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding metrics: {e}"),
        )
            .into_response(),
    }
}

/// The whole HTTP API, for `flowlake query` or for mounting in another binary.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(routes::HEALTH, get(|| async { "ok" }))
        .route(routes::METRICS, get(metrics))
        .route(routes::SQL, post(sql::handle))
        .route(routes::OPENAPI, get(openapi::handle))
        .route(routes::QUESTIONS, get(pods::list))
        .route(routes::QUESTION_RANKED, get(pods::ranked))
        .route(routes::POD_QUESTION, get(pods::pod))
        .route(routes::WORKLOAD_QUESTION, get(pods::workload))
        .route(routes::EXPORT, post(export::http::start))
        .route(routes::EXPORT_JOB, get(export::http::status))
        .route(routes::GRAFANA_ROOT, get(|| async { "ok" }))
        .nest(routes::GRAFANA, grafana::router())
        .with_state(state)
}

/// A running query service.
pub struct RunningQuery {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    state: AppState,
}

impl RunningQuery {
    /// The address the service listens on (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets running requests finish, and waits.
    pub async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.task
            .await
            .map_err(|e| QueryError::Config(format!("server task failed: {e}")))??;
        Ok(())
    }
}

/// Builder-less entry point of the service.
pub struct QueryService;

impl QueryService {
    /// Opens the table, binds the listener and serves in the background.
    pub async fn start(config: QueryConfig) -> Result<RunningQuery> {
        Self::start_with(config, Registry::default(), CancellationToken::new()).await
    }

    /// Like [`Self::start`], with the service's metrics registered in `registry`
    /// (served with whatever else it holds on `/metrics`) and a shutdown token.
    pub async fn start_with(
        config: QueryConfig,
        mut registry: Registry,
        shutdown: CancellationToken,
    ) -> Result<RunningQuery> {
        let metrics = QueryMetrics::new(&mut registry);
        let engine = Arc::new(QueryEngine::open(&config, metrics).await?);
        let state = AppState::new(engine, config.max_export_jobs).with_registry(registry);
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| QueryError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, table = %config.table.location, "query service listening");
        if let Some(every) = config.rollup_every {
            tokio::spawn(rollup_loop(
                state.clone(),
                every,
                config.rollup_policy,
                shutdown.clone(),
            ));
        }
        let app = router(state.clone());
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await
        });
        Ok(RunningQuery {
            addr,
            shutdown,
            task,
            state,
        })
    }
}

/// Builds the rollups of newly closed hours every `every` until shutdown. A failed pass
/// is logged and retried at the next tick (questions fall back to the flow rows).
async fn rollup_loop(
    state: AppState,
    every: std::time::Duration,
    policy: RollupPolicy,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = (state.clock)();
        if let Err(e) = build_rollups(&state.engine, now, policy).await {
            tracing::warn!(error = %e, "building rollups failed; retrying next pass");
        }
    }
}

/// Runs the service until `shutdown` is cancelled.
pub async fn run(config: QueryConfig, shutdown: CancellationToken) -> Result<()> {
    let running = QueryService::start_with(config, Registry::default(), shutdown.clone()).await?;
    shutdown.cancelled().await;
    running.stop().await
}
