//! Errors of capture uploads, mapped to HTTP once.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum CaptureUploadError {
    #[error("bad capture id or node {0:?} (1 to 64 of a-z, 0-9, -, .)")]
    BadName(String),
    #[error("chunk at {offset} but the file stands at {received}")]
    WrongOffset { offset: u64, received: u64 },
    #[error("chunk checksum {got:08x} differs from the header's {want:08x}")]
    Checksum { want: u32, got: u32 },
    #[error("missing or bad header flowlake-crc32c")]
    ChecksumHeader,
    #[error("completing with size {size} but {received} bytes were received")]
    Incomplete { size: u64, received: u64 },
    #[error("the whole file's checksum {got:08x} differs from {want:08x}")]
    FileChecksum { want: u32, got: u32 },
    #[error("bad body: {0}")]
    BadBody(String),
    #[error("no capture {0:?}")]
    NoCapture(String),
    #[error("object store")]
    Store(#[from] object_store::Error),
    #[error("description")]
    Json(#[from] serde_json::Error),
}

impl CaptureUploadError {
    pub fn status(&self) -> StatusCode {
        use CaptureUploadError as E;
        match self {
            E::BadName(_) | E::Checksum { .. } | E::ChecksumHeader => StatusCode::BAD_REQUEST,
            // Where the file stands moved: the client asks again and resumes.
            E::WrongOffset { .. } | E::Incomplete { .. } => StatusCode::CONFLICT,
            E::FileChecksum { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            E::Json(_) | E::BadBody(_) => StatusCode::BAD_REQUEST,
            E::NoCapture(_) => StatusCode::NOT_FOUND,
            E::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn code(&self) -> &'static str {
        use CaptureUploadError as E;
        match self {
            E::BadName(_) => "bad_name",
            E::WrongOffset { .. } => "wrong_offset",
            E::Checksum { .. } | E::ChecksumHeader | E::FileChecksum { .. } => "checksum",
            E::Incomplete { .. } => "incomplete",
            E::Store(_) => "store_unavailable",
            E::Json(_) => "bad_description",
            E::NoCapture(_) => "not_found",
            E::BadBody(_) => "bad_request",
        }
    }
}

impl IntoResponse for CaptureUploadError {
    fn into_response(self) -> Response {
        let retryable = matches!(self, CaptureUploadError::Store(_));
        let mut message = self.to_string();
        if let Some(source) = std::error::Error::source(&self) {
            message = format!("{message}: {source}");
        }
        flowlake_service::error::error_response(self.status(), self.code(), &message, retryable)
    }
}

pub type Result<T, E = CaptureUploadError> = std::result::Result<T, E>;
