//! The capture API of the query service (scope `capture`; a namespace-scoped
//! token creates, lists, sees and downloads captures of its namespaces only:
//! another namespace's capture is answered as not found).

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use chrono::{DateTime, Utc};
use flowlake_schemas::capture::CaptureRequest;
use flowlake_service::Principal;
use serde::{Deserialize, Serialize};

use super::create::{CreateCapture, new_id, request};
use super::flow::{FlowKey, merge, only_flow};
use super::lookup::{self, Covering};
use super::seen::{self, SeenFlow};
use super::store::Stored;
use crate::access::Access;
use crate::error::{QueryError, Result};
use crate::http::AppState;

/// A capture as the API shows it.
#[derive(Debug, Serialize, Deserialize)]
pub struct CaptureStatus {
    pub request: CaptureRequest,
    /// Each node's report, by node.
    pub nodes: std::collections::BTreeMap<String, flowlake_schemas::capture::NodeStatus>,
    /// Completed files, by node.
    pub files: std::collections::BTreeMap<String, flowlake_schemas::capture::FileDescription>,
    /// Flows of the captured pods in the capture's interval, from the flow table.
    #[serde(default)]
    pub flows: Vec<SeenFlow>,
    /// Nodes whose network snapshot (addresses, routes, rules, sockets at the
    /// capture's start) can be downloaded (`download?node=N&snapshot=true`).
    #[serde(default)]
    pub snapshots: Vec<String>,
}

fn refuse_without_auth(state: &AppState) -> Result<()> {
    if matches!(state.auth, flowlake_service::Auth::Open) && !state.captures.without_auth {
        return Err(QueryError::NamespaceForbidden(
            "captures while authentication is off (start with --token-file, or \
             --captures-without-auth to allow them anyway)"
                .into(),
        ));
    }
    Ok(())
}

/// The request of `id` if this caller may see it; not found otherwise.
async fn visible(state: &AppState, principal: &Principal, id: &str) -> Result<CaptureRequest> {
    refuse_without_auth(state)?;
    let missing = || QueryError::NotFound(format!("no capture {id}"));
    flowlake_schemas::capture::check_id(id).map_err(|_| missing())?;
    let r = state
        .engine
        .captures()
        .request(id)
        .await?
        .ok_or_else(missing)?;
    if Access::of(principal).may_read(&r.namespace) {
        Ok(r)
    } else {
        Err(missing())
    }
}

fn audit(action: &str, principal: &Principal, r: &CaptureRequest, detail: &str) {
    tracing::info!(
        target: "flowlake::audit",
        token = %principal.name,
        action,
        capture = %r.id,
        namespace = %r.namespace,
        selector = %r.selector,
        filter = %r.filter,
        detail,
        "capture"
    );
}

/// `POST /api/v1/captures`.
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: std::result::Result<Json<CreateCapture>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<CaptureRequest>)> {
    refuse_without_auth(&state)?;
    let Json(body) = body.map_err(|e| QueryError::BadRequest(e.body_text()))?;
    Access::of(&principal).check_namespace(&body.namespace)?;
    let now = (state.clock)();
    let r = request(body, new_id(now), &principal.name, now)?;
    if !seen::namespace_known(&state.engine, &r.namespace, now).await? {
        return Err(QueryError::BadRequest(format!(
            "unknown namespace {:?}: no flow of it in the last {} hours",
            r.namespace,
            seen::NAMESPACE_LOOKBACK_HOURS
        )));
    }
    state.engine.captures().put_request(&r, true).await?;
    audit("create", &principal, &r, "");
    Ok((StatusCode::CREATED, Json(r)))
}

/// `GET /api/v1/captures`: the captures of the caller's namespaces.
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<Vec<CaptureRequest>>> {
    refuse_without_auth(&state)?;
    let access = Access::of(&principal);
    let all = state.engine.captures().requests().await?;
    Ok(Json(
        all.into_iter()
            .filter(|r| access.may_read(&r.namespace))
            .collect(),
    ))
}

