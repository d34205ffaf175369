//! `POST /api/v1/sql`: sandboxed SQL, results streamed in the requested format.

use axum::body::Body;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use futures::StreamExt;
use serde::Deserialize;

use flowlake_service::{Principal, RowCount, SqlAudit};

use super::state::AppState;
use crate::access::Access;
use crate::engine::QueryResult;
use crate::error::{QueryError, Result};
use crate::format::OutputFormat;

/// Body of `POST /api/v1/sql`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlRequest {
    pub sql: String,
    #[serde(default)]
    pub format: OutputFormat,
}

pub async fn handle(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    body: std::result::Result<Json<SqlRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let req = match body {
        Ok(Json(req)) => req,
        Err(e) => return QueryError::BadRequest(e.body_text()).into_response(),
    };
    let answer = match state
        .engine
        .execute_user_sql(&req.sql, "sql", &Access::of(&principal))
        .await
    {
        Ok(result) => stream_response(result, req.format),
        Err(e) => Err(e),
    };
    let mut resp = answer.unwrap_or_else(IntoResponse::into_response);
    resp.extensions_mut().insert(SqlAudit(req.sql));
    resp
}

/// Streams a query result as an HTTP body. Errors after the first bytes abort the
/// body (the client sees a failed transfer, never a silently short result).
pub fn stream_response(result: QueryResult, format: OutputFormat) -> Result<Response> {
    let rows = RowCount::default();
    let mut encoder = format.encoder(result.schema.clone())?;
    let start = encoder.start();
    let mut first = vec![start];
    for b in &result.head {
        rows.add(b.num_rows());
        first.push(encoder.batch(b)?);
    }
    let counter = rows.clone();
    let encoder = std::sync::Arc::new(std::sync::Mutex::new(Some(encoder)));
    let enc_rest = std::sync::Arc::clone(&encoder);
    let rest = result.rest.map(move |batch| {
        let batch = batch?;
        counter.add(batch.num_rows());
        let mut guard = enc_rest.lock().expect("encoder lock");
        guard
            .as_mut()
            .map_or(Ok(bytes::Bytes::new()), |e| e.batch(&batch))
    });
    let tail = futures::stream::once(async move {
        let enc = encoder.lock().expect("encoder lock").take();
        enc.map_or(Ok(bytes::Bytes::new()), |e| e.finish())
    });
    let body = futures::stream::iter(first.into_iter().map(Ok))
        .chain(rest)
        .chain(tail)
        .map(|r: Result<bytes::Bytes>| {
            r.map_err(|e| {
                tracing::warn!(error = %e.full_message(), "result stream failed");
                std::io::Error::other(e.full_message())
            })
        });
    let mut resp = (
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response();
    resp.extensions_mut().insert(rows);
    Ok(resp)
}
