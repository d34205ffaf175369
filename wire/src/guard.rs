//! Checks on the raw IPC stream before arrow-ipc reads it: arrow-ipc trusts some
//! sizes in the stream and allocates or panics on them.

use crate::error::{DecodeError, Result};

/// Walks the IPC stream's messages and refuses compressed buffers that claim to
/// inflate past `max_bytes` in total. arrow-ipc allocates the claimed size up
/// front, so without this a 100-byte body could abort the process (found by the
/// mutation test). Returns where the stream ends (after its end-of-stream marker;
/// bytes after it are ignored).
pub(crate) fn guard_compressed_lengths(bytes: &[u8], max_bytes: usize) -> Result<usize> {
    let mut at = 0usize;
    let mut inflated = 0u64;
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
            let start =
                usize::try_from(offset).map_err(|_| DecodeError::Malformed("negative offset"))?;
            let Some(prefix) = body.get(start..start + 8) else {
                return Err(DecodeError::Malformed("buffer outside the body"));
            };
            let claimed = i64::from_le_bytes(prefix.try_into().expect("8 bytes"));
            if claimed > 0 {
                inflated = inflated.saturating_add(claimed as u64);
            }
            if inflated > max_bytes as u64 {
                return Err(DecodeError::TooLarge { limit: max_bytes });
            }
        }
    }
    Ok(bytes.len())
}