/// `GET /api/v1/captures/{id}`.
pub async fn status(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<CaptureStatus>> {
    let request = visible(&state, &principal, &id).await?;
    let Stored {
        statuses,
        files,
        snapshots,
    } = state.engine.captures().stored(&id).await?;
    let now = (state.clock)();
    let flows = seen::flows(&state.engine, &request, &statuses, &files, now, &principal).await?;
    Ok(Json(CaptureStatus {
        request,
        nodes: statuses,
        files,
        flows,
        snapshots,
    }))
}

#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    /// One node's file; all nodes' files as sections of one pcapng otherwise.
    pub node: Option<String>,
    /// Only this flow's packets (`tcp 10.0.0.1:1234 10.0.0.2:80`), both directions.
    pub flow: Option<String>,
    /// The node's network snapshot (text) instead of its packets.
    #[serde(default)]
    pub snapshot: bool,
}

/// `GET /api/v1/captures/{id}/download`.
pub async fn download(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
    Query(q): Query<DownloadQuery>,
) -> Result<Response> {
    let r = visible(&state, &principal, &id).await?;
    let captures = state.engine.captures();
    if q.snapshot {
        let Some(node) = &q.node else {
            return Err(QueryError::BadRequest(
                "a snapshot is one node's: give `node`".into(),
            ));
        };
        let text = captures.snapshot(&id, node).await?;
        audit("download", &principal, &r, &format!("snapshot node={node}"));
        return Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response());
    }
    let flow: Option<FlowKey> = q.flow.as_deref().map(str::parse).transpose()?;
    let nodes: Vec<String> = match &q.node {
        Some(n) => vec![n.clone()],
        None => captures.stored(&id).await?.files.into_keys().collect(),
    };
    if nodes.is_empty() {
        return Err(QueryError::NotFound(format!(
            "capture {id} has no completed file yet"
        )));
    }
    let mut files = Vec::new();
    for n in &nodes {
        files.push(captures.file(&id, n).await?);
    }
    let mut data = merge(files.iter().map(|f| f.as_ref()))?;
    let mut detail = format!("nodes={}", nodes.join(","));
    if let Some(flow) = &flow {
        let (kept, packets) = only_flow(&data, flow)?;
        data = kept;
        detail = format!("{detail} flow={flow} packets={packets}");
    }
    audit("download", &principal, &r, &detail);
    let name = match &q.node {
        Some(n) => format!("{id}-{n}.pcapng"),
        None => format!("{id}.pcapng"),
    };
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pcapng".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        data,
    )
        .into_response())
}

/// What `DELETE` did.
#[derive(Debug, Serialize, Deserialize)]
pub struct Deleted {
    pub id: String,
    pub cancelled: bool,
    /// Objects removed (files, descriptions, statuses, chunks).
    pub removed: usize,
}

/// `DELETE /api/v1/captures/{id}`: collectors see `cancelled` and stop; every
/// file is removed (the cancelled request stays until retention removes it).
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Deleted>> {
    let mut r = visible(&state, &principal, &id).await?;
    r.cancelled = true;
    let captures = state.engine.captures();
    let removed = captures.delete(&id).await?;
    captures.put_request(&r, false).await?;
    audit("delete", &principal, &r, &format!("removed={removed}"));
    Ok(Json(Deleted {
        id,
        cancelled: true,
        removed,
    }))
}

#[derive(Debug, Deserialize)]
pub struct LookupQuery {
    pub flow: String,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub observation_point: Option<String>,
}

/// `GET /api/v1/captures/lookup?flow=…&from=…&to=…[&observation_point=…]`:
/// the capture files that cover a flow in an interval.
pub async fn find(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(q): Query<LookupQuery>,
) -> Result<Json<Vec<Covering>>> {
    refuse_without_auth(&state)?;
    let flow: FlowKey = q.flow.parse()?;
    if q.to < q.from {
        return Err(QueryError::BadRequest("`to` is before `from`".into()));
    }
    let found = lookup::covering(
        &state.engine,
        &Access::of(&principal),
        &flow,
        (q.from, q.to),
        q.observation_point.as_deref(),
    )
    .await?;
    Ok(Json(found))
}
