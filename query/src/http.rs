//! The HTTP API: one module per area ([`sql`], [`pods`], [`grafana`], [`export`],
//! [`openapi`]) over the shared [`state`], route paths in [`routes`], and the router
//! that puts each area behind its scope.
//!
//! | routes | scope |
//! |---|---|
//! | `/healthz`, `/readyz` (503 while draining or while the table cannot be read yet) | none |
//! | SQL, questions, per-pod, OpenAPI, Grafana | `read` |
//! | `/api/v1/export…` | `export` |
//! | `/api/v1/captures…` ([`crate::capture::http`]) | `capture` |
//! | `/metrics` | `admin` |

pub mod export;
pub mod grafana;
pub mod openapi;
pub mod pods;
pub mod routes;
pub mod sql;
pub mod state;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::middleware::from_fn_with_state;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowlake_service::Scope;
use flowlake_service::audit::audit;
use flowlake_service::auth::require;

pub use state::{AppState, Clock};

use crate::capture::http as cap;

use crate::table::TableStatus;

/// Largest request body: room for the longest statement ([`crate::admission::MAX_SQL_BYTES`])
/// and a Grafana request around it.
pub const MAX_BODY_BYTES: usize = 1 << 20;

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

/// `GET /readyz`: 503 while the service drains, and while the table is not there
/// yet or its store cannot be read (the reason in the body; queries meanwhile answer
/// over an empty table). Looking again is part of answering.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    let table = state.engine.table();
    if let Err(e) = table.refresh_if_stale().await {
        tracing::debug!(error = %e, "readiness: refreshing the table failed");
    }
    match table.status() {
        TableStatus::Ready { .. } => (StatusCode::OK, "ok").into_response(),
        TableStatus::Waiting { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {reason}"),
        )
            .into_response(),
    }
}

/// The whole HTTP API, for `flowlake query` or for mounting in another binary.
pub fn router(state: AppState) -> Router {
    let scoped = |scope: Scope| from_fn_with_state((state.auth.clone(), scope), require);
    let read = Router::new()
        .route(routes::SQL, post(sql::handle))
        .route(routes::OPENAPI, get(openapi::handle))
        .route(routes::QUESTIONS, get(pods::list))
        .route(routes::QUESTION_RANKED, get(pods::ranked))
        .route(routes::POD_QUESTION, get(pods::pod))
        .route(routes::WORKLOAD_QUESTION, get(pods::workload))
        .route(routes::GRAFANA_ROOT, get(|| async { "ok" }))
        .nest(routes::GRAFANA, grafana::router())
        .route_layer(scoped(Scope::Read));
    let export = Router::new()
        .route(routes::EXPORT, post(export::start))
        .route(routes::EXPORT_JOB, get(export::status))
        .route_layer(scoped(Scope::Export));
    let capture = Router::new()
        .route(routes::CAPTURES, get(cap::list).post(cap::create))
        .route(routes::CAPTURE_LOOKUP, get(cap::find))
        .route(routes::CAPTURE, get(cap::status).delete(cap::delete))
        .route(routes::CAPTURE_DOWNLOAD, get(cap::download))
        .route_layer(scoped(Scope::Capture));
    let admin = Router::new()
        .route(routes::METRICS, get(metrics))
        .route_layer(scoped(Scope::Admin));
    Router::new()
        .merge(read)
        .merge(export)
        .merge(capture)
        .merge(admin)
        .route(flowlake_service::health::HEALTH, get(|| async { "ok" }))
        .route(flowlake_service::health::READY, get(readyz))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(from_fn_with_state(state.audit, audit))
        .with_state(state)
}
