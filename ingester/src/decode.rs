//! Request bodies → validated flow batches: Content-Encoding, Arrow IPC stream
//! decoding (IPC-level zstd/lz4 included), schema validation and conforming.
//!
//! The same function decodes HTTP bodies and WAL records on replay, and is the
//! target of the fuzz harness.

use std::io::Read;

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::error::{IngestError, Result};

/// How the body bytes are encoded on top of Arrow IPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Identity,
    Zstd,
}

impl BodyEncoding {
    /// From a `Content-Encoding` header value.
    pub fn from_header(value: Option<&str>) -> Result<Self> {
        match value.map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("identity") => Ok(BodyEncoding::Identity),
            Some("zstd") => Ok(BodyEncoding::Zstd),
            Some(other) => Err(IngestError::UnsupportedEncoding(other.to_string())),
        }
    }

    pub fn as_byte(self) -> u8 {
        match self {
            BodyEncoding::Identity => 0,
            BodyEncoding::Zstd => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(BodyEncoding::Identity),
            1 => Some(BodyEncoding::Zstd),
            _ => None,
        }
    }
}

/// Validated batches of one request, in the exact flow schema.
#[derive(Debug, Clone)]
pub struct DecodedBody {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Arrow memory held by the batches.
    pub memory_bytes: usize,
}

/// Removes the Content-Encoding, refusing to inflate beyond `max_bytes`.
fn remove_encoding(body: &[u8], encoding: BodyEncoding, max_bytes: usize) -> Result<Vec<u8>> {
    match encoding {
        BodyEncoding::Identity => {
            if body.len() > max_bytes {
                return Err(IngestError::TooLarge { limit: max_bytes });
            }
            Ok(body.to_vec())
        }
        BodyEncoding::Zstd => {
            let decoder = zstd::stream::read::Decoder::new(body).map_err(|e| {
                IngestError::NotArrow(arrow::error::ArrowError::ExternalError(Box::new(e)))
            })?;
            let mut out = Vec::new();
            decoder
                .take(max_bytes as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    IngestError::NotArrow(arrow::error::ArrowError::ExternalError(Box::new(e)))
                })?;
            if out.len() > max_bytes {
                return Err(IngestError::TooLarge { limit: max_bytes });
            }
            Ok(out)
        }
    }
}

/// Decodes and validates a body: every batch must conform to the flow schema, or
/// the whole body is refused with the column named.
pub fn decode_body(body: &[u8], encoding: BodyEncoding, max_bytes: usize) -> Result<DecodedBody> {
    decode_bytes(Bytes::copy_from_slice(body), encoding, max_bytes)
}

/// [`decode_body`] of a body already in shared memory: the arrays of a plain
/// Arrow IPC body point into it instead of being copied out.
pub fn decode_bytes(body: Bytes, encoding: BodyEncoding, max_bytes: usize) -> Result<DecodedBody> {
    let plain = match encoding {
        BodyEncoding::Identity if body.len() <= max_bytes => Buffer::from(body),
        _ => Buffer::from_vec(remove_encoding(&body, encoding, max_bytes)?),
    };
    let end = guard_compressed_lengths(plain.as_slice(), max_bytes)?;
    // arrow-ipc can panic on malformed buffers (found by the mutation test): a bad
    // body must be a 400, never a crashed request or replay.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        read_stream(plain.slice_with_length(0, end))
    }));
    let (batches, rows, memory_bytes) = read.unwrap_or_else(|_| {
        Err(IngestError::NotArrow(arrow::error::ArrowError::IpcError(
            "malformed IPC stream".into(),
        )))
    })?;
    Ok(DecodedBody {
        batches,
        rows,
        memory_bytes,
    })
}

fn malformed(what: &str) -> IngestError {
    IngestError::NotArrow(arrow::error::ArrowError::IpcError(format!(
        "malformed IPC stream: {what}"
    )))
}

