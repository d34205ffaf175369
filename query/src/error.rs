//! The query service's one error type, mapped to an HTTP status in exactly one place.

use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;

/// Everything that can go wrong while answering a request.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is valid SQL but not allowed in the read-only sandbox.
    #[error("statement refused: {0}")]
    Refused(String),
    /// DataFusion could not parse or plan the SQL (its message is kept as is).
    #[error("{0}")]
    Sql(String),
    /// A request field is missing or malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("query exceeded the time limit of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("result exceeds the row limit of {0} rows; add a LIMIT or aggregate")]
    RowLimit(usize),
    #[error("query exceeded the memory limit of {limit} bytes: {message}")]
    MemoryLimit { limit: usize, message: String },
    #[error("the service is shutting down")]
    ShuttingDown,
    /// The statement is deeper or longer than the service plans (see `admission`).
    #[error("statement too complex: {0}")]
    TooComplex(String),
    /// Every query slot stayed taken until the request's deadline.
    #[error("too many queries running ({0} at most); retry later")]
    Busy(usize),
    /// A namespace-scoped token asked for what it may not read (see `access`).
    #[error("this token may not read {0}")]
    NamespaceForbidden(String),
    /// An export the operator's configuration does not allow.
    #[error("export refused: {0}")]
    ExportRefused(String),
    #[error(transparent)]
    Service(#[from] flowlake_service::ServiceError),
    #[error("Delta table operation failed")]
    Table(#[from] deltalake_core::DeltaTableError),
    #[error("object store operation failed")]
    ObjectStore(#[from] object_store::Error),
    #[error("query execution failed")]
    Execution(#[source] DataFusionError),
    #[error("encoding the result failed")]
    Encode(#[from] arrow::error::ArrowError),
    #[error("writing Parquet failed")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("invalid location {location:?}: {reason}")]
    Location { location: String, reason: String },
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("could not bind {addr}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O error")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = QueryError> = std::result::Result<T, E>;

impl QueryError {
    /// Classifies a DataFusion error: planning and SQL errors, and errors evaluating the
    /// query's own expressions (casts, division by zero, bad function arguments), are
    /// the client's fault; resource exhaustion is a limit; the rest is an execution failure.
    pub fn from_datafusion(e: DataFusionError, memory_limit: usize) -> Self {
        use datafusion::arrow::error::ArrowError as A;
        match e.find_root() {
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_)
            | DataFusionError::Execution(_) => QueryError::Sql(e.find_root().to_string()),
            DataFusionError::ArrowError(a, _)
                if matches!(
                    **a,
                    A::CastError(_)
                        | A::ComputeError(_)
                        | A::DivideByZero
                        | A::ArithmeticOverflow(_)
                        | A::InvalidArgumentError(_)
                        | A::ParseError(_)
                        | A::OffsetOverflowError(_)
                ) =>
            {
                QueryError::Sql(e.find_root().to_string())
            }
            DataFusionError::ResourcesExhausted(m) => QueryError::MemoryLimit {
                limit: memory_limit,
                message: m.clone(),
            },
            DataFusionError::External(inner) => match inner.downcast_ref::<QueryError>() {
                Some(QueryError::Timeout(d)) => QueryError::Timeout(*d),
                Some(QueryError::RowLimit(n)) => QueryError::RowLimit(*n),
                _ => QueryError::Execution(e),
            },
            _ => QueryError::Execution(e),
        }
    }

    /// HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            QueryError::Refused(_)
            | QueryError::Sql(_)
            | QueryError::BadRequest(_)
            | QueryError::TooComplex(_) => StatusCode::BAD_REQUEST,
            QueryError::ExportRefused(_) | QueryError::NamespaceForbidden(_) => {
                StatusCode::FORBIDDEN
            }
            QueryError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Service(e) => e.status(),
            QueryError::Location { .. } => StatusCode::BAD_REQUEST,
            QueryError::NotFound(_) => StatusCode::NOT_FOUND,
            QueryError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            QueryError::RowLimit(_) | QueryError::MemoryLimit { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            QueryError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            QueryError::Table(_)
            | QueryError::ObjectStore(_)
            | QueryError::Execution(_)
            | QueryError::Encode(_)
            | QueryError::Parquet(_)
            | QueryError::Config(_)
            | QueryError::Bind { .. }
            | QueryError::Io(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A stable machine-readable code for the error body.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "statement_refused",
            QueryError::Sql(_) => "sql_error",
            QueryError::BadRequest(_) => "bad_request",
            QueryError::Location { .. } => "bad_location",
            QueryError::NotFound(_) => "not_found",
            QueryError::Timeout(_) => "query_timeout",
            QueryError::RowLimit(_) => "row_limit_exceeded",
            QueryError::MemoryLimit { .. } => "memory_limit_exceeded",
            QueryError::ShuttingDown => "shutting_down",
            QueryError::TooComplex(_) => "too_complex",
            QueryError::Busy(_) => "busy",
            QueryError::ExportRefused(_) => "export_refused",
            QueryError::NamespaceForbidden(_) => "forbidden",
            QueryError::Service(e) => e.code(),
            QueryError::Table(_) => "table_error",
            QueryError::ObjectStore(_) => "object_store_error",
            QueryError::Execution(_) => "execution_error",
            QueryError::Encode(_) | QueryError::Parquet(_) => "encode_error",
            QueryError::Config(_) => "config_error",
            QueryError::Bind { .. } | QueryError::Io(_) => "io_error",
        }
    }

    /// Whether the same request may succeed later.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            QueryError::ShuttingDown
                | QueryError::Busy(_)
                | QueryError::ObjectStore(_)
                | QueryError::Timeout(_)
                | QueryError::MemoryLimit { .. }
        )
    }

    /// The message with its chain of causes.
    pub fn full_message(&self) -> String {
        let mut msg = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
        msg
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self.full_message(), "request failed");
        }
        if let QueryError::Service(e) = self {
            return e.into_response();
        }
        let mut resp = flowlake_service::error_response(
            status,
            self.code(),
            &self.full_message(),
            self.retryable(),
        );
        if matches!(self, QueryError::Busy(_) | QueryError::ShuttingDown) {
            resp.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        resp
    }
}
