//! The error body every Flowlake service answers with:
//! `{"error": {"code": "...", "message": "...", "retryable": bool}}`.

use std::path::PathBuf;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Builds the shared error response.
pub fn error_response(status: StatusCode, code: &str, message: &str, retryable: bool) -> Response {
    let body = serde_json::json!({
        "error": {"code": code, "message": message, "retryable": retryable}
    });
    let mut resp = (status, Json(body)).into_response();
    resp.extensions_mut()
        .insert(crate::audit::ErrorCode(code.to_string()));
    resp
}

/// Errors of the service layer itself.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// No token, a malformed header, or a token that is not (or no longer) known.
    #[error("authentication required: {0}")]
    Unauthorized(&'static str),
    /// A known token without the scope or namespace the request needs.
    #[error("token {token:?} lacks the {scope:?} scope")]
    Forbidden { token: String, scope: &'static str },
    #[error("reading the token file {path}")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path} is invalid: {reason}")]
    TokenFormat { path: PathBuf, reason: String },
    #[error("TLS certificate or key {path}: {reason}")]
    Tls { path: PathBuf, reason: String },
}

impl ServiceError {
    pub fn status(&self) -> StatusCode {
        match self {
            ServiceError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ServiceError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ServiceError::TokenFile { .. }
            | ServiceError::TokenFormat { .. }
            | ServiceError::Tls { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::Unauthorized(_) => "unauthorized",
            ServiceError::Forbidden { .. } => "forbidden",
            ServiceError::TokenFile { .. }
            | ServiceError::TokenFormat { .. }
            | ServiceError::Tls { .. } => "config_error",
        }
    }
}

impl IntoResponse for ServiceError {
    fn into_response(self) -> Response {
        let mut resp = error_response(self.status(), self.code(), &self.to_string(), false);
        if matches!(self, ServiceError::Unauthorized(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flowlake\""),
            );
        }
        resp
    }
}
