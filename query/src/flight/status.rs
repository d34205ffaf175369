//! The query service's errors as gRPC statuses, mapped in this one place (the HTTP
//! side maps the same errors to HTTP statuses in [`crate::error`]). The stable error
//! code of the JSON error body travels in the `flowlake-error-code` metadata.

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};

use crate::error::QueryError;

/// Metadata key of the error code (`statement_refused`, `query_timeout`, …).
pub const ERROR_CODE_KEY: &str = "flowlake-error-code";

/// The gRPC code of an error, from its HTTP status (so both protocols classify an
/// error alike).
pub fn code_of(e: &QueryError) -> Code {
    match e.status().as_u16() {
        400 => Code::InvalidArgument,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::NotFound,
        413 => Code::ResourceExhausted,
        503 => Code::Unavailable,
        504 => Code::DeadlineExceeded,
        _ => Code::Internal,
    }
}

/// The status of an error: its code, its message with the chain of causes, and the
/// error code in the metadata.
pub fn status_of(e: &QueryError) -> Status {
    let code = code_of(e);
    if code == Code::Internal {
        tracing::error!(error = %e.full_message(), "Flight SQL request failed");
    }
    with_code(code, e.full_message(), e.code())
}

/// A status with `error_code` in the metadata.
pub fn with_code(code: Code, message: impl Into<String>, error_code: &'static str) -> Status {
    let mut metadata = MetadataMap::new();
    metadata.insert(ERROR_CODE_KEY, MetadataValue::from_static(error_code));
    Status::with_metadata(code, message, metadata)
}

/// The error code a status carries (for the audit line): ours, else the gRPC code.
pub fn error_code_of(headers: &axum::http::HeaderMap) -> Option<String> {
    if let Some(code) = headers.get(ERROR_CODE_KEY).and_then(|v| v.to_str().ok()) {
        return Some(code.to_string());
    }
    let grpc = headers.get("grpc-status")?.to_str().ok()?;
    (grpc != "0").then(|| format!("grpc_{}", Code::from_bytes(grpc.as_bytes()) as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_grpc_codes_with_the_error_code() {
        let s = status_of(&QueryError::Refused("DROP".into()));
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("DROP"));
        assert_eq!(
            s.metadata().get(ERROR_CODE_KEY).unwrap(),
            "statement_refused"
        );
        let timeout = QueryError::Timeout(std::time::Duration::from_secs(1));
        assert_eq!(code_of(&timeout), Code::DeadlineExceeded);
        assert_eq!(code_of(&QueryError::Busy(4)), Code::Unavailable);
        assert_eq!(
            code_of(&QueryError::NamespaceForbidden("x".into())),
            Code::PermissionDenied
        );
        let unauthorized = flowlake_service::ServiceError::Unauthorized("no bearer token");
        assert_eq!(
            code_of(&QueryError::Service(unauthorized)),
            Code::Unauthenticated
        );
        let headers = s.into_http::<axum::body::Body>().headers().clone();
        assert_eq!(error_code_of(&headers).unwrap(), "statement_refused");
    }
}
