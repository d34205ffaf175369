//! Request bodies → validated flow batches. The decoding itself lives in the
//! small `flowlake-wire` crate (so the fuzz target builds without the
//! DataFusion/deltalake stack); its [`DecodeError`] becomes an [`IngestError`]
//! once, by `From`, with its HTTP status and metric label in `error.rs`.
//!
//! [`IngestError`]: crate::IngestError

pub use flowlake_wire::{
    BodyEncoding, DecodeError, DecodedBody, decode_body, decode_bytes, encode_ipc,
};

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use flowlake_wire::{BodyEncoding, decode_body, encode_ipc};

    use crate::error::{IngestError, error_chain};
    use crate::testdata;

    fn refused(body: &[u8], encoding: BodyEncoding, max: usize) -> IngestError {
        decode_body(body, encoding, max).unwrap_err().into()
    }

    /// Every way a body is refused keeps its HTTP status and metric label.
    #[test]
    fn decode_errors_keep_their_status_and_reason() {
        let batch = testdata::flows(100, 1);
        let ipc = encode_ipc(std::slice::from_ref(&batch), None).unwrap();
        let cases = [
            (
                refused(b"not arrow", BodyEncoding::Identity, 1 << 20),
                StatusCode::BAD_REQUEST,
                "not_arrow",
            ),
            (
                refused(b"not zstd", BodyEncoding::Zstd, 1 << 20),
                StatusCode::BAD_REQUEST,
                "not_arrow",
            ),
            (
                refused(&ipc[..ipc.len() - 20], BodyEncoding::Identity, 1 << 20),
                StatusCode::BAD_REQUEST,
                "not_arrow",
            ),
            (
                refused(&ipc, BodyEncoding::Identity, 100),
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
            ),
            (
                BodyEncoding::from_header(Some("br")).unwrap_err().into(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "encoding",
            ),
        ];
        for (err, status, reason) in cases {
            assert_eq!(err.status(), status, "{}", error_chain(&err));
            assert_eq!(err.reason(), reason, "{}", error_chain(&err));
            assert!(!err.retryable());
        }
        let unknown = flowlake_schemas::SchemaError::MissingColumn {
            column: "dst_port".into(),
        };
        let err = IngestError::from(flowlake_wire::DecodeError::Schema(unknown));
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.reason(), "schema");
        assert!(error_chain(&err).contains("dst_port"));
    }
}
