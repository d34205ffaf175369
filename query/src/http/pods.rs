//! The per-pod questions as HTTP endpoints:
//! `GET /api/v1/pods/{namespace}/{pod}/{question}`,
//! `GET /api/v1/workloads/{namespace}/{workload}/{question}` and
//! `GET /api/v1/questions/{question}?by=pod|workload` (every pod or workload, ranked).

use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::{Extension, Json};
use chrono::{DateTime, Duration, Utc};
use flowlake_service::Principal;
use serde::Deserialize;

use super::sql::stream_response;
use super::state::AppState;
use crate::access::Access;
use crate::error::{QueryError, Result};
use crate::format::OutputFormat;
use crate::questions::{Question, QuestionRequest, Scope, TimeRange, parse_time};

/// Query string shared by the question endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct RangeParams {
    /// RFC 3339 time or milliseconds since the epoch; default `to` minus one hour.
    pub from: Option<String>,
    /// RFC 3339 time or milliseconds since the epoch; default now.
    pub to: Option<String>,
    pub limit: Option<usize>,
    pub format: Option<OutputFormat>,
    /// `pod` (default) or `workload`, for `/api/v1/questions/{question}`.
    pub by: Option<String>,
    /// `true`: answer from the flow rows only (exact latency percentiles), never from
    /// the hourly rollups.
    #[serde(default)]
    pub exact: bool,
}

impl RangeParams {
    pub fn range(&self, now: DateTime<Utc>) -> Result<TimeRange> {
        let to = self
            .to
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(now);
        let from = self
            .from
            .as_deref()
            .map(parse_time)
            .transpose()?
            .unwrap_or(to - Duration::hours(1));
        TimeRange::checked(from, to)
    }
}

fn question(name: &str) -> Result<Question> {
    Question::parse(name).ok_or_else(|| {
        QueryError::NotFound(format!(
            "no question {name:?}; known: {}",
            Question::ALL.map(|q| q.name()).join(", ")
        ))
    })
}

async fn answer(
    state: &AppState,
    principal: &Principal,
    q: Question,
    scope: Scope,
    params: &RangeParams,
) -> Result<Response> {
    let range = params.range((state.clock)())?;
    let limit = params
        .limit
        .unwrap_or(100)
        .min(state.engine.limits().max_rows);
    let request = QuestionRequest {
        exact: params.exact,
        ..QuestionRequest::new(q, scope, range, limit)
    };
    let result = state
        .engine
        .answer(&request, &Access::of(principal))
        .await?;
    stream_response(result, params.format.unwrap_or_default())
}

pub async fn pod(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((namespace, pod, name)): Path<(String, String, String)>,
    Query(params): Query<RangeParams>,
) -> Result<Response> {
    answer(
        &state,
        &principal,
        question(&name)?,
        Scope::Pod { namespace, pod },
        &params,
    )
    .await
}

pub async fn workload(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path((namespace, workload, name)): Path<(String, String, String)>,
    Query(params): Query<RangeParams>,
) -> Result<Response> {
    answer(
        &state,
        &principal,
        question(&name)?,
        Scope::Workload {
            namespace,
            workload,
        },
        &params,
    )
    .await
}

pub async fn ranked(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    Query(params): Query<RangeParams>,
) -> Result<Response> {
    let scope = match params.by.as_deref() {
        None | Some("pod") => Scope::AllPods,
        Some("workload") => Scope::AllWorkloads,
        Some(other) => {
            return Err(QueryError::BadRequest(format!(
                "by={other}: expected pod or workload"
            )));
        }
    };
    answer(&state, &principal, question(&name)?, scope, &params).await
}

pub async fn list() -> Json<serde_json::Value> {
    Json(serde_json::Value::Array(
        Question::ALL
            .iter()
            .map(|q| {
                serde_json::json!({
                    "name": q.name(),
                    "view": q.view(),
                    "description": q.description(),
                })
            })
            .collect(),
    ))
}
