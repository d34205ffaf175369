//! `POST /api/v1/export` (start a job) and `GET /api/v1/export/{id}` (its status).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};

use flowlake_service::{Principal, SqlAudit};

use super::state::AppState;
use crate::error::{QueryError, Result};
use crate::export::{ExportConfig, ExportJob};

/// Starts an export job; its SQL goes in the audit line.
pub async fn start(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: std::result::Result<Json<ExportConfig>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let sql = body
        .as_ref()
        .ok()
        .and_then(|Json(cfg)| cfg.sql.clone())
        .map(SqlAudit);
    let mut resp = start_job(&state, &principal, body).await.into_response();
    if let Some(sql) = sql {
        resp.extensions_mut().insert(sql);
    }
    resp
}

async fn start_job(
    state: &AppState,
    principal: &Principal,
    body: std::result::Result<Json<ExportConfig>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ExportJob>)> {
    // A namespace-scoped token exports only the rows of its namespaces
    // (`ExportJobs::start` reads `flows` as the token's queries do).
    let Json(cfg) = body.map_err(|e| QueryError::BadRequest(e.body_text()))?;
    let cfg = state.exports.confine(cfg)?;
    if let Some(sql) = &cfg.sql {
        state.engine.check_user_sql(sql).await?;
    }
    crate::storage::location_url(&cfg.destination)?;
    let job = state.exports.start(cfg, principal).await?;
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// A job's status, for the token that started it or a token reading every namespace;
/// it survives restarts (kept below the first export root).
pub async fn status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<ExportJob>> {
    state
        .exports
        .get(&id, &principal)
        .await?
        .map(Json)
        .ok_or_else(|| QueryError::NotFound(format!("no export job {id}")))
}
