//! Batches on the wire and on disk: zstd-compressed Arrow IPC streams with an id.

use std::fmt;
use std::str::FromStr;

use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::error::{Result, ShipError};

/// The HTTP header carrying the batch id (the ingester stores a retried id once).
pub const BATCH_ID_HEADER: &str = "Flowlake-Batch-Id";
/// Content type of an Arrow IPC stream.
pub const ARROW_STREAM_CONTENT_TYPE: &str = "application/vnd.apache.arrow.stream";

/// A batch's idempotency key: the producer (this node's collector, see
/// [`super::producer`]) and the batch's sequence number. On the wire it is
/// `<producer, 16 hex digits>/<seq>`, the form by which ingesters check, against
/// the table, whether any replica already stored the batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchId {
    producer: u64,
    seq: u64,
}

impl BatchId {
    pub fn new(producer: u64, seq: BatchSeq) -> Self {
        BatchId {
            producer,
            seq: seq.0,
        }
    }
    /// A fresh random producer (tests, tools without a producer file).
    pub fn random() -> Self {
        BatchId::new(rand_u64(), BatchSeq(0))
    }
    /// As the spool stores it (a spool file of a build that used random UUIDs
    /// reads as some producer and a sequence number out of the checked range:
    /// ingesters then deduplicate it by id alone, as before).
    pub fn from_bytes(b: [u8; 16]) -> Self {
        let (p, s) = b.split_at(8);
        BatchId {
            producer: u64::from_be_bytes(p.try_into().expect("8 bytes")),
            seq: u64::from_be_bytes(s.try_into().expect("8 bytes")),
        }
    }
    pub fn as_bytes(&self) -> [u8; 16] {
        let mut b = [0; 16];
        b[..8].copy_from_slice(&self.producer.to_be_bytes());
        b[8..].copy_from_slice(&self.seq.to_be_bytes());
        b
    }
}

pub(crate) fn rand_u64() -> u64 {
    let b = *Uuid::new_v4().as_bytes();
    u64::from_le_bytes(b[..8].try_into().expect("8 bytes"))
}

impl fmt::Display for BatchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/{}", self.producer, self.seq)
    }
}

/// A batch id that is not `<16 hex digits>/<decimal>`.
#[derive(Debug, thiserror::Error)]
#[error("not a batch id (<16 hex digits>/<sequence number>): {0:?}")]
pub struct BadBatchId(String);

impl FromStr for BatchId {
    type Err = BadBatchId;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        let bad = || BadBatchId(s.to_string());
        let (p, seq) = s.split_once('/').ok_or_else(bad)?;
        if p.len() != 16 {
            return Err(bad());
        }
        Ok(BatchId {
            producer: u64::from_str_radix(p, 16).map_err(|_| bad())?,
            seq: seq.parse().map_err(|_| bad())?,
        })
    }
}

/// Order of batches: spool files and sends follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BatchSeq(pub u64);

/// What a batch holds: flow records, or loss records (`flowlake_schemas::losses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchKind {
    #[default]
    Flows,
    Losses,
}

/// A batch ready to send: IPC bytes plus what the spool and the metrics need.
#[derive(Debug, Clone)]
pub struct EncodedBatch {
    pub kind: BatchKind,
    pub seq: BatchSeq,
    pub id: BatchId,
    pub records: u64,
    pub created: DateTime<Utc>,
    pub ipc: Bytes,
}

/// A `RecordBatch` as a zstd-compressed Arrow IPC stream, string and label-map
/// columns dictionary-encoded (each distinct string or map of the batch sent once).
pub fn encode_ipc(batch: &RecordBatch) -> Result<Bytes> {
    let batch = flowlake_schemas::dictionary_encode(batch)
        .map_err(|e| ShipError::Encode(arrow::error::ArrowError::ExternalError(Box::new(e))))?;
    write_ipc(&batch)
}

/// An IPC body of [`encode_ipc`] with its columns plain again (`None` when none
/// is a dictionary): what an ingester from before dictionary-encoded columns
/// accepts (before strings, or before label maps, were accepted as dictionaries).
pub fn plain_ipc(ipc: &[u8]) -> Result<Option<Bytes>> {
    let batches = decode_ipc(ipc)?;
    let encoded = |b: &RecordBatch| {
        b.columns()
            .iter()
            .any(|c| matches!(c.data_type(), arrow::datatypes::DataType::Dictionary(..)))
    };
    if !batches.iter().any(encoded) {
        return Ok(None);
    }
    let plain = batches
        .iter()
        .map(flowlake_schemas::plain_columns)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| ShipError::Encode(arrow::error::ArrowError::ExternalError(Box::new(e))))?;
    let all = arrow::compute::concat_batches(&flowlake_schemas::flow_schema(), &plain)
        .map_err(ShipError::Encode)?;
    write_ipc(&all).map(Some)
}

/// A `RecordBatch` as a zstd-compressed Arrow IPC stream, columns as they are.
pub fn write_ipc(batch: &RecordBatch) -> Result<Bytes> {
    let opts = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::ZSTD))
        .map_err(ShipError::Encode)?;
    let mut w = StreamWriter::try_new_with_options(Vec::new(), &batch.schema(), opts)
        .map_err(ShipError::Encode)?;
    w.write(batch).map_err(ShipError::Encode)?;
    w.finish().map_err(ShipError::Encode)?;
    Ok(Bytes::from(w.into_inner().map_err(ShipError::Encode)?))
}

/// The batches of an Arrow IPC stream (for the tests' ingester and for checks).
pub fn decode_ipc(bytes: &[u8]) -> Result<Vec<RecordBatch>> {
    let reader =
        StreamReader::try_new(std::io::Cursor::new(bytes), None).map_err(ShipError::Encode)?;
    reader
        .collect::<std::result::Result<_, _>>()
        .map_err(ShipError::Encode)
}
