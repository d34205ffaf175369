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
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a generated file: not in a date=YYYY-MM-DD/hour=HH directory")]
    NotGenerated(PathBuf),
    #[error("encoding Arrow IPC")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("encoding or decoding Parquet")]
    Parquet(#[from] parquet::errors::ParquetError),
}

pub type Result<T, E = GenError> = std::result::Result<T, E>;
