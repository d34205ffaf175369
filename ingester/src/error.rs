//! The ingester's one error type, with its HTTP status mapped in exactly one place.

use std::path::PathBuf;
use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flowlake_wire::DecodeError;

/// Everything that can go wrong in the ingester.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The body was refused by the decoder (not Arrow, wrong schema, too large
    /// once inflated, unknown Content-Encoding).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    /// Authentication, authorization or the TLS and token files (the service layer).
    #[error(transparent)]
    Service(#[from] flowlake_service::ServiceError),
    #[error("invalid batch id header: {0}")]
    BadBatchId(String),
    #[error("buffer full, retry later")]
    Busy { retry_after: Duration },
    #[error("not ready: write-ahead log replay in progress")]
    NotReady,
    #[error("shutting down")]
    ShuttingDown,
    /// The WAL's disk is full: nothing of the request was kept.
    #[error("write-ahead log disk is full: {0}")]
    WalFull(String),
    /// A value the table cannot take (a partition value that disagrees with
    /// `interval_start`, a timestamp out of range), with the column and row.
    #[error("invalid value in column {column}, row {row}: {reason}")]
    Invalid {
        column: &'static str,
        row: usize,
        reason: String,
    },
    /// The request body could not be read (the client went away).
    #[error("reading the request body failed: {0}")]
    BodyRead(String),
    /// The request body did not arrive within the read timeout.
    #[error("request body not received within {0:?}")]
    BodyTimeout(Duration),
    /// Shutdown could not commit everything acknowledged: it stays in the WAL.
    #[error(
        "{rows} acknowledged rows (WAL sequence {first}..={last}) are not in the table; they stay in the write-ahead log at {wal_dir} and are committed at the next start"
    )]
    Uncommitted {
        rows: usize,
        first: u64,
        last: u64,
        wal_dir: PathBuf,
    },
    #[error("write-ahead log I/O on {path}")]
    Wal {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Delta table operation failed")]
    Table(#[from] deltalake_core::DeltaTableError),
    #[error("object store operation failed")]
    ObjectStore(#[from] object_store::Error),
    #[error("parquet encoding failed")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("arrow operation failed")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("invalid table location {location:?}")]
    Location {
        location: String,
        #[source]
        source: url::ParseError,
    },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not bind {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = IngestError> = std::result::Result<T, E>;

impl IngestError {
    /// The HTTP status of this error: the only place errors become statuses.
    pub fn status(&self) -> StatusCode {
        use IngestError::*;
        match self {
            Decode(DecodeError::NotArrow(_))
            | Decode(DecodeError::Malformed(_))
            | Decode(DecodeError::ArrowPanic)
            | Decode(DecodeError::Encoding { .. })
            | BadBatchId(_)
            | BodyRead(_) => StatusCode::BAD_REQUEST,
            Decode(DecodeError::Schema(_)) | Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Decode(DecodeError::TooLarge { .. }) | TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Service(e) => e.status(),
            Decode(DecodeError::UnsupportedEncoding(_)) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Busy { .. } | NotReady | ShuttingDown | WalFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Wal { .. }
            | Uncommitted { .. }
            | Table(_)
            | ObjectStore(_)
            | Parquet(_)
            | Arrow(_)
            | Location { .. }
            | Config(_)
            | Bind { .. }
            | Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            IngestError::Busy { .. }
                | IngestError::WalFull(_)
                | IngestError::BodyTimeout(_)
                | IngestError::NotReady
                | IngestError::ShuttingDown
                | IngestError::Table(_)
                | IngestError::ObjectStore(_)
        )
    }

    /// Label for the `batches rejected` metric.
    pub fn reason(&self) -> &'static str {
        use IngestError::*;
        match self {
            Decode(DecodeError::NotArrow(_))
            | Decode(DecodeError::Malformed(_))
            | Decode(DecodeError::ArrowPanic)
            | Decode(DecodeError::Encoding { .. }) => "not_arrow",
            Decode(DecodeError::Schema(_)) => "schema",
            Invalid { .. } => "invalid",
            BodyTimeout(_) => "body_timeout",
            BodyRead(_) => "body_read",
            WalFull(_) => "wal_full",
            Decode(DecodeError::TooLarge { .. }) | TooLarge { .. } => "too_large",
            Service(e) => e.code(),
            Decode(DecodeError::UnsupportedEncoding(_)) => "encoding",
            BadBatchId(_) => "batch_id",
            Busy { .. } => "busy",
            NotReady => "not_ready",
            ShuttingDown => "shutting_down",
            _ => "internal",
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            IngestError::Busy { retry_after } => Some(*retry_after),
            IngestError::WalFull(_) => Some(Duration::from_secs(5)),
            IngestError::NotReady | IngestError::ShuttingDown => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// The error and all its causes, joined by `: `.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl IntoResponse for IngestError {
    /// The shared error body (`{"error": {"code", "message", "retryable"}}`) with
    /// [`IngestError::reason`] as the code, and Retry-After when a retry may succeed.
    fn into_response(self) -> Response {
        if let IngestError::Service(e) = self {
            return e.into_response();
        }
        let mut response = flowlake_service::error_response(
            self.status(),
            self.reason(),
            &error_chain(&self),
            self.retryable(),
        );
        if let Some(after) = self.retry_after() {
            let secs = after.as_secs().max(1).to_string();
            if let Ok(v) = HeaderValue::from_str(&secs) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        response
    }
}
