//! Errors of batching and shipping.

use std::path::PathBuf;

/// What went wrong while batching, spooling or shipping.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error("cannot encode the batch as Arrow IPC")]
    Encode(#[source] arrow::error::ArrowError),
    #[error("spool I/O on {path}")]
    SpoolIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("spool file {path} is damaged: {reason}")]
    SpoolCorrupt { path: PathBuf, reason: &'static str },
    #[error("invalid ingester URL {url:?}")]
    BadUrl { url: String },
    /// The ingester's CA file or the collector's token file.
    #[error("cannot use {path}: {reason}")]
    Credentials { path: PathBuf, reason: String },
    #[error("cannot build the HTTP client")]
    Http(#[source] reqwest::Error),
    #[error("the shipper has stopped")]
    Closed,
}

impl ShipError {
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> ShipError + '_ {
        move |source| ShipError::SpoolIo {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn credentials<E: std::fmt::Display>(
        path: &std::path::Path,
    ) -> impl FnOnce(E) -> ShipError + '_ {
        move |e| ShipError::Credentials {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }
    }
}

/// Result of shipping.
pub type Result<T, E = ShipError> = std::result::Result<T, E>;
