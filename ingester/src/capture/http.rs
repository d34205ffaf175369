//! The capture upload routes (see `capture.rs`).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};

use super::error::{CaptureUploadError, Result};
use super::store::{CaptureStore, FileDescription, Progress};

pub const FILE: &str = "/api/v1/captures/{id}/files/{node}";
pub const COMPLETE: &str = "/api/v1/captures/{id}/files/{node}/complete";
pub const CRC_HEADER: &str = "flowlake-crc32c";

#[derive(serde::Deserialize)]
struct Offset {
    offset: u64,
}

/// The upload routes over `store` (callers add authentication).
pub fn router(store: CaptureStore) -> Router {
    Router::new()
        .route(FILE, get(progress).put(put_chunk))
        .route(COMPLETE, post(complete))
        .with_state(store)
}

async fn progress(
    State(s): State<CaptureStore>,
    Path((id, node)): Path<(String, String)>,
) -> Result<Json<Progress>> {
    Ok(Json(s.progress(&id, &node).await?))
}

async fn put_chunk(
    State(s): State<CaptureStore>,
    Path((id, node)): Path<(String, String)>,
    Query(q): Query<Offset>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Progress>> {
    let crc = headers
        .get(CRC_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| u32::from_str_radix(v, 16).ok())
        .ok_or(CaptureUploadError::ChecksumHeader)?;
    let received = s.put_chunk(&id, &node, q.offset, crc, body).await?;
    Ok(Json(Progress {
        received,
        complete: false,
    }))
}

async fn complete(
    State(s): State<CaptureStore>,
    Path((id, node)): Path<(String, String)>,
    Json(d): Json<FileDescription>,
) -> Result<Json<FileDescription>> {
    Ok(Json(s.complete(&id, &node, d).await?))
}
