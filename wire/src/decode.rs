//! Request bodies → validated flow batches: Content-Encoding, Arrow IPC stream
//! decoding (IPC-level zstd/lz4 included), schema validation and conforming.
//!
//! The same function decodes HTTP bodies and WAL records on replay, and is the
//! target of the fuzz harness (`fuzz/fuzz_targets/ipc_decode.rs`).

use arrow::buffer::Buffer;
use arrow::ipc::reader::StreamDecoder;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::encoding::{BodyEncoding, remove_encoding};
use crate::error::{DecodeError, Result};
use crate::guard::guard_stream;

/// Validated batches of one request, in the exact flow schema.
#[derive(Debug, Clone)]
pub struct DecodedBody {
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    /// Arrow memory held by the batches.
    pub memory_bytes: usize,
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
    // arrow-ipc can panic on malformed streams: `guard_stream` refuses the ones
    // known (found by the mutation test and the fuzz target), and whatever it
    // misses must still be a 400, never a crashed request or replay.
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let end = guard_stream(
            plain.as_slice(),
            max_bytes,
            flowlake_schemas::validate_schema,
        )?;
        read_stream(plain.slice_with_length(0, end))
    }));
    let (batches, rows, memory_bytes) = read.unwrap_or(Err(DecodeError::ArrowPanic))?;
    Ok(DecodedBody {
        batches,
        rows,
        memory_bytes,
    })
}

/// The batches of a body of any schema (the ingester's loss batches, and a
/// refused body read for what it held): the encoding limit and stream guards of
/// [`decode_bytes`], without the flow schema's rules.
pub fn decode_any(
    body: &[u8],
    encoding: BodyEncoding,
    max_bytes: usize,
) -> Result<Vec<RecordBatch>> {
    let plain = match encoding {
        BodyEncoding::Identity if body.len() <= max_bytes => Buffer::from(body.to_vec()),
        _ => Buffer::from_vec(remove_encoding(body, encoding, max_bytes)?),
    };
    let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let end = guard_stream(plain.as_slice(), max_bytes, |_| Ok(()))?;
        let mut bytes = plain.slice_with_length(0, end);
        let mut decoder = StreamDecoder::new();
        let mut batches = Vec::new();
        while let Some(batch) = decoder.decode(&mut bytes).map_err(DecodeError::NotArrow)? {
            batches.push(batch);
        }
        decoder.finish().map_err(DecodeError::NotArrow)?;
        Ok(batches)
    }));
    read.unwrap_or(Err(DecodeError::ArrowPanic))
}

type StreamParts = (Vec<RecordBatch>, usize, usize);

fn read_stream(mut bytes: Buffer) -> Result<StreamParts> {
    let mut decoder = StreamDecoder::new();
    let mut schema_checked = false;
    let mut batches = Vec::new();
    let mut rows = 0;
    let mut memory_bytes = 0;
    loop {
        let next = decoder.decode(&mut bytes).map_err(DecodeError::NotArrow)?;
        if !schema_checked && let Some(schema) = decoder.schema() {
            flowlake_schemas::validate_schema(&schema).map_err(DecodeError::Schema)?;
            schema_checked = true;
        }
        let Some(batch) = next else { break };
        if batch.num_rows() == 0 {
            continue;
        }
        let batch = flowlake_schemas::conform_batch(&batch).map_err(DecodeError::Schema)?;
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
    decoder.finish().map_err(DecodeError::NotArrow)?;
    if !schema_checked {
        return Err(DecodeError::Malformed("no schema message"));
    }
    Ok((batches, rows, memory_bytes))
}

/// Encodes batches as an Arrow IPC stream (optionally with IPC-level compression):
/// what clients send.
pub fn encode_ipc(
    batches: &[RecordBatch],
    compression: Option<arrow::ipc::CompressionType>,
) -> Result<Vec<u8>, arrow::error::ArrowError> {
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
    writer.into_inner()
}

#[cfg(test)]
mod tests;
