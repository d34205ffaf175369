//! A small protocol-faithful ingester: `POST /api/v1/flows` with an Arrow IPC stream
//! body and a `Flowlake-Batch-Id` header; a retried id is stored once; can answer
//! 503 (with Retry-After), reject everything with 400, or refuse dictionary-encoded
//! strings with 422 as an ingester from before them.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, Int64Array};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use flowlake_collector::ship::{BATCH_ID_HEADER, decode_ipc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Busy,
    Reject,
    /// As an ingester from before dictionary-encoded strings: 422 for them.
    PlainOnly,
}

pub struct Inner {
    pub mode: Mode,
    pub ids: HashSet<String>,
    /// The `bytes` column of every stored row (tests make it unique per record).
    pub bytes: Vec<i64>,
    /// The `packets` column of every stored row.
    pub packets: Vec<i64>,
    pub duplicates: u64,
    /// Bodies refused in [`Mode::PlainOnly`] for their dictionary columns.
    pub dictionary_refused: u64,
}

#[derive(Clone)]
pub struct FakeIngester {
    pub inner: Arc<Mutex<Inner>>,
}

impl FakeIngester {
    pub fn new(mode: Mode) -> Self {
        FakeIngester {
            inner: Arc::new(Mutex::new(Inner {
                mode,
                ids: HashSet::new(),
                bytes: Vec::new(),
                packets: Vec::new(),
                duplicates: 0,
                dictionary_refused: 0,
            })),
        }
    }

    /// Serves on `addr` (port 0 for any).
    pub async fn serve(&self, addr: SocketAddr) -> SocketAddr {
        let app = axum::Router::new()
            .route("/api/v1/flows", axum::routing::post(post))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = mode;
    }

    pub fn rows(&self) -> usize {
        self.inner.lock().unwrap().bytes.len()
    }

    /// Stored `bytes` values, sorted.
    pub fn sorted_bytes(&self) -> Vec<i64> {
        let mut v = self.inner.lock().unwrap().bytes.clone();
        v.sort();
        v
    }
}

async fn post(State(ing): State<FakeIngester>, headers: HeaderMap, body: Bytes) -> Response {
    let mut s = ing.inner.lock().unwrap();
    match s.mode {
        Mode::Busy => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                [("retry-after", "0")],
                "buffer full",
            )
                .into_response();
        }
        Mode::Reject => {
            return (
                StatusCode::BAD_REQUEST,
                "column dst_port: expected Int32, got Int64",
            )
                .into_response();
        }
        Mode::Up | Mode::PlainOnly => {}
    }
    let Some(id) = headers.get(BATCH_ID_HEADER).and_then(|v| v.to_str().ok()) else {
        return (StatusCode::BAD_REQUEST, "missing Flowlake-Batch-Id").into_response();
    };
    let batches = match decode_ipc(&body) {
        Ok(b) => b,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    if !s.ids.insert(id.to_string()) {
        s.duplicates += 1;
        return StatusCode::OK.into_response();
    }
    let dictionary = |b: &arrow::record_batch::RecordBatch| {
        b.columns()
            .iter()
            .any(|c| matches!(c.data_type(), arrow::datatypes::DataType::Dictionary(..)))
    };
    if s.mode == Mode::PlainOnly && batches.iter().any(dictionary) {
        s.ids.remove(id);
        s.dictionary_refused += 1;
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            "column cluster: expected Utf8, got Dictionary(Int16, Utf8)",
        )
            .into_response();
    }
    for b in batches {
        if let Err(e) = flowlake_schemas::validate_batch(&b) {
            return (StatusCode::BAD_REQUEST, e.to_string()).into_response();
        }
        let int64 = |name| {
            let col = b.column_by_name(name).unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
            (0..col.len()).map(|i| col.value(i)).collect::<Vec<_>>()
        };
        s.bytes.extend(int64("bytes"));
        s.packets.extend(int64("packets"));
    }
    StatusCode::OK.into_response()
}
