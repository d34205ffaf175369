//! Starting and stopping the service: the table, the listener, the rollup loop, and
//! a drain on shutdown (stop accepting, let requests and export jobs finish within
//! the grace period, then abandon what is left).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use flowlake_service::tls::TlsListener;
use flowlake_service::{AuditConfig, Auth, TokenStore};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::QueryConfig;
use crate::engine::QueryEngine;
use crate::error::{QueryError, Result};
use crate::http::{AppState, router};
use crate::metrics::QueryMetrics;
use crate::rollup::build::{RollupPolicy, build_rollups};

/// How often the token file and the TLS files are looked at for changes.
const TOKEN_RECHECK: Duration = Duration::from_secs(1);

/// A running query service.
pub struct RunningQuery {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<std::io::Result<()>>,
    /// The Arrow Flight SQL listener, when `--flight-listen` is set.
    flight: Option<crate::flight::FlightListener>,
    state: AppState,
}

impl RunningQuery {
    /// The address the service listens on (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Arrow Flight SQL listener's address, when it was asked for.
    pub fn flight_addr(&self) -> Option<SocketAddr> {
        self.flight.as_ref().map(|f| f.addr)
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Stops accepting, lets running requests finish, and waits.
    pub async fn stop(self) -> Result<()> {
        self.stop_within(Duration::MAX).await
    }

    /// Stops accepting and lets running requests and export jobs finish for at most
    /// `grace`; what is still running then is abandoned (its queries aborted).
    pub async fn stop_within(self, grace: Duration) -> Result<()> {
        self.shutdown.cancel();
        self.state.engine.exec().close();
        let deadline = tokio::time::Instant::now()
            .checked_add(grace)
            .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(86400 * 365));
        let abort = self.task.abort_handle();
        let served = tokio::time::timeout_at(deadline, self.task).await;
        if let Some(flight) = self.flight {
            let abort = flight.task.abort_handle();
            if tokio::time::timeout_at(deadline, flight.task)
                .await
                .is_err()
            {
                tracing::warn!(
                    ?grace,
                    "Flight SQL calls still running after the grace period; abandoning them"
                );
                abort.abort();
            }
        }
        let exports = tokio::time::timeout_at(deadline, self.state.exports.wait_idle()).await;
        match served {
            Ok(joined) => {
                joined.map_err(|e| QueryError::Config(format!("server task failed: {e}")))??
            }
            Err(_) => {
                tracing::warn!(
                    ?grace,
                    "requests still running after the grace period; abandoning them"
                );
                abort.abort();
            }
        }
        if exports.is_err() {
            tracing::warn!(
                ?grace,
                "export jobs still running after the grace period; abandoning them"
            );
            self.state.exports.interrupt_running().await;
        }
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
        let auth = match &config.token_file {
            Some(path) => Auth::Tokens(Arc::new(TokenStore::open(path, TOKEN_RECHECK)?)),
            None => {
                tracing::warn!(
                    "no --token-file: authentication is off, every caller may use every route"
                );
                Auth::Open
            }
        };
        let engine = Arc::new(QueryEngine::open(&config.engine(), metrics).await?);
        let mut state =
            AppState::with_exports(engine, config.max_export_jobs, config.export.clone())?
                .with_registry(registry);
        state.auth = auth;
        state.audit = AuditConfig {
            sql: config.audit_sql,
            sink: config.audit_sink,
        };
        state.shutdown = shutdown.clone();
        state.captures = config.captures;
        if let Some(every) = config.captures.retention_every {
            tokio::spawn(crate::capture::retention::run(
                state.engine.captures().clone(),
                config.captures.retention,
                every,
                std::sync::Arc::clone(&state.clock),
                shutdown.clone(),
            ));
        }
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
        let flight = match config.flight_listen {
            Some(addr) => {
                let service = crate::flight::FlightSql::new(Arc::clone(&state.engine))?;
                let app = crate::flight::router(service, state.auth.clone(), state.audit);
                let tls = config.tls.clone();
                Some(crate::flight::start(addr, app, tls, TOKEN_RECHECK, shutdown.clone()).await?)
            }
            None => None,
        };
        let app = router(state.clone());
        let token = shutdown.clone();
        let task = match &config.tls {
            Some(files) => {
                let tls = flowlake_service::tls::server_config(files.clone(), TOKEN_RECHECK)?;
                let listener = TlsListener::new(listener, tls)?;
                tokio::spawn(async move {
                    axum::serve(listener, app)
                        .with_graceful_shutdown(async move { token.cancelled().await })
                        .await
                })
            }
            None => tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { token.cancelled().await })
                    .await
            }),
        };
        Ok(RunningQuery {
            addr,
            shutdown,
            task,
            flight,
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

/// Runs the service until `shutdown` is cancelled, then drains for at most the
/// configured grace period.
pub async fn run(config: QueryConfig, shutdown: CancellationToken) -> Result<()> {
    let grace = config.shutdown_grace;
    let running = QueryService::start_with(config, Registry::default(), shutdown.clone()).await?;
    shutdown.cancelled().await;
    running.stop_within(grace).await
}
