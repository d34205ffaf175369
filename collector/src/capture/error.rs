//! Errors of a capture.

use super::filter::FilterError;

/// Why a capture could not be started or went wrong.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error("invalid limit: {0}")]
    Limit(String),
    #[error("invalid selector: {0}")]
    Selector(String),
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