/// Walks the IPC stream's messages and refuses compressed buffers that claim to
/// inflate past `max_bytes` in total. arrow-ipc allocates the claimed size up
/// front, so without this a 100-byte body could abort the process (found by the
/// mutation test). Returns where the stream ends (after its end-of-stream marker;
/// bytes after it are ignored).
fn guard_compressed_lengths(bytes: &[u8], max_bytes: usize) -> Result<usize> {
    let mut at = 0usize;
    let mut inflated = 0u64;
    let word = |at: usize| -> Result<i32> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or_else(|| malformed("truncated message header"))
    };
    while at + 4 <= bytes.len() {
        let mut len = word(at)?;
        at += 4;
        if len == -1 {
            len = word(at)?;
            at += 4;
        }
        if len == 0 {
            return Ok(at); // end-of-stream marker
        }
        let len = usize::try_from(len).map_err(|_| malformed("negative metadata length"))?;
        let meta = bytes
            .get(at..at.saturating_add(len))
            .ok_or_else(|| malformed("truncated metadata"))?;
        at += len;
        let message =
            arrow::ipc::root_as_message(meta).map_err(|_| malformed("invalid flatbuffer"))?;
        let body_len =
            usize::try_from(message.bodyLength()).map_err(|_| malformed("negative body length"))?;
        let body = bytes
            .get(at..at.saturating_add(body_len))
            .ok_or_else(|| malformed("truncated body"))?;
        at += body_len;
        let batch = message
            .header_as_record_batch()
            .or_else(|| message.header_as_dictionary_batch().and_then(|d| d.data()));
        let Some(batch) = batch else { continue };
        if batch.compression().is_none() {
            continue;
        }
        for buf in batch.buffers().iter().flatten() {
            let (offset, length) = (buf.offset(), buf.length());
            if length < 8 {
                continue;
            }
            let start = usize::try_from(offset).map_err(|_| malformed("negative offset"))?;
            let Some(prefix) = body.get(start..start + 8) else {
                return Err(malformed("buffer outside the body"));
            };
            let claimed = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
            if claimed > 0 {
                inflated = inflated.saturating_add(claimed as u64);
            }
            if inflated > max_bytes as u64 {
                return Err(IngestError::TooLarge { limit: max_bytes });
            }
        }
    }
    Ok(bytes.len())
}

type StreamParts = (Vec<RecordBatch>, usize, usize);

fn read_stream(mut bytes: Buffer) -> Result<StreamParts> {
    let mut decoder = StreamDecoder::new();
    let mut schema_checked = false;
    let mut batches = Vec::new();
    let mut rows = 0;
    let mut memory_bytes = 0;
    loop {
        let next = decoder.decode(&mut bytes).map_err(IngestError::NotArrow)?;
        if !schema_checked && let Some(schema) = decoder.schema() {
            flowlake_schemas::validate_schema(&schema).map_err(IngestError::Schema)?;
            schema_checked = true;
        }
        let Some(batch) = next else { break };
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = flowlake_schemas::conform_batch(&batch).map_err(IngestError::Schema)?;
        rows += batch.num_rows();
        // Bytes of this batch's slices (IPC arrays share one body buffer, which
        // `get_array_memory_size` would count once per column).
        memory_bytes += batch
            .columns()
            .iter()
            .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
            .sum::<usize>();
        batches.push(batch);
    }
    decoder.finish().map_err(IngestError::NotArrow)?;
    if !schema_checked {
        return Err(malformed("no schema message"));
    }
    Ok((batches, rows, memory_bytes))
}

/// Encodes batches as an Arrow IPC stream (optionally with IPC-level compression):
/// what clients send.
pub fn encode_ipc(
    batches: &[RecordBatch],
    compression: Option<arrow::ipc::CompressionType>,
) -> Result<Vec<u8>> {
    let schema = batches
        .first()
        .map(|b| b.schema())
        .unwrap_or_else(flowlake_schemas::flow_schema);
    let options =
        arrow::ipc::writer::IpcWriteOptions::default().try_with_compression(compression)?;
    let mut writer =
        arrow::ipc::writer::StreamWriter::try_new_with_options(Vec::new(), &schema, options)?;
    for b in batches {
        writer.write(b)?;
    }
    Ok(writer.into_inner()?)
}

#[cfg(test)]
mod tests;
