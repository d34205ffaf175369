//! Output formats of query results, each with its content type and a streaming
//! encoder (one chunk of bytes per record batch).

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::json::{LineDelimitedWriter, WriterBuilder, writer::JsonArray};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// Result formats of `POST /api/v1/sql`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    /// A JSON array of row objects.
    #[default]
    Json,
    /// One JSON object per line.
    Ndjson,
    /// CSV with a header line.
    Csv,
    /// Arrow IPC stream format.
    Arrow,
    /// A Parquet file (ZSTD).
    Parquet,
}

impl OutputFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Json => "application/json",
            OutputFormat::Ndjson => "application/x-ndjson",
            OutputFormat::Csv => "text/csv; charset=utf-8",
            OutputFormat::Arrow => "application/vnd.apache.arrow.stream",
            OutputFormat::Parquet => "application/vnd.apache.parquet",
        }
    }

    pub fn encoder(self, schema: SchemaRef) -> Result<Encoder> {
        Ok(match self {
            OutputFormat::Json => Encoder::Json { rows: 0 },
            OutputFormat::Ndjson => Encoder::Ndjson,
            OutputFormat::Csv => Encoder::Csv {
                header: true,
                schema,
            },
            OutputFormat::Arrow => {
                Encoder::Arrow(Box::new(StreamWriter::try_new(Vec::new(), &schema)?))
            }
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                    .build();
                Encoder::Parquet(Box::new(ArrowWriter::try_new(
                    Vec::new(),
                    schema,
                    Some(props),
                )?))
            }
        })
    }
}

/// Turns batches into bytes for one response.
pub enum Encoder {
    Json { rows: usize },
    Ndjson,
    Csv { header: bool, schema: SchemaRef },
    Arrow(Box<StreamWriter<Vec<u8>>>),
    Parquet(Box<ArrowWriter<Vec<u8>>>),
}

fn take(buf: &mut Vec<u8>) -> Bytes {
    Bytes::from(std::mem::take(buf))
}

impl Encoder {
    /// Bytes that open the response.
    pub fn start(&mut self) -> Bytes {
        match self {
            Encoder::Json { .. } => Bytes::from_static(b"["),
            Encoder::Arrow(w) => take(w.get_mut()),
            _ => Bytes::new(),
        }
    }

    /// Bytes for one batch (may be empty when the format buffers).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        match self {
            Encoder::Json { rows } => {
                if batch.num_rows() == 0 {
                    return Ok(Bytes::new());
                }
                let mut w = WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, JsonArray>(Vec::new());
                w.write(batch)?;
                w.finish()?;
                let mut out = w.into_inner();
                // `[a,b]` → `a,b` with a separator from the previous batch.
                out.pop();
                out[0] = b',';
                let body = if *rows == 0 { &out[1..] } else { &out[..] };
                *rows += batch.num_rows();
                Ok(Bytes::copy_from_slice(body))
            }
            Encoder::Ndjson => {
                let mut w = LineDelimitedWriter::new(Vec::new());
                w.write(batch)?;
                w.finish()?;
                Ok(Bytes::from(w.into_inner()))
            }
            Encoder::Csv { header, .. } => {
                let mut w = csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(Vec::new());
                w.write(batch)?;
                *header = false;
                Ok(Bytes::from(w.into_inner()))
            }
            Encoder::Arrow(w) => {
                w.write(batch)?;
                Ok(take(w.get_mut()))
            }
            Encoder::Parquet(w) => {
                w.write(batch)?;
                Ok(take(w.inner_mut()))
            }
        }
    }

    /// Bytes that close the response.
    pub fn finish(self) -> Result<Bytes> {
        Ok(match self {
            Encoder::Json { .. } => Bytes::from_static(b"]"),
            Encoder::Ndjson => Bytes::new(),
            Encoder::Csv { header, schema } if header => {
                // No rows at all: still write the header line.
                let mut w = csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new());
                w.write(&RecordBatch::new_empty(schema))?;
                Bytes::from(w.into_inner())
            }
            Encoder::Csv { .. } => Bytes::new(),
            Encoder::Arrow(mut w) => {
                w.finish()?;
                take(w.get_mut())
            }
            Encoder::Parquet(w) => {
                let out = w.into_inner()?;
                Bytes::from(out)
            }
        })
    }
}

/// Encodes whole batches at once (for small results and tests).
pub fn encode_all(
    format: OutputFormat,
    schema: SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>> {
    let mut enc = format.encoder(Arc::clone(&schema))?;
    let mut out = enc.start().to_vec();
    for b in batches {
        out.extend_from_slice(&enc.batch(b)?);
    }
    out.extend_from_slice(&enc.finish()?);
    Ok(out)
}
