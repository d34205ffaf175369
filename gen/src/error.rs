//! Errors of the workload generator.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum GenError {
    #[error("invalid generator setting: {0}")]
    Config(String),
    #[error("writing {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding Arrow IPC")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("encoding Parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
}

pub type Result<T, E = GenError> = std::result::Result<T, E>;
