//! The HTTP API: `POST /api/v1/flows`, `/healthz`, `/readyz`, `/metrics`.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::buffer::MemoryBudget;
use crate::decode::{BodyEncoding, decode_bytes};
use crate::error::{IngestError, Result};
use crate::metrics::{Metrics, ReasonLabel};
use crate::wal::BatchId;
use crate::writer::{AppendRequest, Appended, WriterHandle};

/// Route paths, in one place.
pub mod routes {
    pub const FLOWS: &str = "/api/v1/flows";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    pub const METRICS: &str = "/metrics";
}

/// Header carrying the client's idempotency key.
pub const BATCH_ID_HEADER: &str = "flowlake-batch-id";

/// Shared state of the handlers.
pub struct HttpState {
    /// Set once WAL replay is done: the ingester is ready.
    pub writer: OnceLock<WriterHandle>,
    pub budget: Arc<MemoryBudget>,
    pub metrics: Metrics,
    pub registry: Registry,
    pub token: Option<String>,
    pub max_body_bytes: usize,
}

/// Body of a `200` answer.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct IngestResponse {
    pub rows: u64,
    pub duplicate: bool,
}

/// The ingester's router.
pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(routes::FLOWS, post(post_flows))
        .route(routes::HEALTHZ, get(|| async { "ok" }))
        .route(routes::READYZ, get(readyz))
        .route(routes::METRICS, get(metrics))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    if s.writer.get().is_some() {
        (StatusCode::OK, "ready").into_response()
    } else {
        IngestError::NotReady.into_response()
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &s.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => IngestError::Internal(e.to_string()).into_response(),
    }
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    // Constant-time comparison.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

async fn post_flows(
    State(s): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
) -> std::result::Result<axum::Json<IngestResponse>, IngestError> {
    let result = ingest(&s, &headers, body).await;
    if let Err(e) = &result {
        s.metrics
            .batches_rejected
            .get_or_create(&ReasonLabel { reason: e.reason() })
            .inc();
    }
    result.map(axum::Json)
}

async fn ingest(s: &HttpState, headers: &HeaderMap, body: Body) -> Result<IngestResponse> {
    if let Some(token) = &s.token
        && !authorized(headers, token)
    {
        return Err(IngestError::Unauthorized);
    }
    let writer = s.writer.get().ok_or(IngestError::NotReady)?.clone();
    let batch_id = headers
        .get(BATCH_ID_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| IngestError::BadBatchId("not ASCII".into()))
                .and_then(BatchId::parse)
        })
        .transpose()?;
    let encoding = BodyEncoding::from_header(
        headers
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok()),
    )?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let limit = s.max_body_bytes;
    if declared.is_some_and(|n| n > limit) {
        return Err(IngestError::TooLarge { limit });
    }
    let body: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| IngestError::TooLarge { limit })?;
    let decoded = decode_bytes(body.clone(), encoding, limit)?;
    let rows = decoded.rows as u64;
    let memory = decoded.memory_bytes;
    if !s.budget.try_reserve(memory) {
        return Err(IngestError::Busy {
            retry_after: Duration::from_secs(1),
        });
    }
    s.metrics.buffer_bytes.set(s.budget.used() as i64);
    let body_len = body.len() as u64;
    let outcome = writer
        .append(AppendRequest {
            batch_id,
            encoding,
            body,
            decoded,
        })
        .await;
    match outcome {
        Ok(Appended::Stored { .. }) => {
            s.metrics.rows_in.inc_by(rows);
            s.metrics.bytes_in.inc_by(body_len);
            s.metrics.batches_accepted.inc();
            Ok(IngestResponse {
                rows,
                duplicate: false,
            })
        }
        Ok(Appended::Duplicate { rows }) => {
            s.budget.release(memory);
            s.metrics.batches_duplicate.inc();
            Ok(IngestResponse {
                rows,
                duplicate: true,
            })
        }
        Err(e) => {
            s.budget.release(memory);
            Err(e)
        }
    }
}
