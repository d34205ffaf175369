//! The wire crate's one error type. It knows nothing of HTTP: the ingester maps
//! each variant to a status and a metric label in its own `error.rs`.

/// Why a request body was refused.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// arrow-ipc refused the stream.
    #[error("body is not an Arrow IPC stream")]
    NotArrow(#[source] arrow::error::ArrowError),
    /// The stream's framing is broken in a way found before arrow-ipc reads it
    /// (or arrow-ipc panicked on it).
    #[error("body is not an Arrow IPC stream: malformed IPC stream: {0}")]
    Malformed(&'static str),
    /// arrow-ipc panicked on the stream (caught): a malformed stream the guards
    /// in `guard.rs` do not know yet.
    #[error("body is not an Arrow IPC stream: arrow-ipc panicked on it")]
    ArrowPanic,
    /// The Content-Encoding layer (zstd) is corrupt.
    #[error("body is not a valid {encoding} stream")]
    Encoding {
        encoding: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("batch does not match the flow schema")]
    Schema(#[source] flowlake_schemas::SchemaError),
    /// The body, once its encoding is removed or its IPC buffers inflated, is
    /// larger than the limit.
    #[error("body larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("unsupported Content-Encoding {0:?} (supported: zstd, identity)")]
    UnsupportedEncoding(String),
}

pub type Result<T, E = DecodeError> = std::result::Result<T, E>;
