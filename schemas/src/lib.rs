//! The one flow-record schema every Flowlake component obeys.
//!
//! - [`schema`]: the Arrow schema (version 1), column names and partition columns.
//! - [`record`]: the typed record and its enums.
//! - [`builder`]: records → `RecordBatch`, built for throughput.
//! - [`decode`]: `RecordBatch` → records.
//! - [`validate`]: checks incoming batches and schema evolution, with the column named.
//! - [`dictionary`]: string and label-map columns dictionary-encoded on the wire.
//! - [`fold_hash`]: the cheap seeded hash both ends deduplicate strings and maps with.
//! - [`losses`]: the loss record — the `losses` table of what was not counted or stored.
//! - [`partition`]: the `date=YYYY-MM-DD/hour=HH` partition path.
//!
//! Column meanings and units: `docs/schema.md`.

pub mod builder;
pub mod capture;
pub mod decode;
pub mod dictionary;
pub mod error;
pub mod fold_hash;
pub mod losses;
pub mod partition;
pub mod record;
pub mod schema;
pub mod validate;

pub use builder::{FlowBatchBuilder, records_to_batch};
pub use decode::batch_to_records;
pub use dictionary::{dictionary_encode, is_dictionary_encoded, plain_columns};
pub use error::{Result, SchemaError};
pub use losses::{
    LOSSES_DIR, LOSSES_TABLE, LossRow, batch_to_losses, loss_schema, losses_to_batch,
};
pub use partition::PartitionPath;
pub use record::{
    Direction, DnsInfo, Endpoint, FlowRecord, Identity, ObservationPoint, Protocol, TcpHealth,
    Verdict,
};
pub use schema::{
    NUMERIC_COLUMNS, PARTITION_COLUMNS, SCHEMA_VERSION, SCHEMA_VERSION_KEY, col, flow_schema,
};
pub use validate::{check_evolution, conform_batch, is_conformed, validate_batch, validate_schema};

#[cfg(test)]
mod tests;
