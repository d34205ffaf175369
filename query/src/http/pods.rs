//! The per-pod questions as HTTP endpoints:
//! `GET /api/v1/pods/{namespace}/{pod}/{question}`,
//! `GET /api/v1/workloads/{namespace}/{workload}/{question}` and
//! `GET /api/v1/questions/{question}?by=pod|workload` (every pod or workload, ranked).

use axum::extract::{Path, Query, State};
use axum::http::HeaderValue;
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
    let access = Access::of(principal);
    let result = state.engine.answer(&request, &access).await?;
    let losses = match access.is_all() {
        true => losses_of(state, &range, &access).await,
        false => None,
    };
    let mut response = stream_response(result, params.format.unwrap_or_default())?;
    if let Some(v) = losses {
        response.headers_mut().insert(LOSSES_HEADER, v);
    }
    Ok(response)
}

/// Header of a question's answer: what the `losses` table says the flow rows of
/// its range miss, per node, hour, kind and unit (the 20 largest), as a JSON
/// array of `{node, hour, kind, unit, lost}` — "this hour on node X is
/// incomplete by N packets". Absent when nothing was lost in the range, and for
/// namespace-scoped tokens (which cannot read `losses`: its rows name nodes).
pub const LOSSES_HEADER: &str = "flowlake-losses";

/// The [`LOSSES_HEADER`] value for `range`; `None` when nothing was lost (or the
/// lookup failed: logged, the answer goes out without it).
async fn losses_of(state: &AppState, range: &TimeRange, access: &Access) -> Option<HeaderValue> {
    let sql = format!(
        "SELECT node, date_trunc('hour', interval_start) AS hour, kind, unit, \
         CAST(sum(lost) AS BIGINT) AS lost FROM {} WHERE {} \
         GROUP BY 1, 2, 3, 4 ORDER BY lost DESC, node, hour, kind LIMIT 20",
        crate::losses::LOSSES,
        range.predicate()
    );
    let rows = async {
        let batches = state.engine.run(&sql, "losses", false, access).await?;
        let batches = batches.collect().await?;
        let mut w = datafusion::arrow::json::ArrayWriter::new(Vec::new());
        for b in &batches {
            w.write(b)
                .map_err(|e| QueryError::Config(format!("losses as JSON: {e}")))?;
        }
        w.finish()
            .map_err(|e| QueryError::Config(format!("losses as JSON: {e}")))?;
        Ok::<_, QueryError>(w.into_inner())
    };
    match rows.await {
        Ok(json) if json.len() > 2 => HeaderValue::from_bytes(&json)
            .inspect_err(|e| tracing::warn!(error = %e, "losses header not sent"))
            .ok(),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "looking up the range's losses failed: answered without them");
            None
        }
    }
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
