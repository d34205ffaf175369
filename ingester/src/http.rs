//! The HTTP API: `POST /api/v1/flows` and the capture routes of collectors
//! ([`crate::capture`]; token with `ingest`), `/metrics` (`admin`),
//! `/healthz` and `/readyz` (open), on the shared service layer: bearer tokens from
//! the reloaded token file, the shared error body, an audit line per request.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use flowlake_service::audit::audit;
use flowlake_service::auth::require;
use flowlake_service::{AuditConfig, Auth, BytesIn, RowCount, Scope, TokenStore};
use prometheus_client::registry::Registry;
use serde::Serialize;

use bytes::BytesMut;
use futures::StreamExt;

use crate::buffer::MemoryBudget;
use crate::capture::CaptureStore;
use crate::config::IngesterConfig;
use crate::decode::{BodyEncoding, decode_bytes};
use crate::error::{IngestError, Result};
use crate::metrics::{Metrics, ReasonLabel};
use crate::validate::check_rows;
use crate::wal::BatchId;
use crate::writer::{AppendRequest, Appended, Clock, WriterHandle};

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
    pub auth: Auth,
    pub max_body_bytes: usize,
    pub body_timeout: Duration,
    pub clock: Clock,
    /// Capture files and requests on the table's object store.
    pub captures: CaptureStore,
    /// The `losses` table, once open ([`crate::losses`]).
    pub losses: OnceLock<Arc<crate::losses::LossTable>>,
}

/// Largest capture chunk a collector may send in one request.
pub const MAX_CAPTURE_CHUNK: usize = 64 << 20;

/// Body of a `200` answer.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct IngestResponse {
    pub rows: u64,
    pub duplicate: bool,
}

/// Authentication as configured: the token file (re-read when it changes) or off.
pub fn auth(config: &IngesterConfig) -> Result<Auth> {
    match &config.token_file {
        Some(path) => Ok(Auth::Tokens(Arc::new(TokenStore::open(
            path,
            config.reload_every,
        )?))),
        None => {
            tracing::warn!(
                "no --token-file: the ingester takes batches from anyone who reaches it"
            );
            Ok(Auth::Open)
        }
    }
}

/// The ingester's router.
pub fn router(state: Arc<HttpState>) -> Router {
    let needs = |scope: Scope| from_fn_with_state((state.auth.clone(), scope), require);
    let flows = Router::new()
        .route(routes::FLOWS, post(post_flows))
        .route_layer(needs(Scope::Ingest))
        .route_layer(from_fn_with_state(Arc::clone(&state), count_refusals));
    let captures = crate::capture::routes(state.captures.clone(), Arc::clone(&state.clock))
        .route_layer(DefaultBodyLimit::max(MAX_CAPTURE_CHUNK))
        .route_layer(needs(Scope::Ingest));
    let losses = crate::losses::routes()
        .route_layer(needs(Scope::Ingest))
        .route_layer(from_fn_with_state(Arc::clone(&state), count_refusals));
    let metrics = Router::new()
        .route(routes::METRICS, get(metrics))
        .route_layer(needs(Scope::Admin));
    Router::new()
        .merge(flows)
        .merge(losses)
        .merge(metrics)
        .route(routes::HEALTHZ, get(|| async { "ok" }))
        .route(routes::READYZ, get(readyz))
        .with_state(state)
        .merge(captures)
        .layer(from_fn_with_state(AuditConfig::default(), audit))
        .layer(DefaultBodyLimit::disable())
}

/// Batches refused for their token count as rejected (`unauthorized`, `forbidden`).
async fn count_refusals(State(s): State<Arc<HttpState>>, req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let reason = match resp.status() {
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        _ => return resp,
    };
    s.metrics
        .batches_rejected
        .get_or_create(&ReasonLabel { reason })
        .inc();
    resp
}

