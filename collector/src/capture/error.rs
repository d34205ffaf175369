//! Errors of a capture.

use flowlake_schemas::capture::RequestError;

/// Why a capture could not be started or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The request itself is invalid (filter, limits, selector, id).
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl CaptureError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        CaptureError::Io {
            what: what.into(),
            source,
        }
    }

    /// The caller asked for something invalid (a 4xx), as opposed to a failure here.
    pub fn is_bad_request(&self) -> bool {
        !matches!(self, CaptureError::Io { .. })
    }
}

pub type Result<T, E = CaptureError> = std::result::Result<T, E>;
