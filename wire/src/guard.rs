//! Checks on the raw IPC stream before arrow-ipc reads it: arrow-ipc 59 trusts
//! some sizes in the stream and allocates or panics on them.

use std::collections::HashMap;

use arrow::datatypes::{DataType, Field, Schema};
use arrow::ipc::{CompressionType, Message};

use crate::error::{DecodeError, Result};
use crate::{fb_schema, layout};

/// Walks the IPC stream's messages before arrow-ipc decodes them:
/// - the schema is checked against the flow schema before any batch is read;
/// - every buffer must lie inside its message body (arrow-ipc slices it with an
///   assertion);
/// - compressed buffers may not claim to inflate past `max_bytes` in total
///   (arrow-ipc allocates the claimed size up front: a 100-byte body could abort
///   the process, found by the mutation test);
/// - record batches' validity buffers must cover their columns ([`layout`]).
///
/// Returns where the stream ends (after its end-of-stream marker; bytes after it
/// are ignored). Runs inside the decoder's `catch_unwind`, as it calls arrow.
pub(crate) fn guard_stream(bytes: &[u8], max_bytes: usize, rule: SchemaRule) -> Result<usize> {
    let mut at = 0usize;
    let mut inflated = 0u64;
    let mut schema: Option<StreamSchema> = None;
    let word = |at: usize| -> Result<i32> {
        bytes
            .get(at..at + 4)
            .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
            .ok_or(DecodeError::Malformed("truncated message header"))
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
        let len =
            usize::try_from(len).map_err(|_| DecodeError::Malformed("negative metadata length"))?;
        let meta = bytes
            .get(at..at.saturating_add(len))
            .ok_or(DecodeError::Malformed("truncated metadata"))?;
        at += len;
        let message = arrow::ipc::root_as_message(meta)
            .map_err(|_| DecodeError::Malformed("invalid flatbuffer"))?;
        let body_len = usize::try_from(message.bodyLength())
            .map_err(|_| DecodeError::Malformed("negative body length"))?;
        let body = bytes
            .get(at..at.saturating_add(body_len))
            .ok_or(DecodeError::Malformed("truncated body"))?;
        at += body_len;
        if let Some(fb) = message.header_as_schema() {
            if schema.is_none() {
                schema = Some(stream_schema_of(fb, rule)?);
            }
            continue;
        }
        check_batch(&message, body, schema.as_ref(), &mut inflated, max_bytes)?;
    }
    Ok(bytes.len())
}

/// The stream's schema, and the type of the values of each of its dictionaries.
struct StreamSchema {
    schema: Schema,
    dictionaries: HashMap<i64, DataType>,
}

/// What a stream's schema must be: `flowlake_schemas::validate_schema` (the
/// flow schema), or any schema without nested dictionaries.
pub(crate) type SchemaRule = fn(&Schema) -> std::result::Result<(), flowlake_schemas::SchemaError>;

/// The stream's schema, refused unless `rule` takes it (as before any batch is
/// decoded).
fn stream_schema_of(fb: arrow::ipc::Schema, rule: SchemaRule) -> Result<StreamSchema> {
    fb_schema::check(fb)?;
    let schema = arrow::ipc::convert::fb_to_schema(fb);
    rule(&schema).map_err(DecodeError::Schema)?;
    // The flow schema allows dictionaries only as top-level columns
    // (`validate_schema`), so their ids are on the top-level fields; a
    // dictionary elsewhere (another rule) is refused with its batch.
    let mut dictionaries = HashMap::new();
    let top = fb.fields().into_iter().flatten();
    for (fb_field, field) in top.zip(schema.fields()) {
        if let (Some(d), DataType::Dictionary(_, values)) =
            (fb_field.dictionary(), field.data_type())
        {
            dictionaries.insert(d.id(), values.as_ref().clone());
        }
    }
    Ok(StreamSchema {
        schema,
        dictionaries,
    })
}

fn check_batch(
    message: &Message,
    body: &[u8],
    schema: Option<&StreamSchema>,
    inflated: &mut u64,
    max_bytes: usize,
) -> Result<()> {
    let record = message.header_as_record_batch();
    let dictionary = message.header_as_dictionary_batch();
    if dictionary.is_some_and(|d| d.data().is_none()) {
        // arrow-ipc unwraps it (found by the fuzz target).
        return Err(DecodeError::Malformed("dictionary batch without data"));
    }
    let Some(batch) = record.or_else(|| dictionary.and_then(|d| d.data())) else {
        return Ok(());
    };
    if batch.variadicBufferCounts().is_some_and(|v| !v.is_empty()) {
        // Only view columns have variadic buffers, and the flow schema has none:
        // arrow-ipc asserts the counts were all used (found by the fuzz target).
        return Err(DecodeError::Malformed(
            "variadic buffer counts without view columns",
        ));
    }
    let slices = batch
        .buffers()
        .iter()
        .flatten()
        .map(|buf| {
            let start = usize::try_from(buf.offset())
                .map_err(|_| DecodeError::Malformed("negative buffer offset"))?;
            let len = usize::try_from(buf.length())
                .map_err(|_| DecodeError::Malformed("negative buffer length"))?;
            body.get(start..start.saturating_add(len))
                .ok_or(DecodeError::Malformed("buffer outside the body"))
        })
        .collect::<Result<Vec<&[u8]>>>()?;
    let codec = match batch.compression().map(|c| c.codec()) {
        None => None,
        Some(c @ (CompressionType::LZ4_FRAME | CompressionType::ZSTD)) => Some(c),
        Some(_) => return Err(DecodeError::Malformed("unknown compression codec")),
    };
    if codec.is_some() {
        for data in &slices {
            if let Some(claimed) = layout::declared_length(data).filter(|&n| n > 0) {
                *inflated = inflated.saturating_add(claimed as u64);
            }
            if *inflated > max_bytes as u64 {
                return Err(DecodeError::TooLarge { limit: max_bytes });
            }
        }
    }
    match (record, dictionary, schema) {
        (Some(record), _, Some(s)) => layout::check_validity(&s.schema, &record, &slices, codec),
        // A dictionary batch is one column of the dictionary's values: strings
        // or label maps (`validate_schema`).
        (None, Some(dictionary), Some(s)) => {
            let values = s
                .dictionaries
                .get(&dictionary.id())
                .ok_or(DecodeError::Malformed("dictionary batch of no column"))?;
            let values = Schema::new(vec![Field::new("values", values.clone(), true)]);
            let data = dictionary
                .data()
                .ok_or(DecodeError::Malformed("dictionary batch without data"))?;
            layout::check_validity(&values, &data, &slices, codec)
        }
        _ => Ok(()),
    }
}
