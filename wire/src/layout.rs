//! A record batch's field nodes and buffers walked in arrow-ipc's order against
//! the stream's schema, to refuse validity buffers shorter than their column.
//!
//! arrow-ipc 59 builds each array with `ArrayDataBuilder::build`, which makes the
//! validity `BooleanBuffer` before validating and so panics on a short one
//! (apache/arrow-rs#7124, fixed upstream after the arrow 59 that DataFusion 55
//! pins). Found by the `ipc_decode` fuzz target.

use std::io::Read;

use arrow::datatypes::{DataType, Schema};
use arrow::ipc::CompressionType;

use crate::error::{DecodeError, Result};

/// The uncompressed length a compressed IPC buffer declares in its 8-byte
/// prefix (`-1`: stored uncompressed), if it has one.
pub(crate) fn declared_length(data: &[u8]) -> Option<i64> {
    let prefix = data.get(..8)?;
    Some(i64::from_le_bytes(prefix.try_into().expect("8 bytes")))
}

/// Checks every column's validity buffer, in the order arrow-ipc reads nodes
/// and buffers (`RecordBatchDecoder::create_array`).
pub(crate) fn check_validity(
    schema: &Schema,
    batch: &arrow::ipc::RecordBatch,
    buffers: &[&[u8]],
    codec: Option<CompressionType>,
) -> Result<()> {
    let Some(nodes) = batch.nodes() else {
        return Ok(()); // arrow-ipc refuses it
    };
    let mut walk = Walk {
        nodes: nodes.iter().map(|n| (n.length(), n.null_count())).collect(),
        buffers,
        node: 0,
        buffer: 0,
        codec,
    };
    for field in schema.fields() {
        walk.field(field.data_type())?;
    }
    Ok(())
}

struct Walk<'a> {
    nodes: Vec<(i64, i64)>,
    buffers: &'a [&'a [u8]],
    node: usize,
    buffer: usize,
    codec: Option<CompressionType>,
}

impl<'a> Walk<'a> {
    fn field(&mut self, data_type: &DataType) -> Result<()> {
        let &(length, nulls) = self
            .nodes
            .get(self.node)
            .ok_or(DecodeError::Malformed("fewer field nodes than columns"))?;
        self.node += 1;
        let length =
            usize::try_from(length).map_err(|_| DecodeError::Malformed("negative length"))?;
        let nulls =
            usize::try_from(nulls).map_err(|_| DecodeError::Malformed("negative null count"))?;
        let (buffers, children): (usize, Vec<&DataType>) = match data_type {
            DataType::Null => (0, vec![]),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary => {
                (3, vec![])
            }
            DataType::List(f) | DataType::LargeList(f) | DataType::Map(f, _) => {
                (2, vec![f.data_type()])
            }
            DataType::FixedSizeList(f, _) => (1, vec![f.data_type()]),
            // A dictionary-encoded column's record batch holds its keys; the
            // values come in dictionary batches (checked as their own column).
            DataType::Dictionary(key, _) if key.is_dictionary_key_type() => (2, vec![]),
            DataType::Struct(fields) => (1, fields.iter().map(|f| f.data_type()).collect()),
            t if t.is_primitive()
                || matches!(t, DataType::Boolean | DataType::FixedSizeBinary(_)) =>
            {
                (2, vec![])
            }
            // Not in the flow schema, which the stream's schema was checked against.
            _ => {
                return Err(DecodeError::Malformed(
                    "column type outside the flow schema",
                ));
            }
        };
        if buffers > 0 {
            let validity = self.next_buffer()?;
            if nulls > 0 && self.plain_length(validity, length.div_ceil(8))? < length.div_ceil(8) {
                return Err(DecodeError::Malformed(
                    "validity buffer shorter than its column",
                ));
            }
            for _ in 1..buffers {
                self.next_buffer()?;
            }
        }
        for child in children {
            self.field(child)?;
        }
        Ok(())
    }

    fn next_buffer(&mut self) -> Result<&'a [u8]> {
        let data = self
            .buffers
            .get(self.buffer)
            .ok_or(DecodeError::Malformed("fewer buffers than columns need"))?;
        self.buffer += 1;
        Ok(data)
    }

    /// How many bytes `data` holds once decompressed, counting at most `needed`.
    fn plain_length(&self, data: &[u8], needed: usize) -> Result<usize> {
        let Some(codec) = self.codec else {
            return Ok(data.len());
        };
        if data.is_empty() {
            return Ok(0);
        }
        let declared =
            declared_length(data).ok_or(DecodeError::Malformed("compressed buffer too short"))?;
        let declared = match declared {
            -1 => return Ok(data.len() - 8),
            n => usize::try_from(n).map_err(|_| DecodeError::Malformed("negative length"))?,
        };
        if declared < needed {
            return Ok(declared);
        }
        // Inflate only what is needed (a few bytes per thousand rows); the total
        // a batch declares is already capped by the body limit.
        let payload = &data[8..];
        let mut out = Vec::new();
        let read = match codec {
            CompressionType::LZ4_FRAME => lz4_flex::frame::FrameDecoder::new(payload)
                .take(needed as u64)
                .read_to_end(&mut out),
            _ => zstd::stream::read::Decoder::with_buffer(payload)
                .and_then(|d| d.take(needed as u64).read_to_end(&mut out)),
        };
        read.map_err(|_| DecodeError::Malformed("corrupt compressed buffer"))?;
        Ok(out.len())
    }
}