/// Ready once the WAL is replayed, and while the WAL takes writes: after a
/// failed write (a full disk) each call probes whether it does again.
async fn readyz(State(s): State<Arc<HttpState>>) -> Response {
    let Some(writer) = s.writer.get() else {
        return IngestError::NotReady.into_response();
    };
    if writer.health.ok() || writer.probe().await {
        (StatusCode::OK, "ready").into_response()
    } else {
        IngestError::WalFull("the last write-ahead log write failed and a probe write fails".into())
            .into_response()
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

async fn post_flows(State(s): State<Arc<HttpState>>, headers: HeaderMap, body: Body) -> Response {
    let mut seen = None;
    let result = ingest(&s, &headers, body, &mut seen).await;
    match result {
        Ok((answer, bytes_in)) => {
            let rows = RowCount::default();
            rows.add(answer.rows as usize);
            let mut resp = axum::Json(answer).into_response();
            resp.extensions_mut().insert(rows);
            resp.extensions_mut().insert(BytesIn(bytes_in));
            resp
        }
        Err(e) => {
            s.metrics
                .batches_rejected
                .get_or_create(&ReasonLabel { reason: e.reason() })
                .inc();
            crate::losses::refused(&s, seen, &e).await;
            e.into_response()
        }
    }
}

/// Takes one batch; the answer and the bytes of the body received. `seen`: the
/// body once read (what a refusal records in the `losses` table).
async fn ingest(
    s: &HttpState,
    headers: &HeaderMap,
    body: Body,
    seen: &mut Option<(Bytes, BodyEncoding)>,
) -> Result<(IngestResponse, u64)> {
    let writer = s.writer.get().ok_or(IngestError::NotReady)?.clone();
    let batch_id = batch_id(headers)?;
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
    // Admission before reading: the declared length is reserved now, a body
    // without one as it arrives; then the inflated size of a zstd body, then
    // what the decoded batches hold.
    let mut held = Reservation::new(&s.budget);
    held.resize(declared.unwrap_or(0))?;
    let body = tokio::time::timeout(s.body_timeout, read_body(body, limit, &mut held))
        .await
        .map_err(|_| IngestError::BodyTimeout(s.body_timeout))??;
    *seen = Some((body.clone(), encoding));
    if encoding == BodyEncoding::Zstd {
        let inflated = zstd::zstd_safe::get_frame_content_size(&body)
            .ok()
            .flatten()
            .map_or(limit, |n| (n as usize).min(limit));
        held.resize(body.len() + inflated)?;
    }
    let decoded = decode_bytes(body.clone(), encoding, limit)?;
    check_rows(&decoded.batches, (s.clock)())?;
    let rows = decoded.rows as u64;
    // Plain IPC arrays point into the body, which stays whole while any does.
    let memory = decoded.memory_bytes.max(body.len());
    held.resize(memory)?;
    s.metrics.buffer_bytes.set(s.budget.used() as i64);
    let body_len = body.len() as u64;
    let outcome = writer
        .append(AppendRequest {
            batch_id,
            encoding,
            body,
            decoded,
            memory_bytes: memory,
        })
        .await;
    match outcome {
        Ok(Appended::Stored { .. }) => {
            // The buffer holds it now; the flusher releases it.
            held.keep();
            s.metrics.rows_in.inc_by(rows);
            s.metrics.bytes_in.inc_by(body_len);
            s.metrics.batches_accepted.inc();
            let answer = IngestResponse {
                rows,
                duplicate: false,
            };
            Ok((answer, body_len))
        }
        Ok(Appended::Duplicate { rows }) => {
            s.metrics.batches_duplicate.inc();
            let answer = IngestResponse {
                rows,
                duplicate: true,
            };
            Ok((answer, body_len))
        }
        Err(e) => Err(e),
    }
}

/// The request's batch id, if it has one.
pub(crate) fn batch_id(headers: &HeaderMap) -> Result<Option<BatchId>> {
    headers
        .get(BATCH_ID_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| IngestError::BadBatchId("not ASCII".into()))
                .and_then(BatchId::parse)
        })
        .transpose()
}

/// Reads a body of at most `limit` bytes, growing the reservation as it arrives.
async fn read_body(body: Body, limit: usize, held: &mut Reservation<'_>) -> Result<Bytes> {
    let mut stream = body.into_data_stream();
    let mut out = BytesMut::with_capacity(held.bytes);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| IngestError::BodyRead(e.to_string()))?;
        let len = out.len() + chunk.len();
        if len > limit {
            return Err(IngestError::TooLarge { limit });
        }
        if len > held.bytes {
            held.resize(len.max(held.bytes.saturating_mul(2)).min(limit))?;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Memory reserved in the budget for one request; released when dropped
/// unless kept (the buffer then owns it).
struct Reservation<'a> {
    budget: &'a MemoryBudget,
    bytes: usize,
}

impl<'a> Reservation<'a> {
    fn new(budget: &'a MemoryBudget) -> Self {
        Reservation { budget, bytes: 0 }
    }

    /// Grows or shrinks the reservation to `bytes`; 503 when the budget is spent.
    fn resize(&mut self, bytes: usize) -> Result<()> {
        if bytes > self.bytes {
            if !self.budget.try_reserve(bytes - self.bytes) {
                return Err(IngestError::Busy {
                    retry_after: Duration::from_secs(1),
                });
            }
        } else {
            self.budget.release(self.bytes - bytes);
        }
        self.bytes = bytes;
        Ok(())
    }

    fn keep(mut self) {
        self.bytes = 0;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        self.budget.release(self.bytes);
    }
}
