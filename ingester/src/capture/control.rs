//! The control channel of captures (docs/capture.md): collectors ask which
//! captures their node takes part in and report where their part stands.
//!
//! - `GET /api/v1/captures/requests?node=<node>` → the active requests for the
//!   node: not cancelled, not past `created + duration + REQUEST_GRACE`, and
//!   whose `nodes` list names the node or is empty.
//! - `PUT /api/v1/captures/{id}/nodes/{node}/status` with a `NodeStatus`:
//!   stored as `_captures/<id>/<node>.status.json` (404 for an unknown capture).
//! - `PUT /api/v1/captures/{id}/nodes/{node}/snapshot` with the node's network
//!   snapshot (text) taken at the capture's start: stored as
//!   `_captures/<id>/<node>.snapshot.txt` (404 for an unknown capture).

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, put};
use chrono::{DateTime, Utc};

use super::error::{CaptureUploadError, Result};
use super::store::{CaptureRequest, CaptureStore, NodeStatus, check_node};
use crate::writer::Clock;

pub const REQUESTS: &str = "/api/v1/captures/requests";
pub const STATUS: &str = "/api/v1/captures/{id}/nodes/{node}/status";
pub const SNAPSHOT: &str = "/api/v1/captures/{id}/nodes/{node}/snapshot";

/// How long past its end a request is still served: a collector that asks
/// late still learns of it and reports its part.
pub const REQUEST_GRACE: Duration = Duration::from_secs(60);

#[derive(Clone)]
struct Control {
    store: CaptureStore,
    clock: Clock,
}

#[derive(serde::Deserialize)]
struct NodeQuery {
    node: String,
}

/// The control routes over `store` (callers add authentication).
pub fn router(store: CaptureStore, clock: Clock) -> Router {
    Router::new()
        .route(REQUESTS, get(requests))
        .route(STATUS, put(status))
        .route(SNAPSHOT, put(snapshot))
        .with_state(Control { store, clock })
}

/// Whether `node` should be running (or finishing) `r` at `now`.
pub fn is_active(r: &CaptureRequest, node: &str, now: DateTime<Utc>) -> bool {
    let Ok(created) = DateTime::parse_from_rfc3339(&r.created) else {
        return false;
    };
    let end = created.with_timezone(&Utc)
        + chrono::Duration::seconds(r.duration_secs.min(i64::MAX as u64 / 2) as i64)
        + chrono::Duration::from_std(REQUEST_GRACE).unwrap_or_default();
    !r.cancelled && now <= end && (r.nodes.is_empty() || r.nodes.iter().any(|n| n == node))
}

async fn requests(
    State(c): State<Control>,
    Query(q): Query<NodeQuery>,
) -> Result<Json<Vec<CaptureRequest>>> {
    check_node(&q.node)?;
    let now = (c.clock)();
    let mut active: Vec<CaptureRequest> = c
        .store
        .requests()
        .await?
        .into_iter()
        .filter(|r| is_active(r, &q.node, now))
        .collect();
    active.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok(Json(active))
}

async fn status(
    State(c): State<Control>,
    Path((id, node)): Path<(String, String)>,
    body: std::result::Result<Json<NodeStatus>, axum::extract::rejection::JsonRejection>,
) -> Result<StatusCode> {
    let Json(s) = body.map_err(|e| CaptureUploadError::BadBody(e.body_text()))?;
    c.store.put_status(&id, &node, &s).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn snapshot(
    State(c): State<Control>,
    Path((id, node)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<StatusCode> {
    c.store.put_snapshot(&id, &node, body).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(nodes: &[&str], cancelled: bool) -> CaptureRequest {
        CaptureRequest {
            id: "c1".into(),
            namespace: "shop".into(),
            selector: "app=web".into(),
            pods: Vec::new(),
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            filter: String::new(),
            duration_secs: 30,
            max_bytes: 1000,
            max_packets: 10,
            snaplen: 96,
            requested_by: "alice".into(),
            created: "2026-12-07T01:00:00Z".into(),
            cancelled,
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn active_while_running_and_for_the_grace_on_the_named_nodes() {
        let during = at("2026-12-07T01:00:10Z");
        assert!(is_active(&request(&[], false), "n1", during));
        assert!(is_active(&request(&["n1", "n2"], false), "n2", during));
        assert!(!is_active(&request(&["n1"], false), "n3", during));
        assert!(!is_active(&request(&[], true), "n1", during));
        // Ends at 01:00:30, served until 01:01:30.
        assert!(is_active(
            &request(&[], false),
            "n1",
            at("2026-12-07T01:01:30Z")
        ));
        assert!(!is_active(
            &request(&[], false),
            "n1",
            at("2026-12-07T01:01:31Z")
        ));
        let mut bad = request(&[], false);
        bad.created = "yesterday".into();
        assert!(!is_active(&bad, "n1", during));
    }
}
