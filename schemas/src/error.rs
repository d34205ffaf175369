//! Errors of the schema crate.

use arrow::datatypes::DataType;

/// Everything that can be wrong with a batch or a value relative to the flow schema.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("column {column}: expected {expected}, got {actual}")]
    TypeMismatch {
        column: String,
        expected: DataType,
        actual: DataType,
    },
    #[error("column {column}: required column is missing")]
    MissingColumn { column: String },
    #[error("column {column}: not part of flow schema version {version}")]
    UnknownColumn { column: String, version: u32 },
    #[error("column {column}: {nulls} null values in a non-nullable column")]
    NullsInRequiredColumn { column: String, nulls: usize },
    #[error("column {column}: invalid value {value:?}")]
    InvalidValue { column: &'static str, value: String },
    #[error("schema version {found} is newer than this build understands ({supported})")]
    UnsupportedVersion { found: String, supported: u32 },
    #[error("incompatible schema change: {0}")]
    IncompatibleEvolution(String),
    #[error("invalid partition path {path:?}: {reason}")]
    InvalidPartitionPath { path: String, reason: &'static str },
    #[error("arrow error")]
    Arrow(#[from] arrow::error::ArrowError),
}

pub type Result<T, E = SchemaError> = std::result::Result<T, E>;
